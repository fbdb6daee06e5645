"""Forward throughput (tokens/s) of a preset, next to the `roformer` PyTorch port in the same run.

  python -m roformer_jax.bench forward --preset roformer_v2_small --seq 128,512 --batch 8
Prints one JSON line per (implementation, length). Both run float32 on the CPU with the same
random weights (ours loaded from the port's saved folder), on the same padded batch.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from roformer_jax.bench.common import machine, median_time, positive_int, positive_ints, today


def _port_model(cfg):
  import torch
  from roformer import RoFormerConfig, RoFormerForMaskedLM
  extra = dict(norm_type="rms_norm", use_bias=False, hidden_act="relu") if cfg.version == "v2" else {}
  torch.manual_seed(0)
  return RoFormerForMaskedLM(RoFormerConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, max_position_embeddings=4096,
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra)).eval()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench forward")
  p.add_argument("--preset", default="roformer_v2_small")
  p.add_argument("--seq", type=positive_ints, default="128,512", help="comma list of lengths")
  p.add_argument("--batch", type=positive_int, default=8)
  p.add_argument("--repeats", type=positive_int, default=5)
  p.add_argument("--no-peer", action="store_true")
  a = p.parse_args(argv)

  import jax
  import roformer_jax as rj

  cfg = rj.get_config(a.preset)  # before torch's import: an unknown preset fails fast
  import torch
  peer = _port_model(cfg)
  with tempfile.TemporaryDirectory() as d:
    peer.save_pretrained(d, safe_serialization=False)
    model, params = rj.from_pretrained(d)
  encoder = rj.RoFormerModel(model.cfg)
  fwd = jax.jit(lambda p, ids: encoder.apply({"params": p}, ids))
  enc_params = params["roformer"]
  common = {"preset": a.preset, "batch": a.batch, "machine": machine(), "date": today(),
            "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
  for seq in a.seq:
    ids = np.random.RandomState(seq).randint(5, cfg.vocab_size, size=(a.batch, seq)).astype(np.int32)
    tokens = a.batch * seq
    t = median_time(lambda: fwd(enc_params, ids).block_until_ready(), repeats=a.repeats)
    ours = tokens / t
    print(json.dumps({"impl": "roformer_jax", "seq": seq, "tokens_per_s": round(ours, 1), **common}), flush=True)
    if not a.no_peer:
      tids = torch.tensor(ids, dtype=torch.long)
      with torch.inference_mode():
        t = median_time(lambda: peer.roformer(input_ids=tids), repeats=a.repeats)
      print(json.dumps({"impl": "roformer (PyTorch port)", "seq": seq, "tokens_per_s": round(tokens / t, 1),
                        "ours_over_peer": round(ours / (tokens / t), 2), **common}), flush=True)


if __name__ == "__main__":
  main()
