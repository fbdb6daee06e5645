"""`python -m roformer_jax.bench <command> [args]` (also the `roformer-bench` console script).

Commands: forward, train, finetune, decode, teaforn, attention, aot, tokenizer, exactness, matmul. The process first
re-executes itself with glibc malloc tunables that keep freed memory (roformer_jax.train.hostmem; peers in the same run get them too), unless
`--malloc=default` comes before the command. (The input-pipeline benchmark lives beside the
masking it measures: `python -m pretrain.bench_data`.) Each is a module here with `main(argv)`; benchmarks
print measured figures and are never run as tests. `python -m roformer_jax.bench.<module>` runs as its command.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "forward": "roformer_jax.bench.forward",
    "train": "roformer_jax.bench.train",
    "finetune": "roformer_jax.bench.finetune",
    "decode": "roformer_jax.bench.decode",
    "teaforn": "roformer_jax.bench.teaforn",
    "attention": "roformer_jax.bench.attention",
    "aot": "roformer_jax.bench.aot",
    "tokenizer": "roformer_jax.bench.tokenizer_speed",
    "exactness": "roformer_jax.bench.exactness",
    "matmul": "roformer_jax.bench.matmul",
}


def main(argv: list[str] | None = None) -> None:
  cli = argv is None
  argv = sys.argv[1:] if cli else argv
  mode = "retain"
  if argv and argv[0].startswith("--malloc="):
    mode, argv = argv[0].split("=", 1)[1], argv[1:]
  usage = f"usage: python -m roformer_jax.bench [--malloc={{retain,default}}] {{{','.join(COMMANDS)}}} [options]"
  if argv[:1] in (["-h"], ["--help"]):
    print(f"{usage}\n\n{__doc__.strip()}\n\n`python -m roformer_jax.bench <command> --help` lists its options.")
    sys.exit(0)
  if mode not in ("retain", "default") or not argv or argv[0] not in COMMANDS:
    sys.exit(usage)
  if cli and mode == "retain":  # (a programmatic call leaves the process as it is)
    from roformer_jax.train import hostmem
    hostmem.reexec_with_retained_memory()
  if cli:
    # No accelerator or TensorFlow start-up noise on a laptop: libtpu's probe (aot describes its TPU
    # topology without the TPU backend, as the tests run it), and TF, which `transformers` would import
    # for the peers (bert4keras imports it itself where a benchmark needs it).
    from roformer_jax import startup
    startup.quiet_tpu_probe()
    os.environ.setdefault("USE_TF", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from roformer_jax.config import ConfigError
  try:
    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
  except ConfigError as e:  # a bad --preset, --attention, ...: the message names the field
    print(f"roformer-bench {argv[0]}: error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def run_as_command(module: str) -> None:
  """`python -m roformer_jax.bench.<module> [args]`: the command's start-up as through this CLI (malloc tunables,
  no libtpu / TensorFlow noise), which that module's own `main` skips."""
  sys.argv[1:1] = [next(c for c, m in COMMANDS.items() if m == module)]
  main()


if __name__ == "__main__":
  main()
