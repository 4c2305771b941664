"""Studies (lab.study): a grid on a 2-worker LocalCluster gives the serial run's dataset exactly; a killed
worker or a killed run loses no cell and duplicates none; bad study files get clear errors; a failing cell
is recorded and the others go on."""

import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

import lab
from lab import cli
from lab.study import dataset, runner
from lab.study.spec import StudyError, load_study_spec, parse_study

distributed = pytest.importorskip("distributed")

# synthetic families only: no capture, so workers start without torch (seconds, not tens of seconds)
GRID = {
    "name": "tiny",
    "models": [{"synthetic": "Transformer", "num_layers": 4}, {"synthetic": "MoE", "num_layers": 2},
               {"synthetic": "MLP", "num_layers": 4}],
    "batch_sizes": [2],
    "seq_lengths": [64],
    "phases": ["forward", "training"],  # training does not exist for synthetic families: left out
    "policies": ["LRU", "FIFO", "S3-FIFO", "ML"],  # ML: scored traces under both buffer models
    "capacities_mb": [0.5, 8, 128],
    "buffers": ["scratchpad", "cache"],
    "cost": "H100-SXM5",
}
CELLS = 3 * (2 * 4 - 1 + 1) * 3  # workloads x (buffers x policies - ML on the cache + OPT) x capacities


@pytest.fixture(scope="module")
def serial_dir(tmp_path_factory):
    """The serial run's folder, made once per module (read only: a test that writes into a study copies it)."""
    out = tmp_path_factory.mktemp("serial")
    summary = lab.run_study(GRID, out, serial=True, progress=False, verbose=False)
    assert (summary.cells, summary.done, summary.skipped, summary.failed) == (CELLS, CELLS, 0, 0)
    return out


@pytest.fixture(scope="module")
def serial(serial_dir):
    return lab.load_study(serial_dir)


def _copy_study(source, out):
    """A copy of the study folder ``source`` at ``out``, as if its run had written there."""
    import shutil

    shutil.copytree(source, out, dirs_exist_ok=True)
    return out


def test_the_serial_dataset_has_one_row_per_cell_with_coordinates_metrics_and_versions(serial):
    assert len(serial) == CELLS and serial["cell_id"].is_unique
    assert set(serial["policy"]) == {"LRU", "FIFO", "S3-FIFO", "ML", "OPT"}
    assert set(serial["phase"]) == {"forward"} and set(serial["buffer"]) == {"scratchpad", "cache"}
    assert not ((serial["buffer"] == "cache") & (serial["policy"] == "ML")).any()  # not run: lines have no scores
    for column in ("model", "batch_size", "seq_length", "weight_dtype", "capacity_mb", "dram_traffic_mb",
                   "cache_hit_rate", "opt_lower_mb", "algorithm", "lab_version", "numpy_version"):
        assert column in serial.columns
    assert (serial["lab_version"] == lab.__version__).all()
    assert serial.loc[serial["policy"] != "OPT", "dram_traffic_mb"].notna().all()
    # no policy beats the optimum's lower bound
    gaps = lab.gap_to_optimum(serial)
    assert len(gaps) == 3 * 4 * 3 and (gaps["gap_pct"] > -1e-6).all()
    best = lab.best_policy(serial)
    assert len(best) == 3 * 3 and set(best["policy"]) <= {"LRU", "FIFO", "S3-FIFO", "ML"}


def test_a_study_on_a_two_worker_local_cluster_equals_the_serial_run(serial, tmp_path, monkeypatch):
    # the LocalCluster run_study starts for workers=2, its workers threads of this process (seconds, not tens of
    # seconds: no process to spawn); worker processes give the serial dataset too, in the test killing one below
    local_cluster = runner.local_cluster
    monkeypatch.setattr(runner, "local_cluster", lambda workers=None, **options: local_cluster(
        workers, **{"processes": False, **options}))
    summary = lab.run_study(GRID, tmp_path, workers=2, progress=False, verbose=False)
    assert (summary.done, summary.failed, summary.workers, summary.scheduler) == (CELLS, 0, 2, "LocalCluster")
    pd.testing.assert_frame_equal(lab.load_study(tmp_path), serial)
    again = lab.run_study(GRID, tmp_path, workers=2, progress=False, verbose=False)
    assert (again.done, again.skipped) == (0, CELLS)  # nothing left: no cluster needed, none started


