"""Shared timing helpers for the benchmark scripts (medians after warm-up, interleaved rounds, machine description)."""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import os
import platform
import statistics
import sys
import time
import types
from typing import Callable

from roformer_jax.argtypes import nonnegative_int, positive_int, positive_ints  # noqa: F401 -- the benches' types


def median_time(fn: Callable[[], object], warmup: int = 2, repeats: int = 5, min_total_s: float = 0.0) -> float:
  """Median wall time of fn() in seconds; fn must block until its result is ready."""
  for _ in range(warmup):
    fn()
  times = []
  while len(times) < repeats or sum(times) < min_total_s:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def interleaved_times(runs: dict[str, Callable[[], None]], rounds: int, repeats: int,
                      warmup: int = 2) -> dict[str, list[list[float]]]:
  """Step times in seconds, [name][round][repeat]. Every round times each implementation in turn (the
  order rotates, and each turn starts with one untimed step), so a slow phase of a shared machine falls
  on all of them rather than on one. (On the 2-core VM of docs/BENCHMARKS.md, single steps of ours took
  389 to 644 ms within one minute, with no other process of ours running.)

  A run may carry a `drain()` attribute: it is called (untimed) after each implementation's turn, so that a
  run which waits for its previous step rather than its own (see `bench.train`) leaves nothing in flight."""
  drain = lambda run: getattr(run, "drain", lambda: None)()
  for run in runs.values():
    for _ in range(warmup):
      run()
    drain(run)
  names = list(runs)
  times: dict[str, list[list[float]]] = {n: [] for n in names}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      runs[name]()
      ts = []
      for _ in range(repeats):
        t = time.perf_counter()
        runs[name]()
        ts.append(time.perf_counter() - t)
      drain(runs[name])
      times[name].append(ts)
  return times


def step_medians(times: dict[str, list[list[float]]]) -> dict[str, float]:
  """Each implementation's median step over all rounds of `interleaved_times`."""
  return {n: statistics.median(t for r in ts for t in r) for n, ts in times.items()}


def ratio_by_round(times: dict[str, list[list[float]]], slow: str, fast: str) -> list[float]:
  """`slow`'s median step over `fast`'s, round by round (how much the machine moved the ratio)."""
  return [statistics.median(s) / statistics.median(f) for s, f in zip(times[slow], times[fast])]


def machine() -> str:
  """'<model name> (family F model M[, avx512_bf16]), N cores'. A VM's model name ('AMD EPYC') can hide the
  generation, and the generation decides the matmul peak (Zen 4 runs AVX-512 at half Zen 5's width)."""
  cpu = platform.processor() or platform.machine()
  info: dict[str, str] = {}
  try:
    for line in open("/proc/cpuinfo"):
      key, _, value = line.partition(":")
      info.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  cpu = info.get("model name", cpu)
  if "cpu family" in info:
    flags = info.get("flags", "").split()
    extra = "".join(f", {f}" for f in ("avx512_bf16", "amx_bf16") if f in flags)  # bf16 dot products, AMX tiles
    cpu += f" (family {info['cpu family']} model {info.get('model', '?')}{extra})"
  return f"{cpu}, {os.cpu_count()} cores"


def versions(*packages: str) -> dict[str, str]:
  """Installed versions of `packages` (distribution names); one not installed is 'not installed'."""
  from importlib import metadata
  out = {}
  for name in packages:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def today() -> str:
  return datetime.date.today().isoformat()


def bert4torch_heads():
  """bert4torch's `layers.global_point` and `losses` modules (the PyTorch GlobalPointer reference), loaded from
  their own files without running the package's `__init__`: that imports every model it ships, and through
  them torchvision, whose PyPI wheel needs CUDA libraries a CPU build of torch does not have. The two files
  import only torch, numpy and `bert4torch.snippets`, so what runs is bert4torch's own code."""
  if "bert4torch" not in sys.modules:  # once per process (the bare package below has no spec to find again)
    spec = importlib.util.find_spec("bert4torch")
    if spec is None:
      raise ModuleNotFoundError("bert4torch is not installed (pip install -e '.[test]')")
    root = spec.submodule_search_locations[0]
    for name, path in (("bert4torch", root), ("bert4torch.layers", os.path.join(root, "layers"))):
      package = types.ModuleType(name)  # a bare package: its submodules load from their files
      package.__path__ = [path]
      sys.modules[name] = package
  return importlib.import_module("bert4torch.layers.global_point"), importlib.import_module("bert4torch.losses")
