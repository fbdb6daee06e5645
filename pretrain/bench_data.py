"""Input-pipeline throughput alone (no train step): MLM batches per second of one process.

  python -m pretrain.bench_data --seq 128 --batch 32 [--tokenizer vocab.txt] [--data-dir DIR]

Prepares the corpus first (cached; not timed), then times `make_pretrain_iterator` batches after
a warm-up, as process 0 of `--processes`. Prints one JSON line with `tokens_per_s` (per process).
Without `--tokenizer`, a char vocab of the embedded corpus is built once in the data folder.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np

from roformer_jax.bench.common import machine, today


def _embedded_vocab(data_dir: pathlib.Path) -> pathlib.Path:
  from roformer_jax import corpus, tokenization
  path = data_dir / "embedded_char_vocab.txt"
  if not path.exists():
    lines = list(corpus.people_daily_lines()) + list(corpus.review_lines())
    data_dir.mkdir(parents=True, exist_ok=True)
    tokenization.write_vocab(tokenization.build_char_vocab(lines, min_count=2), path)
  return path


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m pretrain.bench_data", description=__doc__.splitlines()[0])
  p.add_argument("--corpus", default="embedded", help='"embedded" or a folder of .txt / .jsonl')
  p.add_argument("--tokenizer", default=None, help="vocab.txt / .model / folder (default: embedded char vocab)")
  p.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--batch", type=int, default=32, help="per-process batch")
  p.add_argument("--max-predictions", type=int, default=None)
  p.add_argument("--threads", type=int, default=2, help="grain read threads")
  p.add_argument("--processes", type=int, default=1, help="simulated process count (measures process 0)")
  p.add_argument("--warmup", type=int, default=20)
  p.add_argument("--steps", type=int, default=300)
  a = p.parse_args(argv)

  from roformer_jax.data import prepare
  # A benchmark of the pretraining input, so it uses the pretraining transform (the library
  # itself never imports pretrain/).
  from pretrain import mlm

  data_dir = pathlib.Path(a.data_dir).expanduser()
  tokenizer = a.tokenizer or _embedded_vocab(data_dir)
  t = time.perf_counter()
  prepared = prepare(a.corpus, tokenizer, a.seq, data_dir)
  prepare_s = time.perf_counter() - t

  it = mlm.make_pretrain_iterator(prepared, batch_size=a.batch, seed=0, process_index=0,
                                  process_count=a.processes, max_predictions=a.max_predictions,
                                  num_threads=a.threads)
  for _ in range(a.warmup):
    next(it)
  overflow = predictions = 0
  t = time.perf_counter()
  for _ in range(a.steps):
    batch = next(it)
    overflow += int(np.count_nonzero(batch["masked_overflow"]))
    predictions += float(batch["masked_weights"].sum())
  elapsed = time.perf_counter() - t
  tokens = a.steps * a.batch * a.seq
  print(json.dumps(dict(
      bench="data", tokens_per_s=round(tokens / elapsed), batches_per_s=round(a.steps / elapsed, 1),
      seq_len=a.seq, batch=a.batch, max_predictions=int(batch["masked_weights"].shape[1]),
      threads=a.threads, processes=a.processes, rows=prepared.num_rows.get("train"),
      real_token_fraction=round(prepared.metadata["splits"]["train"]["tokens"]
                                / max(1, prepared.num_rows["train"] * a.seq), 4),
      rows_overflowing=round(overflow / (a.steps * a.batch), 5),
      predictions_per_row=round(predictions / (a.steps * a.batch), 2),
      prepare_s=round(prepare_s, 2), machine=machine(), date=today())))


if __name__ == "__main__":
  main()
