"""A study's results on disk: a Parquet dataset, one file per finished task (a batch of cells), written
atomically, partitioned by model and phase::

    <out>/study.json                          the study as run (last run)
    <out>/cells/<model>/<phase>/<task>.parquet  one row per cell: coordinates, cell_id, metrics, versions
    <out>/failed/<task>.json                  a failed task: its cells, the error, the traceback
    <out>/summary.json                        the last run's summary

Files are read as untrusted: an unreadable cell file (a damaged footer, or a damaged page: each file is read
whole, its pages checked against their checksums), or one without the columns a result needs, is set aside
(renamed ``*.parquet.corrupt``) with a warning, and its cells count as not finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from lab.trace.io import atomic_path

# the coordinates of a cell, in the order a table sorts by, with their types in the dataset
COORDINATES = {"model": "string", "model_source": "string", "model_name": "string", "num_layers": "Int64",
               "model_options": "string", "reuse_probability": "float64", "batch_size": "int64",
               "seq_length": "int64", "phase": "string", "weight_dtype": "string", "dtype": "string",
               "seed": "int64", "buffer": "string", "policy": "string", "capacity_mb": "float64",
               "cost": "string"}
SORT_BY = ["model", "batch_size", "seq_length", "phase", "weight_dtype", "buffer", "policy", "capacity_mb"]
STRING_COLUMNS = ("cell_id", "algorithm", "lab_version", "python_version", "numpy_version", "pandas_version",
                  "torch_version", "transformers_version")


def cells_dir(out) -> Path:
    return Path(out) / "cells"


def failed_dir(out) -> Path:
    return Path(out) / "failed"


def arrow_table(frame: pd.DataFrame):
    """``frame`` as a pyarrow Table with the dataset's column types: coordinates as in COORDINATES, text as
    strings, every metric as float64 (so that every file of a study has the same type for a column; NaN and
    None are null)."""
    import pyarrow as pa

    arrays = {}
    for column in frame.columns:
        values = frame[column]
        if column in COORDINATES and COORDINATES[column] != "string":
            arrays[column] = pa.array(values.astype(COORDINATES[column]), from_pandas=True)
        elif column in COORDINATES or column in STRING_COLUMNS or values.dtype == object:
            arrays[column] = pa.array(values.tolist(), from_pandas=True)
        else:
            arrays[column] = pa.array(values.to_numpy(dtype="float64", na_value=np.nan), from_pandas=True)
    for column, kind in COORDINATES.items():
        if column not in arrays:
            arrays[column] = pa.nulls(len(frame), pa.string() if kind == "string" else
                                      pa.int64() if kind.lower() == "int64" else pa.float64())
    return pa.table(arrays)  # column by column in arrow: 7x faster than pandas astype and from_pandas


def write_cells(out, task_key: str, rows) -> Path:
    """Write one task's rows (a pyarrow Table from ``arrow_table``, or a DataFrame) to
    ``<out>/cells/<model>/<phase>/<task_key>.parquet`` atomically; returns the path. A file of the same task
    (a rerun's retry) is replaced, never duplicated."""
    import pyarrow.parquet as pq

    table = arrow_table(rows) if isinstance(rows, pd.DataFrame) else rows
    model, phase = table.column("model")[0].as_py(), table.column("phase")[0].as_py()
    path = cells_dir(out) / str(model) / str(phase) / f"{task_key}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)  # a damaged page is then found, not read as numbers
    return path


def write_json(path, value) -> Path:
    """Write ``value`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(value, indent=2, default=str, allow_nan=True))
    return Path(path)


def cell_files(out) -> list[Path]:
    """The result files of the study at ``out``, sorted."""
    root = cells_dir(out)
    return sorted(root.glob("*/*/*.parquet")) if root.is_dir() else []


def _set_aside(path: Path, why: str) -> None:
    warnings.warn(f"study result file {path} is unusable ({why}); set aside as {path.name}.corrupt, its cells "
                  "will run again", stacklevel=3)
    with contextlib.suppress(OSError):
        os.replace(path, path.with_name(path.name + ".corrupt"))


def _checked_schema(path: Path):
    """The Parquet schema of ``path`` if it is a usable result file (readable, with string ``cell_id`` and the
    coordinates); else None after setting it aside."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as error:  # noqa: BLE001 (pyarrow, OSError: truncated, not Parquet)
        _set_aside(path, f"{type(error).__name__}")
        return None
    missing = [c for c in ("cell_id", "model", "phase", "policy", "capacity_mb") if c not in schema.names]
    if missing:
        _set_aside(path, f"no column(s) {missing}")
        return None
    if not pa.types.is_string(schema.field("cell_id").type) and not pa.types.is_large_string(
            schema.field("cell_id").type):
        _set_aside(path, "cell_id is not text")
        return None
    return schema


def _checked_table(path: Path):
    """(schema, whole table) of ``path`` if it is a usable result file: ``_checked_schema``, and every page of
    every column readable (and matching its checksum, in files written with them: ``write_cells``); else None
    after setting it aside. A file with a readable footer can still hold damaged pages: only a full read finds
    them."""
    import pyarrow.parquet as pq

    schema = _checked_schema(path)
    if schema is None:
        return None
    try:
        return schema, pq.read_table(path, page_checksum_verification=True)
    except Exception as error:  # noqa: BLE001 (pyarrow: a damaged page, a checksum mismatch; OSError)
        _set_aside(path, f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}")
        return None


def finished_cells(out) -> set:
    """The ids of the cells already in the dataset at ``out`` (an empty set for a new study). Every file is read
    whole (``_checked_table``): a damaged one is set aside and its cells run again."""
    done = set()
    for path in cell_files(out):
        checked = _checked_table(path)
        if checked is None:
            continue
        done.update(i for i in checked[1].column("cell_id").to_pylist() if isinstance(i, str))
    return done


def study_dataset(out):
    """The study's results as a ``pyarrow.dataset.Dataset`` over its usable files, with one schema unifying
    theirs (a column missing from a file reads as null). ValueError when ``out`` holds no results."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    files, schemas = [], []
    for path in cell_files(out):
        checked = _checked_table(path)
        if checked is not None:
            files.append(str(path))
            schemas.append(checked[0].remove_metadata())
    if not files:
        raise ValueError(f"{out}: no study results (expected {cells_dir(out)}/<model>/<phase>/*.parquet); run "
                         "the study first: python -m lab study STUDY.yaml --out " + str(out))
    # one column order whatever the files' names (they depend on how the run grouped its cells): the widest
    # of the distinct schemas first, ties by their columns
    distinct = sorted({str(schema): schema for schema in schemas}.values(),
                      key=lambda schema: (-len(schema), schema.names, str(schema)))
    return ds.dataset(files, format="parquet", schema=pa.unify_schemas(distinct, promote_options="permissive"))


def load_study(out, columns: Optional[Iterable[str]] = None, filter=None) -> pd.DataFrame:
    """A study's results as a DataFrame, one row per cell, sorted by its coordinates (model, batch_size,
    seq_length, phase, weight_dtype, buffer, policy, capacity_mb).

    Takes the study's output folder, optional ``columns`` and a pyarrow
    ``filter`` expression (``pyarrow.dataset.field("phase") == "forward"``).
    Capacities and traffic are in MB, times in ms. A cell found twice (two
    runs writing at once) is kept once, with a warning. ValueError when the
    folder holds no results.
    """
    dataset = study_dataset(out)
    if columns is not None:
        columns = list(dict.fromkeys([*columns, "cell_id"]))
    frame = dataset.to_table(columns=columns, filter=filter).to_pandas()
    duplicated = frame["cell_id"].duplicated()
    if duplicated.any():
        warnings.warn(f"{out}: {int(duplicated.sum())} cell(s) found twice; keeping one of each", stacklevel=2)
        frame = frame[~duplicated]
    by = [c for c in SORT_BY if c in frame.columns] + ["cell_id"]
    frame = frame.sort_values(by, kind="stable").reset_index(drop=True)
    if "num_layers" in frame.columns:
        frame["num_layers"] = frame["num_layers"].astype("Int64")
    return frame


def study_failures(out) -> pd.DataFrame:
    """The failed tasks of the study at ``out`` (its last run): one row per task with its coordinates,
    ``cells`` (how many), ``stage`` (trace or task) and ``error``; empty when none failed."""
    rows = []
    root = failed_dir(out)
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        cells = record.get("cells")
        rows.append({**{k: v for k, v in record.items() if k not in ("cells", "traceback", "capacities_mb")},
                     "cells": len(cells) if isinstance(cells, list) else np.nan})
    return pd.DataFrame(rows)
