"""Valgrind's client requests, callable from Python.

The requests are C macros (valgrind/callgrind.h) that expand to a magic instruction sequence:
they do nothing on a real CPU and talk to callgrind under Valgrind. They are built into a tiny
shared library with the system C compiler on first use and cached (like `lab list`'s support
answers) under $XDG_CACHE_HOME/perflab/, keyed by the source, the header and the compiler, and
loaded with ctypes. Why not a setuptools extension: the package stays pure Python and installs
where no compiler or Valgrind exists; and a plain C library (no Python.h) needs only `cc` and
the header, which Debian's `valgrind` package ships, on a fresh CI clone. Only `lab run
--counts` builds it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HEADER = "valgrind/callgrind.h"
INCLUDE_DIRS = ("/usr/include", "/usr/local/include")

SOURCE = r"""
#include <valgrind/callgrind.h>
void lab_cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void lab_cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void lab_cg_zero(void) { CALLGRIND_ZERO_STATS; }
void lab_cg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
int lab_cg_running(void) { return RUNNING_ON_VALGRIND; }
"""


class ClientUnavailable(RuntimeError):
    """No compiler or no callgrind header: counts cannot be taken here (one line says why)."""


def header() -> Path | None:
    for root in INCLUDE_DIRS:
        path = Path(root, HEADER)
        if path.is_file():
            return path
    return None


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "perflab"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def library_path() -> Path:
    """The compiled library, built now if it is not cached; ClientUnavailable if it cannot
    be built."""
    head, cc = header(), compiler()
    if head is None:
        raise ClientUnavailable(f"no {HEADER} in {' or '.join(INCLUDE_DIRS)} (install "
                                f"Debian's valgrind package)")
    if cc is None:
        raise ClientUnavailable("no C compiler (cc) to build the callgrind client requests")
    key = hashlib.sha256(f"{SOURCE}|{cc}|".encode() + head.read_bytes()).hexdigest()[:16]
    target = cache_dir() / f"callgrind-client-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lab-cg-", dir=target.parent) as tmp:
        src, out = Path(tmp, "client.c"), Path(tmp, "client.so")
        src.write_text(SOURCE)
        proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", f"-I{head.parent.parent}",
                               "-o", str(out), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise ClientUnavailable(f"building the callgrind client requests failed: {last}")
        os.replace(out, target)  # atomic: two cells building at once both end with one file
    return target


class Client:
    """The five requests. Outside Valgrind each call is a few native instructions that do
    nothing, so the same code runs in tests without Valgrind."""

    def __init__(self, path: Path | None = None):
        lib = ctypes.CDLL(str(path or library_path()))
        self.start, self.stop, self.zero = lib.lab_cg_start, lib.lab_cg_stop, lib.lab_cg_zero
        self._dump, self._running = lib.lab_cg_dump, lib.lab_cg_running
        self._dump.argtypes = [ctypes.c_char_p]
        for fn in (self.start, self.stop, self.zero, self._dump):
            fn.restype = None

    def dump(self, name: str) -> None:
        """Write the counts since the last zero to a new part file, named `name`."""
        self._dump(name.encode())

    @property
    def running_on_valgrind(self) -> bool:
        return bool(self._running())
