"""Compiled code: one decorator for every numba kernel, and an on-disk cache that cannot serve stale code.

Every kernel is ``@kernel``: ``numba.njit(cache=True, nogil=True)``, so it is
compiled once, reused by later processes, and releases the GIL (sweeps run on
threads). Numba keys its disk cache on the source file of the decorated
function only, yet a cached kernel has the kernels it calls linked in, and the
engine's loop inlines hooks written in other files: an edit there would leave
the cache serving old code. Here the cache of a kernel inside lab is stamped
with a hash of the files it depends on: its own module, the lab modules that
module imports (read with ``ast``, transitively), and the modules a kernel
names in ``kernel(..., depends=...)`` (the engine's loop of each policy names
the policy's module), with theirs. An edit anywhere else leaves it cached.
Tested with numba 0.68 (pinned in pyproject.toml): this patches numba's
private list of cache locators.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import re
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

from lab.files import file_lock

LAB_DIR = Path(__file__).resolve().parent
_ROOT = __name__.split(".")[0]  # "lab": the package whose modules a stamp covers
DEPENDS_ATTRIBUTE = "__lab_depends__"  # on a kernel's Python function: more modules its stamp covers


@functools.lru_cache(maxsize=None)
def module_file(name: str):
    """The source file (a resolved Path) of lab module ``name`` (``"lab.sim.engine"``), or None when ``name`` is
    no module of lab (another package, or a name defined in a module rather than a module)."""
    parts = name.split(".")
    if parts[0] != _ROOT or not all(parts):
        return None
    base = LAB_DIR.joinpath(*parts[1:])
    for candidate in ((base.with_suffix(".py"),) if len(parts) > 1 else ()) + (base / "__init__.py",):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    relative = path.relative_to(LAB_DIR).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join((_ROOT, *parts))


_IMPORT_LINE = re.compile(rb"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+import|import)[ \t]", re.M)


def _import_statements(source: bytes):
    """The import statements of a module's source (anywhere in it, also inside functions), each parsed with
    ``ast``. Lines that start one are found first and only those statements are parsed: parsing every module
    whole took a few tenths of a second at each process start. An import-like line of prose in a docstring is
    parsed too when it parses, which only makes a stamp cover one more file."""
    for match in _IMPORT_LINE.finditer(source):
        lines, depth, position = [], 0, match.start()
        while True:  # to the end of the statement: parentheses closed, no backslash continuation
            end = source.find(b"\n", position)
            end = len(source) if end < 0 else end
            code = source[position:end].split(b"#", 1)[0]  # an import has no string in which "#" could be
            lines.append(source[position:end])
            depth += code.count(b"(") - code.count(b")")
            position = end + 1
            if end >= len(source) or (depth <= 0 and not code.rstrip().endswith(b"\\")):
                break
        try:
            tree = ast.parse(b"\n".join(lines).lstrip())
        except SyntaxError:  # prose in a docstring
            continue
        yield from (node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))


@functools.lru_cache(maxsize=None)
def _direct_imports(path: Path) -> frozenset:
    """The lab files that the module in ``path`` imports (anywhere in it, also inside functions): for ``from
    lab.sim import engine`` the module ``lab/sim/engine.py``, for ``from lab.sim.engine import NO_VICTIM``
    the same, not the packages' ``__init__`` on the way."""
    package = _module_name(path).split(".") if path.name == "__init__.py" else _module_name(path).split(".")[:-1]
    found = set()
    for node in _import_statements(path.read_bytes()):
        if isinstance(node, ast.Import):
            found.update(module_file(alias.name) for alias in node.names)
        else:
            base = node.module or ""
            if node.level:  # relative: from .x import y
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(module_file(f"{base}.{alias.name}") or module_file(base))
    found.discard(None)
    found.discard(path)
    return frozenset(found)


def _closure(paths: frozenset) -> frozenset:
    seen, todo = set(), list(paths)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_direct_imports(path))
    return frozenset(seen)


@functools.lru_cache(maxsize=None)
def _file_digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()  # read once per process


@functools.lru_cache(maxsize=None)
def _lab_file(py_file: str):
    """``py_file`` resolved, when it is inside lab; else None."""
    try:
        path = Path(py_file).resolve()
        path.relative_to(LAB_DIR)
    except (ValueError, OSError):
        return None
    return path


def _roots(py_func) -> frozenset:
    roots = {_lab_file(py_func.__code__.co_filename)}
    roots.update(module_file(name) for name in getattr(py_func, DEPENDS_ATTRIBUTE, ()))
    roots.discard(None)
    return frozenset(roots)


@functools.lru_cache(maxsize=None)
def _sources(roots: frozenset) -> tuple:
    return tuple(sorted(_closure(roots)))


@functools.lru_cache(maxsize=None)
def _stamp(roots: frozenset) -> str:
    digest = hashlib.sha256()
    for path in _sources(roots):
        digest.update(path.relative_to(LAB_DIR).as_posix().encode() + b"\0")
        digest.update(_file_digest(path))
    return digest.hexdigest()


