"""What the training CLIs (`python -m pretrain.train`, `python -m finetune.run`) share: flags, start-up, errors.

  --config FILE --workdir DIR [--config.key=value ...] [--coordinator HOST:PORT --num_processes N --process_id I]

A bad input (config key, data line, checkpoint, path) ends the run with one line naming it and exit code 2;
a non-finite loss with exit code 3. The summary is printed as one JSON line by process 0.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable


def define_flags(config_help: str) -> None:
  """Defines --config (locked ConfigDict from a Python file), --workdir and the multi-process flags."""
  from absl import flags
  from ml_collections import config_flags
  if "config" in flags.FLAGS:  # another CLI module imported in the same process (a test, a driver) defined them
    return
  config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and TensorBoard events go.")
  flags.DEFINE_string("coordinator", None, "host:port of process 0 (explicit multi-process runs).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator).")
  flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator).")
  flags.DEFINE_integer("init_timeout", 300, "Seconds to wait for all processes to join.")
  flags.mark_flags_as_required(["config", "workdir"])


def is_user_error(e: BaseException) -> bool:
  """Whether `e` says the input is wrong (its message names the file and line, config key or tensor).
  Anything else is a bug and keeps its traceback."""
  from roformer_jax.config import ConfigError
  from roformer_jax.convert.load import CheckpointError
  from roformer_jax.config import DataError  # every reader's (data.jsonl, data.sources, pet.reviews re-export it)
  return isinstance(e, (ConfigError, CheckpointError, DataError, FileNotFoundError, FileExistsError,
                        NotADirectoryError, IsADirectoryError))


def main(prog: str, run: Callable[[Any, str], dict]) -> None:
  """The body of a CLI's absl `main`: start-up, `run(config, workdir)`, errors, the summary line."""
  from absl import flags
  FLAGS = flags.FLAGS
  if FLAGS.config.get("retain_host_memory", True):
    from roformer_jax.train import hostmem
    hostmem.reexec_with_retained_memory()  # first: glibc reads its tunables only at start-up
  from roformer_jax import startup
  startup.quiet_tpu_probe()  # before JAX starts its backends
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # orbax and grain log every save at INFO
  from roformer_jax.train.distributed import init_distributed
  from roformer_jax.train.loop import NonFiniteLoss
  try:
    # Before anything asks JAX for devices: otherwise each host would start alone and hang later.
    init_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id, FLAGS.init_timeout)
    summary = run(FLAGS.config, FLAGS.workdir)
  except NonFiniteLoss as e:
    print(f"ERROR: {e}", file=sys.stderr, flush=True)
    sys.exit(3)
  except Exception as e:  # noqa: BLE001 -- only user errors are caught; the rest re-raise
    if not is_user_error(e):
      raise
    print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  import jax
  if jax.process_index() == 0:
    print(json.dumps(summary), flush=True)
