"""Compiled code: one decorator for every numba kernel, and an on-disk cache that cannot serve stale code.

Every kernel is ``@kernel``: ``numba.njit(cache=True, nogil=True)``, so it is
compiled once, reused by later processes, and releases the GIL (sweeps run on
threads). Numba keys its disk cache on the source file of the decorated
function only; the engine's driver inlines hooks written in other files, so an
edited hook would leave the driver running old code from the cache. Here the
cache of a kernel in ``lab/<package>/`` is stamped with a hash of every
source file of the compiled packages up to and including its own (in
``COMPILED_PACKAGES`` order, which is the import layering), plus the top-level
modules: any edit there invalidates it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from numba import config, njit, types
from numba.core import caching, event
from numba.core.errors import NumbaIRAssumptionWarning
from numba.core.registry import CPUDispatcher

LAB_DIR = Path(__file__).resolve().parent
# Packages that hold compiled code, in layer order (each imports only those before it).
COMPILED_PACKAGES = ("trace", "sim", "bounds", "learn", "analysis")


@functools.lru_cache(maxsize=None)
def _package_digest(package: str) -> bytes:
    """sha256 over the relative paths and contents of the .py files of ``lab/<package>`` ("" = top level)."""
    digest = hashlib.sha256()
    root = LAB_DIR / package if package else LAB_DIR
    files = root.rglob("*.py") if package else root.glob("*.py")
    for path in sorted(files):
        digest.update(str(path.relative_to(LAB_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.digest()


@functools.lru_cache(maxsize=None)
def sources_stamp(py_file) -> str:
    """The cache stamp of a kernel defined in ``py_file``: a hash of the top-level modules and of every
    compiled package up to the kernel's own (read once per process, as the package digests are)."""
    relative = Path(py_file).resolve().relative_to(LAB_DIR)
    own = relative.parts[0] if len(relative.parts) > 1 else ""
    upto = COMPILED_PACKAGES[: COMPILED_PACKAGES.index(own) + 1] if own in COMPILED_PACKAGES else COMPILED_PACKAGES
    digest = hashlib.sha256(_package_digest(""))
    for package in upto:
        digest.update(_package_digest(package))
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _in_lab(py_file) -> bool:
    try:
        Path(py_file).resolve().relative_to(LAB_DIR)
    except (ValueError, OSError):
        return False
    return True


_SWEPT: set = set()  # cache folders whose stale siblings this process has removed


def _stamped(base):
    """A numba cache locator like ``base`` for files inside lab/, stamped with ``sources_stamp`` and kept in a
    folder of its own per stamp: an index written by other sources is never read (unpickling it could name a
    policy state class that no longer exists), and the folders of other stamps are removed."""

    class Locator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            return super().from_function(py_func, py_file) if _in_lab(py_file) else None

        def get_source_stamp(self):
            return sources_stamp(self._py_file)

        def get_cache_path(self):
            return os.path.join(super().get_cache_path(), f"lab-{sources_stamp(self._py_file)[:16]}")

        def ensure_cache_path(self):
            super().ensure_cache_path()
            path = self.get_cache_path()
            if path not in _SWEPT:  # once per folder and process: numba asks for each kernel, and at each save
                _SWEPT.add(path)
                for stale in Path(path).parent.glob("lab-*"):
                    if str(stale) != path:
                        shutil.rmtree(stale, ignore_errors=True)

    Locator.__name__ = Locator.__qualname__ = f"Lab{base.__name__}"
    return Locator


_LOCATORS = [_stamped(base) for base in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                                         caching.UserWideCacheLocator)]
if not any(c.__name__.startswith("Lab") for c in caching.CacheImpl._locator_classes):
    caching.CacheImpl._locator_classes[:0] = _LOCATORS


# numba's own pedantic check, raised when it inlines hooks into the engine's loop; it asks numba's developers
# for a report and says nothing to a user. Correctness is checked by the tests, not by this warning.
warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning)


def kernel_array(values, dtype) -> "np.ndarray":
    """``values`` as a C-contiguous, writeable array of ``dtype`` (a copy only when needed).

    numba types a read-only or strided array differently from a plain one, so an array that pandas hands over
    read-only would compile the loop a second time: every array reaching a kernel goes through here first.
    """
    return np.require(values, dtype, ["C", "W", "A"])


