"""Reading and writing traces: Parquet, CSV and libCacheSim's oracleGeneral binary format.

Every write is atomic: the file appears whole under its name or not at all.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lab.registry import Registry
from lab.trace.kernels import NEVER
from lab.trace.workload import encode_trace
from lab.units import bytes_to_mb

# libCacheSim oracleGeneral: 24-byte little-endian records, no header.
ORACLE_GENERAL_DTYPE = np.dtype(
    [("time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access_vtime", "<i8")]
)
FORMATS: Registry[str] = Registry("trace format")
for _name in ("parquet", "csv", "oracleGeneral"):
    FORMATS.add(_name, _name)
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".oraclegeneral": "oracleGeneral"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files an earlier write of ``path`` left behind when its process was killed (our
    naming: ``.NAME.PID.<random>.tmp``, PID no longer running); a live writer's file is left alone."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not process_running(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def process_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (the owner of a temporary file of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success move it onto ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def trace_format(path, format=None) -> str:
    """The trace format of ``path``: ``format`` if given, else from the suffix (``.parquet``/``.pq``,
    ``.csv``, ``.oracleGeneral`` or ``.oracleGeneral.bin``). Raises ValueError naming the accepted ones."""
    if format is not None:
        return FORMATS.get(format)
    suffixes = [s.lower() for s in Path(path).suffixes]
    for suffix in suffixes[::-1][:2]:
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
    raise ValueError(
        f"cannot tell the trace format of {str(path)!r} from its suffix; use one of "
        f"{sorted(_SUFFIXES)} (or .oracleGeneral.bin) or pass format= one of {FORMATS.names()}"
    )


def write_trace(trace: pd.DataFrame, path, format=None) -> Path:
    """Write ``trace`` to ``path`` atomically and return the path.

    Parquet and CSV keep every column. oracleGeneral keeps what libCacheSim
    reads: access index as time, an integer object id (the tensor id itself
    when all ids are non-negative integers, else its order of first access),
    size in bytes (< 4 GiB) and the next access's index (-1 when never reused).
    """
    fmt = trace_format(path, format)
    enc = encode_trace(trace)
    if fmt != "oracleGeneral":
        return write_table(trace, path, fmt)
    with atomic_path(path) as tmp:
        _write_oracle_general(enc, tmp)
    return Path(path)


def write_table(frame: pd.DataFrame, path, format=None) -> Path:
    """Write any table (results, a plan) to ``path`` as Parquet or CSV, atomically; returns the path."""
    fmt = trace_format(path, format)
    if fmt == "oracleGeneral":
        raise ValueError("oracleGeneral holds traces only; write a table as .parquet or .csv")
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return Path(path)


def _write_oracle_general(enc, tmp: Path) -> None:
    if enc.n_accesses >= 2**32:
        raise ValueError("oracleGeneral stores access times as uint32: the trace must have < 2**32 accesses")
    if enc.n_tensors and int(enc.tensor_bytes.max()) >= 2**32:
        raise ValueError("oracleGeneral stores sizes as uint32: every size_mb must be < 4096 MB to export")
    ids = enc.tensor_ids
    if ids.dtype.kind in "iu" and (ids.size == 0 or ids.min() >= 0):
        obj_ids = ids.astype(np.uint64)[enc.codes]
    else:
        obj_ids = enc.codes.astype(np.uint64)
    records = np.empty(enc.n_accesses, dtype=ORACLE_GENERAL_DTYPE)
    records["time"] = np.arange(enc.n_accesses, dtype=np.uint32)
    records["obj_id"] = obj_ids
    records["obj_size"] = enc.access_bytes
    records["next_access_vtime"] = enc.next_use
    records.tofile(tmp)


def _refuse_duplicate_columns(path, names) -> None:
    """ValueError naming ``path`` when its header repeats a column name: readers would keep one of them (pandas
    renames a second ``size_mb`` to ``size_mb.1``) and the trace would silently be read from the other."""
    names = [str(n) for n in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{str(path)!r} has duplicated column(s) {repeated}: a trace needs one column of each "
                         "name; rename or drop the extra ones")


def _csv_header(path) -> list:
    """The column names of a CSV file's first line, as written (pandas would rename duplicates)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as file:
        return next(csv.reader(file), [])


def _read_parquet(path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as error:  # noqa: BLE001 (not a Parquet file: pyarrow's own message)
        raise ValueError(f"{str(path)!r} is not a readable Parquet file: {error}") from None
    _refuse_duplicate_columns(path, [n for n in names if n != "__index_level_0__"])
    return pd.read_parquet(path)


def _read_csv(path) -> pd.DataFrame:
    """A CSV trace with its tensor ids exactly as written: read as text (no "NA" or "" turned into NaN, no
    "01" and "1.0" merged into 1), then as integers only when every id is an integer written canonically (so
    integer ids round-trip as integers)."""
    _refuse_duplicate_columns(path, _csv_header(path))
    frame = pd.read_csv(path, dtype={"tensor_id": str}, keep_default_na=False,
                        na_values={c: _NA_VALUES for c in pd.read_csv(path, nrows=0).columns if c != "tensor_id"})
    if "tensor_id" in frame.columns and len(frame):
        ids = frame["tensor_id"]
        canonical = ids.str.fullmatch(r"-?(0|[1-9][0-9]{0,17})")
        if bool(canonical.all()):
            frame["tensor_id"] = ids.astype(np.int64)
    return frame


_NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "<NA>"]


def read_trace(path, format=None) -> pd.DataFrame:
    """Read a trace written by ``write_trace`` (or by libCacheSim, for oracleGeneral) into a DataFrame.

    oracleGeneral gives columns ``tensor_id`` (int), ``size_mb`` and
    ``next_access`` (index of the next access to the same tensor, -1 when none).
    A file whose header repeats a column name is refused (ValueError).
    """
    fmt = trace_format(path, format)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no trace file at {str(path)!r}")
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "csv":
        return _read_csv(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % ORACLE_GENERAL_DTYPE.itemsize:
        raise ValueError(
            f"{str(path)!r} is not an oracleGeneral trace: its size ({raw.size} bytes) is not a multiple "
            f"of the {ORACLE_GENERAL_DTYPE.itemsize}-byte record"
        )
    records = raw.view(ORACLE_GENERAL_DTYPE)
    obj_ids = records["obj_id"]
    tensor_id = obj_ids.astype(np.int64) if (obj_ids.size == 0 or obj_ids.max() < 2**63) else obj_ids
    next_access = records["next_access_vtime"].astype(np.int64)
    return pd.DataFrame(
        {
            "tensor_id": tensor_id,
            "size_mb": bytes_to_mb(records["obj_size"].astype(np.int64)),
            "next_access": np.where(next_access < 0, NEVER, next_access),
        }
    )
