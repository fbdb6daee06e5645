"""Host-memory set-up for XLA:CPU runs: keep freed memory in the process so each step does not fault it back in.

XLA:CPU allocates a step's temporaries as one block (210 MB for RoFormerV2-small at batch 8 x 128) and frees
it when the step ends. glibc's malloc serves blocks over 32 MB, and every large block a worker thread asks its
own arena for, with a fresh `mmap`, and unmaps them on free. So every step page-faults the whole block back
in: ~57k minor faults per step, a quarter of that train step on 2 cores (docs/BENCHMARKS.md).

The fix is three glibc tunables: one arena, no mmap'd chunks, and no trimming below 2 GiB of free heap.
glibc reads them only at start-up (and `mallopt` cannot move threads that already have an arena, such as the
BLAS threads numpy starts on import), so a CLI re-executes itself with them, first thing in `main`. The
cost: the process keeps its peak heap instead of returning it to the system.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

TUNABLES = {"glibc.malloc.arena_max": "1", "glibc.malloc.mmap_max": "0", "glibc.malloc.trim_threshold": "2147483647"}


def tuned_environ(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
  """`environ` with TUNABLES added to GLIBC_TUNABLES; a malloc tunable the user already set is kept."""
  current = environ.get("GLIBC_TUNABLES", "")
  names = {item.split("=", 1)[0] for item in current.split(":") if item}
  extra = [f"{k}={v}" for k, v in TUNABLES.items() if k not in names]
  return {**environ, "GLIBC_TUNABLES": ":".join(([current] if current else []) + extra)}


def is_tuned(environ: Mapping[str, str] = os.environ) -> bool:
  return tuned_environ(environ)["GLIBC_TUNABLES"] == environ.get("GLIBC_TUNABLES", "")


def reexec_with_retained_memory() -> None:
  """Re-executes this process's own command line (same interpreter, options and arguments) with
  `tuned_environ()`, unless it already has it or the C library is not glibc. Returns only in those cases."""
  if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc" or is_tuned():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], tuned_environ())
