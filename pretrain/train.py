"""Pretraining CLI: corpus -> whole-word-masking MLM -> the library's train loop -> orbax checkpoints.

  python -m pretrain.train --config pretrain/configs/tiny_cpu.py --workdir DIR [--config.key=value ...]

Restarting the same command resumes from the latest complete checkpoint. Multi-host: TPU pods and
SLURM are detected; elsewhere pass --coordinator HOST:PORT --num_processes N --process_id I.
The task is `pretrain.task.PretrainTask`; the loop is `roformer_jax.train.loop.train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from absl import app

from roformer_jax.train import cli

cli.define_flags("Pretraining config file (pretrain/configs/*.py).")


def run(cfg, workdir: str | Path) -> dict[str, Any]:
  """Trains to cfg.steps (resuming if checkpoints exist); returns the final summary."""
  from pretrain.task import PretrainTask
  from roformer_jax.train import loop
  return loop.train(PretrainTask(cfg), cfg, workdir)


def main(argv):
  del argv
  cli.main("pretrain", run)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
