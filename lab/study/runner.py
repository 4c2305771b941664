"""Run a study: on Dask's distributed scheduler (a ``LocalCluster`` by default, or any running cluster), or
serially in this process; resumable, with a progress bar and a summary.

Work is split so that each trace is made once: one task per capture (or generated trace), then tasks on it
over the cells still missing: on the scratchpad one per policy over the capacities (one-pass curves for LRU
and Belady where they apply, the optimum's bracket as policy ``OPT``), under the hardware cache one per
capacity over the policies (they share its line trace), and on a cluster one per chunk of neighbouring
capacities, so that a line trace is built on few workers, not on each. On a cluster the tasks are handed to
Dask costliest first as its threads fall free (``_WorkQueue``). The client writes each finished task's rows (see
``lab.study.dataset``), so a killed worker costs only its running task (Dask runs it again) and a killed run
loses nothing written: the next run skips the finished cells.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from lab.checks import check_bool, check_int
from lab.files import file_lock
from lab.study import dataset
from lab.study.spec import StudySpec, Task, load_study_spec
from lab.study.tasks import Failed, failure_record, make_trace, run_task, task_costs

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
REFRESH_S = 0.5  # how often a run looks for finished work
TICK_S = 2.0  # the progress bar is redrawn at least this often, finished work or not
MALLOC_SETTING = "MALLOC_TRIM_THRESHOLD_"  # set by Dask's nanny; left unset in the workers of local_cluster
# Dask's settings in every process of a local cluster. Its monitoring made less frequent: measured on 2 idle
# workers, their processes used 1.4 s of CPU per 10 s with Dask's defaults (the statistical profiler samples
# every 10 ms, the event loop's health check runs every 20 ms, the GIL monitor every 1 ms), 0.24 s with these.
# On a machine with as many workers as cores that CPU is taken from the tasks.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,  # the dashboard's profile page stays empty
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.system-monitor.disk": False,
    "distributed.worker.memory.monitor-interval": "500ms",
    # a cell task is placed on the worker that holds its trace, even while another worker idles; the idle one
    # steals it at Dask's next balancing pass, every second by default: every 50 ms here (0.2 s of CPU per 10 s more)
    "distributed.scheduler.work-stealing-interval": "50ms",
}


@dataclass
class StudySummary:
    """What a run did: cells in the grid, ``done`` (computed now), ``skipped`` (already in the dataset),
    ``failed`` (recorded in ``<out>/failed/``), ``wall_s`` (seconds), where it ran and where the results are."""

    study: str
    out: str
    cells: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    wall_s: float = 0.0
    scheduler: str = "serial"
    workers: int = 1
    dashboard: Optional[str] = None
    errors: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        text = (f"study {self.study}: {self.cells} cells: {self.done} done, {self.skipped} skipped (finished "
                f"before), {self.failed} failed; {self.wall_s:.1f} s on {self.scheduler} ({self.workers} "
                f"worker{'s' if self.workers != 1 else ''}); results in {self.out}")
        if self.failed:
            text += f"; failures in {dataset.failed_dir(self.out)}"
        return text


def _plan(spec: StudySpec, out) -> tuple[list, int]:
    """[(workload, [tasks over their missing capacities])] for the workloads with missing cells, and how many
    cells are already finished."""
    done = dataset.finished_cells(out)
    plan, skipped = [], 0
    for workload in spec.workloads():
        tasks = []
        for task in spec.tasks(workload):
            missing = tuple(cell for cell in task.cells if task.cell_id(*cell) not in done)
            skipped += len(task.cells) - len(missing)
            if missing:
                tasks.append(task.with_cells(missing))
        if tasks:
            plan.append((workload, tasks))
    return plan, skipped


class _Progress:
    """A tqdm bar (a widget in Jupyter, text in a terminal) over the cells; plain lines without tqdm."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar, self.enabled, self.total, self.count, self.last = None, enabled, total, 0, 0.0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with lab[cluster]
            print(f"{desc}: {total} cells", file=sys.stderr, flush=True)
            return
        self.bar = tqdm(total=total, desc=desc, unit="cell", mininterval=REFRESH_S, smoothing=0.1)

    def update(self, n: int, status: str = "") -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
            if status:
                self.bar.set_postfix_str(status, refresh=False)
        elif self.enabled and time.monotonic() - self.last > 2:
            print(f"  {self.count}/{self.total} cells {status}", file=sys.stderr, flush=True)
            self.last = time.monotonic()

    def tick(self) -> None:
        """Redraw (the elapsed time moves even while a long task runs)."""
        if self.bar is not None and time.monotonic() - self.last > TICK_S:
            self.bar.refresh()
            self.last = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _record(out, task: Task, result, summary: StudySummary) -> int:
    """Write a finished task's rows, or its failure record; returns its number of cells."""
    n = len(task.cells)
    if isinstance(result, Failed):
        record = failure_record(task, result)
        dataset.write_json(dataset.failed_dir(out) / f"{task.key}.json", record)
        summary.failed += n
        if len(summary.errors) < 20:
            summary.errors.append(f"{task.label}: {result.error}")
    else:
        dataset.write_cells(out, task.key, result)
        summary.done += n
    return n


