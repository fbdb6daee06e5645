"""`python -m pretrain.train` with a SIGKILL injected at a checkpoint save (tests only).

KILL_AT=<step> KILL_MODE=after: the process kills itself once the save at <step> has committed.
KILL_MODE=during: it kills itself right after the asynchronous save at <step> has started.
KILL_MODE=term: it sends itself SIGTERM (a preemption notice) right after the save at <step>.
"""

import os
import signal

from absl import app

from pretrain import train
from roformer_jax.train import checkpoint

_save = checkpoint.Checkpointer.save


def save(self, step, state, iterator=None, *, force=False):
  started = _save(self, step, state, iterator, force=force)
  mode = os.environ.get("KILL_MODE", "after")
  if step == int(os.environ["KILL_AT"]):
    if mode == "term":
      os.kill(os.getpid(), signal.SIGTERM)
      return started
    if mode == "after":
      self.wait()
    os.kill(os.getpid(), signal.SIGKILL)
  return started


checkpoint.Checkpointer.save = save

if __name__ == "__main__":
  app.run(train.main)
