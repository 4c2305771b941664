"""Command line: ``python -m lab {generate,simulate,optimal,schedule,validate,compile,capture,study,report,app}``:
generate or read a trace, simulate a policy, bound the least DRAM traffic (the optimum), rank tensors to evict,
validate a trace, plan the buffer, capture real models' traces, run studies (parameter grids on Dask), run
parameterized reports (``lab.ui.report``) and serve the explorer's web app (``lab.ui.app``).

Each command reads a trace (``--trace FILE``) or generates one from the seed's
parameters, prints a short summary on stdout (the answer with its units and
the model that produced it; ``--json``: the full record as JSON instead), and
writes a table with ``--out FILE`` (Parquet or CSV by extension). ``--help``
shows each option's default and unit. Bad flags or values print one line on
stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

import lab
from lab.analysis.compile_prediction import no_buffer_traffic_mb
from lab.analysis.contenders import TIE_PCT, above_optimum_pct, best_online_policy, online_policies
from lab.analysis.sweep import with_scores
from lab.analysis.validation import DEFAULT_WINDOW
from lab.bounds.optimal import DEFAULT_TIME_LIMIT_S, METHODS, SOLVERS, check_gap_pct, check_time_limit_s
from lab.learn.scoring import SCORE_DECIMALS
from lab.sim.cost import resolve_cost
from lab.sim.model import BUFFERS, check_buffer
from lab.trace.io import write_table
from lab.trace.schema import column_or
from lab.units import METRIC_UNITS

EXIT_USAGE = 2
DESCRIPTION = ("Generate or capture a tensor-access trace, simulate an on-chip buffer under an eviction policy, "
               "find the least DRAM traffic any policy can reach (the optimum), rank tensors to evict, validate "
               "a trace, plan a buffer against the optimum, run reports or serve the explorer. Each command prints a short summary (the answer "
               "with its units and the model that produced it); --json prints the full record as JSON instead, "
               "and --out FILE (.parquet or .csv) writes its table. MB means MiB. Bad input: one line on "
               "stderr, exit code 2.")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage dump, exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option's text with its default (``(default: 64.0)``) where it has one to show: not
    for flags (off unless given), options without a default, or texts that already say theirs."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None or default is False
                or default == [] or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


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


def _say(*lines: str) -> None:
    """Print the summary's lines (those that are not empty)."""
    for line in lines:
        if line:
            print(line)


def _mb(value: float) -> str:
    """MB (MiB) for a summary: thousands separated, one decimal from 10 MB, three significant digits below."""
    value = float(value)
    return f"{value:,.1f} MB" if abs(value) >= 10 or value == 0 else f"{value:.3g} MB"


def _ms(value: float) -> str:
    """Milliseconds for a summary."""
    value = float(value)
    return f"{value:,.2f} ms" if abs(value) >= 1 or value == 0 else f"{value:.3g} ms"


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.1f} %"


def _dim(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"value of {key} must be a number, got {value!r}") from None
    return key, int(number) if number.is_integer() and "." not in value else number


def _checked(check, kind=float):
    """An argparse type: ``kind(text)`` passed through ``check`` (one of lab.checks'), its ValueError as the
    option's one-line error."""
    def convert(text: str):
        try:
            return check(kind(text))
        except ValueError as error:
            message = str(error)
            if message.startswith(("could not convert", "invalid literal")):
                message = f"expected a number, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None
    return convert


def _flag(parser, name: str, **kwargs):
    """Add ``--name`` with the underscore spelling and its dashed twin (``--num_layers`` / ``--num-layers``)."""
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*flags, dest=name, **kwargs)


