"""Greedy / beam decoding throughput with the key/value cache against recomputing the whole prefix every step.

  python -m roformer_jax.bench decode --preset roformer_v2_small --batch 16 --source 64 --new 64 [--beam 1]

Random source ids, no end token (every row generates `--new` tokens), random weights: the speed of the loop, not
of a trained model. `tokens_per_s` counts generated tokens (batch x new [x beam]) per second of one jitted call,
the median over interleaved rounds (`bench.common.interleaved_times`: each of `--rounds` rounds times `--repeats`
calls of each path in turn, after a compiling call); both paths give the same tokens (tests/test_seq2seq_decode.py).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from roformer_jax.bench.common import interleaved_times, machine, positive_int, ratio_by_round, step_medians, today


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench decode")
  p.add_argument("--preset", default="roformer_v2_small")
  p.add_argument("--batch", type=positive_int, default=16)
  p.add_argument("--source", type=positive_int, default=64, help="source tokens per row, [CLS] and [SEP] included")
  p.add_argument("--new", type=positive_int, default=64, help="tokens generated per row")
  p.add_argument("--beam", type=positive_int, default=1, help="1 = greedy")
  p.add_argument("--repeats", type=positive_int, default=1, help="timed calls per path per round")
  p.add_argument("--rounds", type=positive_int, default=3, help="rounds; each times both paths in turn")
  a = p.parse_args(argv)
  import jax
  import roformer_jax as rj
  from roformer_jax.model import RoFormerForMaskedLM
  from roformer_jax.seq2seq import decode

  cfg = rj.get_config(a.preset, hidden_dropout=0.0, attention_dropout=0.0)
  model = RoFormerForMaskedLM(cfg)
  params = rj.init_params(model, jax.random.PRNGKey(0))
  src = np.random.RandomState(0).randint(5, cfg.vocab_size, size=(a.batch, a.source)).astype(np.int32)
  src[:, 0], src[:, -1] = 2, 3  # [CLS] ... [SEP]; end_id -1 never matches: every row runs to --new tokens
  out = {"preset": a.preset, "batch": a.batch, "source": a.source, "new": a.new, "beam": a.beam}
  generated = a.batch * a.new * a.beam

  def path(use_cache: bool):
    if a.beam == 1:
      return lambda: jax.block_until_ready(decode.greedy_decode(model, params, src, max_new_tokens=a.new, end_id=-1,
                                                                use_cache=use_cache).tokens)
    return lambda: jax.block_until_ready(decode.beam_search(model, params, src, beam_size=a.beam, max_new_tokens=a.new,
                                                            end_id=-1, use_cache=use_cache).tokens)
  times = interleaved_times({"cached": path(True), "recomputed": path(False)}, a.rounds, a.repeats, warmup=1)
  for name, t in step_medians(times).items():
    out[name] = {"tokens_per_s": round(generated / t, 1), "seconds": round(t, 3)}
  out["cache_speedup"] = round(out["cached"]["tokens_per_s"] / out["recomputed"]["tokens_per_s"], 2)
  out["cache_speedup_by_round"] = [round(x, 2) for x in ratio_by_round(times, "recomputed", "cached")]
  out.update(rounds=a.rounds, repeats=a.repeats, device=machine(), date=today(), jax=jax.__version__)
  print(json.dumps(out), flush=True)


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
