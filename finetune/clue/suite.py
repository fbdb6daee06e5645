"""All of CLUE from one command: any subset of the tasks, the reference recipes, one results table, one zip.

  python -m finetune.clue.suite --clue_dir /data/clue --init PATH --workdir workdir/clue \
      [--tasks afqmc,tnews,...] [--set epochs=1 --set batch_size=16 ...]

`--init` is any checkpoint `from_pretrained` reads. Each task trains in <workdir>/<task> with its recipe
(finetune/configs/clue.py; `--set key=value` overrides a config key for every task, `--set task:key=value` for
that task only). A finished task writes
<workdir>/<task>/summary.json (atomically) and is skipped by a rerun; an unfinished one resumes from its last
checkpoint, so rerunning the same command completes a half-finished suite (a preempted task stops the suite
with exit code 75 and writes no summary). At the end, over every task finished in <workdir> (by this command
or an earlier one with other --tasks):
  <workdir>/results.json   task -> dev metric, best step, prediction files
  <workdir>/results.md     the same as a markdown table
  <workdir>/clue_submission.zip   every test prediction under its official name (afqmc_predict.json, ...,
                           cmrc2018_predict.json, cluener_predict.json), the layout the CLUE site takes.
The eleven tasks: afqmc, tnews, iflytek, ocnli, cmnli, csl, cluewsc, c3, chid, cmrc2018, cluener.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from roformer_jax.config import ConfigError

# task -> (config factory, dev metric key in the run's summary). A task added to the suite adds its line.
# CMRC2018's is the reference's strict metric (what the spec's dev table reports), the official EM/F1 beside it.
SUITE: dict[str, tuple[str, str]] = {
    **{t: ("finetune.configs.clue", "dev_accuracy") for t in
       ("afqmc", "tnews", "iflytek", "ocnli", "cmnli", "csl", "cluewsc", "c3", "chid")},
    "cmrc2018": ("finetune.configs.clue", "dev_strict"),
    "cluener": ("finetune.configs.clue", "dev_f1"),
}
ALSO: dict[str, tuple[str, ...]] = {"cmrc2018": ("dev_em", "dev_f1")}  # more dev metrics in the table
SUMMARY = "summary.json"


def _atomic_write(path: Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def parse_tasks(tasks: str) -> list[str]:
  """"afqmc,tnews" -> ["afqmc", "tnews"] (suite order kept as given); ConfigError names an unknown task."""
  names = [t.strip().lower() for t in tasks.split(",") if t.strip()] if tasks else list(SUITE)
  unknown = [t for t in names if t not in SUITE]
  if unknown or not names:
    raise ConfigError(f"--tasks: unknown CLUE task(s) {unknown or tasks!r}; expected a comma list of {list(SUITE)}")
  return list(dict.fromkeys(names))


def apply_overrides(cfg, overrides: Sequence[str]) -> None:
  """`key.sub=value` strings onto a ConfigDict; values parse as Python literals (else strings) and must keep
  the key's type (an int key takes an int); ConfigError names a bad one."""
  for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep:
      raise ConfigError(f"--set {item!r}: expected key=value")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
      if p not in node:
        raise ConfigError(f"--set {item!r}: config has no key {key!r}")
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"--set {item!r}: config has no key {key!r}")
    old = node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if old is not None and type(value) is not type(old) and not (isinstance(old, tuple) and isinstance(value, list)):
      raise ConfigError(f"--set {item!r}: config.{key} is {type(old).__name__}, got {type(value).__name__}")
    node[leaf] = tuple(value) if isinstance(old, tuple) else value


def task_overrides(task: str, overrides: Sequence[str]) -> list[str]:
  """The `--set` items for `task`: plain `key=value` ones, and `task:key=value` ones naming it (for a key only
  that task has, e.g. cmrc2018:clue.stride=64); ConfigError names an unknown task prefix."""
  out = []
  for item in overrides:
    key = item.partition("=")[0]
    if ":" not in key:
      out.append(item)
      continue
    prefix, rest = item.split(":", 1)
    if prefix not in SUITE:
      raise ConfigError(f"--set {item!r}: unknown CLUE task {prefix!r} before ':'; expected one of {list(SUITE)}")
    if prefix == task:
      out.append(rest)
  return out


def task_config(task: str, clue_dir: str, init: str, overrides: Sequence[str] = ()):
  import importlib
  module, _ = SUITE[task]
  cfg = importlib.import_module(module).get_config(task)
  cfg.init, cfg.clue.dir = init, clue_dir
  apply_overrides(cfg, task_overrides(task, overrides))
  return cfg