def _trace_source(parser) -> None:
    group = parser.add_argument_group("trace (a file, or the generator's parameters)")
    _flag(group, "trace", metavar="FILE", help="read this trace (Parquet, CSV or oracleGeneral; e.g. one written by "
                                               "capture --out) instead of generating one")
    _flag(group, "model_type", default="Transformer", metavar="TYPE",
          help=f"generated model: one of {', '.join(lab.MODEL_TYPES)}")
    _flag(group, "num_layers", metavar="N", type=int, default=12, help="generated model's layers")
    _flag(group, "batch_size", metavar="N", type=int, default=32, help="generated model's batch size (samples)")
    _flag(group, "seq_length", metavar="N", type=int, default=128, help="generated model's sequence length (tokens)")
    _flag(group, "reuse_probability", metavar="P", type=float, default=0.3,
          help="probability that an activation is read again later (0 to 1)")
    _flag(group, "seed", metavar="N", type=int, default=0, help="random seed of the generator")
    _flag(group, "dim", type=_dim, action="append", default=[], metavar="KEY=VALUE",
          help="a model dimension, e.g. hidden_size=2048 (repeatable)")


def _out(parser, what: str) -> None:
    _flag(parser, "out", metavar="FILE", help=f"write {what} to FILE (.parquet or .csv)")


def _json(parser, what: str = "the full record") -> None:
    _flag(parser, "json", action="store_true", help=f"print {what} as JSON instead of the summary")


def _load_trace(args) -> pd.DataFrame:
    if args.trace:
        return lab.read_trace(args.trace)
    return lab.generate_trace(args.model_type, args.num_layers, args.batch_size, args.seq_length,
                              args.reuse_probability, args.seed, **dict(args.dim))


def _trace_name(args) -> str:
    """The trace in a few words: its file, or the generator's model and layers."""
    return args.trace if args.trace else f"generated {args.model_type}, {args.num_layers} layers"


def _write(frame: pd.DataFrame, path: Optional[str], trace: bool = False) -> None:
    if path:
        (lab.write_trace if trace else write_table)(frame, path)


def _persist_line(workload) -> str:
    """One sentence on a trace's persist marks (a capture's): rows, not accesses, so that the row count and the
    access count reconcile; "" without them."""
    marks = workload.n_persist
    if not marks:
        return ""
    return (f"persist marks: {marks:,} of the trace's {workload.n_accesses:,} rows say that a result must be in DRAM "
            f"after the step; they move no data themselves and are not counted as accesses "
            f"({workload.n_accesses - marks:,} accesses).")


def _generate(args):
    trace = _load_trace(args)
    if args.out:
        _write(trace, args.out, trace=True)
    if args.json:
        if args.out:
            _print_json({"accesses": len(trace), "tensors": int(trace["tensor_id"].nunique()), "out": args.out})
        else:
            _print_json(trace.to_dict(orient="records"))
        return
    facts = lab.summarize(trace)
    _say(f"{_trace_name(args)}: {facts['accesses']:,} accesses of {facts['tensors']:,} tensors, working set "
         f"{_mb(facts['working_set_mb'])}, {_mb(facts['traffic_mb'])} accessed in all (largest tensor "
         f"{_mb(facts['largest_tensor_mb'])}; {facts['reuse_share_pct']:.1f} % of accesses are reuses)",
         f"written to {args.out}" if args.out else "not written: --out FILE writes it, --json prints its rows")


def _refuse_optimum_as_policy(policy: str) -> None:
    """The optimum is no policy that simulates (it reads the whole trace and solves for the best schedule): a
    ValueError that points to the verb that computes it."""
    from lab.bounds.optimal import OPTIMUM_ROWS

    if str(policy).strip().upper() in {"OPTIMAL", "OPTIMUM", *(r.upper() for r in OPTIMUM_ROWS)}:
        raise ValueError(f"{policy} is the optimum, not a policy that simulates: run `python -m lab optimal` with "
                         "the same trace and --capacity_mb (the least DRAM traffic, exact or bracketed)")


