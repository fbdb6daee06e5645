"""Fine-tuning train-step throughput next to the same model in PyTorch, in one run.

  python -m roformer_jax.bench finetune --task classify --preset roformer_v2_small --seq 128 --batch 32
  python -m roformer_jax.bench finetune --task ner --types 3
  python -m roformer_jax.bench finetune --task unilm --source 64

Tasks (each side: forward, loss, backward, AdamW update; dropout 0; float32 unless --dtype):

* classify: the [CLS] classifier (`heads.SequenceClassifier`, 2 labels, softmax CE) against the `roformer`
  port's `RoFormerForSequenceClassification` (its head has one more hidden x hidden dense: counted in its favour).
* ner: the encoder + GlobalPointer over `--types` types, head size 64, RoPE and the lower-triangle mask, dense
  labels and the multilabel categorical CE (`heads.EncoderPointer`, `losses.global_pointer_crossentropy`)
  against the port's `RoFormerModel` plus bert4torch's `GlobalPointer` and `MultilabelCategoricalCrossentropy`
  over [B * types, L * L], as bert4torch's NER example trains (tests/test_extraction_bert4torch.py: the same values).
* unilm: the MLM model under the UniLM mask (the first `--source` tokens segment 0, the rest segment 1) with
  bert4keras's seq2seq CE over the target tokens, against the port's `RoFormerForMaskedLM` given the same mask as
  a [B, L, L] attention mask and the same loss over its full logits. Ours runs the loss as the pinyin task
  trains (`seq2seq.teaforn.teaforn_loss_at`, N = 1): the LM head only at the positions that score a target,
  the same value as `seq2seq_cross_entropy` on full logits (tests/test_seq2seq_task.py).

Timing is `bench.common.interleaved_times` (rounds, each timing every implementation in turn); the ratio is over
the median steps, and round by round.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

import numpy as np

from roformer_jax.bench.common import (bert4torch_heads, interleaved_times, machine, positive_int, ratio_by_round,
                                       step_medians, today)

TASKS = ("classify", "ner", "unilm")


def make_batch(task: str, vocab: int, batch: int, seq: int, types: int, source: int, seed: int = 0) -> dict:
  """A fixed numpy batch: random ids (every token real), and the task's labels."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, vocab, size=(batch, seq)).astype(np.int32)
  out = dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=np.ones_like(ids),
             weights=np.ones((batch,), np.float32))
  if task == "classify":
    out["labels"] = rng.randint(0, 2, size=(batch,)).astype(np.int32)
  elif task == "ner":  # a few entities per row, as NER data has
    spans = np.zeros((batch, types, seq, seq), np.float32)
    for b in range(batch):
      for _ in range(4):
        i = rng.randint(1, seq - 5)
        spans[b, rng.randint(types), i, i + rng.randint(0, 4)] = 1.0
    out["spans"] = spans
  else:
    out["token_type_ids"][:, source:] = 1
  return out


