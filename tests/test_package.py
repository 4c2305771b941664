"""Package-level promises: a light core import and compiled kernels cached on disk."""

import subprocess
import sys

import numba

from lab import kernels


def test_core_import_stays_free_of_torch_and_transformers():
    code = "import sys, lab; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_every_kernel_is_cached_on_disk():
    dispatchers = [v for v in vars(kernels).values() if isinstance(v, numba.core.registry.CPUDispatcher)]
    assert dispatchers
    for dispatcher in dispatchers:
        assert dispatcher._cache.__class__.__name__ == "FunctionCache", dispatcher.__name__