def run_suite(clue_dir: str, init: str, workdir: str | Path, tasks: Sequence[str],
              overrides: Sequence[str] = (), log: Callable[[str], None] = print,
              run: Optional[Callable[[Any, Path], dict]] = None) -> dict[str, dict]:
  """Trains and evaluates `tasks` in turn (skipping finished ones); returns task -> results row."""
  if run is None:
    from finetune.run import run
  workdir = Path(workdir).expanduser().absolute()
  if not Path(clue_dir).expanduser().is_dir():
    raise ConfigError(f"--clue_dir={clue_dir}: no such folder")
  configs = {t: task_config(t, clue_dir, init, overrides) for t in tasks}  # every bad --set before any training
  summaries: dict[str, dict] = {}
  for task in tasks:
    path = workdir / task / SUMMARY
    if path.is_file():
      summaries[task] = json.loads(path.read_text(encoding="utf-8"))
      log(f"[suite] {task}: finished before ({path}); skipped")
      continue
    log(f"[suite] {task}: training in {workdir / task}"
        + (" (resuming from its checkpoints)" if (workdir / task / "checkpoints").is_dir() else ""))
    summary = run(configs[task], workdir / task)
    if summary.get("preempted"):  # saved, not finished: no summary, so that the same command resumes it
      from roformer_jax.train.cli import PREEMPTED
      log(f"[suite] {task}: preempted at step {summary.get('step')}; rerun the same command to resume")
      raise SystemExit(PREEMPTED)
    _atomic_write(path, json.dumps(summary, ensure_ascii=False, indent=1).encode("utf-8"))
    summaries[task] = summary
  # Tasks finished in this workdir by earlier commands (another --tasks list) stay in the table and the zip.
  for task in SUITE:
    path = workdir / task / SUMMARY
    if task not in summaries and path.is_file():
      summaries[task] = json.loads(path.read_text(encoding="utf-8"))
      log(f"[suite] {task}: finished by an earlier command ({path}); kept in the results")
  rows = {t: result_row(t, summaries[t]) for t in SUITE if t in summaries}
  write_results(workdir, rows)
  return rows


def result_row(task: str, summary: dict) -> dict:
  metric = SUITE[task][1]
  return {"metric": metric.removeprefix("dev_"), "dev": summary.get(metric), "best_step": summary.get("best_step"),
          "steps": summary.get("step"), "predictions": summary.get("predictions", {}),
          "also": {k.removeprefix("dev_"): summary.get(k) for k in ALSO.get(task, ())}}


def write_results(workdir: Path, rows: dict[str, dict]) -> None:
  """results.json, results.md and clue_submission.zip (every prediction file under its own name)."""
  _atomic_write(workdir / "results.json", json.dumps(rows, ensure_ascii=False, indent=1).encode("utf-8"))
  pct = lambda x: "-" if x is None else f"{100 * x:.2f}"
  lines = ["| task | dev metric | dev | best step / steps | test predictions | also (dev) |",
           "|---|---|---|---|---|---|"]
  for task, r in rows.items():
    files = ", ".join(Path(p).name for p in r["predictions"].values()) or "-"
    also = ", ".join(f"{k} {pct(v)}" for k, v in r.get("also", {}).items()) or "-"
    lines.append(f"| {task} | {r['metric']} | {pct(r['dev'])} | {r['best_step']} / {r['steps']} | {files} | {also} |")
  _atomic_write(workdir / "results.md", ("\n".join(lines) + "\n").encode("utf-8"))
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".clue_submission.zip.", suffix=".tmp")
  os.close(fd)
  try:
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
      for task, r in rows.items():
        for p in r["predictions"].values():
          # The summary holds absolute paths; a workdir moved since has the file under <workdir>/<task>/.
          moved = workdir / task / "predictions" / Path(p).name
          z.write(p if Path(p).is_file() or not moved.is_file() else moved, arcname=Path(p).name)
    os.replace(tmp, workdir / "clue_submission.zip")
  except BaseException:
    os.unlink(tmp)
    raise


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m finetune.clue.suite", description=__doc__.split("\n")[0])
  parser.add_argument("--clue_dir", required=True, help="folder holding the official <task>_public/ folders")
  parser.add_argument("--init", required=True, help="the checkpoint: anything from_pretrained reads")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--tasks", default="", help=f"comma list; default all of {','.join(SUITE)}")
  parser.add_argument("--set", action="append", default=[], metavar="[TASK:]KEY=VALUE",
                      help="a config key for every task (finetune/configs/clue.py), e.g. epochs=3, or for one "
                           "task: cmrc2018:clue.stride=64")
  args = parser.parse_args(argv)
  from roformer_jax import startup
  startup.quiet_tpu_probe()
  from roformer_jax.train.cli import is_user_error
  try:
    rows = run_suite(args.clue_dir, args.init, args.workdir, parse_tasks(args.tasks), args.set)
  except Exception as e:  # noqa: BLE001 -- user errors in one line; the rest keep their traceback
    if not is_user_error(e):
      raise
    print(f"clue suite: error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  print((Path(args.workdir) / "results.md").read_text(encoding="utf-8"), end="")
  print(json.dumps({"results": str(Path(args.workdir).absolute() / "results.json"),
                    "submission": str(Path(args.workdir).absolute() / "clue_submission.zip"),
                    **{t: r["dev"] for t, r in rows.items()}}), flush=True)


if __name__ == "__main__":
  main()
