"""Train-step throughput and MFU, next to the PyTorch and Flax peers in the same run.

  python -m roformer_jax.bench train --preset roformer_v2_small --seq 128 --batch 8 [--peers roformer,transformers,flax]

  python -m roformer_jax.bench train --preset roformer_v2_base --seq 512 --batch 32 --dtype bfloat16 \
      --ours softmax,softmax:xla,softmax/scan --peers roformer,roformer-compile   # on a GPU

`--ours` lists our variants, each `attention[:implementation][/scan][/remat=full|dots]`; the first is the
main row. On a GPU the PyTorch peers run on CUDA (fused AdamW, bf16 autocast with `--dtype bfloat16`), `-compile`
peers under `torch.compile`, and each row gets its peak device memory; MFU is then against the device's
spec bf16 peak (`mfu`), and against a matmul measured in this process (`mfu_measured_peak`).

`tokens_per_s` is the full step: forward, backward and optimiser update (AdamW for everyone). On an
accelerator every implementation waits for its previous step rather than its own (CUDA events for the
peers), as a training loop does, so the host's dispatch of a step overlaps the device's work on the last
one; each turn of the interleaved rounds is drained before the next. (Waiting for each step's own result
left ~2.2 ms of the H200 idle per RoFormerV2-base step: dispatching our step's ~300 arrays.) On a CPU each
step is waited for, as before.
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

from roformer_jax.bench.common import interleaved_times, machine, nonnegative_int, positive_int, today


def _batch(cfg, batch, seq, preds, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, cfg.vocab_size, size=(batch, seq)).astype(np.int32)
  masked = np.sort(rng.rand(batch, seq).argsort(1)[:, :preds], 1).astype(np.int32)
  labels = np.take_along_axis(ids, masked, 1)
  np.put_along_axis(ids, masked, 4, 1)
  return dict(input_ids=ids, token_type_ids=np.zeros_like(ids), segment_ids=np.ones_like(ids),
              positions=np.broadcast_to(np.arange(seq, dtype=np.int32), ids.shape).copy(),
              masked_positions=masked, masked_labels=labels, masked_weights=np.ones(masked.shape, np.float32))


def parse_variant(spec: str, cfg):
  """'softmax:xla/scan/remat=full' -> cfg with attention, its implementation, scan_layers and remat set."""
  head, *flags = spec.split("/")
  name, _, impl = head.partition(":")
  changes = dict(attention=name, attention_options=(("implementation", impl),) if impl else ())
  for flag in flags:
    key, _, value = flag.partition("=")
    if key == "scan" and not value:
      changes["scan_layers"] = True
    elif key == "remat" and value:
      changes["remat"] = value
    else:
      raise ValueError(f"--ours {spec!r}: unknown flag {flag!r} (expected scan or remat=full|dots)")
  return cfg.replace(**changes)


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
    box = [state, None]
    lagged = jax.default_backend() != "cpu"

    def run():
      box[0], m = train(box[0], data)
      if lagged:  # wait for the previous step, as the training loop does: dispatch overlaps the device's work
        if box[1] is not None:
          jax.block_until_ready(box[1])
        box[1] = m["loss"]
      else:  # the updated state too: the whole step, optimiser update included
        jax.block_until_ready((box[0], m))

    run.drain = lambda: jax.block_until_ready(box)
    return run


def _torch_device() -> str:
  """CUDA when JAX runs on a GPU and torch sees one (both sides on the same device); else the CPU."""
  import jax
  import torch
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def _torch_step(model, batch, seq, preds, vocab, dtype="float32", compiled=False) -> Callable[[], None]:
  import torch
  device = _torch_device()
  b = _batch(type("C", (), {"vocab_size": vocab})(), batch, seq, preds)
  ids = torch.tensor(b["input_ids"], dtype=torch.long, device=device)
  labels = torch.full_like(ids, -100)
  labels.scatter_(1, torch.tensor(b["masked_positions"], dtype=torch.long, device=device),
                  torch.tensor(b["masked_labels"], dtype=torch.long, device=device))
  model = model.to(device)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=device == "cuda")
  model.train()
  forward = torch.compile(model) if compiled else model

  # float32 master weights and optimiser either way; bfloat16 matmuls under autocast.
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

  previous = [None]

  def run():
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = forward(input_ids=ids, labels=labels).loss
    loss.backward()
    opt.step()
    if device == "cuda":  # wait for the previous step, as ours does on an accelerator
      done = torch.cuda.Event()
      done.record()
      if previous[0] is not None:
        previous[0].synchronize()
      previous[0] = done

  if device == "cuda":
    run.drain = torch.cuda.synchronize
  return run


def _peer_kwargs(cfg, seq=0):
  return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
              num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
              max_position_embeddings=max(4096, seq), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def port_kwargs(cfg, seq=0) -> dict:
  """The `roformer` port's RoFormerConfig arguments for `cfg`'s shapes (dropout 0); a v2 config gets the port's
  RoFormerV2 switches (RMS norm, no biases, ReLU)."""
  extra = dict(norm_type="rms_norm", use_bias=False, hidden_act="relu") if cfg.version == "v2" else {}
  return {**_peer_kwargs(cfg, seq), **extra}


def setup_roformer_port(cfg, batch, seq, preds, compiled=False):
  import torch
  from roformer import RoFormerConfig, RoFormerForMaskedLM
  torch.manual_seed(0)
  return _torch_step(RoFormerForMaskedLM(RoFormerConfig(**port_kwargs(cfg, seq))), batch, seq, preds,
                     cfg.vocab_size, cfg.dtype, compiled)


def setup_transformers(cfg, batch, seq, preds, compiled=False):
  import torch
  from transformers import RoFormerConfig, RoFormerForMaskedLM
  torch.manual_seed(0)
  return _torch_step(RoFormerForMaskedLM(RoFormerConfig(**_peer_kwargs(cfg, seq))), batch, seq, preds,
                     cfg.vocab_size, cfg.dtype, compiled)


def setup_transformers_flax(cfg, batch, seq, preds, compiled=False):
  del compiled  # jitted either way
  import jax
  import optax
  from transformers import FlaxRoFormerForMaskedLM, RoFormerConfig
  import jax.numpy as jnp
  model = FlaxRoFormerForMaskedLM(RoFormerConfig(**_peer_kwargs(cfg, seq)), seed=0, dtype=jnp.dtype(cfg.dtype))
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
         "roformer-compile": ("roformer PyTorch v2/v1 port, torch.compile", setup_roformer_port),
         "transformers": ("transformers PyTorch v1", setup_transformers),
         "transformers-compile": ("transformers PyTorch v1, torch.compile", setup_transformers),
         "flax": ("transformers Flax v1", setup_transformers_flax)}


def _peak_gib_jax() -> float | None:
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  return round(stats["peak_bytes_in_use"] / 2**30, 2) if "peak_bytes_in_use" in stats else None


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench train")
  p.add_argument("--preset", default="roformer_v2_small")
  p.add_argument("--seq", type=positive_int, default=128)
  p.add_argument("--batch", type=positive_int, default=8)
  p.add_argument("--predictions", type=nonnegative_int, default=0,
                 help="masked slots per sequence; 0 = ceil(0.15 * seq)")
  p.add_argument("--repeats", type=positive_int, default=5, help="timed steps per implementation per round")
  p.add_argument("--rounds", type=positive_int, default=5, help="rounds; each times every implementation in turn")
  p.add_argument("--ours", default="softmax",
                 help="our variants, comma list of attention[:implementation][/scan][/remat=full|dots]; the first "
                      "is the main row")
  p.add_argument("--peers", default="", help=f"comma list of {','.join(PEERS)} (default: none)")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="compute dtype for everyone (params and optimiser stay float32)")
  p.add_argument("--profile", default="", help="after timing, trace 3 steps of the main variant into this dir")
  a = p.parse_args(argv)
  peer_names = [x for x in a.peers.split(",") if x]
  for name in peer_names:
    if name not in PEERS:
      p.error(f"--peers: unknown peer {name!r} (known: {', '.join(PEERS)})")

  import jax
  import jax.numpy as jnp
  import roformer_jax as rj
  from roformer_jax.train import flops

  cfg = rj.get_config(a.preset, hidden_dropout=0.0, attention_dropout=0.0, dtype=a.dtype)
  try:
    variants = {spec: parse_variant(spec, cfg) for spec in a.ours.split(",") if spec}
  except (ValueError, rj.config.ConfigError) as e:
    p.error(str(e))
  if not variants:
    p.error("--ours: give at least one variant")
  preds = a.predictions or math.ceil(0.15 * a.seq)
  dtype = jnp.dtype(a.dtype)
  tokens = a.batch * a.seq
  accelerator = jax.default_backend() != "cpu"
  peak = flops.measure_matmul_peak(dtype, n=8192 if accelerator else 2048)
  runs, labels, failed, peak_mem = {}, {}, {}, {}
  for spec, vcfg in variants.items():
    key = "ours" if not runs else f"ours:{spec}"
    try:
      runs[key] = setup_ours(vcfg, a.batch, a.seq, preds)
      runs[key]()
    except Exception as e:  # noqa: BLE001 -- a variant that cannot compile here is reported, not fatal
      if key == "ours":
        raise
      runs.pop(key, None)
      failed[key] = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
  peak_mem["ours"] = _peak_gib_jax()
  for name in peer_names:
    label, setup = PEERS[name]
    # The v1 peers run RoFormer v1 at the preset's shapes (transformers has no RoFormerV2).
    pcfg = cfg if name.startswith("roformer") else cfg.replace(version="v1")
    try:
      if _torch_device() == "cuda" and name != "flax":
        import torch
        torch.cuda.reset_peak_memory_stats()
      run = setup(pcfg, a.batch, a.seq, preds, compiled=name.endswith("-compile"))
      run()  # a peer that fails, fails here, before any timing
      runs[name], labels[name] = run, label
      if _torch_device() == "cuda" and name != "flax":
        peak_mem[name] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    except Exception as e:  # noqa: BLE001 -- report a peer that does not run, don't hide it
      failed[label] = f"failed: {type(e).__name__}: {str(e)[:200]}"
  times = interleaved_times(runs, a.rounds, a.repeats)
  if a.profile:
    jax.profiler.start_trace(a.profile)
    for _ in range(3):
      runs["ours"]()
    jax.profiler.stop_trace()
  peak = max(peak, flops.measure_matmul_peak(dtype, n=8192 if accelerator else 2048))  # the higher: conservative
  spec_peak, spec_source = flops.device_peak(a.dtype)
  denominator = spec_peak if accelerator else peak

  step = {n: statistics.median(t for r in ts for t in r) for n, ts in times.items()}

  def row(n, vcfg):
    t = step[n]
    f = flops.train_flops(vcfg, a.batch, a.seq, preds)
    out = {"tokens_per_s": round(tokens / t, 1), "step_ms": round(1e3 * t, 2), "mfu": round(f / t / denominator, 4)}
    if accelerator:
      out["mfu_measured_peak"] = round(f / t / peak, 4)
    return out

  first = next(iter(variants))
  result = {"impl": "roformer_jax", "variant": first, "preset": a.preset, "dtype": a.dtype, "seq": a.seq,
            "batch": a.batch, "predictions": preds, **row("ours", variants[first]),
            "peak_gflops": round(peak / 1e9, 1), "rounds": a.rounds, "repeats": a.repeats,
            "device": jax.devices()[0].device_kind if accelerator else machine(), "date": today(),
            "jax": jax.__version__}
  if accelerator:
    result["mfu_denominator"] = spec_source
  if any(n != "flax" for n in labels):  # a PyTorch peer ran: its version and intra-op threads, as measured
    import torch
    result.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
  others = {spec: row(f"ours:{spec}", vcfg) for spec, vcfg in variants.items() if f"ours:{spec}" in step}
  others.update({spec: failed[f"ours:{spec}"] for spec in variants if f"ours:{spec}" in failed})
  if others:
    result["variants"] = others
  peers = {labels[n]: round(tokens / step[n], 1) for n in labels}
  peers.update({k: v for k, v in failed.items() if not k.startswith("ours:")})
  if peers:
    result["peers_tokens_per_s"] = peers
  if any(v is not None for v in peak_mem.values()):
    result["peak_gib"] = {("ours (all variants)" if n == "ours" else labels.get(n, n)): v
                          for n, v in peak_mem.items() if v is not None}
  if labels:
    # Medians over all rounds, and the same ratio round by round (how much the machine moved it).
    result["ours_over_best_peer"] = round(min(step[n] for n in labels) / step["ours"], 2)
    per_round = [min(statistics.median(times[n][r]) for n in labels) / statistics.median(times["ours"][r])
                 for r in range(a.rounds)]
    result["ours_over_best_peer_by_round"] = [round(x, 2) for x in per_round]
  print(json.dumps(result), flush=True)


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
