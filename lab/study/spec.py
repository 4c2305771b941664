"""A study's declaration: a YAML grid, validated, expanded into workloads (one capture or generated trace
each) and tasks (one policy under one buffer model on one workload, over its capacities).

A study file (``params/studies/<name>.yaml``)::

    models:                       # capture presets and/or synthetic generator families
      - gpt2                      # a preset at full depth (lab.MODEL_PRESETS)
      - {preset: llama-2-7b, num_layers: 2, label: llama-2-7b-2L}
      - synthetic:Transformer     # lab.generate_trace's family, its default dimensions
      - {synthetic: MoE, num_layers: 4, reuse_probability: 0.3, dims: {num_experts: 8}}
    batch_sizes: [1, 4]
    seq_lengths: [128]
    phases: [forward, training]   # training: forward, backward and an AdamW step (presets only)
    weight_dtypes: [bf16]         # bf16, fp16, fp32, int8, nf4 (presets only)
    policies: [LRU, FIFO, S3-FIFO]
    capacities_mb: [1, 4, 16, 64] # or {geomspace: [LOW_MB, HIGH_MB, POINTS]}
    buffers: [scratchpad, cache]  # lab.simulate(..., buffer=...)
    optimum: auto                 # an OPT row per capacity on the scratchpad (true, false, auto)
    cost: H100-SXM5               # hardware preset (null: the seed's defaults)
    dtype: bf16                   # activations of the captures
    seed: 0                       # captures' MoE routing, the generator
    max_cells: 20000              # refuse a larger grid unless forced

Synthetic families generate a forward pass with 2-byte elements: grid points
with phase ``training`` or a weight dtype other than bf16/fp16 do not exist
for them; nor does the ML policy under the hardware cache (its scores are per
tensor, the cache tracks lines). ``StudySpec.left_out`` counts these points.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from lab.analysis.contenders import OPTIMUM
from lab.checks import check_bool, check_int, check_memory, check_number, check_positive_mb

STUDY_PHASES = ("forward", "training")  # what a study captures of a model: its forward pass, or a training step
DEFAULT_MAX_CELLS = 20_000
AXES = ("models", "batch_sizes", "seq_lengths", "phases", "weight_dtypes", "policies", "capacities_mb", "buffers")
SETTINGS = ("name", "optimum", "cost", "dtype", "seed", "max_cells", "description")
DEFAULTS = {"batch_sizes": [1], "seq_lengths": [128], "phases": ["forward"], "weight_dtypes": ["bf16"],
            "buffers": ["scratchpad"]}
PRESET_KEYS = ("preset", "num_layers", "label", "overrides")
SYNTHETIC_KEYS = ("synthetic", "num_layers", "reuse_probability", "dims", "label")
SYNTHETIC_WEIGHT_DTYPES = ("bf16", "fp16")  # the generator's default 2-byte elements
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")


def runs_under(buffer: str, policy: str) -> bool:
    """Whether ``lab.simulate`` runs ``policy`` (a registered name) under ``buffer``: not a policy that reads
    the trace's scores (class attribute ``needs_scores``) in the hardware cache, whose accesses are lines.
    The pairs it does not run are not in the grid."""
    from lab.sim.policy import get_policy

    return buffer != "cache" or not get_policy(policy).needs_scores


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Model:
    """One entry of the ``models`` axis: a capture preset or a synthetic generator family."""

    label: str
    source: str  # "preset" or "synthetic"
    name: str  # the preset's name, or the generator's model type
    num_layers: Optional[int] = None
    reuse_probability: float = 0.3
    options: tuple = ()  # config overrides (preset) or dimensions (synthetic), as sorted (key, value) pairs

    def to_dict(self) -> dict:
        return {"label": self.label, "source": self.source, "name": self.name, "num_layers": self.num_layers,
                "reuse_probability": self.reuse_probability, "options": dict(self.options)}


@dataclass(frozen=True)
class StudyWorkload:
    """One trace of the study: a model at one batch size, sequence length, phase and weight dtype."""

    model: Model
    batch_size: int
    seq_length: int
    phase: str
    weight_dtype: str
    dtype: str
    seed: int

    @property
    def key(self) -> str:
        """A stable id of the trace's configuration (the capture cache keys captures itself)."""
        return _digest(self.coordinates())

    def coordinates(self) -> dict:
        return {"model": self.model.label, "model_source": self.model.source, "model_name": self.model.name,
                "num_layers": self.model.num_layers, "model_options": json.dumps(dict(self.model.options),
                                                                                sort_keys=True),
                "batch_size": self.batch_size, "seq_length": self.seq_length, "phase": self.phase,
                "weight_dtype": self.weight_dtype, "dtype": self.dtype, "seed": self.seed,
                **({"reuse_probability": self.model.reuse_probability} if self.model.source == "synthetic" else {})}