def _simulate(args):
    _refuse_optimum_as_policy(args.policy)
    trace = with_scores(_load_trace(args), [args.policy], args.scorer)
    result = lab.simulate(trace, args.policy, args.capacity_mb, args.cost, buffer=args.buffer)
    _write(result.to_frame(), args.out)
    if args.json:
        # the metrics first (the seed's keys lead), then what produced them, why they are degenerate, the units
        _print_json({**result.metrics, "model": result.model.to_dict(), "note": result.note,
                     "units": {k: METRIC_UNITS[k] for k in result.metrics if k in METRIC_UNITS}})
        return
    m = result.metrics
    _say(f"{result.policy} at {args.capacity_mb:g} MB: DRAM traffic {_mb(m['dram_traffic_mb'])} (read "
         f"{_mb(m['dram_reads_mb'])} + written {_mb(m['dram_writes_mb'])}), byte hit rate {_pct(m['byte_hit_rate'])}",
         f"{m['cache_hits']:,} hits of {m['accesses']:,} accesses ({_pct(m['cache_hit_rate'])}), {m['evictions']:,} "
         f"evictions, {m['writebacks']:,} writebacks; latency {_ms(m['total_latency'])}, of which "
         f"{_ms(m['bandwidth_wait_time'])} waiting on DRAM bandwidth",
         f"model: {result.model.describe()}",
         _persist_line(result.workload),
         f"note: {result.note}" if result.note else "",
         f"per-access results written to {args.out}" if args.out else "")


def _optimal(args):
    from lab.bounds.optimal import MODEL

    if args.buffer == "cache":
        raise ValueError("the optimum is a schedule of the scratchpad (a software-managed buffer of whole tensors), "
                         "not of a hardware cache's lines: leave --buffer out or give --buffer scratchpad")
    result = lab.optimal(_load_trace(args), args.capacity_mb, args.cost, method=args.method, solver=args.solver,
                         time_limit_s=args.time_limit_s, gap_pct=args.gap_pct)
    _write(result.plan, args.out)
    cost = resolve_cost(args.cost)
    if args.json:
        _print_json({
            "capacity_mb": result.capacity_mb, "exact": result.exact, "exact_mb": result.exact_mb,
            "lower_mb": result.lower_mb, "upper_mb": result.upper_mb, "gap_pct": result.gap_pct,
            "upper_read_mb": result.upper_read_mb, "upper_write_mb": result.upper_write_mb,
            "upper_source": result.upper_source, "byte_granular_mb": result.byte_granular_mb,
            "byte_granular_read_mb": result.byte_granular_read_mb,
            "byte_granular_write_mb": result.byte_granular_write_mb, "status": result.status,
            "method": result.method, "solve_s": result.solve_s, "metrics": result.metrics,
            "model": {"buffer": "scratchpad", "description": result.model, "cost": cost.name,
                      "capacity_mb": result.capacity_mb},
            "units": {"capacity_mb": "MB", "exact_mb": "MB", "lower_mb": "MB", "upper_mb": "MB", "gap_pct": "%",
                      "upper_read_mb": "MB", "upper_write_mb": "MB", "byte_granular_mb": "MB",
                      "byte_granular_read_mb": "MB", "byte_granular_write_mb": "MB", "solve_s": "s",
                      "metrics": {k: METRIC_UNITS[k] for k in result.metrics if k in METRIC_UNITS}},
        })
        return
    at = f"at {result.capacity_mb:g} MB"
    if result.exact:
        answer = (f"optimum {at}: {_mb(result.exact_mb)} of DRAM traffic, exact (read {_mb(result.upper_read_mb)} "
                  f"+ written {_mb(result.upper_write_mb)})")
    else:
        answer = (f"optimum {at}: between {_mb(result.lower_mb)} and {_mb(result.upper_mb)} of DRAM traffic, a "
                  f"bracket {result.gap_pct:.2f} % wide: no schedule moves less than {_mb(result.lower_mb)}, and "
                  f"one that moves {_mb(result.upper_mb)} exists ({result.upper_source})")
    preset = cost.buffer == "cache"
    _say(answer,
         f"byte-granular bound {_mb(result.byte_granular_mb)} (tensors may be kept in part, as tiled kernels can)",
         f"status: {result.status}; {result.solve_s:.1f} s",
         f"model: {MODEL}; {result.capacity_mb:g} MB, {cost.name} cost model (latency of the schedule "
         f"{_ms(result.metrics['total_latency'])})"
         + (f"; {cost.name}'s own buffer is a hardware cache, which this does not model" if preset else ""),
         f"per-interval plan written to {args.out}" if args.out else "")