@pytest.fixture(scope="module")
def cluster():
    # not the default client: run_study must use the client it is given (it once looked for a default one)
    with lab.study.local_cluster(2) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        # Dask's nanny sets this (turning off glibc's adaptive mmap threshold: tasks ran 1.9x slower)
        assert set(client.run(os.environ.get, runner.MALLOC_SETTING).values()) == {None}
        # and Dask's monitoring, less frequent, reached the workers (it took CPU from the tasks)
        import dask

        settings = client.run(lambda: {key: dask.config.get(key) for key in runner.LOCAL_CLUSTER_CONFIG})
        assert list(settings.values()) == [runner.LOCAL_CLUSTER_CONFIG] * 2
        yield cluster, client


def _slow_run_task(trace, task):  # a study slow enough to kill a worker in the middle of it
    time.sleep(0.5)
    return runner_run_task(trace, task)


runner_run_task = runner.run_task


def test_cost_estimates_rank_tasks_by_the_accesses_they_simulate(monkeypatch):
    from lab.study.tasks import Failed, make_trace, task_costs

    spec = lab.study.load_study_spec({**GRID, "batch_sizes": [2, 8]})
    small, large = (w for w in spec.workloads() if w.model.name == "Transformer")
    assert (small.batch_size, large.batch_size) == (2, 8)
    tasks = spec.tasks(small)
    costs = dict(zip((t.label for t in tasks), task_costs(make_trace(small), tasks)))
    label = "synthetic-Transformer-4L forward"
    assert costs[f"{label} scratchpad OPT"] == 100 * costs[f"{label} scratchpad LRU"] > 0  # the optimum's weight
    assert costs[f"{label} cache 3 policies at 0.5 MB"] > costs[f"{label} scratchpad LRU"]  # lines, not tensors
    larger = task_costs(make_trace(large), spec.tasks(large))
    for task, a, b in zip(tasks, costs.values(), larger):  # 4x the tokens: as many tensor accesses, more lines
        assert b > a if task.buffer == "cache" else b == a
    assert task_costs(Failed("trace", "ValueError: x", ""), tasks) == [0] * len(tasks)
    from lab.analysis import contenders

    monkeypatch.setattr(contenders, "AUTO_OPTIMUM_ACCESSES", 10)  # optimum: auto skips the flow on larger traces
    skipped = dict(zip((t.label for t in tasks), task_costs(make_trace(small), tasks)))
    assert skipped[f"{label} scratchpad OPT"] == 0  # a row saying it was skipped: no work
    assert skipped[f"{label} scratchpad LRU"] == costs[f"{label} scratchpad LRU"]