@dataclass(frozen=True)
class Task:
    """One unit of work on a workload's trace: its ``cells``, (policy, capacity in MB) pairs under ``buffer``
    (policy ``OPT``: the optimum); one result row per cell. On the scratchpad a task is one policy at every
    capacity (one-pass curves share the work); under the hardware cache it is every policy at one capacity
    (they share the line trace, built once per process), or at a chunk of neighbouring capacities on a
    cluster (see ``lab.study.runner``)."""

    workload: StudyWorkload
    buffer: str
    cells: tuple  # ((policy, capacity_mb), ...)
    cost: Optional[str]
    optimum: object  # True or "auto" (OPT tasks)

    @property
    def policies(self) -> tuple:
        return tuple(dict.fromkeys(p for p, _ in self.cells))

    @property
    def capacities_mb(self) -> tuple:
        return tuple(dict.fromkeys(c for _, c in self.cells))

    def cell_id(self, policy: str, capacity_mb: float) -> str:
        """The stable id of one cell (a policy at one capacity): a hash of every coordinate."""
        return _digest({**self.workload.coordinates(), "buffer": self.buffer, "policy": policy,
                        "capacity_mb": float(capacity_mb), "cost": self.cost})

    @property
    def key(self) -> str:
        """The id of this batch of cells (its file name in the dataset)."""
        return _digest([self.cell_id(p, c) for p, c in self.cells])

    @property
    def label(self) -> str:
        """Model, phase, buffer and what the task runs, for messages."""
        capacities = self.capacities_mb
        where = (f"{capacities[0]:g} MB" if len(capacities) == 1 else
                 f"{len(capacities)} capacities, {min(capacities):g}-{max(capacities):g} MB")
        what = self.policies[0] if len(self.policies) == 1 else f"{len(self.policies)} policies at {where}"
        return f"{self.workload.model.label} {self.workload.phase} {self.buffer} {what}"

    def with_cells(self, cells) -> "Task":
        return Task(self.workload, self.buffer, tuple(cells), self.cost, self.optimum)

    def coordinates(self, policy: str, capacity_mb: float) -> dict:
        return {**self.workload.coordinates(), "buffer": self.buffer, "policy": policy,
                "capacity_mb": float(capacity_mb), "cost": self.cost or "", "cell_id": self.cell_id(policy, capacity_mb)}