def _serial(plan, out, summary: StudySummary, progress: _Progress) -> None:
    """Run the plan in this process: a worker thread computes, this thread writes and redraws the bar."""
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def work():
        try:
            for workload, tasks in plan:
                if stop.is_set():
                    return
                trace = make_trace(workload)
                for task in tasks:
                    if stop.is_set():
                        return
                    results.put((task, run_task(trace, task)))
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            results.put((None, error))
        finally:
            results.put(None)

    thread = threading.Thread(target=work, name="lab-study", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = results.get(timeout=REFRESH_S)
            except queue.Empty:
                progress.tick()
                continue
            if item is None:
                break
            task, result = item
            if task is None:
                raise result
            progress.update(_record(out, task, result, summary), task.label)
    finally:
        stop.set()


def _client(scheduler: Optional[str], workers: Optional[int], verbose: bool):
    """(client, cluster or None): a client of the scheduler at ``scheduler`` (or $DASK_SCHEDULER_ADDRESS), else
    of a new LocalCluster of ``workers`` processes (default: one per core), one thread each."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("running a study on Dask needs dask and distributed: pip install 'lab[cluster]' "
                         "(or run it serially: serial=True, --serial)") from None
    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if address:
        try:
            return Client(address, timeout="20s"), None
        except (OSError, TimeoutError) as error:
            raise ValueError(f"scheduler {address!r}: cannot connect ({error})") from None
    cluster = local_cluster(workers)
    return Client(cluster), cluster


def local_cluster(workers: Optional[int] = None, **options):
    """A ``distributed.LocalCluster`` for studies: ``workers`` processes (default: one per core) of one
    thread each, the dashboard on a free port, glibc's own allocator settings in the workers and Dask's
    monitoring less frequent, its work stealing more frequent (``LOCAL_CLUSTER_CONFIG``).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it turns off glibc's adaptive
    mmap threshold, so that every array over 128 KiB is mapped fresh from the OS and its pages faulted in
    again. The simulations allocate many such arrays: measured on this project's benchmark grid, tasks took
    1.9x the CPU time of the same tasks in a plain process (see ``benchmarks/bench_study.py``). The workers
    here start without it. ``options`` go to ``LocalCluster``.
    """
    import dask
    from distributed import LocalCluster

    n = check_int("workers", workers, low=1) if workers is not None else os.cpu_count() or 1
    settings = {"n_workers": n, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0",
                "silence_logs": logging.ERROR, **options}
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{MALLOC_SETTING}": None, **LOCAL_CLUSTER_CONFIG}):
        return LocalCluster(**settings)


class _WorkQueue:
    """The cell tasks whose costs are known (``task_costs``), handed out costliest first, the hardware cache's in
    chunks of neighbouring capacities.

    Under the cache, a workload's tasks (one per capacity) share a line trace that costs about as much to
    build as the simulations at one capacity, and that a worker builds once for all the capacities it runs:
    they are queued as one run of capacities. ``pop`` hands out the costliest item (list scheduling, longest
    first: the short tasks even out the end); from a run it takes the leading capacities up to the work still
    queued divided by the threads (guided self-scheduling): a large workload is split over several workers
    while the queue is short of work for every thread, its rest handed out in smaller chunks, and a workload
    smaller than that share goes whole (its line trace built once). Measured on ``benchmarks/bench_study.py``'s
    grid on 2 workers (interleaved runs, medians): chunks of 1/threads of the work left took 4.87 s, 1/(2 x
    threads) 4.93 s (the workers busy 1.2 % longer: more line traces built twice), never splitting 4.68 s
    (the same within the machine's drift, but one large workload on many workers would then run on one). On
    the scratchpad a task (one policy over every capacity, whose one-pass curves share the work) is never
    split.
    """

    def __init__(self, threads: int):
        self.threads = threads
        self.queued = 0  # the cost of everything queued
        self._heap = []  # (-cost, order, trace, tasks, costs)
        self._order = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._heap)

    def _push(self, trace, tasks: list, costs: list) -> None:
        heapq.heappush(self._heap, (-sum(costs), next(self._order), trace, tasks, costs))

    def add(self, trace, tasks, costs) -> None:
        """Queue ``tasks`` on ``trace`` (a future or a trace) with their estimated ``costs`` (anything but one
        number per task counts as no estimate: every task is still queued)."""
        try:
            costs = [max(0, int(c)) for c in costs]
        except (TypeError, ValueError, OverflowError):
            costs = []
        if len(costs) != len(tasks):
            costs = [0] * len(tasks)
        self.queued += sum(costs)
        cache = sorted(((t, c) for t, c in zip(tasks, costs) if t.buffer == "cache"),
                       key=lambda pair: pair[0].capacities_mb)
        for task, cost in zip(tasks, costs):
            if task.buffer != "cache":
                self._push(trace, [task], [cost])
        if cache:
            self._push(trace, [t for t, _ in cache], [c for _, c in cache])

    def pop(self):
        """(trace, task, its estimated cost): the costliest item, or the leading chunk of it."""
        _, _, trace, tasks, costs = heapq.heappop(self._heap)
        share = self.queued / self.threads
        take = len(tasks)
        if len(tasks) > 1 and sum(costs) > share:
            take = min(len(tasks), 1 + int(np.searchsorted(np.cumsum(costs), share)))
            if take < len(tasks):
                self._push(trace, tasks[take:], costs[take:])
        cost = sum(costs[:take])
        self.queued -= cost
        return trace, merge_tasks(tasks[:take]), cost


def merge_tasks(tasks: list) -> Task:
    """One task over the cells of ``tasks`` (tasks on one workload and buffer model)."""
    return tasks[0] if len(tasks) == 1 else tasks[0].with_cells(cell for t in tasks for cell in t.cells)


TRACE_PRIORITY = 2**62  # Dask priority of the traces and their cost estimates: before any cell task


def _distributed(plan, out, summary: StudySummary, progress: _Progress, client) -> None:
    """Run the plan on ``client``'s cluster, costliest cell task first.

    Each trace is one task, followed on its worker by a small one estimating the cost of the cell tasks on
    it (``task_costs``). The cell tasks whose costs are known wait in a ``_WorkQueue`` and are handed to Dask
    as threads of the cluster fall free: never more traces and cell tasks in flight than threads (counted
    again every ``REFRESH_S``: workers may join, leave, or not have started yet). Dask places
    a task when it is submitted, without knowing its cost (it learns an average per kind of task): with
    everything submitted at once, a worker may be left with the two largest tasks while the others idle.
    Handed over in this order, the workers run the longest tasks first and the short ones fill in at the
    end. The client writes each result as it arrives.
    """
    def threads() -> int:  # the cluster's threads now (workers may come and go, or not have started yet)
        return max(1, sum(client.nthreads().values()))

    token = uuid.uuid4().hex[:8]
    finished: queue.Queue = queue.Queue()  # futures, as Dask finishes them (callbacks from its thread)
    tracing, running, waiting = {}, {}, _WorkQueue(threads())  # cost estimate's key -> (future, trace, tasks);
    for workload, tasks in plan:  # cell task's key -> (future, task)
        trace = client.submit(make_trace, workload, key=f"trace-{workload.key}-{token}", pure=False,
                              priority=TRACE_PRIORITY)
        costs = client.submit(task_costs, trace, tasks, key=f"costs-{workload.key}-{token}", pure=False,
                              priority=TRACE_PRIORITY)
        tracing[costs.key] = (costs, trace, tasks)
        costs.add_done_callback(finished.put)
    traced, counted = 0, time.monotonic()
    try:
        while tracing or running or waiting:
            if time.monotonic() - counted > REFRESH_S:
                waiting.threads, counted = threads(), time.monotonic()
            while waiting and len(tracing) + len(running) < waiting.threads:
                trace, task, cost = waiting.pop()
                future = client.submit(run_task, trace, task, key=f"cells-{task.key}-{token}", pure=False,
                                       priority=cost)
                running[future.key] = (future, task)
                future.add_done_callback(finished.put)
            try:
                future = finished.get(timeout=REFRESH_S)
            except queue.Empty:
                progress.tick()
                continue
            if future.key in tracing:
                _, trace, tasks = tracing.pop(future.key)
                traced += 1
                progress.update(0, f"trace {traced}/{len(plan)}: {tasks[0].workload.model.label} "
                                   f"{tasks[0].workload.phase}")
                # a failed estimate (a lost worker): no order, the tasks run and record what failed
                waiting.add(trace, tasks, future.result() if future.status == "finished" else None)
                continue
            _, task = running.pop(future.key)
            if future.status == "finished":
                result = future.result()
            else:  # the infrastructure failed it (a worker killed too often, a lost scheduler): recorded
                try:
                    error = future.exception()
                except BaseException as lost:  # noqa: BLE001 (CancelledError)
                    error = lost
                result = Failed("task", f"{type(error).__name__}: {error}", "")
            future.release()
            progress.update(_record(out, task, result, summary), task.label)
    finally:
        for future, *_ in list(running.values()) + list(tracing.values()):
            future.cancel()


@contextlib.contextmanager
def _exclusive(out: Path):
    """One run at a time per output folder (an fcntl lock on ``<out>/.lock``); ValueError for a second."""
    with file_lock(out / ".lock", wait=False, busy=f"out {str(out)!r} is in use by another study run; wait for it "
                   "or choose another folder"):
        yield


def run_study(study, out, *, workers: Optional[int] = None, scheduler: Optional[str] = None, client=None,
              serial: bool = False, force: bool = False, progress: bool = True, verbose: bool = True) -> StudySummary:
    """Run a study's grid into a Parquet dataset at ``out``; resumable.

    Takes the study (a YAML file path, a mapping or a ``StudySpec``: see
    ``lab.study.spec``), the output folder, and where to run: ``client`` (a
    ``distributed.Client`` you already have), else ``scheduler``
    (``tcp://HOST:8786``; default ``$DASK_SCHEDULER_ADDRESS``), else a new
    ``LocalCluster`` of ``workers`` processes (default: one per core), closed
    at the end; ``serial=True`` runs in this process without Dask. ``force``
    runs a grid larger than the study's ``max_cells``. ``progress`` shows a
    bar (tqdm: a widget in Jupyter, text in a terminal); ``verbose`` prints
    the plan, the dashboard's address and the summary.

    Cells already in the dataset are skipped; a failing cell is recorded in
    ``<out>/failed/`` with its error and the others go on. Returns a
    ``StudySummary`` (cells done, skipped, failed, wall time in seconds).
    Raises ValueError (StudyError) for an invalid study, TypeError for
    arguments of the wrong type.
    """
    start = time.perf_counter()
    spec = load_study_spec(study, force)
    if not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a folder path, got {type(out).__name__}")
    for name, value in (("serial", serial), ("progress", progress), ("verbose", verbose)):
        check_bool(name, value)
    if workers is not None:
        check_int("workers", workers)
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address like tcp://HOST:8786, got {scheduler!r}")
    if workers is not None and (scheduler or client is not None):
        raise ValueError("workers sets the size of a new LocalCluster; with scheduler or client the cluster's own "
                         "workers run the study: pass one or the other")
    if serial and (scheduler or client is not None or workers is not None):
        raise ValueError("serial runs in this process: it takes no workers, scheduler or client")
    out = Path(out)
    with _exclusive(out):
        plan, skipped = _plan(spec, out)
        for stale in dataset.failed_dir(out).glob("*.json") if dataset.failed_dir(out).is_dir() else []:
            stale.unlink()  # failures of an earlier run: their cells run again now
        dataset.write_json(out / "study.json", spec.to_dict())
        summary = StudySummary(spec.name, str(out), spec.n_cells, skipped=skipped)
        todo = sum(len(t.cells) for _, tasks in plan for t in tasks)
        say = (lambda text: print(text, flush=True)) if verbose else (lambda text: None)
        say(f"study {spec.name}: {spec.n_cells} cells ({len(spec.workloads())} traces x "
            f"{len(spec.columns())} policy/buffer pairs x {len(spec.capacities_mb)} capacities"
            + (f"; {spec.left_out} grid points do not exist (synthetic families in training or another "
               "weight dtype, ML under the cache)" if spec.left_out else "")
            + f"); {skipped} finished before, {todo} to run")
        bar = _Progress(todo, progress and todo > 0, f"study {spec.name}")
        try:
            if not plan:
                pass
            elif serial:
                _serial(plan, out, summary, bar)
            else:
                own = None
                if client is None:
                    client, own = _client(scheduler, workers, verbose)
                try:
                    summary.scheduler = client.scheduler.address if own is None else "LocalCluster"
                    summary.workers = len(client.scheduler_info().get("workers", {}))
                    summary.dashboard = client.dashboard_link
                    say(f"Dask dashboard: {summary.dashboard} ({summary.workers} workers)")
                    _distributed(plan, out, summary, bar, client)
                finally:
                    if own is not None:
                        client.close()
                        own.close()
        finally:
            bar.close()
        summary.wall_s = time.perf_counter() - start
        dataset.write_json(out / "summary.json", summary.to_dict())
    say(str(summary))
    for line in summary.errors:
        say(f"  failed: {line}")
    return summary