def test_the_work_queue_hands_out_the_costliest_first_and_splits_cache_runs_by_the_work_left():
    spec = lab.study.load_study_spec({**GRID, "capacities_mb": [1, 2, 3, 4], "optimum": True})
    a, b = spec.workloads()[:2]
    pad = [t for t in spec.tasks(a) if t.buffer == "scratchpad"][:2]  # LRU, FIFO
    queue = runner._WorkQueue(threads=2)
    queue.add("trace a", [t for t in spec.tasks(a) if t.buffer == "cache"] + pad, [10, 10, 10, 10, 5, 500])
    queue.add("trace b", [t for t in spec.tasks(b) if t.buffer == "cache"][:2], [3, 3])
    handed = []
    while queue:
        trace, task, cost = queue.pop()
        handed.append((trace, task.buffer, task.policies[0] if task.buffer != "cache" else task.capacities_mb, cost))
    assert queue.queued == 0
    for bad in ([1], None, ["x", 2]):  # no usable estimate: the tasks are queued all the same
        queue.add("trace b", [t for t in spec.tasks(b) if t.buffer == "cache"][:2], bad)
        assert [queue.pop()[1].capacities_mb] == [(1.0, 2.0)] and not queue
    assert handed == [  # a run split at the work left / threads: 51 / 2 = 25.5 (three capacities), 11 / 2 = 5.5
        ("trace a", "scratchpad", "FIFO", 500), ("trace a", "cache", (1.0, 2.0, 3.0), 30),
        ("trace a", "cache", (4.0,), 10), ("trace b", "cache", (1.0, 2.0), 6), ("trace a", "scratchpad", "LRU", 5)]


def test_a_cluster_runs_the_tasks_in_the_work_queues_order(tmp_path):
    from lab.study.tasks import make_trace, task_costs

    plan, _ = runner._plan(lab.study.load_study_spec(GRID), tmp_path)
    queue = runner._WorkQueue(threads=1)  # one thread: the cell tasks start once every trace is in
    for workload, tasks in plan:
        queue.add(workload, tasks, task_costs(make_trace(workload), tasks))
    expected = []
    while queue:
        _, task, cost = queue.pop()
        expected.append((f"cells-{task.key}", cost))
    with lab.study.local_cluster(1, processes=False) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        with distributed.get_task_stream(client) as stream:
            summary = lab.run_study(GRID, tmp_path, client=client, progress=False, verbose=False)
    assert (summary.done, summary.failed) == (CELLS, 0)
    started = sorted((s["start"], rec["key"].rsplit("-", 1)[0]) for rec in stream.data for s in rec["startstops"]
                     if s["action"] == "compute" and rec["key"].startswith("cells-"))
    cost = dict(expected)
    assert sorted(key for _, key in started) == sorted(cost)  # the same chunks
    assert [cost[key] for _, key in started] == [c for _, c in expected]  # in the same order (ties aside)
    assert [c for _, c in expected][:2] == sorted(cost.values(), reverse=True)[:2]  # the optimum's tasks first


def test_a_study_on_a_cluster_without_workers_yet_runs_on_those_that_join(serial, tmp_path, monkeypatch):
    import dask

    monkeypatch.setattr(runner, "run_task", _slow_run_task)  # 0.5 s a task: the run outlasts the workers' start
    in_flight = []  # threads the run counted each time it handed out a task
    pop = runner._WorkQueue.pop
    monkeypatch.setattr(runner._WorkQueue, "pop", lambda queue: in_flight.append(queue.threads) or pop(queue))
    with dask.config.set(runner.LOCAL_CLUSTER_CONFIG), distributed.LocalCluster(
            n_workers=0, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        result = {}
        thread = threading.Thread(target=lambda: result.update(summary=lab.run_study(
            GRID, tmp_path, client=client, progress=False, verbose=False)))
        thread.start()
        time.sleep(1)
        assert thread.is_alive() and not dataset.cell_files(tmp_path)  # nothing runs without workers
        cluster.scale(2)
        thread.join(120)
        assert not thread.is_alive()
    assert (result["summary"].done, result["summary"].failed) == (CELLS, 0)
    assert max(in_flight) == 2  # counted again as the workers joined (it started with none: 1)
    pd.testing.assert_frame_equal(lab.load_study(tmp_path), serial)


def test_killing_a_worker_mid_study_loses_no_cell_and_duplicates_none(serial, cluster, tmp_path, monkeypatch):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    _, client = cluster
    monkeypatch.setattr(runner, "run_task", _slow_run_task)
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=lab.run_study(
        GRID, tmp_path, client=client, progress=False, verbose=False)))
    thread.start()
    deadline = time.monotonic() + 60
    while not dataset.cell_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dataset.cell_files(tmp_path), "no cell finished within a minute"
    assert thread.is_alive()  # mid-study
    victim = sorted(client.run(os.getpid).values())[0]
    os.kill(victim, signal.SIGKILL)  # the nanny starts a new worker; Dask reruns what the dead one held
    thread.join(120)
    assert not thread.is_alive()
    assert victim not in client.run(os.getpid, on_error="ignore").values()
    summary = result["summary"]
    assert (summary.done, summary.failed) == (CELLS, 0)
    pd.testing.assert_frame_equal(lab.load_study(tmp_path), serial)


