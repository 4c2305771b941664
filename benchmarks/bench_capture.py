"""Wall time and peak memory of model captures, each in a fresh process.

Targets: Llama-2-7B forward (batch 1, seq 2048) and a GPT-2 small training
step (batch 8, seq 1024) each under 2 s and 1 GB resident; Llama-2-70B
forward (batch 1, seq 2048) under 5 s. "capture" is the ``capture_model``
call (building the model on fake tensors and recording it; the capture cache
is off); "imports" is loading torch, transformers (with the model's own
modules, which transformers imports lazily) and lab before it; "peak RSS" is
the process's maximum resident memory, imports included. Each case runs in
``--runs`` fresh processes (default 3): the median and the slowest are shown.
Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_capture.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CASES = [
    ("llama-2-7b forward", dict(name="llama-2-7b", batch_size=1, seq_length=2048), 2.0),
    ("gpt2 training step", dict(name="gpt2", batch_size=8, seq_length=1024, training=True), 2.0),
    ("llama-2-70b forward", dict(name="llama-2-70b", batch_size=1, seq_length=2048), 5.0),
]

CHILD = """
import json, resource, sys, time
start = time.perf_counter()
import torch, transformers
import lab.workloads.models
kwargs = json.loads(sys.argv[1])
preset = lab.workloads.models.preset_named(kwargs["name"])
if preset.model_class != "mlp":  # transformers loads a model's modules lazily, on first use
    preset.build_config(), getattr(transformers, preset.model_class)
imported = time.perf_counter()
trace = lab.workloads.models.capture_model(cache=False, **kwargs)
done = time.perf_counter()
print(json.dumps({"imports_s": imported - start, "capture_s": done - imported, "accesses": len(trace),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_case(kwargs: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kwargs)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per case")
    args = parser.parse_args()
    print(f"{'case':22} {'accesses':>9} {'capture s median':>17} {'(max)':>7} {'target s':>9} {'imports s':>10} "
          f"{'peak RSS MB':>12}")
    for label, kwargs, target in CASES:
        runs = [run_case(kwargs) for _ in range(args.runs)]
        capture = [r["capture_s"] for r in runs]
        print(f"{label:22} {runs[0]['accesses']:9,d} {statistics.median(capture):17.2f} {max(capture):7.2f} "
              f"{target:9.1f} {statistics.median(r['imports_s'] for r in runs):10.2f} "
              f"{max(r['peak_rss_mb'] for r in runs):12.0f}")
    print("memory target: under 1,024 MB resident for the 7B forward and the GPT-2 training step")


if __name__ == "__main__":
    main()
