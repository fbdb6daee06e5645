"""What the training CLIs (`python -m pretrain.train`, `python -m finetune.run`) share: flags, start-up, errors.

  --config FILE --workdir DIR [--config.key=value ...] [--coordinator HOST:PORT --num_processes N --process_id I]

A bad input (config file or key, data line, checkpoint, path) ends the run with one line naming it and exit
code 2, as does a step too large for the memory (XLA's RESOURCE_EXHAUSTED: the line names the keys that size
it); a non-finite loss with exit code 3. The summary is printed as one JSON line by process 0. A run
stopped by SIGTERM or Ctrl-C saves a checkpoint, prints its summary and exits with code 75 (EX_TEMPFAIL:
rerun the same command to resume), so that a scheduler or script never takes it for a finished one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

PREEMPTED = 75  # exit code of a run that saved and stopped early (SIGTERM, Ctrl-C)


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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=cli.parse_flags)`), with the config file loaded
  here, so that a missing or broken --config file or an unknown --config.key is one line, not a traceback."""
  from absl import flags
  prog = f"{Path(argv[0]).parent.name}.{Path(argv[0]).stem}" if argv else "roformer"
  # absl's --help / --helpshort list the main module's key flags; ours are defined here, so without this
  # they would list none (and the hint below would point at an empty list).
  for name in ("config", "workdir", "coordinator", "num_processes", "process_id", "init_timeout"):
    if name in flags.FLAGS:
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

  def fail(msg: str):
    print(f"{prog}: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)

  try:
    args = flags.FLAGS(argv)
    config = flags.FLAGS.config
    if config is None:
      fail("--config: the file's get_config() returned None")
    config.keys()  # an unreadable file is an object that raises on first use
    return args
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "Error whilst parsing config file" in str(e):  # ml_collections puts get_config's traceback here
      kind, _, msg = lines[-1].partition(": ")
      fail(f"{msg}" if kind.endswith(("ConfigError", "DataError")) else f"--config: {lines[-1]}")
    fail(f"{' '.join(lines)} (--helpshort lists the flags)")
  except (KeyError, AttributeError) as e:  # ml_collections: an override names a key the config lacks
    inner = e.args[0] if e.args and isinstance(e.args[0], KeyError) else e  # AttributeError(KeyError(msg))
    first, _, hint = str(inner.args[0] if inner.args else "").partition("\n")  # "'stepz'\nDid you mean ...?"
    name = first.strip("'\" ")
    flag = next((a.split("=")[0] for a in argv if a.startswith("--config.") and name in a.split("=")[0].split(".")),
                f"--config.{name}")
    fail(f"{flag}: no such config key{f' ({hint})' if hint else ''}")
  except SyntaxError as e:
    fail(f"{e.filename}:{e.lineno}: {e.msg} (the --config file)")
  except Exception as e:  # noqa: BLE001 -- anything else while loading the config file is the file's fault
    cause = e
    while cause is not None:  # get_config(arg) raising ConfigError arrives wrapped by ml_collections
      if is_user_error(cause):
        fail(f"--config: cannot load the config file: {cause}" if isinstance(cause, OSError) else str(cause))
      cause = cause.__cause__ or cause.__context__
    if isinstance(e, OSError):
      found = re.search(r"\[Errno \d+\] ([^\n]*)", str(e))
      fail(f"--config: cannot load the config file: {found.group(1) if found else e}")
    raise


def check_workdir(workdir: str | None) -> bool:
  """A local --workdir must be a folder this process can create or write; gs:// and the like are not checked.
  Returns whether this call created it."""
  from roformer_jax.config import ConfigError
  if not workdir or not str(workdir).strip():
    raise ConfigError("--workdir is empty: give the folder for checkpoints and logs")
  if "://" in str(workdir):
    return False
  path = Path(workdir).expanduser()
  if path.exists() and not path.is_dir():
    raise ConfigError(f"--workdir {workdir}: is a file, not a folder")
  created = not path.exists()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--workdir {workdir}: cannot create it ({e.strerror}: {e.filename})") from e
  return created


def is_user_error(e: BaseException) -> bool:
  """Whether `e` says the input is wrong (its message names the file and line, config key or tensor).
  Anything else is a bug and keeps its traceback."""
  from roformer_jax.config import ConfigError
  from roformer_jax.convert.load import CheckpointError
  from roformer_jax.config import DataError  # every reader's (data.jsonl, data.sources, pet.reviews re-export it)
  return isinstance(e, (ConfigError, CheckpointError, DataError, FileNotFoundError, FileExistsError,
                        NotADirectoryError, IsADirectoryError, PermissionError))


def out_of_memory(e: BaseException) -> str | None:
  """One line for XLA's RESOURCE_EXHAUSTED (a step too large for the device or host, at compile or run time),
  naming the keys that size it; None for anything else."""
  if type(e).__name__ not in ("JaxRuntimeError", "XlaRuntimeError") or "RESOURCE_EXHAUSTED" not in str(e):
    return None
  first = str(e).strip().splitlines()[0]
  return (f"out of memory: {first} (lower config.batch_size or config.seq_len, or raise config.accum_steps, "
          "or set config.remat=full)")


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
  from roformer_jax.train.loop import NonFiniteLoss, check_config
  created = False
  try:
    check_config(FLAGS.config)
    created = check_workdir(FLAGS.workdir)
    # Before anything asks JAX for devices: otherwise each host would start alone and hang later.
    init_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id, FLAGS.init_timeout)
    summary = run(FLAGS.config, FLAGS.workdir)
  except NonFiniteLoss as e:
    print(f"ERROR: {e}", file=sys.stderr, flush=True)
    sys.exit(3)
  except KeyboardInterrupt:  # Ctrl-C outside the train loop, or a second one inside it
    print(f"{prog}: interrupted; the last saved checkpoint is untouched", file=sys.stderr, flush=True)
    sys.exit(130)
  except Exception as e:  # noqa: BLE001 -- only user errors are caught; the rest re-raise
    oom = out_of_memory(e)
    if not oom and not is_user_error(e):
      raise
    if created:  # a refused run leaves no empty workdir behind (rmdir: only if nothing was written)
      try:
        Path(FLAGS.workdir).expanduser().rmdir()
      except OSError:
        pass
    print(f"{prog}: error: {oom or e}", file=sys.stderr, flush=True)
    sys.exit(2)
  import signal
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: a late Ctrl-C must not turn the exit into a traceback
  import jax
  if jax.process_index() == 0:
    from roformer_jax.train.metrics import json_safe
    print(json.dumps(json_safe(summary)), flush=True)  # strict JSON: a non-finite metric as "nan"
  if summary.get("preempted"):
    sys.exit(PREEMPTED)