def kernel_sources(py_func) -> list:
    """The files a kernel's cache stamp covers (sorted Paths): the module of ``py_func`` (the kernel's Python
    function), the modules named in its ``__lab_depends__`` that are lab's, and the lab modules these import,
    transitively."""
    return list(_sources(_roots(py_func)))


def kernel_stamp(py_func) -> str:
    """The cache stamp of a kernel (hex sha256): the relative paths and contents of ``kernel_sources``, each file
    read once per process."""
    return _stamp(_roots(py_func))


STAMP_CHARS = 16  # of the stamp, in a cache file's name
# numba keys neither its cache files nor their index on NUMBA_BOUNDSCHECK: without a folder of their own, kernels
# compiled with bounds checks would serve normal runs (slower) and normal kernels a run that asked for the checks
BOUNDSCHECK_FOLDER = "boundscheck"
_SWEPT: set = set()  # (cache folder, kernel) whose stale files this process has removed
_OLD_FOLDER = re.compile(r"lab-[0-9a-f]{16}")  # a folder per stamp, as lab kept them before


def _stamped(base):
    """A numba cache locator like ``base`` for files inside lab, stamped with ``kernel_stamp``. The stamp is
    in the names of the kernel's cache files (numba puts the disambiguator there): an index written by other
    sources is never read (unpickling it could name a policy state class that no longer exists), and the
    kernel's files of other stamps are removed."""

    class Locator(base):
        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            if config.BOUNDSCHECK:  # NUMBA_BOUNDSCHECK=1: checked code, kept apart from the normal kernels
                self._cache_path = os.path.join(self._cache_path, BOUNDSCHECK_FOLDER)
            self._lab_stamp = kernel_stamp(py_func)
            # numba's name for the kernel's files: "<file stem>.<qualname>-<disambiguator>.py311..."
            name = f"{Path(py_file).stem}.{py_func.__qualname__}".replace("<", "").replace(">", "")
            self._lab_prefix = f"{name}-"

        @classmethod
        def from_function(cls, py_func, py_file):
            return super().from_function(py_func, py_file) if _lab_file(py_file) else None

        def get_source_stamp(self):
            return self._lab_stamp

        def get_disambiguator(self):
            return f"{super().get_disambiguator()}-{self._lab_stamp[:STAMP_CHARS]}"

        def ensure_cache_path(self):
            super().ensure_cache_path()
            path = self.get_cache_path()
            if (path, self._lab_prefix) in _SWEPT:  # once per kernel and process: numba asks again at each save
                return
            _SWEPT.add((path, self._lab_prefix))
            mine = f"-{self._lab_stamp[:STAMP_CHARS]}.py"
            for entry in os.scandir(path):
                if entry.name.startswith(self._lab_prefix) and mine not in entry.name:
                    try:
                        os.remove(entry.path)
                    except OSError:  # removed by another process meanwhile
                        pass
                elif _OLD_FOLDER.fullmatch(entry.name) and entry.is_dir():
                    shutil.rmtree(entry.path, ignore_errors=True)

    Locator.__name__ = Locator.__qualname__ = f"Lab{base.__name__}"
    return Locator


_LOCATORS = [_stamped(base) for base in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                                         caching.UserWideCacheLocator)]
if not any(c.__name__.startswith("Lab") for c in caching.CacheImpl._locator_classes):
    caching.CacheImpl._locator_classes[:0] = _LOCATORS


# numba replaces each cache file atomically, but a save reads the index, picks a free data-file number and
# writes both, unlocked: two processes saving different signatures of one kernel at once (the suite's workers,
# a study's Dask workers) could both pick ``.1.nbc``, leaving an index that names the other's code. One lock per
# cache folder around each save and load of an index makes them take turns (microseconds when uncontended).
INDEX_LOCK_NAME = ".lab-index.lock"


def _index_locked(method):
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with file_lock(os.path.join(self._cache_path, INDEX_LOCK_NAME), optional=True):
            return method(self, *args, **kwargs)

    locked.__lab_locked__ = True
    return locked


for _name in ("save", "load"):
    if not getattr(getattr(caching.IndexDataCacheFile, _name), "__lab_locked__", False):
        setattr(caching.IndexDataCacheFile, _name, _index_locked(getattr(caching.IndexDataCacheFile, _name)))


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


def kernel(fn=None, *, depends=(), **options):
    """Decorator: compile ``fn`` with numba, cached on disk (stamped as above) and without the GIL.

    ``depends``: names of more lab modules whose code ends up in the compiled kernel although ``fn``'s module
    does not import them (hooks chosen by type at compile time); its cache stamp covers them and their imports.
    Extra numba options (e.g. ``inline="always"``, ``_nrt=False``) pass through. A kernel that is not inlined
    is compiled once per argument types, whatever constants it is called with (``LiteralFreeDispatcher``).
    """
    if fn is None:
        return functools.partial(kernel, depends=depends, **options)
    if isinstance(depends, str):
        raise TypeError(f"depends must be a sequence of module names, got the string {depends!r}")
    if depends:
        setattr(fn, DEPENDS_ATTRIBUTE, tuple(depends))
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