@dataclass
class StudySpec:
    """A validated study: its name, axes and settings (see the module docstring); ``workloads`` and ``tasks``
    expand the grid; ``n_cells`` counts its cells (result rows); ``left_out`` the grid points that do not exist
    (a synthetic family in training or another weight dtype)."""

    name: str
    models: list
    batch_sizes: list
    seq_lengths: list
    phases: list
    weight_dtypes: list
    policies: list
    capacities_mb: list
    buffers: list
    optimum: object = "auto"
    cost: Optional[str] = None
    dtype: str = "bf16"
    seed: int = 0
    max_cells: int = DEFAULT_MAX_CELLS
    description: str = ""
    left_out: int = field(default=0, init=False)

    def workloads(self) -> list[StudyWorkload]:
        """Every trace of the grid, models first (the YAML's order)."""
        out, left = [], 0
        for model in self.models:
            for batch in self.batch_sizes:
                for seq in self.seq_lengths:
                    for phase in self.phases:
                        for weight_dtype in self.weight_dtypes:
                            if model.source == "synthetic" and (phase != "forward"
                                                                or weight_dtype not in SYNTHETIC_WEIGHT_DTYPES):
                                left += 1
                                continue
                            out.append(StudyWorkload(model, batch, seq, phase, weight_dtype, self.dtype, self.seed))
        unsupported = sum(not runs_under(b, p) for b in self.buffers for p in self.policies)
        self.left_out = (left * len(self.columns()) + len(out) * unsupported) * len(self.capacities_mb)
        return out

    def columns(self) -> list:
        """(buffer, policy) pairs of each workload: every policy under every buffer, and OPT on the scratchpad;
        not the scored policies (ML) under the hardware cache, which tracks lines, not the scored tensors."""
        pairs = [(b, p) for b in self.buffers for p in self.policies if runs_under(b, p)]
        if self.optimum is not False and "scratchpad" in self.buffers:
            pairs.append(("scratchpad", OPTIMUM))
        return pairs

    def tasks(self, workload: StudyWorkload) -> list[Task]:
        """The tasks on one workload: on the scratchpad one per policy (and OPT) over every capacity; under the
        hardware cache one per capacity over every policy (see ``Task``)."""
        columns = self.columns()
        out = [Task(workload, b, tuple((p, c) for c in self.capacities_mb), self.cost, self.optimum)
               for b, p in columns if b != "cache"]
        cached = [p for b, p in columns if b == "cache"]
        if cached:
            out += [Task(workload, "cache", tuple((p, c) for p in cached), self.cost, self.optimum)
                    for c in self.capacities_mb]
        return out

    @property
    def n_cells(self) -> int:
        """Cells of the grid (result rows): workloads x (buffers x policies + OPT) x capacities."""
        return len(self.workloads()) * len(self.columns()) * len(self.capacities_mb)

    def to_mapping(self) -> dict:
        """The study as a study file's mapping (``parse_study`` gives back an equal StudySpec)."""
        models = []
        for m in self.models:
            if not isinstance(m, Model):
                models.append(m)  # parse_study names what is wrong with it
                continue
            key = "preset" if m.source == "preset" else "synthetic"
            entry = {key: m.name, "num_layers": m.num_layers, "label": m.label}
            options = dict(m.options) if isinstance(m.options, tuple) else m.options
            if key == "preset":
                entry["overrides"] = options
            else:
                entry.update(dims=options, reuse_probability=m.reuse_probability)
            models.append({k: v for k, v in entry.items() if v is not None})
        return {"name": self.name, "models": models, "batch_sizes": self.batch_sizes, "seq_lengths": self.seq_lengths,
                "phases": self.phases, "weight_dtypes": self.weight_dtypes, "policies": self.policies,
                "capacities_mb": self.capacities_mb, "buffers": self.buffers, "optimum": self.optimum,
                "cost": self.cost, "dtype": self.dtype, "seed": self.seed, "max_cells": self.max_cells,
                "description": self.description}

    def to_dict(self) -> dict:
        return {"name": self.name, "models": [m.to_dict() for m in self.models], "batch_sizes": self.batch_sizes,
                "seq_lengths": self.seq_lengths, "phases": self.phases, "weight_dtypes": self.weight_dtypes,
                "policies": self.policies, "capacities_mb": self.capacities_mb, "buffers": self.buffers,
                "optimum": self.optimum, "cost": self.cost, "dtype": self.dtype, "seed": self.seed,
                "max_cells": self.max_cells}


class StudyError(ValueError):
    """A study file or mapping that is not a valid study (the message names the key and what is accepted)."""


def _fail(source: str, message: str):
    raise StudyError(f"{source}: {message}")


def _axis(source: str, raw: dict, key: str) -> list:
    value = raw.get(key, DEFAULTS.get(key))
    if value is None:
        _fail(source, f"{key} is required: a non-empty list")
    if isinstance(value, (str, int, float, dict)) and not (key == "capacities_mb" and isinstance(value, dict)):
        value = [value]
    if key == "capacities_mb" and isinstance(value, dict):
        return value  # {geomspace: [...]}, checked by the caller
    if not isinstance(value, list):
        _fail(source, f"{key} must be a list, got {type(value).__name__}")
    if not value:
        _fail(source, f"{key} is empty: give at least one value")
    return value


def _unique(source: str, key: str, values: list) -> list:
    seen = set()
    for v in values:
        marker = json.dumps(v, sort_keys=True, default=str)
        if marker in seen:
            _fail(source, f"{key} lists {v!r} twice")
        seen.add(marker)
    return values