class LiteralFreeDispatcher(CPUDispatcher):
    """numba's CPU dispatcher, except that a call from compiled code with a constant argument (``push_head(q,
    0, c)``) compiles the kernel for the constant's type (int64), not for the constant itself (numba's
    ``Literal[int](0)``): one compile per kernel and argument types, not one more per constant it is called
    with, each a fraction of a second of a cold start."""

    def get_call_template(self, args, kws):
        return super().get_call_template(tuple(types.unliteral(a) for a in args),
                                         {k: types.unliteral(v) for k, v in kws.items()})


def kernel(fn=None, **options):
    """Decorator: compile ``fn`` with numba, cached on disk (stamped as above) and without the GIL.

    Extra numba options (e.g. ``inline="always"``, ``_nrt=False``) pass through. A kernel that is not inlined
    is compiled once per argument types, whatever constants it is called with (``LiteralFreeDispatcher``).
    """
    if fn is None:
        return functools.partial(kernel, **options)
    if options.get("inline", "never") != "never" or config.DISABLE_JIT:
        return njit(cache=True, nogil=True, **options)(fn)
    dispatcher = LiteralFreeDispatcher(py_func=fn, locals={},
                                       targetoptions={"nopython": True, "nogil": True, **options})
    dispatcher.enable_caching()
    return dispatcher


# --- what a long compile says ---------------------------------------------------------------------------
NOTICE_AFTER_S = 2.0  # compiling for longer than this (one burst of kernels) says what it compiles, on stderr
QUIET_ENV = "LAB_QUIET"  # set to 1 to silence it (the test suite and the report runner do: outputs stay stable)


class _CompileNotice:
    """Says on stderr what numba is compiling once a burst of compiles has run for NOTICE_AFTER_S: a kernel's
    first use in a fresh install, or after lab's sources change (then it is cached on disk). A burst is compiles
    with less than a second between them; its end says how long it took."""

    def __init__(self):
        self.lock = threading.Lock()
        self.depth = 0  # nested compiles: a kernel compiles those it calls
        self.burst_started = None
        self.last_end = 0.0
        self.current = None
        self.announced = set()
        self.shown = False
        self.count = 0
        self.poller = None

    def start(self, name: str) -> None:
        with self.lock:
            now = time.perf_counter()
            if self.depth == 0:
                if self.burst_started is None or now - self.last_end > 1.0:
                    self.burst_started, self.shown, self.count = now, False, 0
                self.current = name
                self.count += 1
            self.depth += 1
            if self.poller is None or not self.poller.is_alive():
                self.poller = threading.Thread(target=self._poll, daemon=True, name="lab-compile-notice")
                self.poller.start()

    def end(self) -> None:
        with self.lock:
            self.depth = max(self.depth - 1, 0)
            if self.depth == 0:
                self.last_end = time.perf_counter()
                self.current = None

    @staticmethod
    def _say(text: str) -> None:
        if not os.environ.get(QUIET_ENV):
            print(text, file=sys.stderr, flush=True)

    def _poll(self) -> None:
        while True:
            time.sleep(0.25)
            with self.lock:
                now = time.perf_counter()
                if self.burst_started is None:
                    return
                if self.depth == 0 and now - self.last_end > 1.0:  # the burst is over
                    if self.shown:
                        self._say(f"lab: compiled {self.count} kernel(s) in {self.last_end - self.burst_started:.1f} "
                                  "s; cached on disk for later runs")
                    self.burst_started = None
                    return
                if self.depth and now - self.burst_started >= NOTICE_AFTER_S and self.current not in self.announced:
                    if not self.shown:
                        self._say("lab: compiling kernels on their first use (once per install or source change)")
                        self.shown = True
                    self._say(f"lab:   compiling {self.current} ...")
                    self.announced.add(self.current)


def _compile_name(data) -> str:
    """What a numba compile event compiles, in words: the function, and for the engine's loop, the policy state
    it is specialized for."""
    function = data["dispatcher"].py_func.__qualname__
    args = data.get("args") or ()
    owner = getattr(args[0], "instance_class", None) if args else None
    if owner is not None and hasattr(owner, "__qualname__"):
        policy = owner.__qualname__.rsplit(".State", 1)[0]
        return f"the {policy} policy's loop" if function.startswith("_drive") else f"{function} for {policy}"
    return function


class _CompileListener(event.Listener):
    def on_start(self, ev):
        _NOTICE.start(_compile_name(ev.data))

    def on_end(self, ev):
        _NOTICE.end()


_NOTICE = _CompileNotice()
say = _NOTICE._say  # a notice on stderr, unless $LAB_QUIET
event.register("numba:compile", _CompileListener())
