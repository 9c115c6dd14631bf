"""Building the optional C++ CPU kernels of bioxlstm/csrc: one loader, a vectorised-maths build,
fallbacks.

Each kernel is one source, `csrc/<name>.cpp`, that includes the shared `csrc/bioxlstm_common.h`
(vector types, math helpers, and glibc's libmvec SIMD declarations of exp, log1p, tanh and erf,
so `#pragma omp simd` loops calling them vectorise). On x86-64 Linux the loader tries a build
linked to libmvec, then one without it; a kernel written with explicit vectors of
`BX_VEC_BYTES` can ask for an AVX-512 build (`avx512=True`), tried first on a CPU that has it:
x86-64-v4 with 64-byte vectors. Every build uses -fopenmp: without it at::parallel_for runs on
one thread. A build's module name ends in a hash of its sources, flags and torch version, so a
changed kernel is rebuilt under a new name and never loads an older build.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from bioxlstm.cpuinfo import cpu_flags

CSRC = Path(__file__).resolve().parent.parent / "csrc"
COMMON_HEADER = "bioxlstm_common.h"
_CFLAGS = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
_AVX512_FLAGS = ["-march=x86-64-v4", "-DBX_VEC_BYTES=64"]
X86_64_V4_AVX512 = frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})
FAILED_MARK = "bioxlstm_build_failed.txt"  # in a build's directory: why it failed
FAILED_BUILDS: dict[str, str] = {}  # kernel source -> the last build's error, this process


def extensions_disabled() -> bool:
    """Whether BIOXLSTM_NO_EXTENSIONS=1 switches every optional kernel off (PyTorch code runs)."""
    return os.environ.get("BIOXLSTM_NO_EXTENSIONS") == "1"


def avx512_build_possible() -> bool:
    """Whether this is x86-64 Linux on a CPU with every AVX-512 subset of x86-64-v4."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    return X86_64_V4_AVX512 <= cpu_flags()


@contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on one build's `directory` while it builds or loads there.

    torch's own build lock is a plain file that an interrupted build (Ctrl-C, kill -9, a worker
    killed at its time limit) leaves behind, and torch then waits on it forever, in every later
    process, with no message. This lock (flock) dies with its process, and every bioxlstm build
    holds it; so a torch lock file found while holding it has no owner, and is removed.
    """
    if fcntl is None:  # no flock (Windows): torch's lock alone
        yield
        return
    with open(directory / "bioxlstm.flock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"bioxlstm: waiting for another process building {directory.name}",
                  file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        orphan = directory / "lock"
        if orphan.exists():
            orphan.unlink()
            print(f"bioxlstm: removed the lock of an interrupted build: {orphan}", file=sys.stderr)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def builds(avx512: bool) -> list[tuple[str, list[str], list[str]]]:
    """(name suffix, compiler flags, linker flags) of each build to try, in order."""
    tried = [("_nomvec", _CFLAGS + ["-DBX_NO_LIBMVEC"], ["-fopenmp"])]
    if sys.platform == "linux" and platform.machine() == "x86_64":
        tried.insert(0, ("", _CFLAGS, ["-fopenmp", "-lmvec"]))
    if avx512 and avx512_build_possible():
        tried.insert(0, ("_avx512", _CFLAGS + _AVX512_FLAGS, ["-fopenmp", "-lmvec"]))
    return tried


def sources(kernel: str) -> dict[str, bytes]:
    """The files a kernel is built from: its own .cpp and the shared header, by file name."""
    return {name: (CSRC / name).read_bytes() for name in (f"{kernel}.cpp", COMMON_HEADER)}


def module_name(kernel: str, suffix: str, files: dict[str, bytes], cflags: list[str],
                ldflags: list[str]) -> str:
    """bioxlstm_<kernel><suffix>_<hash of the sources, the flags, torch's version and location>.

    The location keeps each environment's build apart: a build names torch's include folders, so
    two virtual environments sharing one build would rebuild it whenever the other had used it.
    """
    import torch

    digest = hashlib.sha256()
    for part in (*files.values(), *(f.encode() for f in cflags), b"|",
                 *(f.encode() for f in ldflags), torch.__version__.encode(),
                 os.path.dirname(os.path.abspath(torch.__file__)).encode()):
        digest.update(len(part).to_bytes(8, "little") + part)
    return f"bioxlstm_{kernel}{suffix}_{digest.hexdigest()[:12]}"


def stage_sources(module: str, files: dict[str, bytes]) -> Path:
    """Copy the sources into the module's build directory, which it returns.

    The build then names only files inside its own directory, so installs of the same sources
    in different places share one build instead of rebuilding each other's.
    """
    from torch.utils import cpp_extension

    directory = Path(cpp_extension._get_build_directory(module, verbose=False))
    for name, data in files.items():
        path = directory / name
        if not path.exists():  # the name is a hash of the content: an existing file is this one
            partial = path.with_name(f"{name}.{os.getpid()}.tmp")
            partial.write_bytes(data)
            os.replace(partial, path)
    return directory


def load_build(directory: Path, name: str, kernel: str, cflags: list[str],
               ldflags: list[str]) -> ModuleType:
    """torch's build (or cached module) of one kernel build in `directory`.

    A failure is written to FAILED_MARK there and raised again by later calls without compiling:
    a machine that cannot build a kernel pays for trying once, not in every process.
    """
    from torch.utils.cpp_extension import load

    mark = directory / FAILED_MARK
    if mark.exists():
        raise RuntimeError(f"{mark.read_text().strip()[:200]} (an earlier build; delete {mark} "
                           "to try again)")
    try:
        return load(name=name, sources=[str(directory / f"{kernel}.cpp")], extra_cflags=cflags,
                    extra_ldflags=ldflags)
    except Exception as e:
        mark.write_text(f"{type(e).__name__}: {e}\n")
        raise


def build_extension(kernel: str, what: str, avx512: bool = False) -> ModuleType | None:
    """Compile and load `csrc/<kernel>.cpp`; None if impossible.

    Tries the builds of `builds` in order (each cached by torch under its own name). A failure
    of all, or BIOXLSTM_NO_EXTENSIONS=1, returns None; a failure prints one line naming `what`
    and is kept in FAILED_BUILDS.
    """
    if extensions_disabled():
        return None
    err: Exception | None = None
    try:
        files = sources(kernel)
    except OSError as e:  # an install without the sources: PyTorch code
        files, err = {}, e
    for suffix, cflags, ldflags in builds(avx512) if files else []:
        name = module_name(kernel, suffix, files, cflags, ldflags)
        try:
            directory = stage_sources(name, files)
            with build_lock(directory):
                return load_build(directory, name, kernel, cflags, ldflags)
        except Exception as e:  # any build failure means: try the next build, then PyTorch code
            err = e
    FAILED_BUILDS[kernel] = str(err)
    print(f"bioxlstm: {what} unavailable, using PyTorch code ({err})"[:300], file=sys.stderr)
    return None


class CpuKernel:
    """One compiled kernel, `csrc/<source>.cpp`: built (or loaded from torch's cache) on first use."""

    def __init__(self, source: str, title: str, avx512: bool = False) -> None:
        self.source, self.title, self.avx512 = source, title, avx512
        self._module: ModuleType | None = None
        self._tried = False

    def load(self) -> ModuleType | None:
        """The compiled module, built once per process; None if it cannot be built."""
        if not self._tried:
            self._module = build_extension(self.source, f"{self.title} CPU kernel", self.avx512)
            self._tried = True
        return self._module

    def available(self) -> bool:
        """Whether the kernel is built (building it if this is its first use)."""
        return (self._module if self._tried else self.load()) is not None

    def unavailable_reason(self) -> str:
        """Why `load` gave None: switched off, or the build's error."""
        if extensions_disabled():
            return "BIOXLSTM_NO_EXTENSIONS=1"
        return FAILED_BUILDS.get(self.source, "not built")[:300]
