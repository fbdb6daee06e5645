"""`python -m roformer_jax.bench <command> [args]` (also the `roformer-bench` console script).

Commands: forward, train, attention, aot, tokenizer. (The input-pipeline benchmark lives beside the
masking it measures: `python -m pretrain.bench_data`.) Each is a module here with `main(argv)`; benchmarks
print measured figures and are never run as tests.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "forward": "roformer_jax.bench.forward",
    "train": "roformer_jax.bench.train",
    "attention": "roformer_jax.bench.attention",
    "aot": "roformer_jax.bench.aot",
    "tokenizer": "roformer_jax.bench.tokenizer_speed",
}


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in COMMANDS:
    sys.exit(f"usage: python -m roformer_jax.bench {{{','.join(COMMANDS)}}} [options]")
  importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
  main()