def setup_ours(task: str, cfg, b: dict, types: int, source: int = 64) -> Callable[[], None]:
  """Our jitted train step (the shared `train.step`) on batch `b`; the closure runs one step and blocks."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from roformer_jax import heads, losses, objectives
  from roformer_jax.model import RoFormerForMaskedLM
  from roformer_jax.seq2seq import teaforn
  from roformer_jax.train import sharding, step as step_lib

  if task == "classify":
    model = heads.SequenceClassifier(cfg, 2, "first")
    loss_fn = objectives.classification_loss(model)
  elif task == "ner":
    model = heads.EncoderPointer(cfg, types)

    def loss_fn(params, batch, rng, step):
      scores = model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                           deterministic=False, rngs={"dropout": rng})
      rows = losses.multilabel_categorical_crossentropy(batch["spans"].reshape(scores.shape[:2] + (-1,)),
                                                        scores.reshape(scores.shape[:2] + (-1,)))
      return jnp.sum(rows.mean(-1)), {"weight": jnp.sum(batch["weights"])}
  else:
    model = RoFormerForMaskedLM(cfg)

    def loss_fn(params, batch, rng, step):
      # As finetune/seq2seq.py trains: the LM head only where the next token is a target (the source's
      # last token and every target but the last), N = 1; the same loss as seq2seq_cross_entropy (tested).
      ids = batch["input_ids"]
      positions = jnp.broadcast_to(jnp.arange(source - 1, ids.shape[1] - 1), (ids.shape[0], ids.shape[1] - source))
      ce, _ = teaforn.teaforn_loss_at(model, params, ids, batch["token_type_ids"], batch["attention_mask"],
                                      positions, jnp.ones_like(positions), num_passes=1, deterministic=False,
                                      dropout_rng=rng)
      return ce, {"weight": jnp.ones(())}

  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  schedule = optax.constant_schedule(1e-4)
  tx = optax.adamw(schedule, weight_decay=0.01)
  init = lambda rng: model.init(rng, np.ones((1, 8), np.int32))["params"]
  _, shardings = step_lib.abstract_state(init, tx, mesh)
  state = step_lib.init_state(init, tx, 0, shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    train = step_lib.make_train_step(loss_fn, tx, schedule, shardings, mesh)
    data = sharding.global_batch(b, mesh)
    box = [state]

    def run():
      box[0], m = train(box[0], data)
      jax.block_until_ready((box[0], m))  # the updated state too: the whole step, optimiser update included
    return run


def setup_port(task: str, cfg, b: dict, types: int, compiled: bool = False) -> Callable[[], None]:
  """The `roformer` port's model for the task, with the same loss, AdamW, on the CPU; with a bfloat16 `cfg.dtype`
  the forward and loss run under `torch.autocast("cpu", torch.bfloat16)` (float32 weights and optimiser)."""
  import torch
  import roformer
  from roformer_jax.bench.train import port_kwargs
  torch.manual_seed(0)
  pcfg = roformer.RoFormerConfig(**port_kwargs(cfg, b["input_ids"].shape[1]))
  t = {k: torch.tensor(v, dtype=torch.float32 if v.dtype == np.float32 else torch.long) for k, v in b.items()}
  if task == "classify":
    pcfg.num_labels = 2
    model = roformer.RoFormerForSequenceClassification(pcfg)
    loss = lambda m: m(input_ids=t["input_ids"], attention_mask=t["attention_mask"], labels=t["labels"]).loss
  elif task == "ner":
    pointer, b4t_losses = bert4torch_heads()
    head = pointer.GlobalPointer(cfg.hidden_size, types, 64, RoPE=True, tril_mask=True)
    model = torch.nn.ModuleDict({"encoder": roformer.RoFormerModel(pcfg), "pointer": head})
    mce = b4t_losses.MultilabelCategoricalCrossentropy()

    def loss(m):
      h = m["encoder"](input_ids=t["input_ids"], attention_mask=t["attention_mask"])[0]
      scores = m["pointer"](h, t["attention_mask"])
      rows = scores.shape[0] * types
      return mce(scores.reshape(rows, -1), t["spans"].reshape(rows, -1))
  else:
    model = roformer.RoFormerForMaskedLM(pcfg)
    types_ = t["token_type_ids"]
    ids_ = torch.cumsum(types_, 1)
    unilm = (ids_[:, None, :] <= ids_[:, :, None]).long()  # bert4keras: key j visible to query i

    def loss(m):
      logits = m(input_ids=t["input_ids"], token_type_ids=types_, attention_mask=unilm).logits
      w = (types_[:, 1:] == 1).float()
      nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                              t["input_ids"][:, 1:].reshape(-1), reduction="none")
      return (nll * w.reshape(-1)).sum() / w.sum()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  model.train()
  forward = torch.compile(model) if compiled and task != "ner" else model
  autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

  def run():
    opt.zero_grad(set_to_none=True)
    with autocast:
      value = loss(forward)
    value.backward()
    opt.step()
  return run


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench finetune")
  p.add_argument("--task", default="classify", choices=TASKS)
  p.add_argument("--preset", default="roformer_v2_small")
  p.add_argument("--seq", type=positive_int, default=128)
  p.add_argument("--batch", type=positive_int, default=32)
  p.add_argument("--types", type=positive_int, default=3, help="ner: entity types")
  p.add_argument("--source", type=positive_int, default=64, help="unilm: source tokens (the rest are the target)")
  p.add_argument("--attention", default="softmax",
                 help="our attention variant; a comma list times each (as bench train's --ours: softmax:xla is "
                      "XLA's softmax without the fused CPU kernel); ratios are the first one's")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="compute dtype for everyone (params and optimiser stay float32)")
  p.add_argument("--peers", default="roformer", help="comma list of roformer, roformer-compile ('' = none)")
  p.add_argument("--repeats", type=positive_int, default=3)
  p.add_argument("--rounds", type=positive_int, default=5)
  a = p.parse_args(argv)
  import jax
  import roformer_jax as rj
  from roformer_jax.bench.train import parse_variant
  variants = a.attention.split(",")
  cfg = rj.get_config(a.preset, hidden_dropout=0.0, attention_dropout=0.0, dtype=a.dtype)
  b = make_batch(a.task, cfg.vocab_size, a.batch, a.seq, a.types, a.source)
  runs = {}
  for i, spec in enumerate(variants):
    name = "ours" if i == 0 else f"ours {spec}"
    runs[name] = setup_ours(a.task, parse_variant(spec, cfg), b, a.types, a.source)
    runs[name]()
  for peer in [x for x in a.peers.split(",") if x]:
    if peer not in ("roformer", "roformer-compile"):
      p.error(f"--peers: unknown peer {peer!r}")
    if peer == "roformer-compile" and a.task == "ner":  # setup_port runs the ner model eagerly
      p.error("--peers: roformer-compile is not run for --task ner (its model is not compiled); use roformer")
    runs[peer] = setup_port(a.task, cfg, b, a.types, compiled=peer.endswith("-compile"))
    runs[peer]()
  times = interleaved_times(runs, a.rounds, a.repeats)
  step = step_medians(times)
  tokens = a.batch * a.seq
  out = {"task": a.task, "preset": a.preset, "seq": a.seq, "batch": a.batch, "attention": a.attention,
         "dtype": a.dtype,
         "tokens_per_s": {n: round(tokens / s, 1) for n, s in step.items()},
         "step_ms": {n: round(1e3 * s, 1) for n, s in step.items()}}
  for peer in [n for n in runs if n != "ours"]:
    key = peer.replace(" ", "_")
    out[f"ours_over_{key}"] = round(step[peer] / step["ours"], 2)
    out[f"ours_over_{key}_by_round"] = [round(x, 2) for x in ratio_by_round(times, peer, "ours")]
  out.update(rounds=a.rounds, repeats=a.repeats, device=machine(), date=today(), jax=jax.__version__)
  if any(n in runs for n in ("roformer", "roformer-compile")):
    import torch
    out.update(torch=torch.__version__, torch_threads=torch.get_num_threads())  # measured, not assumed
  if a.task == "ner":
    out["types"] = a.types
  if a.task == "unilm":
    out["source"] = a.source
  print(json.dumps(out), flush=True)


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
