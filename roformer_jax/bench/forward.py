"""Forward throughput (tokens/s) of a preset, next to the `roformer` PyTorch port in the same run.

  python -m roformer_jax.bench forward --preset roformer_v2_small --seq 128,512 --batch 8
Prints one JSON line per (implementation, length). Both run float32 on the CPU with the same
random weights (ours loaded from the port's saved folder), on the same batch of ids (prepared on each side
before timing).

Timing is `bench.common.interleaved_times` at each length (rounds, each timing `--repeats` forwards of every
implementation in turn), as `bench finetune`; `tokens_per_s` is over the median forward, and the ratio is also
given round by round.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from roformer_jax.bench.common import (interleaved_times, machine, positive_int, positive_ints, ratio_by_round,
                                       step_medians, today)


def _port_model(cfg, seq: int):
  import torch
  from roformer import RoFormerConfig, RoFormerForMaskedLM
  from roformer_jax.bench.train import port_kwargs
  torch.manual_seed(0)
  return RoFormerForMaskedLM(RoFormerConfig(**port_kwargs(cfg, seq))).eval()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench forward")
  p.add_argument("--preset", default="roformer_v2_small")
  p.add_argument("--seq", type=positive_ints, default="128,512", help="comma list of lengths")
  p.add_argument("--batch", type=positive_int, default=8)
  p.add_argument("--repeats", type=positive_int, default=3, help="timed forwards per implementation per round")
  p.add_argument("--rounds", type=positive_int, default=5, help="rounds; each times every implementation in turn")
  p.add_argument("--no-peer", action="store_true")
  a = p.parse_args(argv)

  import jax
  import roformer_jax as rj

  cfg = rj.get_config(a.preset)  # before torch's import: an unknown preset fails fast
  import torch
  peer = _port_model(cfg, max(a.seq))
  with tempfile.TemporaryDirectory() as d:
    peer.save_pretrained(d, safe_serialization=False)
    model, params = rj.from_pretrained(d)
  encoder = rj.RoFormerModel(model.cfg)
  fwd = jax.jit(lambda p, ids: encoder.apply({"params": p}, ids))
  enc_params = params["roformer"]
  common = {"preset": a.preset, "batch": a.batch, "rounds": a.rounds, "repeats": a.repeats, "machine": machine(),
            "date": today(), "jax": jax.__version__, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
  for seq in a.seq:
    ids = np.random.RandomState(seq).randint(5, cfg.vocab_size, size=(a.batch, seq)).astype(np.int32)
    tokens = a.batch * seq
    jids, tids = jax.device_put(ids), torch.tensor(ids, dtype=torch.long)  # neither side converts in its timing

    def port():
      with torch.inference_mode():
        peer.roformer(input_ids=tids)

    runs = {"ours": lambda: jax.block_until_ready(fwd(enc_params, jids))}
    if not a.no_peer:
      runs["port"] = port
    times = interleaved_times(runs, a.rounds, a.repeats)
    step = step_medians(times)
    ours = tokens / step["ours"]
    print(json.dumps({"impl": "roformer_jax", "seq": seq, "tokens_per_s": round(ours, 1), **common}), flush=True)
    if not a.no_peer:
      print(json.dumps({"impl": "roformer (PyTorch port)", "seq": seq, "tokens_per_s": round(tokens / step["port"], 1),
                        "ours_over_peer": round(step["port"] / step["ours"], 2),
                        "ours_over_peer_by_round": [round(x, 2) for x in ratio_by_round(times, "port", "ours")],
                        **common}), flush=True)


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