def test_a_killed_run_resumes_with_no_missing_and_no_duplicate_cell(serial, tmp_path, monkeypatch):
    write = dataset.write_cells
    written = []

    def crash_after_three(*args):
        if len(written) == 3:
            raise KeyboardInterrupt  # the run is killed after three files reached the disk
        written.append(write(*args))
        return written[-1]

    monkeypatch.setattr(dataset, "write_cells", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        lab.run_study(GRID, tmp_path, serial=True, progress=False, verbose=False)
    monkeypatch.setattr(dataset, "write_cells", write)
    first = len(lab.load_study(tmp_path))
    assert 0 < first < CELLS
    summary = lab.run_study(GRID, tmp_path, serial=True, progress=False, verbose=False)
    assert (summary.skipped, summary.done, summary.failed) == (first, CELLS - first, 0)
    pd.testing.assert_frame_equal(lab.load_study(tmp_path), serial)


def test_the_columns_come_in_one_order_whatever_the_files_are_named(serial, tmp_path):
    # the files are named after the run's task groups, which depend on the cluster's size
    parts = [serial[serial["policy"] == "OPT"].dropna(axis=1, how="all"),
             serial[serial["policy"] != "OPT"].dropna(axis=1, how="all")]
    assert set(parts[0].columns) != set(parts[1].columns)  # the optimum's bracket; the cache's final flush
    for out, names in ((tmp_path / "a", ["a", "b"]), (tmp_path / "b", ["b", "a"])):
        for name, part in zip(names, parts):
            dataset.write_cells(out, name, part.assign(model="m", phase="forward"))
    assert list(lab.load_study(tmp_path / "a").columns) == list(lab.load_study(tmp_path / "b").columns)


def test_a_corrupt_result_file_is_set_aside_and_its_cells_run_again(serial, serial_dir, tmp_path):
    _copy_study(serial_dir, tmp_path)  # a finished study
    victim = dataset.cell_files(tmp_path)[0]
    victim.write_bytes(b"not parquet")
    with pytest.warns(UserWarning, match="set aside"):
        summary = lab.run_study(GRID, tmp_path, serial=True, progress=False, verbose=False)
    assert summary.done == 3 and summary.skipped == CELLS - 3
    pd.testing.assert_frame_equal(lab.load_study(tmp_path), serial)


def test_a_failing_cell_is_recorded_and_the_others_finish(tmp_path):
    grid = {**GRID, "models": ["synthetic:MLP", {"synthetic": "MoE", "num_layers": 2, "label": "bad-moe",
                                                 "dims": {"token_groups": 10**6}}],  # > batch x seq: refused
            "batch_sizes": [1], "buffers": ["scratchpad"], "policies": ["LRU"]}
    summary = lab.run_study(grid, tmp_path, serial=True, progress=False, verbose=False)
    assert (summary.cells, summary.done, summary.failed) == (12, 6, 6)
    assert "token_groups" in summary.errors[0]
    failures = lab.study_failures(tmp_path)
    assert set(failures["model"]) == {"bad-moe"} and failures["cells"].sum() == 6
    assert (failures["stage"] == "trace").all() and failures["error"].str.contains("token_groups").all()
    assert set(lab.load_study(tmp_path)["model"]) == {"synthetic-MLP-12L"}
    again = lab.run_study(grid, tmp_path, serial=True, progress=False, verbose=False)
    assert (again.skipped, again.done, again.failed) == (6, 0, 6)  # failed cells are tried again


STUDY_ERRORS = [
    ("an unknown key", {"polices": ["LRU"]}, "unknown key.*polices"),
    ("an empty axis", {"policies": []}, "policies is empty"),
    ("a missing axis", {"models": None}, "models is required"),
    ("an unknown preset", {"models": ["gpt3"]}, "preset must be one of"),
    ("an unknown family", {"models": ["synthetic:RNN"]}, "RNN"),
    ("an unknown key in a model", {"models": [{"preset": "gpt2", "layers": 2}]}, r"unknown key\(s\) \['layers'\]"),
    ("an unknown dimension", {"models": [{"synthetic": "MLP", "dims": {"width": 3}}]}, "not dimensions of MLP"),
    ("an unknown policy", {"policies": ["LRU", "MRU2"]}, "policies:"),
    ("OPT as a policy", {"policies": ["OPT"]}, "OPT is not a policy"),
    ("a duplicate", {"batch_sizes": [1, 1]}, "lists 1 twice"),
    ("a bad phase", {"phases": ["inference"]}, r"phases: \['inference'\] not accepted"),
    ("a bad buffer", {"buffers": ["sram"]}, "buffers"),
    ("a bad weight dtype", {"weight_dtypes": ["int4"]}, "weight_dtypes"),
    ("a negative capacity", {"capacities_mb": [-1]}, "capacities_mb must be"),
    ("a bad geomspace", {"capacities_mb": {"geomspace": [1, 2]}}, "LOW_MB, HIGH_MB, POINTS"),
    ("a bad optimum", {"optimum": "sometimes"}, "optimum must be"),
    ("an unknown cost preset", {"cost": "TPU9"}, "cost:"),
    ("a batch size of 0", {"batch_sizes": [0]}, "batch_sizes must be an integer >= 1"),
    ("only grid points that do not exist", {"models": ["synthetic:MLP"], "phases": ["training"]}, "grid is empty"),
    ("a grid over the limit", {"max_cells": 10}, "more than max_cells=10.*--force"),
]


@pytest.mark.parametrize("case, change, fragment", STUDY_ERRORS, ids=[c[0] for c in STUDY_ERRORS])
def test_a_bad_study_gets_a_clear_error(case, change, fragment):
    with pytest.raises(StudyError, match=fragment):
        parse_study({**GRID, **change}, "bad.yaml")


def test_force_runs_a_grid_over_the_limit_and_yaml_errors_name_the_file(tmp_path):
    assert parse_study({**GRID, "max_cells": 10}, force=True).n_cells == CELLS
    path = tmp_path / "broken.yaml"
    path.write_text("models: [gpt2\npolicies: LRU\n")
    with pytest.raises(StudyError, match="broken.yaml: not valid YAML"):
        load_study_spec(path)
    with pytest.raises(TypeError, match="study must be a YAML file path"):
        lab.run_study(42, tmp_path)
    with pytest.raises(ValueError, match="workers sets the size of a new LocalCluster"):
        lab.run_study(GRID, tmp_path, workers=2, scheduler="tcp://127.0.0.1:1")


def test_the_command_line_prints_one_line_and_exits_2_on_a_bad_study(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("models: [synthetic:MLP]\npolicies: [LRU]\ncapacities_mb: [1]\nbatch_size: [2]\n")
    assert cli.main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key(s) ['batch_size']" in err
    path.write_text("models: [synthetic:MLP]\npolicies: [LRU, FIFO]\ncapacities_mb: [1, 8]\n")
    assert cli.main(["study", str(path), "--out", str(tmp_path / "out"), "--serial", "--no-progress"]) == 0
    assert len(lab.load_study(tmp_path / "out")) == 6


def test_the_default_study_is_valid_and_modest():
    spec = load_study_spec("params/studies/default.yaml")
    assert 500 <= spec.n_cells <= spec.max_cells
    assert {"forward", "training"} <= set(spec.phases) and len(spec.capacities_mb) >= 10


def test_importing_lab_study_does_not_import_dask():
    code = "import sys, lab, lab.study; print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_concurrent_captures_of_one_configuration_wait_for_each_other(tmp_path):
    from lab.workloads.models import _capture_lock

    path = tmp_path / "gpt2-key.parquet"
    finished = threading.Event()

    def second():
        with _capture_lock(path):
            finished.set()

    with _capture_lock(path):
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not finished.wait(0.3)  # held: the second capture of this configuration waits
    assert finished.wait(5)
    waiter.join()


@pytest.mark.slow
def test_the_study_report_draws_a_study_and_answers(serial_dir, tmp_path):
    pytest.importorskip("papermill")
    from lab.ui.report import read_answer, run_reports

    out = _copy_study(serial_dir, tmp_path / "study")  # the serial run's study
    params = tmp_path / "tiny.yaml"
    params.write_text(f"study_dir: {out}\n")
    (notebook,) = run_reports("notebooks/08-study.ipynb", [params], tmp_path / "reports")
    question, table = read_answer(notebook)
    assert "closest to the optimum" in question
    assert set(table["policy"]) == {"LRU", "FIFO", "S3-FIFO", "ML"} and (table["points (workload, capacity)"] == 9).all()
    figures = sorted(p.name for p in (notebook.parent / "figures").iterdir())  # each as SVG and PNG
    assert {"study-traffic.svg", "study-traffic.png", "study-gap.svg", "study-gap.png"} <= set(figures)


def test_the_study_figures_mark_the_hardware_presets_buffers(serial):
    from lab import plots

    shape = lab.study.one_slice(serial)
    traffic = plots.study_traffic(shape, "scratchpad")  # capacities 0.5 to 128 MB: A100, H100, H200 between
    panels = [ax for ax in traffic.axes if ax.get_lines()]
    assert panels and all({t.get_text().strip() for t in ax.texts} == {"A100 40, H100 50, H200 60 MB"}
                          for ax in panels)
    best = lab.best_policy(shape)
    heatmap = plots.best_policy_heatmap(best[best["phase"] == "forward"])
    (ax,) = [a for a in heatmap.axes if a.texts]
    marks = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "-."]
    # columns 0.5, 8 and 128 MB at x = 0, 1, 2: 40 MB lies between 8 and 128, in log MB
    assert len(marks) == 3 and all(1 < x < 2 for x in marks) and marks == sorted(marks)
    assert "A100 40, H100 50, H200 60 MB" in {t.get_text().strip() for t in ax.texts}


def test_cache_tasks_merged_into_a_chunk_of_capacities_give_the_same_rows(tmp_path):
    from lab.study.tasks import make_trace, run_task

    spec = lab.study.load_study_spec(GRID)
    plan, skipped = runner._plan(spec, tmp_path)
    assert skipped == 0 and len(plan) == 3
    for workload, tasks in plan:
        cache = [t for t in tasks if t.buffer == "cache"]
        merged = runner.merge_tasks(cache[:2])
        assert merged.capacities_mb == (0.5, 8.0) and merged.cells == cache[0].cells + cache[1].cells
        assert runner.merge_tasks(cache[2:]) is cache[2]
        trace = make_trace(workload)
        apart = pd.concat([run_task(trace, t).to_pandas() for t in cache])
        together = pd.concat([run_task(trace, t).to_pandas() for t in (merged, cache[2])])
        key = ["policy", "capacity_mb"]
        pd.testing.assert_frame_equal(apart.sort_values(key).reset_index(drop=True),
                                      together.sort_values(key).reset_index(drop=True))