def _schedule(args):
    schedule = lab.predict_schedule(_load_trace(args), top=args.top, scorer=args.scorer)
    _write(schedule.scored, args.out, trace=True)
    if args.json:
        _print_json(schedule.ranking.to_dict(orient="records"))
        return
    ranking = schedule.ranking
    shown = ranking.assign(tensor_id=ranking["tensor_id"].astype(str), size_mb=ranking["size_mb"].map("{:.4g}".format),
                           eviction_score=ranking["eviction_score"].map(f"{{:.{SCORE_DECIMALS}f}}".format))
    columns = [c for c in ("rank", "tensor_id", "size_mb", "op", "accesses", "eviction_score") if c in shown]
    table = shown[columns].rename(columns={"tensor_id": "tensor", "size_mb": "size (MB)",
                                           "eviction_score": "score (1: evict first)"})
    print(f"tensors to evict first ({args.scorer} scores of their latest access; {_trace_name(args)}):")
    print(table.to_string(index=False))
    ties = [g for g in schedule.groups.itertuples() if g.tensors > 1 and g.first_rank <= len(ranking)]
    for group in ties:
        print(f"ranks {group.first_rank}-{group.last_rank}: {group.tensors} tensors tie at score "
              f"{group.eviction_score:.{SCORE_DECIMALS}f} ({_mb(group.size_mb)} in all); within a tie the order is by "
              "size, larger first, not by the score")
    if args.out:
        print(f"scored trace written to {args.out}")


def _validate(args):
    reference = lab.read_trace(args.reference) if args.reference else None
    report = lab.validate(_load_trace(args), reference=reference, window=args.window)
    if args.json:
        _print_json(report.to_dict())
        return
    print(f"validation of {_trace_name(args)}" + (f" against {args.reference}" if args.reference else "") + ":")
    for stat in report.statistics():
        value = "n/a" if not math.isfinite(stat.value) else f"{stat.value:.4g}"
        p = f", p = {stat.p_value:.3g}" if stat.p_value is not None and math.isfinite(stat.p_value) else ""
        print(f"  {stat.name}: {value} {stat.unit}{p}: {stat.interpretation}")


