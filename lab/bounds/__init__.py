"""Bounds: what no policy beats and what a policy does at every capacity at once, computed beside the engine.

``lab.bounds.optimal`` (``lab.optimal``: the whole-tensor optimum, exact or bracketed, and the byte-granular
bound), ``lab.bounds.curves`` (``lab.miss_ratio_curve``: exact one-pass curves of LRU and Belady, the optimum's
curve, sampled curves) and ``lab.bounds.capacities`` (the capacities a sweep or curve runs over). It sits between
``lab.sim`` and ``lab.learn``: it imports only ``lab.trace``, ``lab.sim`` and the core, so the learned scorer takes
the optimum's labels from it directly. Its metrics are the engine's: each fills the engine's counters and reads
them through ``lab.sim.simulate.metrics_of_counts``.
"""
