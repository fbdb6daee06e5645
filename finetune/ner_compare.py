r"""`make finetune-ner`: GlobalPointer NER from a checkpoint, then the same setup from scratch; one JSON line.

  python -m finetune.ner_compare --config finetune/configs/ner.py --workdir workdir/ner \
      --config.init=workdir/tiny_cpu [--config.key=value ...]

Runs `finetune.run.run` twice with the same config: into <workdir>/pretrained (the encoder of config.init)
and <workdir>/scratch (config.from_scratch=True: random weights, config.init's architecture and vocab).
Rerunning resumes each. The last line is {"task", "test_f1", "test_precision", "test_recall",
"scratch_test_f1", ...} (dev figures, best steps and wall times too).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from absl import app

from finetune.run import run  # defines the CLI's flags (--config, --workdir, multi-process)
from roformer_jax.config import ConfigError
from roformer_jax.train import cli


def compare(cfg, workdir: str | Path) -> dict[str, Any]:
  """The pretrained run and the scratch run of `cfg`; the summary line's dict."""
  if cfg.task != "ner":
    raise ConfigError(f"config.task is {cfg.task!r}; finetune.ner_compare runs the ner task")
  workdir = Path(workdir)
  out: dict[str, Any] = {"task": "ner"}
  for name, scratch in (("pretrained", False), ("scratch", True)):
    run_cfg = copy.deepcopy(cfg)
    run_cfg.from_scratch = scratch
    start = time.perf_counter()
    summary = run(run_cfg, workdir / name)
    if summary.get("preempted"):  # stop here; the same command resumes this run, then the next
      return {**summary, "run": name}
    prefix = "scratch_" if scratch else ""
    keys = ["test_f1", "test_precision", "test_recall", "dev_f1", "best_step", "step"]
    out.update({prefix + k: summary.get(k) for k in keys})
    out[prefix + "wall_s"] = round(time.perf_counter() - start, 1)
  out.update(source=cfg.data.source, head=cfg.head, rope=cfg.rope, init=str(cfg.init), seed=cfg.seed)
  return out


def main(argv):
  del argv
  cli.main("finetune.ner_compare", compare)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
