"""A training CLI (KILL_CLI: pretrain.train, the default, or finetune.run) with a crash injected at a
checkpoint save (tests only).

KILL_AT=<step> KILL_MODE=after: the process kills itself once the save at <step> has committed.
KILL_MODE=during: it kills itself right after the asynchronous save at <step> has started.
KILL_MODE=term: it sends itself SIGTERM (a preemption notice) right after the save at <step>.
KILL_MODE=int: the same with SIGINT (Ctrl-C).
KILL_WHAT=best: the same at the save of the best checkpoint (finetune) instead of the run's checkpoint.
"""

import importlib
import os
import signal

from absl import app

from roformer_jax.train import checkpoint


def _crash(step, wait):
  mode = os.environ.get("KILL_MODE", "after")
  if step != int(os.environ["KILL_AT"]):
    return
  if mode in ("term", "int"):
    os.kill(os.getpid(), signal.SIGTERM if mode == "term" else signal.SIGINT)
    return
  if mode == "after":
    wait()
  os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("KILL_WHAT", "checkpoint") == "best":
  _update = checkpoint.BestCheckpoint.update

  def update(self, step, params, metrics):
    saved = _update(self, step, params, metrics)
    if saved:
      _crash(step, self.manager.wait_until_finished)
    return saved

  checkpoint.BestCheckpoint.update = update
else:
  _save = checkpoint.Checkpointer.save

  def save(self, step, state, iterator=None, **kwargs):
    started = _save(self, step, state, iterator, **kwargs)
    _crash(step, self.wait)
    return started

  checkpoint.Checkpointer.save = save

cli = importlib.import_module(os.environ.get("KILL_CLI", "pretrain.train"))

if __name__ == "__main__":
  from roformer_jax.train.cli import parse_flags
  app.run(cli.main, flags_parser=parse_flags)
