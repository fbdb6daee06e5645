"""Train-step throughput and MFU, next to the PyTorch and Flax peers in the same run.

  python -m roformer_jax.bench train --preset roformer_v2_small --seq 128 --batch 8 [--peers roformer,transformers,flax]

`tokens_per_s` is the full step: forward, backward and optimiser update (AdamW for everyone).
`mfu` is analytic model FLOPs (non-causal attention, gathered MLM head; roformer_jax.train.flops)
over the step time and `peak_gflops`, a matmul in the compute dtype (`--dtype`; bf16 operands
accumulate in float32, as the model's do) measured in this same process. The peers compute the
usual full-vocabulary MLM logits at every position; that is their normal usage. With
`--dtype bfloat16` the PyTorch peers run under `torch.autocast("cpu", torch.bfloat16)`, their
own mixed precision, so each side runs at its best in the same dtype.

Timing is interleaved: each of `--rounds` rounds times `--repeats` steps of every implementation in turn,
after one untimed step. `tokens_per_s` is over the median step of all rounds; the ratio to the best peer is
also given round by round, so a shared machine's slow phases show instead of landing on one side.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from typing import Callable

import numpy as np

from roformer_jax.bench.common import interleaved_times, machine, today


def _batch(cfg, batch, seq, preds, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, cfg.vocab_size, size=(batch, seq)).astype(np.int32)
  masked = np.sort(rng.rand(batch, seq).argsort(1)[:, :preds], 1).astype(np.int32)
  labels = np.take_along_axis(ids, masked, 1)
  np.put_along_axis(ids, masked, 4, 1)
  return dict(input_ids=ids, token_type_ids=np.zeros_like(ids), segment_ids=np.ones_like(ids),
              positions=np.broadcast_to(np.arange(seq, dtype=np.int32), ids.shape).copy(),
              masked_positions=masked, masked_labels=labels, masked_weights=np.ones(masked.shape, np.float32))


def setup_ours(cfg, batch, seq, preds) -> Callable[[], None]:
  """Our full train step on a fixed batch, compiled; the closure runs one step and blocks."""
  import flax.linen as nn
  import jax
  import optax
  from roformer_jax import objectives
  from roformer_jax.model import RoFormerForMaskedLM
  from roformer_jax.train import sharding, step as step_lib

  model = RoFormerForMaskedLM(cfg)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  schedule = optax.constant_schedule(1e-4)
  tx = optax.adamw(schedule, weight_decay=0.01)
  init = lambda rng: model.init(rng, np.ones((1, 8), np.int32))["params"]
  _, shardings = step_lib.abstract_state(init, tx, mesh)
  state = step_lib.init_state(init, tx, 0, shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    train = step_lib.make_train_step(objectives.masked_lm_loss(model), tx, schedule, shardings, mesh)
    data = sharding.global_batch(_batch(cfg, batch, seq, preds), mesh)
    box = [state]

    def run():
      box[0], m = train(box[0], data)
      jax.block_until_ready(m["loss"])

    return run


def _torch_step(model, batch, seq, preds, vocab, dtype="float32") -> Callable[[], None]:
  import torch
  b = _batch(type("C", (), {"vocab_size": vocab})(), batch, seq, preds)
  ids = torch.tensor(b["input_ids"], dtype=torch.long)
  labels = torch.full_like(ids, -100)
  labels.scatter_(1, torch.tensor(b["masked_positions"], dtype=torch.long), torch.tensor(b["masked_labels"],
                                                                                          dtype=torch.long))
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  model.train()

  # float32 master weights and optimiser either way; bfloat16 matmuls under autocast.
  autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

  def run():
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    opt.step()

  return run


def _peer_kwargs(cfg):
  return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
              num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
              max_position_embeddings=4096, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def setup_roformer_port(cfg, batch, seq, preds):
  import torch
  from roformer import RoFormerConfig, RoFormerForMaskedLM
  torch.manual_seed(0)
  extra = dict(norm_type="rms_norm", use_bias=False, hidden_act="relu") if cfg.version == "v2" else {}
  return _torch_step(RoFormerForMaskedLM(RoFormerConfig(**_peer_kwargs(cfg), **extra)), batch, seq, preds,
                     cfg.vocab_size, cfg.dtype)


def setup_transformers(cfg, batch, seq, preds):
  import torch
  from transformers import RoFormerConfig, RoFormerForMaskedLM
  torch.manual_seed(0)
  return _torch_step(RoFormerForMaskedLM(RoFormerConfig(**_peer_kwargs(cfg))), batch, seq, preds, cfg.vocab_size,
                     cfg.dtype)


def setup_transformers_flax(cfg, batch, seq, preds):
  import jax
  import optax
  from transformers import FlaxRoFormerForMaskedLM, RoFormerConfig
  import jax.numpy as jnp
  model = FlaxRoFormerForMaskedLM(RoFormerConfig(**_peer_kwargs(cfg)), seed=0, dtype=jnp.dtype(cfg.dtype))
  b = _batch(cfg, batch, seq, preds)
  labels = np.full(b["input_ids"].shape, -100, np.int32)
  np.put_along_axis(labels, b["masked_positions"], b["masked_labels"], 1)
  tx = optax.adamw(1e-4, weight_decay=0.01)

  @jax.jit
  def step(params, opt_state, ids, labels):
    def loss_fn(p):
      # Dropout is 0 for every implementation here. (On JAX >= 0.10 this peer fails in its RoPE:
      # `sinusoidal_pos.split` no longer exists on jax.Array; the failure is reported, not hidden.)
      logits = model(ids, params=p, train=False).logits
      w = labels >= 0
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, np.maximum(labels, 0))
      return (ce * w).sum() / w.sum()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  box = [model.params, tx.init(model.params)]

  def run():
    box[0], box[1] = step(box[0], box[1], b["input_ids"], labels)
    jax.block_until_ready(box[0])

  return run


PEERS = {"roformer": ("roformer PyTorch v2/v1 port", setup_roformer_port),
         "transformers": ("transformers PyTorch v1", setup_transformers),
         "flax": ("transformers Flax v1", setup_transformers_flax)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench train")
  p.add_argument("--preset", default="roformer_v2_small")
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--predictions", type=int, default=0, help="masked slots per sequence; 0 = ceil(0.15 * seq)")
  p.add_argument("--repeats", type=int, default=5, help="timed steps per implementation per round")
  p.add_argument("--rounds", type=int, default=5, help="rounds; each times every implementation in turn")
  p.add_argument("--peers", default="", help="comma list of roformer,transformers,flax (default: none)")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="compute dtype for everyone (params and optimiser stay float32)")
  a = p.parse_args(argv)
  if a.rounds < 1 or a.repeats < 1:
    p.error("--rounds and --repeats must be at least 1")
  peer_names = [x for x in a.peers.split(",") if x]
  for name in peer_names:
    if name not in PEERS:
      p.error(f"--peers: unknown peer {name!r} (known: {', '.join(PEERS)})")

  import jax
  import jax.numpy as jnp
  import roformer_jax as rj
  from roformer_jax.train import flops

  cfg = rj.get_config(a.preset, hidden_dropout=0.0, attention_dropout=0.0, dtype=a.dtype)
  preds = a.predictions or math.ceil(0.15 * a.seq)
  dtype = jnp.dtype(a.dtype)
  tokens = a.batch * a.seq
  peak = flops.measure_matmul_peak(dtype)
  runs = {"ours": setup_ours(cfg, a.batch, a.seq, preds)}
  labels, failed = {}, {}
  for name in peer_names:
    label, setup = PEERS[name]
    # The v1 peers run RoFormer v1 at the preset's shapes (transformers has no RoFormerV2).
    pcfg = cfg if name == "roformer" else cfg.replace(version="v1")
    try:
      run = setup(pcfg, a.batch, a.seq, preds)
      run()  # a peer that fails, fails here, before any timing
      runs[name], labels[name] = run, label
    except Exception as e:  # noqa: BLE001 -- report a peer that does not run, don't hide it
      failed[label] = f"failed: {type(e).__name__}: {str(e)[:200]}"
  times = interleaved_times(runs, a.rounds, a.repeats)
  peak = max(peak, flops.measure_matmul_peak(dtype))  # before and after: the higher (conservative MFU)

  step = {n: statistics.median(t for r in ts for t in r) for n, ts in times.items()}
  t = step["ours"]
  result = {"impl": "roformer_jax", "preset": a.preset, "dtype": a.dtype, "seq": a.seq, "batch": a.batch,
            "predictions": preds,
            "tokens_per_s": round(tokens / t, 1), "step_ms": round(1e3 * t, 2),
            "mfu": round(flops.train_flops(cfg, a.batch, a.seq, preds) / t / peak, 4),
            "peak_gflops": round(peak / 1e9, 1), "rounds": a.rounds, "repeats": a.repeats,
            "machine": machine(), "date": today(), "jax": jax.__version__}
  peers = {labels[n]: round(tokens / step[n], 1) for n in labels}
  peers.update(failed)
  if peers:
    result["peers_tokens_per_s"] = peers
  if labels:
    # Medians over all rounds, and the same ratio round by round (how much the machine moved it).
    result["ours_over_best_peer"] = round(min(step[n] for n in labels) / t, 2)
    per_round = [min(statistics.median(times[n][r]) for n in labels) / statistics.median(times["ours"][r])
                 for r in range(a.rounds)]
    result["ours_over_best_peer_by_round"] = [round(x, 2) for x in per_round]
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
