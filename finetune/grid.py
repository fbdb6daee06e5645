"""What the results grids of docs/RESULTS.md share: runs that resume, one summary line per finished run, mean ± sd.

A grid is a list of (name, run function, config overrides); `run_grid` calls `fn(config, <out>/<name>)` for every
run not yet in <out>/results.jsonl, in this process, and appends its summary there, so a rerun skips finished runs
and an unfinished one resumes from its own checkpoints. A run is keyed by its name and its overrides: a rerun with
other flags (another --steps, --init, ...) into the same --out is refused, so that neither a finished run nor an
unfinished run's checkpoints of the old flags are taken for the new ones.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

Run = tuple[str, Callable[[Any, Path], dict], dict[str, Any]]


def quiet() -> None:
  """As the CLIs start: no accelerator probe noise, no orbax/grain INFO lines."""
  from absl import logging

  from roformer_jax import startup
  startup.quiet_tpu_probe()
  logging.set_verbosity(logging.WARNING)


def run_grid(runs: Sequence[Run], out: Path, make_config: Callable[..., Any],
             report: Sequence[str] = ("test_accuracy",), run_missing: bool = True) -> dict[str, dict]:
  """{name: summary} of every run (finished earlier or now); prints `report` keys of each new run. With
  `run_missing=False` only the finished runs are read (a table of a grid still under way)."""
  out = Path(out).expanduser().absolute()
  out.mkdir(parents=True, exist_ok=True)
  log = out / "results.jsonl"
  results = ({r["run"]: r for r in map(json.loads, log.read_text(encoding="utf-8").splitlines())}
             if log.is_file() else {})
  for name, fn, overrides in runs:
    keyed = json.loads(json.dumps(overrides))  # as results.jsonl and grid_run.json hold them
    # Rows written before the overrides were recorded (no "overrides" key) cannot be checked.
    _same_run(name, results[name].get("overrides", keyed) if name in results else None, keyed, log)
    if name in results or not run_missing:
      continue
    marker = out / name / "grid_run.json"  # the flags of an unfinished run, whose checkpoints a rerun resumes
    _same_run(name, json.loads(marker.read_text()) if marker.is_file() else None, keyed, marker)
    new = not marker.is_file()
    if new:
      marker.parent.mkdir(parents=True, exist_ok=True)
      tmp = marker.with_name(f".{marker.name}.tmp")
      tmp.write_text(json.dumps(keyed))
      os.replace(tmp, marker)
    try:
      summary = {"run": name, **overrides, **fn(make_config(**overrides), out / name), "overrides": keyed}
    except BaseException:
      # A run that failed before any checkpoint (e.g. a wrong --init) does not bind its folder to those flags.
      if new and not any((out / name).rglob("checkpoints")):
        marker.unlink(missing_ok=True)
      _fail_in_one_line(name)
      raise
    if summary.get("preempted"):  # saved, not finished: never a result; the same command resumes it
      from roformer_jax.train.cli import PREEMPTED
      print(f"{name}: preempted at step {summary.get('step')}; rerun the same command to resume", flush=True)
      raise SystemExit(PREEMPTED)
    results[name] = summary
    # One line per finished run, the file replaced atomically: a crash loses at most the run under way and
    # never leaves a half-written line that every later rerun would fail to parse.
    from roformer_jax.data.jsonl import write_jsonl
    write_jsonl(log, results.values())
    print(json.dumps({"run": name, **{k: summary.get(k) for k in report}}), flush=True)
  return results


def _fail_in_one_line(name: str) -> None:
  """Within `except`: a bad input (the checkpoint, a data file, a config key), a step too large for the memory
  or a non-finite loss ends the grid in one line naming the run, with the training CLIs' exit codes (2, 2, 3);
  anything else keeps its traceback."""
  from roformer_jax.train.cli import is_user_error, out_of_memory
  from roformer_jax.train.loop import NonFiniteLoss
  e = sys.exc_info()[1]
  msg, code = out_of_memory(e), 2
  if isinstance(e, NonFiniteLoss):
    msg, code = str(e), 3
  elif msg is None and is_user_error(e):
    msg = str(e)
  if msg is not None:
    print(f"error: run {name}: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(code) from None


def _same_run(name: str, recorded: dict | None, overrides: dict, where: Path) -> None:
  """Refuses (one line, exit code 2) a run whose recorded overrides differ from this command's."""
  if recorded is None or recorded == overrides:
    return
  diff = ", ".join(f"{k}={recorded.get(k)!r} there, {overrides.get(k)!r} now"
                   for k in sorted(set(recorded) | set(overrides)) if recorded.get(k) != overrides.get(k))
  print(f"error: run {name} in {where} was made with other settings ({diff}): rerun with the same flags, "
        "or give another --out", file=sys.stderr, flush=True)
  raise SystemExit(2)


def mean_sd(values: Sequence[float]) -> str:
  """'0.547 ± 0.012 (n=3)' (the sample sd, n - 1); '0.763 (n=1)': one value has no sd; '–' for none."""
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.3f} (n=1)"
  return f"{statistics.mean(values):.3f} ± {sample_sd(values):.3f} (n={len(values)})"


def sample_sd(values: Sequence[float]) -> float:
  """The sample sd (n - 1) of the tables and error bars; NaN for fewer than two values (none, not 0)."""
  return statistics.stdev(values) if len(values) > 1 else math.nan