def _model(source: str, entry) -> Model:
    from lab.workloads.generator import DEFAULT_DIMS, canonical_model_type
    from lab.workloads.models import PRESETS

    where = f"models entry {entry!r}"
    if isinstance(entry, str):
        entry = {"synthetic": entry.split(":", 1)[1]} if entry.startswith("synthetic:") else {"preset": entry}
    if not isinstance(entry, dict):
        _fail(source, f"{where} must be a preset name, 'synthetic:FAMILY' or a mapping")
    if ("preset" in entry) == ("synthetic" in entry):
        _fail(source, f"{where} must have exactly one of 'preset' or 'synthetic'")
    kind = "preset" if "preset" in entry else "synthetic"
    allowed = PRESET_KEYS if kind == "preset" else SYNTHETIC_KEYS
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        _fail(source, f"{where}: unknown key(s) {unknown}; accepted: {list(allowed)}")
    num_layers = entry.get("num_layers")
    try:
        if num_layers is not None:
            num_layers = check_int("num_layers", num_layers)
        if kind == "preset":
            if entry["preset"] not in PRESETS.names():
                raise ValueError(f"preset must be one of {PRESETS.names()}, got {entry['preset']!r}")
            name = entry["preset"]
            options = entry.get("overrides") or {}
            label = entry.get("label") or (f"{name}-{num_layers}L" if num_layers else name)
            reuse = 0.3
        else:
            name = canonical_model_type(entry["synthetic"])
            options = entry.get("dims") or {}
            unknown_dims = sorted(set(options) - set(DEFAULT_DIMS[name]))
            if unknown_dims:
                raise ValueError(f"dims {unknown_dims} are not dimensions of {name}; accepted: "
                                 f"{sorted(DEFAULT_DIMS[name])}")
            reuse = check_number("reuse_probability", entry.get("reuse_probability", 0.3), 0, 1)
            num_layers = num_layers or 12
            label = entry.get("label") or f"synthetic-{name}-{num_layers}L"
        if not isinstance(options, dict):
            raise ValueError(f"{'overrides' if kind == 'preset' else 'dims'} must be a mapping of names to values")
    except (ValueError, TypeError) as error:
        _fail(source, f"{where}: {error}")
    if not isinstance(label, str) or not _LABEL.match(label):
        _fail(source, f"{where}: label must be letters, digits and . _ : + - (a path segment), got {label!r}")
    return Model(label, kind, name, num_layers, float(reuse), tuple(sorted(options.items())))


BYTES_PER_CAPACITY = 200  # a capacity of the grid while it is expanded: the float, its list slot, its cells' pairs
BYTES_PER_CELL = 400  # a cell of the grid in memory: its (policy, capacity) pair in a task, its id and result row


def _capacities(source: str, value, max_cells: int = DEFAULT_MAX_CELLS, force: bool = False) -> list:
    if isinstance(value, dict):
        if set(value) != {"geomspace"}:
            _fail(source, f"capacities_mb must be a list of MB or {{geomspace: [LOW_MB, HIGH_MB, POINTS]}}, "
                          f"got keys {sorted(value)}")
        spec = value["geomspace"]
        if not (isinstance(spec, list) and len(spec) == 3):
            _fail(source, "capacities_mb: geomspace must be [LOW_MB, HIGH_MB, POINTS]")
        try:
            low, high = (check_positive_mb("capacities_mb", v) for v in spec[:2])
            points = check_int("capacities_mb points", spec[2])
        except ValueError as error:
            _fail(source, str(error))
        if high < low:
            _fail(source, f"capacities_mb: geomspace's HIGH_MB ({high}) is below LOW_MB ({low})")
        if points > max_cells and not force:  # before a single capacity is made: the grid has at least this many
            _fail(source, f"capacities_mb: geomspace of {points:,} points alone is more than max_cells={max_cells:,} "
                          "cells; use fewer points, or raise max_cells (or pass --force, force=True)")
        try:
            check_memory(f"capacities_mb: geomspace of {points:,} points", points * BYTES_PER_CAPACITY,
                         "use fewer points")
        except ValueError as error:
            _fail(source, str(error))
        value = [float(f"{c:.6g}") for c in np.geomspace(low, high, points)]
        repeated = sorted({c for c, n in zip(*np.unique(value, return_counts=True)) if n > 1})
        if repeated:
            _fail(source, f"capacities_mb: geomspace {spec} gives capacities that coincide once rounded to 6 "
                          f"significant digits ({repeated[0]:g} MB {value.count(repeated[0])} times): use fewer "
                          "points or a wider range")
    out = []
    for c in value:
        try:
            out.append(check_positive_mb("capacities_mb", c))
        except ValueError as error:
            _fail(source, str(error))
    return _unique(source, "capacities_mb", out)