def _compile(args):
    prediction = lab.predict_compile(_load_trace(args), args.capacity_mb, args.cost, scorer=args.scorer,
                                     buffer=args.buffer)
    _write(prediction.plan, args.out)
    if args.json:  # the summary, and the unit of each metric of its policies' rows
        _print_json({**prediction.summary(), "units": dict(METRIC_UNITS)})
        return
    table = prediction.comparison
    at = f"at {prediction.capacity_mb:g} MB"
    best = prediction.optimum
    if best is None:
        answer = f"plan {at}: {prediction.planner}"
    elif best.exact:
        answer = f"plan {at}: the optimum moves {_mb(best.exact_mb)} of DRAM traffic ({best.status})"
    else:
        answer = (f"plan {at}: the optimum moves between {_mb(best.lower_mb)} and {_mb(best.upper_mb)} of DRAM "
                  f"traffic ({best.status})")
    lower = best.lower_mb if best is not None else None

    def traffic(policy: str) -> str:
        value = float(table.loc[policy, "dram_traffic_mb"])
        above = f" (+{above_optimum_pct(value, lower):.1f} %)" if lower else ""
        return f"{policy} {_mb(value)}{above}"

    tied = best_online_policy(table) if not online_policies(table).empty else []
    leaders = (f"best online policy {traffic(tied[0])}" if len(tied) == 1 else
               f"best online policies, tied within {TIE_PCT:g} % of DRAM traffic: "
               + ", ".join(traffic(p) for p in tied[:4]) + (f" and {len(tied) - 4} more" if len(tied) > 4 else ""))
    others = [traffic(p) for p in ("LRU", "Belady") if p in table.index and p not in tied[:4]]
    recommended = prediction.recommended_capacity_mb
    sizes = ", ".join(f"{int(q * 100)} % at {_mb(v)}" for q, v in recommended.items() if v is not None)
    model = prediction.model
    _say(answer,
         f"policies (DRAM traffic, % above the optimum{'' if best is None or best.exact else chr(39) + 's lower end'}): "
         + "; ".join([leaders, *others])
         if tied else "",
         f"no buffer: {_mb(prediction.traffic_mb['no_buffer'])} of DRAM traffic; the whole working set "
         f"({_mb(prediction.working_set_mb)}) on chip: {_mb(prediction.traffic_mb['whole_working_set'])}",
         f"recommended capacity (the least at which the optimum saves that share of what the whole working set "
         f"saves): {sizes}" if sizes else "recommended capacity: none (no buffer saves any traffic)",
         f"model: policies in the {model.describe()}; the plan and the optimum: whole-tensor schedules of the "
         "scratchpad" if model is not None else "",
         *(f"skipped {policy}: {why}" for policy, why in prediction.skipped.items()),
         f"{len(table)} rows in the comparison: --json prints them all"
         + (f"; plan written to {args.out}" if args.out else ""))


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
    record = capture_record(trace)
    if args.json:
        _print_json({"model": args.model, **record, "out": args.out})
        return
    step = "training step" if args.training else "forward pass"
    kinds = ", ".join(f"{kind} {_mb(mb)}" for kind, mb in record["unique_mb_by_kind"].items())
    phases = ", ".join(f"{phase} {_mb(mb)}" for phase, mb in record["accessed_mb_by_phase"].items())
    dead = record["accessed_mb"] - record["no_buffer_traffic_mb"]
    _say(f"{args.model}, {step}, batch {args.batch_size}, sequence {args.seq_length}: {record['accesses']:,} accesses "
         f"of {record['tensors']:,} tensors"
         + (f", and {record['persist_marks']:,} persist marks ({record['rows']:,} rows)" if record["persist_marks"]
            else ""),
         f"tensors: {kinds}",
         f"accessed: read {_mb(record['read_mb'])} + written {_mb(record['written_mb'])} = "
         f"{_mb(record['accessed_mb'])} ({phases})",
         f"DRAM traffic with no buffer: {_mb(record['no_buffer_traffic_mb'])} (what simulate and compile count): "
         f"every read, and every write whose data is needed again (read later or persisted); "
         f"{_mb(dead)} written and never used again is dropped"
         + (f"; the persist marks ({_mb(record['persist_mb'])} of persisted tensors) move no data themselves: "
            "their tensors' writes are the traffic" if record["persist_marks"] else ""),
         f"written to {args.out}" if args.out else "not written: --out FILE writes the trace")


def capture_record(trace: pd.DataFrame) -> dict:
    """What ``capture`` reports of a captured trace, every count reconciled with ``simulate``'s and ``compile``'s:
    ``rows`` = ``accesses`` (reads and writes, what simulate counts) + ``persist_marks`` (rows that mark results
    the step must leave in DRAM; they move no data themselves), ``tensors``, ``unique_mb_by_kind`` (distinct
    tensors' MB per kind), ``read_mb`` and ``written_mb`` (the accesses' bytes, MB), ``accessed_mb`` (the two
    together) and ``accessed_mb_by_phase``, ``persist_mb`` (the persisted tensors' MB, not traffic of the marks),
    and ``no_buffer_traffic_mb``: DRAM traffic with no buffer (compile's ``no_buffer``): ``accessed_mb`` less
    the writes whose data is never used again."""
    marks = column_or(trace, "access", "read", object) == "persist"
    writes = column_or(trace, "access", "read", object) == "write"
    accesses = trace[~marks]
    unique = trace.drop_duplicates("tensor_id")
    return {
        "rows": len(trace), "accesses": int((~marks).sum()), "persist_marks": int(marks.sum()),
        "tensors": len(unique),
        "unique_mb_by_kind": unique.groupby("kind")["size_mb"].sum().to_dict() if "kind" in unique else {},
        "read_mb": float(trace.loc[~marks & ~writes, "size_mb"].sum()),
        "written_mb": float(trace.loc[writes, "size_mb"].sum()),
        "accessed_mb": float(accesses["size_mb"].sum()),
        "accessed_mb_by_phase": (accesses.groupby("phase", sort=False)["size_mb"].sum().to_dict()
                                 if "phase" in accesses else {}),
        "persist_mb": float(trace.loc[marks, "size_mb"].sum()),
        "no_buffer_traffic_mb": no_buffer_traffic_mb(trace),
    }


