"""TeaForN train-step throughput: passes 2..N reusing the source from pass 1 against recomputing it.

  python -m roformer_jax.bench teaforn --preset roformer_v2_small --batch 32 --seq 128 --source 64 --n 1,2,3

One jitted value-and-grad of `teaforn_loss_at` (no optimizer) on random ids, the first `--source` tokens
segment 0 and the rest segment 1, no dropout (so reuse applies). Both paths give the same loss and gradients
(tests/test_seq2seq_teaforn.py). Interleaved rounds (`bench.common.interleaved_times`: each of `--rounds` rounds
times `--repeats` steps of each path in turn, the order rotating); `tokens_per_s` counts batch x seq per step
of each pass count, over the median step; `reuse_speedup` is recomputed time / reused time, also given round by
round (N = 1, plain teacher forcing, has one path: the reference cost).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from roformer_jax.bench.common import (interleaved_times, machine, positive_int, positive_ints, ratio_by_round,
                                       step_medians, today)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench teaforn")
  p.add_argument("--preset", default="roformer_v2_small")
  p.add_argument("--batch", type=positive_int, default=32)
  p.add_argument("--seq", type=positive_int, default=128)
  p.add_argument("--source", type=positive_int, default=64, help="source tokens, [CLS] and [SEP] included")
  p.add_argument("--n", type=positive_ints, default="1,2,3", help="comma list of pass counts")
  p.add_argument("--repeats", type=positive_int, default=3)
  p.add_argument("--rounds", type=positive_int, default=3)
  a = p.parse_args(argv)
  import jax
  import jax.numpy as jnp

  import roformer_jax as rj
  from roformer_jax.model import RoFormerForMaskedLM
  from roformer_jax.seq2seq import teaforn

  cfg = rj.get_config(a.preset, hidden_dropout=0.0, attention_dropout=0.0)
  model = RoFormerForMaskedLM(cfg)
  params = rj.init_params(model, jax.random.PRNGKey(0))
  ids = jnp.asarray(np.random.RandomState(0).randint(5, cfg.vocab_size, size=(a.batch, a.seq)), jnp.int32)
  types = jnp.broadcast_to((jnp.arange(a.seq) >= a.source).astype(jnp.int32), ids.shape)
  mask = jnp.ones_like(ids)
  positions = jnp.broadcast_to(jnp.arange(a.source - 1, a.seq - 1, dtype=jnp.int32), (a.batch, a.seq - a.source))
  pmask = jnp.ones_like(positions)
  rows = positions + 1
  tokens = a.batch * a.seq
  out = {"preset": a.preset, "batch": a.batch, "seq": a.seq, "source": a.source}
  for n in a.n:
    fns = {}
    for name, r in ((("reused", rows),) if n > 1 else ()) + (("recomputed", None),):  # N = 1: one path
      loss = lambda p, r=r: teaforn.teaforn_loss_at(model, p, ids, types, mask, positions, pmask, num_passes=n,
                                                    target_rows=r)[0]
      step = jax.jit(jax.value_and_grad(loss))
      fns[name] = lambda step=step: jax.block_until_ready(step(params))
    times = interleaved_times(fns, a.rounds, a.repeats, warmup=1)
    row = {k: {"tokens_per_s": round(tokens / t, 1), "seconds": round(t, 4)} for k, t in step_medians(times).items()}
    if n > 1:
      row["reuse_speedup"] = round(row["recomputed"]["seconds"] / row["reused"]["seconds"], 2)
      row["reuse_speedup_by_round"] = [round(x, 2) for x in ratio_by_round(times, "recomputed", "reused")]
    out[f"n{n}"] = row
    print(json.dumps({"n": n, **row}), flush=True)
  out.update(rounds=a.rounds, repeats=a.repeats, device=machine(), date=today(), jax=jax.__version__)
  print(json.dumps(out), flush=True)


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