def parse_study(raw, source: str = "study", force: bool = False) -> StudySpec:
    """A ``StudySpec`` from a mapping (a study file's content); ``source`` names it in errors.

    Raises StudyError (a ValueError) naming the key for: an unknown key, an
    empty or missing axis, a value an axis does not accept (unknown preset,
    family, policy, buffer, phase, weight dtype; a capacity that is not a
    positive number of MB; a duplicate), and a grid of more than ``max_cells``
    cells unless ``force``.
    """
    from lab.sim.cost import resolve_cost
    from lab.sim.policy import get_policy
    from lab.sim.simulate import BUFFERS
    from lab.workloads.models import DTYPES, WEIGHT_DTYPES

    check_bool("force", force)
    if not isinstance(raw, dict):
        _fail(source, f"a study must be a mapping of keys to values, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(AXES) - set(SETTINGS))
    if unknown:
        _fail(source, f"unknown key(s) {unknown}; accepted: {sorted(AXES + SETTINGS)}")
    axes = {key: _axis(source, raw, key) for key in AXES}
    models = [_model(source, m) for m in axes["models"]]
    labels = [m.label for m in models]
    _unique(source, "models (labels)", labels)
    ints = {}
    for key in ("batch_sizes", "seq_lengths"):
        try:
            ints[key] = _unique(source, key, [check_int(key, v) for v in axes[key]])
        except ValueError as error:
            _fail(source, str(error))
    for key, accepted in (("phases", STUDY_PHASES), ("weight_dtypes", WEIGHT_DTYPES), ("buffers", BUFFERS)):
        bad = [v for v in axes[key] if v not in accepted]
        if bad:
            _fail(source, f"{key}: {bad} not accepted; accepted: {list(accepted)}")
        _unique(source, key, axes[key])
    if OPTIMUM in axes["policies"]:
        _fail(source, "policies: OPT is not a policy; the optimum's rows come with optimum: true or auto")
    try:
        policies = [get_policy(p).name for p in axes["policies"]]
    except (ValueError, TypeError) as error:
        _fail(source, f"policies: {error}")
    _unique(source, "policies", policies)
    optimum = raw.get("optimum", "auto")
    if optimum not in (True, False, "auto"):
        _fail(source, f"optimum must be true, false or auto, got {optimum!r}")
    cost = raw.get("cost")
    if cost is not None:
        if not isinstance(cost, str):
            _fail(source, f"cost must be a hardware preset name or null, got {cost!r}")
        try:
            resolve_cost(cost)
        except (ValueError, TypeError) as error:
            _fail(source, f"cost: {error}")
    dtype = raw.get("dtype", "bf16")
    if dtype not in DTYPES:
        _fail(source, f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    try:
        seed = check_int("seed", raw.get("seed", 0), 0)
        max_cells = check_int("max_cells", raw.get("max_cells", DEFAULT_MAX_CELLS))
    except ValueError as error:
        _fail(source, str(error))
    name = raw.get("name", Path(source).stem)
    if not isinstance(name, str) or not _LABEL.match(name):
        _fail(source, f"name must be letters, digits and . _ : + -, got {name!r}")
    spec = StudySpec(name=name, models=models, batch_sizes=ints["batch_sizes"], seq_lengths=ints["seq_lengths"],
                     phases=list(axes["phases"]), weight_dtypes=list(axes["weight_dtypes"]), policies=policies,
                     capacities_mb=_capacities(source, axes["capacities_mb"], max_cells, force),
                     buffers=list(axes["buffers"]),
                     optimum=optimum, cost=cost, dtype=dtype, seed=seed, max_cells=max_cells,
                     description=str(raw.get("description", "")))
    if not spec.workloads():
        _fail(source, "the grid is empty: synthetic families exist only for phase forward and weight dtype bf16 "
                      "or fp16")
    if spec.n_cells > spec.max_cells and not force:
        _fail(source, f"the grid has {spec.n_cells:,} cells, more than max_cells={spec.max_cells:,}; raise "
                      "max_cells in the study, or pass --force (force=True) to run it anyway")
    try:
        check_memory(f"the grid of {spec.n_cells:,} cells", spec.n_cells * BYTES_PER_CELL,
                     "use fewer models, policies or capacities")
    except ValueError as error:
        _fail(source, str(error))
    return spec


def load_study_spec(study, force: bool = False) -> StudySpec:
    """A validated ``StudySpec`` from a YAML file path, a mapping, or a StudySpec (checked again, as its mapping:
    a StudySpec made or changed by hand gets the checks a file gets); see ``parse_study`` for the checks. The
    study's name defaults to the file's stem."""
    if isinstance(study, StudySpec):  # made by hand, or changed since it was parsed: checked as a file would be
        return parse_study(study.to_mapping(), f"StudySpec {study.name!r}", force)
    if isinstance(study, dict):
        return parse_study(study, "study", force)
    if not isinstance(study, (str, Path)):
        raise TypeError(f"study must be a YAML file path, a mapping or a StudySpec, got {type(study).__name__}")
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml comes with lab[cluster] and lab[notebooks]
        raise ValueError("reading a study file needs pyyaml: pip install 'lab[cluster]'") from None
    path = Path(study)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"study {str(path)!r} cannot be read: {error.strerror or error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()[0]
        raise StudyError(f"{path}: not valid YAML: {first}") from None
    if raw is None:
        raise StudyError(f"{path}: empty study; it needs at least models, policies and capacities_mb")
    return parse_study(raw, str(path), force)