def _study(args):
    import contextlib

    from lab.study import run_study

    with contextlib.redirect_stdout(sys.stderr):  # the plan, dashboard and progress lines; stdout is the answer
        summary = run_study(args.study, args.out or str(Path("results") / Path(args.study).stem),
                            workers=args.workers, scheduler=args.scheduler, serial=args.serial, force=args.force,
                            progress=not args.no_progress)
    if args.json:
        _print_json(summary.to_dict())
    else:
        _say(str(summary), *(f"  failed: {line}" for line in summary.errors))
    return EXIT_FAILED_CELLS if summary.failed else 0


EXIT_FAILED_CELLS = 1  # a study ran, but some of its cells failed (recorded in OUT/failed/)
EXIT_REPORT_FAILED = 1  # a report's notebook failed (its folder is not written)


def _report(args):
    import logging

    from papermill.exceptions import PapermillException

    from lab.ui.report import ReportError, run_reports

    # Errors reach the user as our one line; the libraries' own logs of them would come first (nbclient's "Kernel
    # died while waiting for execute reply." on a Ctrl-C, through traitlets) or last (asyncio's "Task exception
    # was never retrieved" as the process ends)
    for name in ("traitlets", "asyncio", "papermill", "nbclient"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run_reports(args.notebook, args.params, args.out)
    except (ReportError, PapermillException) as error:
        print(f"python -m lab report: {error}", file=sys.stderr)
        return EXIT_REPORT_FAILED
    return 0


def _app(args):
    from lab.checks import first_line
    from lab.ui.app import voila_command

    try:
        command = voila_command(args.port, cull_idle_timeout_s=args.cull_idle_timeout)
    except ValueError as error:
        raise ValueError(first_line(error)) from None
    print(f"serving the explorer on http://127.0.0.1:{args.port}/ (Ctrl-C stops; idle kernels of closed pages "
          f"shut down after {args.cull_idle_timeout} s)", flush=True)
    os.execv(sys.executable, command)


def _buffer(text: str) -> str:
    try:
        return check_buffer(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _capacity_and_cost(parser, scorer: bool = True, buffer_help: Optional[str] = None) -> None:
    """The buffer's flags, shared by the commands that simulate: capacity, cost preset, buffer model, scorer."""
    _flag(parser, "capacity_mb", type=float, default=64.0, metavar="MB", help="on-chip buffer size in MB (MiB)")
    _flag(parser, "cost", default=None, metavar="PRESET",
          help=f"hardware preset, for its latency and bandwidth: {', '.join(p.name for p in lab.HARDWARE_PRESETS.values())} "
               "(default: seed)")
    models = "; ".join(f"{name}: {what}" for name, what in BUFFERS.items())
    gpus = ", ".join(p.name for p in lab.HARDWARE_PRESETS.values() if p.buffer == "cache")
    _flag(parser, "buffer", type=_buffer, default=None, metavar="{" + ",".join(BUFFERS) + "}",
          help=buffer_help or f"buffer model ({models}); default: the preset's, cache for {gpus}, else scratchpad")
    if scorer:
        _flag(parser, "scorer", default="heuristic", metavar="NAME",
              help=f"scorer of the ML policy when the trace has no scores: one of {', '.join(lab.scorer_names())}")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m lab`` argument parser."""
    parser = _Parser(prog="python -m lab", description=DESCRIPTION, formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str):
        return commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                                   formatter_class=_HelpFormatter)

    generate = command("generate", "generate a synthetic trace (Transformer, CNN, MLP or MoE)")
    _trace_source(generate)
    _out(generate, "the trace")
    _json(generate, "the trace's rows (with --out: its size and file)")
    generate.set_defaults(run=_generate)

    simulate = command("simulate", "simulate one policy, print its DRAM traffic, hit rates and latency")
    _trace_source(simulate)
    _flag(simulate, "policy", default="LRU", metavar="NAME",
          help=f"eviction policy, one of {', '.join(lab.policy_names())} (case-insensitive; the optimum: the "
               "optimal command)")
    _capacity_and_cost(simulate)
    _out(simulate, "the per-access results")
    _json(simulate, "every metric, the model and the units")
    simulate.set_defaults(run=_simulate)

    optimal = command("optimal", "the least DRAM traffic any policy can reach (lab.optimal): exact, or a bracket")
    _trace_source(optimal)
    _capacity_and_cost(optimal, scorer=False, buffer_help="buffer model: only scratchpad (whole tensors, software-"
                                                          "managed) has an optimum; default: scratchpad")
    _flag(optimal, "method", choices=METHODS, default="milp",
          help="milp: the integer program, proven optimal within the time limit, else a bracket; flow: no integer "
               "program, the byte-granular bound and the best schedule found (fast, wider)")
    _flag(optimal, "solver", choices=SOLVERS, default="highs", help="the min-cost flow's solver")
    _flag(optimal, "time_limit_s", type=_checked(check_time_limit_s), default=DEFAULT_TIME_LIMIT_S,
          metavar="S", help="seconds after which the integer program stops with its bracket")
    _flag(optimal, "gap_pct", type=_checked(check_gap_pct), default=0.0, metavar="PCT",
          help="stop once the bracket is at most this %% of the traffic wide (0: proven optimality)")
    _out(optimal, "the per-interval plan (kept or not, kept fraction in the byte-granular flow)")
    _json(optimal)
    optimal.set_defaults(run=_optimal)

    schedule = command("schedule", "score the trace, rank tensors to evict first")
    _trace_source(schedule)
    _flag(schedule, "top", type=int, default=20, metavar="N", help="how many tensors to rank")
    _flag(schedule, "scorer", default="heuristic", metavar="NAME",
          help=f"scorer: one of {', '.join(lab.scorer_names())}")
    _out(schedule, "the scored trace")
    _json(schedule, "the ranking's rows")
    schedule.set_defaults(run=_schedule)

    validate = command("validate", "statistical validation of the trace")
    _trace_source(validate)
    _flag(validate, "reference", metavar="FILE", help="reference trace to compare with")
    _flag(validate, "window", type=int, default=DEFAULT_WINDOW, metavar="N",
          help="temporal-locality window, in accesses")
    _json(validate, "every statistic")
    validate.set_defaults(run=_validate)

    compile_ = command("compile", "plan the buffer: the optimum's schedule, the policies against it, and the "
                                  "recommended buffer size")
    _trace_source(compile_)
    _capacity_and_cost(compile_)
    _out(compile_, "the per-access residency plan")
    _json(compile_, "the full comparison, every policy's metrics")
    compile_.set_defaults(run=_compile)

    capture = command("capture", "capture a real model's trace (forward pass or training step)")
    _flag(capture, "model", required=True, metavar="PRESET",
          help="gpt2, bert-base, llama-2-7b, llama-2-70b, mixtral-8x7b, vit-base, resnet-50 or mlp")
    _flag(capture, "batch_size", metavar="N", type=int, default=1, help="batch size (samples)")
    _flag(capture, "seq_length", metavar="N", type=int, default=512, help="sequence length (tokens; vision presets: their image)")
    _flag(capture, "dtype", default="bf16", help="activations' and weights' dtype: bf16, fp16 or fp32")
    _flag(capture, "weight_dtype", default=None, help="weights' stored dtype: bf16, fp16, fp32, int8 or nf4 "
                                                      "(default: --dtype)")
    _flag(capture, "training", action="store_true", help="a training step: forward, backward and an AdamW step "
                                                         "(default: a forward pass)")
    _flag(capture, "routing", type=_routing, default="uniform", help="MoE routing: uniform, zipf or w1,w2,...")
    _flag(capture, "routing_skew", metavar="S", type=float, default=1.0, help="the zipf routing's exponent")
    _flag(capture, "seed", metavar="N", type=int, default=0, help="seed of the MoE routing")
    _flag(capture, "no_cache", action="store_true", help="capture again even if an identical capture is cached")
    _flag(capture, "set", type=_dim, action="append", default=[], metavar="KEY=VALUE",
          help="override a config field, e.g. num_hidden_layers=2 (repeatable)")
    _out(capture, "the trace")
    _json(capture, "the counts and sizes")
    capture.set_defaults(run=_capture)

    study = command("study", "run a study's parameter grid on Dask into a Parquet dataset")
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
    _json(study, "the run's record")
    study.set_defaults(run=_study)

    from lab.ui.app import CULL_IDLE_TIMEOUT_S, DEFAULT_PORT

    report = command("report", "run a notebook once per YAML parameter file (papermill), export each as HTML, "
                               "and write an index of their answers")
    report.add_argument("notebook", metavar="NOTEBOOK", help="the report notebook (see notebooks/)")
    report.add_argument("params", nargs="+", metavar="PARAMS.yaml", help="parameter files, one report each")
    _flag(report, "out", default="reports", metavar="DIR",
          help="output folder: DIR/<notebook>/<params>/ per report, DIR/index.html")
    report.set_defaults(run=_report)

    app = command("app", "serve the explorer's web app (Voila) on 127.0.0.1")
    _flag(app, "port", type=int, default=DEFAULT_PORT, metavar="N", help="TCP port")
    _flag(app, "cull_idle_timeout", type=int, default=CULL_IDLE_TIMEOUT_S, metavar="S",
          help="shut down a visitor's kernel idle S seconds after its page closed")
    app.set_defaults(run=_app)
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


INTERRUPT_GRACE_S = 20.0  # after Ctrl-C, the clean-up's time (a report's kernel, a study's cluster) before a forced exit


class _InterruptWatchdog:
    """Ctrl-C ends the command within ``grace_s`` seconds, however its clean-up goes. The first SIGINT raises
    KeyboardInterrupt in the main thread as usual (``main`` says one line and returns 130). If the process is still
    alive ``grace_s`` seconds later (a library swallowed the interrupt, or a clean-up or the interpreter's exit
    waits on a kernel, a cluster or a thread that will never answer), a thread ends it with exit code 130, saying
    the same line unless ``main`` already said it.

    The thread learns of the signal from the C-level handler's wake-up byte (``signal.set_wakeup_fd``), so it
    fires even while the main thread is blocked in C code where no Python handler can run; the Python handler
    writes the byte as well, in case a library replaced the wake-up file."""

    def __init__(self, command: str, grace_s: float = INTERRUPT_GRACE_S):
        self.command, self.grace_s = command, grace_s
        self._fired = threading.Event()
        self._returned = threading.Event()
        self._disarmed = threading.Event()
        self._armed = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers belong to the main thread: nothing to watch from elsewhere
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        threading.Thread(target=self._watch, name="lab-interrupt-watchdog", daemon=True).start()
        self._armed = True
        return self

    def _wake(self, byte: bytes) -> None:
        try:
            os.write(self._write, byte)
        except OSError:  # the pipe is full: the thread has bytes to read already
            pass

    def _on_interrupt(self, signum, frame):
        self._fired.set()
        self._wake(bytes([signal.SIGINT]))
        raise KeyboardInterrupt

    def _watch(self) -> None:
        while not self._fired.is_set():
            data = os.read(self._read, 64)
            if self._disarmed.is_set():
                os.close(self._read)
                os.close(self._write)
                return
            if signal.SIGINT in data:
                self._fired.set()
        time.sleep(self.grace_s)
        if not self._returned.is_set():
            print(f"python -m lab {self.command}: interrupted", file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)

    def __exit__(self, *exc):
        if not self._armed:
            return False
        signal.signal(signal.SIGINT, self._previous_handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._returned.set()
        if not self._fired.is_set():
            self._disarmed.set()
            self._wake(b"\0")  # the thread wakes, sees it is disarmed and returns
        # interrupted: the thread stays, in case the interpreter's exit hangs (it is a daemon: a prompt exit ends it)
        return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (0; 1 when cells of a study failed; 2 on bad input; 130 when
    interrupted). ``argv`` None: the program itself (``python -m lab``), which a Ctrl-C ends within
    ``INTERRUPT_GRACE_S`` (``_InterruptWatchdog``); a list: a call from Python (a notebook, a test), whose process
    the watchdog must not end."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _InterruptWatchdog(args.command) if argv is None else contextlib.nullcontext():
        return _run(args)


def _run(args) -> int:
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
