"""predict_compile against the trace's length: the whole prediction (every online policy, Belady, the
recommended buffer sizes) next to one LRU simulation of the same trace, so the ratio shows that it scales like
simulations (linear), not like the flow. Beyond AUTO_OPTIMUM_ACCESSES the optimum is skipped (Belady plans).

    .venv/bin/python benchmarks/bench_compile.py [--accesses 1e6 4e6 20e6]
"""

import argparse
import time
import warnings

import lab


def trace_of(accesses: int):
    """A generated Transformer training-like trace of about ``accesses`` accesses (layers scaled to fit)."""
    probe = lab.generate_trace("Transformer", num_layers=10, batch_size=8, seq_length=1024, seed=0)
    layers = max(1, round(accesses / (len(probe) / 10)))
    return lab.generate_trace("Transformer", num_layers=layers, batch_size=8, seq_length=1024, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=float, nargs="+", default=[1e6, 4e6, 20e6])
    parser.add_argument("--capacity-mb", type=float, default=64.0)
    args = parser.parse_args()
    warmup = trace_of(20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.predict_compile(warmup, args.capacity_mb, progress=False)  # compiles every loop once
    print(f"{'accesses':>12} {'LRU s':>8} {'predict_compile s':>18} {'ratio':>6}  planner")
    for accesses in args.accesses:
        trace = lab.encode_trace(lab.score(trace_of(int(accesses))))
        start = time.perf_counter()
        lab.simulate(trace, "LRU", args.capacity_mb, per_access=False)
        one = time.perf_counter() - start
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prediction = lab.predict_compile(trace, args.capacity_mb, progress=False)
        whole = time.perf_counter() - start
        print(f"{trace.n_accesses:>12,} {one:>8.2f} {whole:>18.2f} {whole / one:>6.0f}  {prediction.planner}",
              flush=True)


if __name__ == "__main__":
    main()
