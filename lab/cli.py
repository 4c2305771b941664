"""Command line: ``python -m lab {generate,simulate,schedule,validate,compile,capture,study}``: generate or
read a trace, simulate a policy, rank tensors to evict, validate a trace, plan the buffer, capture real
models' traces, and run studies (parameter grids on Dask).

Each command reads a trace (``--trace FILE``) or generates one from the seed's
parameters, prints JSON on stdout, and writes a table with ``--out FILE``
(Parquet or CSV by extension). Bad flags or values print one line on stderr
and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

import lab
from lab.analysis.sweep import with_scores
from lab.analysis.validation import DEFAULT_WINDOW
from lab.sim.model import BUFFERS, check_buffer
from lab.trace.io import write_table

EXIT_USAGE = 2
DESCRIPTION = ("Generate or capture a tensor-access trace, simulate an on-chip buffer under an eviction policy, "
               "rank tensors to evict, validate a trace, or plan a buffer against the optimum. Each command "
               "prints JSON on stdout; --out FILE (.parquet or .csv) writes its table. Bad input: one line on "
               "stderr, exit code 2.")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage dump, exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):  # ids read from a file may be bytes: shown as text where they decode
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    return str(value)  # timestamps, decimals and other ids: their text


def _print_json(value) -> None:
    print(json.dumps(_json_ready(value), indent=2, allow_nan=False))


def _dim(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"value of {key} must be a number, got {value!r}") from None
    return key, int(number) if number.is_integer() and "." not in value else number


def _flag(parser, name: str, **kwargs):
    """Add ``--name`` with the underscore spelling and its dashed twin (``--num_layers`` / ``--num-layers``)."""
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*flags, dest=name, **kwargs)


def _trace_source(parser) -> None:
    group = parser.add_argument_group("trace (a file, or the generator's parameters)")
    _flag(group, "trace", metavar="FILE", help="read this trace (Parquet, CSV or oracleGeneral) instead of generating")
    _flag(group, "model_type", default="Transformer", metavar="TYPE", help=f"one of {', '.join(lab.MODEL_TYPES)}")
    _flag(group, "num_layers", type=int, default=12)
    _flag(group, "batch_size", type=int, default=32)
    _flag(group, "seq_length", type=int, default=128)
    _flag(group, "reuse_probability", type=float, default=0.3)
    _flag(group, "seed", type=int, default=0)
    _flag(group, "dim", type=_dim, action="append", default=[], metavar="KEY=VALUE",
          help="a model dimension, e.g. hidden_size=2048 (repeatable)")


def _out(parser, what: str) -> None:
    _flag(parser, "out", metavar="FILE", help=f"write {what} to FILE (.parquet or .csv)")


def _load_trace(args) -> pd.DataFrame:
    if args.trace:
        return lab.read_trace(args.trace)
    return lab.generate_trace(args.model_type, args.num_layers, args.batch_size, args.seq_length,
                              args.reuse_probability, args.seed, **dict(args.dim))


def _write(frame: pd.DataFrame, path: Optional[str], trace: bool = False) -> None:
    if path:
        (lab.write_trace if trace else write_table)(frame, path)


def _generate(args):
    trace = _load_trace(args)
    if args.out:
        _write(trace, args.out, trace=True)
        _print_json({"accesses": len(trace), "tensors": int(trace["tensor_id"].nunique()), "out": args.out})
    else:
        _print_json(trace.to_dict(orient="records"))


def _simulate(args):
    trace = with_scores(_load_trace(args), [args.policy], args.scorer)
    result = lab.simulate(trace, args.policy, args.capacity_mb, args.cost, buffer=args.buffer)
    _write(result.to_frame(), args.out)
    # the metrics first (the seed's keys lead), then what produced them and why they are degenerate, if they are
    _print_json({**result.metrics, "model": result.model.to_dict(), "note": result.note})


def _schedule(args):
    schedule = lab.predict_schedule(_load_trace(args), top=args.top, method=args.method)
    _write(schedule.scored, args.out, trace=True)
    _print_json(schedule.ranking.to_dict(orient="records"))


def _validate(args):
    reference = lab.read_trace(args.reference) if args.reference else None
    _print_json(lab.validate(_load_trace(args), reference=reference, window=args.window).to_dict())


def _compile(args):
    prediction = lab.predict_compile(_load_trace(args), args.capacity_mb, args.cost, scorer=args.scorer,
                                     buffer=args.buffer)
    _write(prediction.plan, args.out)
    _print_json(prediction.summary())


def _routing(text: str):
    if text in ("uniform", "zipf"):
        return text
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected uniform, zipf or comma-separated weights, got {text!r}") from None


def _capture(args):
    try:
        from lab.workloads.models import capture_model
    except ImportError as error:  # pragma: no cover - the capture extras are part of the test install
        raise ValueError(f"capture needs torch and transformers (pip install 'lab[capture]'): {error}") from None
    trace = capture_model(args.model, args.batch_size, args.seq_length, dtype=args.dtype, training=args.training,
                          weight_dtype=args.weight_dtype, routing=args.routing, routing_skew=args.routing_skew,
                          seed=args.seed, cache=not args.no_cache, **dict(args.set))
    _write(trace, args.out, trace=True)
    unique = trace.drop_duplicates("tensor_id")
    _print_json({
        "model": args.model, "accesses": len(trace), "tensors": len(unique),
        "unique_mb_by_kind": unique.groupby("kind")["size_mb"].sum().to_dict(),
        "traffic_mb_by_phase": trace.groupby("phase")["size_mb"].sum().to_dict(),
        "out": args.out,
    })


def _study(args):
    import contextlib

    from lab.study import run_study

    with contextlib.redirect_stdout(sys.stderr):  # the plan, dashboard and summary lines; stdout is JSON
        summary = run_study(args.study, args.out or str(Path("results") / Path(args.study).stem),
                            workers=args.workers, scheduler=args.scheduler, serial=args.serial, force=args.force,
                            progress=not args.no_progress)
    _print_json(summary.to_dict())
    return EXIT_FAILED_CELLS if summary.failed else 0


EXIT_FAILED_CELLS = 1  # a study ran, but some of its cells failed (recorded in OUT/failed/)


def _buffer(text: str) -> str:
    try:
        return check_buffer(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _capacity_and_cost(parser) -> None:
    """The buffer's flags, shared by the commands that simulate: capacity, cost preset, buffer model, scorer."""
    _flag(parser, "capacity_mb", type=float, default=64.0, help="on-chip buffer size in MB (MiB)")
    _flag(parser, "cost", default=None, metavar="PRESET",
          help=f"hardware preset: {', '.join(p.name for p in lab.HARDWARE_PRESETS.values())}")
    models = "; ".join(f"{name}: {what}" for name, what in BUFFERS.items())
    gpus = ", ".join(p.name for p in lab.HARDWARE_PRESETS.values() if p.buffer == "cache")
    _flag(parser, "buffer", type=_buffer, default=None, metavar="{" + ",".join(BUFFERS) + "}",
          help=f"buffer model ({models}); default: the preset's, cache for {gpus}, else scratchpad")
    _flag(parser, "scorer", default="heuristic", help="scorer for the ML policy when the trace has no scores")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m lab`` argument parser."""
    parser = _Parser(prog="python -m lab", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="generate a synthetic trace (Transformer, CNN, MLP or MoE)")
    _trace_source(generate)
    _out(generate, "the trace")
    generate.set_defaults(run=_generate)

    simulate = commands.add_parser("simulate", help="simulate one policy, print the metrics")
    _trace_source(simulate)
    _flag(simulate, "policy", default="LRU", help=f"one of {', '.join(lab.policy_names())} (case-insensitive)")
    _capacity_and_cost(simulate)
    _out(simulate, "the per-access results")
    simulate.set_defaults(run=_simulate)

    schedule = commands.add_parser("schedule", help="score the trace, rank tensors to evict")
    _trace_source(schedule)
    _flag(schedule, "top", type=int, default=20, help="how many tensors to rank")
    _flag(schedule, "method", default="heuristic", help="scoring method")
    _out(schedule, "the scored trace")
    schedule.set_defaults(run=_schedule)

    validate = commands.add_parser("validate", help="statistical validation of the trace")
    _trace_source(validate)
    _flag(validate, "reference", metavar="FILE", help="reference trace to compare with")
    _flag(validate, "window", type=int, default=DEFAULT_WINDOW, help="temporal-locality window, in accesses")
    validate.set_defaults(run=_validate)

    compile_ = commands.add_parser("compile", help="optimal plan and recommended buffer size")
    _trace_source(compile_)
    _capacity_and_cost(compile_)
    _out(compile_, "the per-access residency plan")
    compile_.set_defaults(run=_compile)

    capture = commands.add_parser("capture", help="capture a real model's trace (forward or training step)")
    _flag(capture, "model", required=True, help="preset: gpt2, bert-base, llama-2-7b, llama-2-70b, mixtral-8x7b, "
                                                "vit-base, resnet-50, mlp")
    _flag(capture, "batch_size", type=int, default=1)
    _flag(capture, "seq_length", type=int, default=512)
    _flag(capture, "dtype", default="bf16", help="bf16, fp16 or fp32")
    _flag(capture, "weight_dtype", default=None, help="bf16, fp16, fp32, int8 or nf4 (default: --dtype)")
    _flag(capture, "training", action="store_true", help="forward, backward and an AdamW step")
    _flag(capture, "routing", type=_routing, default="uniform", help="MoE routing: uniform, zipf or w1,w2,...")
    _flag(capture, "routing_skew", type=float, default=1.0)
    _flag(capture, "seed", type=int, default=0)
    _flag(capture, "no_cache", action="store_true", help="capture again even if an identical capture is cached")
    _flag(capture, "set", type=_dim, action="append", default=[], metavar="KEY=VALUE",
          help="override a config field, e.g. num_hidden_layers=2 (repeatable)")
    _out(capture, "the trace")
    capture.set_defaults(run=_capture)

    study = commands.add_parser("study", help="run a study's parameter grid on Dask into a Parquet dataset")
    study.add_argument("study", metavar="STUDY.yaml", help="the study (see params/studies/)")
    _flag(study, "out", metavar="DIR", help="results folder (default: results/<study file stem>); a rerun skips "
                                            "the cells already there")
    _flag(study, "workers", type=int, default=None, metavar="N",
          help="worker processes of the LocalCluster (default: one per core)")
    _flag(study, "scheduler", default=None, metavar="ADDRESS",
          help="run on this running Dask cluster, e.g. tcp://HOST:8786 (default: $DASK_SCHEDULER_ADDRESS, "
               "else a LocalCluster)")
    _flag(study, "serial", action="store_true", help="run in this process, without Dask")
    _flag(study, "force", action="store_true", help="run a grid larger than the study's max_cells")
    _flag(study, "no_progress", action="store_true", help="no progress bar")
    study.set_defaults(run=_study)
    return parser


def _check_out_is_not_an_input(args) -> None:
    """ValueError when ``--out`` names a file the command reads (``--trace``, ``--reference``): the results
    would replace the input."""
    out = getattr(args, "out", None)
    if not out:
        return
    for flag in ("trace", "reference"):
        source = getattr(args, flag, None)
        if source and Path(source).resolve() == Path(out).resolve():
            raise ValueError(f"--out {out} is the --{flag} file: the results would overwrite the input; "
                             "write them to another path")


def _one_line_warning(command: str):
    """A ``warnings.showwarning`` that prints one line, as the CLI's errors (no source line, no file name)."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"python -m lab {command}: warning: {message}", file=file or sys.stderr)

    return show


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (0; 1 when cells of a study failed; 2 on bad input; 130 when
    interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_out_is_not_an_input(args)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            code = args.run(args) or 0
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (``... | head``): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"python -m lab {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OverflowError, OSError) as error:
        print(f"python -m lab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return code
