"""Shared timing helpers for the benchmark scripts (medians after warm-up, machine description)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from typing import Callable


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


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{cpu}, {os.cpu_count()} cores"


def today() -> str:
  return datetime.date.today().isoformat()


def parse_ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]
