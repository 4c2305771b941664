import os

# compile notices (lab.compiled) stay off stderr here: the notebooks' stored outputs and the reports' no-stderr
# checks must not depend on which kernels happen to be compiled already
os.environ["LAB_QUIET"] = "1"

import numpy as np
import pandas as pd
import pytest

from lab.units import BYTES_PER_MB


def random_trace(seed, n_accesses=400, n_tensors=40, max_size_bytes=64, unit=False, zipf=None):
    """A random trace with exact integer byte sizes (size_mb = bytes / 2**20) and eviction scores."""
    rng = np.random.default_rng(seed)
    if zipf:
        ids = (rng.zipf(zipf, n_accesses) - 1) % n_tensors
    else:
        ids = rng.integers(0, n_tensors, n_accesses)
    size_bytes = np.ones(n_tensors, np.int64) if unit else rng.integers(1, max_size_bytes + 1, n_tensors)
    trace = pd.DataFrame({"tensor_id": [f"t{i}" for i in ids], "size_mb": size_bytes[ids] / BYTES_PER_MB})
    # scores on a coarse grid so that ties (and their tie-break) really occur
    trace["eviction_score"] = rng.integers(0, 5, n_accesses) / 4
    return trace


@pytest.fixture
def small_trace():
    return pd.DataFrame(
        {
            "tensor_id": ["A", "B", "A", "C", "B", "D", "A", "C"],
            "size_mb": [4.0, 8.0, 4.0, 16.0, 8.0, 32.0, 4.0, 16.0],
            "eviction_score": [0.1, 0.9, 0.2, 0.5, 0.8, 0.3, 0.4, 0.6],
        }
    )


@pytest.fixture(scope="session")
def scored():
    """A scored 3-layer Transformer trace, shared by the figure tests (read only)."""
    import lab

    return lab.score(lab.generate_trace("Transformer", num_layers=3))
