"""Fine-tuning CLI: a task from finetune/, started from a checkpoint, on the library's train loop.

  python -m finetune.run --config finetune/configs/<task>.py --workdir DIR --config.init=PATH [--config.key=value ...]

`--config.init` is any path `roformer_jax.from_pretrained` reads (relative paths too). Rerunning the same
command resumes; at the end the best dev checkpoint makes the final evaluation and test predictions, and
one JSON line summarises the run. Multi-process flags as `python -m pretrain.train`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from absl import app

from roformer_jax.config import ConfigError
from roformer_jax.train import cli

cli.define_flags("Fine-tuning config file (finetune/configs/*.py).")

# config.task -> (module, Task class). A new task adds its line here.
TASKS = {
    "classify": ("finetune.classify", "ClassifyTask"),
    "pet": ("finetune.pet", "PetTask"),
    "ner": ("finetune.ner", "NerTask"),
    "clue": ("finetune.clue.task", "make_task"),
    "seq2seq": ("finetune.seq2seq", "Seq2SeqTask"),
    "csl": ("finetune.csl", "CslTask"),
    "relation": ("finetune.gplinker", "RelationTask"),
    "event": ("finetune.gplinker", "EventTask"),
}


def make_task(cfg):
  if cfg.task not in TASKS:
    raise ConfigError(f"config.task: unknown task {cfg.task!r}; known: {sorted(TASKS)}")
  module, name = TASKS[cfg.task]
  return getattr(importlib.import_module(module), name)(cfg)


def run(cfg, workdir: str | Path) -> dict[str, Any]:
  """Fine-tunes `cfg.task` into `workdir` (resuming if it has checkpoints); returns the final summary."""
  from roformer_jax.train import loop
  task = make_task(cfg)
  if not getattr(task, "trains", True):  # e.g. PET zero-shot: evaluate the checkpoint as it is
    return loop.evaluate_only(task, cfg, workdir)
  return loop.train(task, cfg, workdir)


def main(argv):
  del argv
  cli.main("finetune", run)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
