"""Run output: a progress line, `metrics.jsonl`, TensorBoard events. Only process 0 writes."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def _fmt_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class MetricsWriter:

  def __init__(self, workdir: str | Path, total_steps: int, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.total_steps = total_steps
    self._workdir = Path(workdir)
    self._tensorboard = tensorboard
    self._jsonl = None
    self._tb = None

  def _open(self) -> None:
    # On the first row, not at construction: a run refused while its task prepares (bad data, a bad key)
    # leaves no empty metrics.jsonl or TensorBoard events file behind.
    self._workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(self._workdir / "metrics.jsonl", "a", buffering=1)
    if self._tensorboard:
      from tensorboardX import SummaryWriter  # lazy: only the writing process needs it
      self._tb = SummaryWriter(str(self._workdir))

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    if self._jsonl is None:
      self._open()
    row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)

  def progress(self, step: int, m: dict[str, Any], remaining_s: float) -> None:
    if not self.enabled:
      return
    speed = "(compiling: no speed yet)"
    if "tokens_per_s" in m:
      speed = f"{m['tokens_per_s']:,.0f} tok/s" + (f" | MFU {100 * m['mfu']:.1f}%" if "mfu" in m else "")
    parts = [f"step {step}/{self.total_steps}", f"loss {m['loss']:.4f}"]
    if "accuracy" in m:
      parts.append(f"acc {m['accuracy']:.4f}")
    parts += [f"lr {m['learning_rate']:.2e}", f"gnorm {m['grad_norm']:.3f}", speed, f"ETA {_fmt_eta(remaining_s)}"]
    print(" | ".join(parts), flush=True)

  def log(self, text: str) -> None:
    if self.enabled:
      print(text, file=sys.stdout, flush=True)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()


def json_safe(obj: Any) -> Any:
  """`obj` with every non-finite float as its string ("nan", "inf"), as metrics.jsonl writes them: strict JSON,
  which `json.dumps` alone is not (it writes NaN)."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return str(obj)
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  return obj


def _scalar(v: Any) -> Any:
  try:
    f = float(v)
  except (TypeError, ValueError):
    return v
  return f if math.isfinite(f) else str(f)


class Timer:
  """Wall time of steps between log points, excluding the first (compile) step."""

  def __init__(self):
    self.start = time.perf_counter()

  def lap(self) -> float:
    now = time.perf_counter()
    dt, self.start = now - self.start, now
    return dt
