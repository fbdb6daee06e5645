"""Runs a few sharded train steps of a tiny MLM on synthetic batches; prints one JSON line.

Run by tests in a subprocess, because the device count (XLA_FLAGS) and jax.distributed must be
set before JAX starts. Every layout sees the same global batches, so the losses must agree.
  python tests/multidevice/steps.py --mesh 2,2,2 [--accum 2] [--coordinator localhost:PORT --num_processes 2 --process_id 0]
"""

import argparse
import json


def synthetic_batch(step: int, batch: int, seq: int, vocab: int, preds: int):
  import numpy as np
  rng = np.random.RandomState(1000 + step)
  ids = rng.randint(5, vocab, size=(batch, seq)).astype(np.int32)
  seg = np.ones((batch, seq), np.int32)
  seg[:, seq // 2:] = 2  # two packed documents per row ...
  seg[1::2, -5:] = 0     # ... and right padding on odd rows
  ids[seg == 0] = 0
  pos = np.where(seg == 1, np.arange(seq), np.arange(seq) - seq // 2).astype(np.int32)
  masked = np.sort(rng.rand(batch, seq - 5).argsort(1)[:, :preds], 1).astype(np.int32)
  labels = np.take_along_axis(ids, masked, 1)
  weights = (rng.rand(batch, preds) < 0.8).astype(np.float32)
  np.put_along_axis(ids, masked, 4, 1)  # [MASK]
  return dict(input_ids=ids, token_type_ids=np.zeros_like(ids), segment_ids=seg, positions=pos,
              masked_positions=masked, masked_labels=labels, masked_weights=weights)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--mesh", default="1,1,1")
  p.add_argument("--steps", type=int, default=4)
  p.add_argument("--accum", type=int, default=1)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--optimizer", default="adamw")
  p.add_argument("--coordinator")
  p.add_argument("--num_processes", type=int)
  p.add_argument("--process_id", type=int)
  a = p.parse_args()

  from roformer_jax.train.distributed import init_distributed
  init_distributed(a.coordinator, a.num_processes, a.process_id, timeout_s=120)
  import flax.linen as nn
  import jax
  import numpy as np
  import roformer_jax as rj
  from roformer_jax import objectives
  from roformer_jax.train import optim, sharding, step as step_lib

  cfg = rj.get_config("tiny", vocab_size=512, hidden_dropout=0.0, attention_dropout=0.0)
  model = rj.RoFormerForMaskedLM(cfg)
  mesh = sharding.make_mesh(*map(int, a.mesh.split(",")))
  schedule = optim.make_schedule(1e-3, 2, 100)
  tx = optim.make_optimizer(a.optimizer, schedule, weight_decay=0.01, decay_exclude=("norm",), clip_norm=1.0)
  init_params = lambda rng: model.init(rng, np.ones((1, 8), np.int32))["params"]
  _, shardings = step_lib.abstract_state(init_params, tx, mesh)
  state = step_lib.init_state(init_params, tx, 0, shardings)
  per_device = sharding.bytes_per_device(state.params)
  per_device_opt = sharding.bytes_per_device(state.opt_state)
  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    train = step_lib.make_train_step(objectives.masked_lm_loss(model), tx, schedule, shardings, mesh,
                                     accum_steps=a.accum)
    rows = a.batch // jax.process_count()
    for s in range(a.steps):
      full = synthetic_batch(s, a.batch, 32, cfg.vocab_size, 6)
      local = {k: v[jax.process_index() * rows:(jax.process_index() + 1) * rows] for k, v in full.items()}
      state, m = train(state, sharding.global_batch(local, mesh))
      losses.append(float(jax.device_get(m["loss"])))
  if jax.process_index() == 0:
    print(json.dumps({"losses": losses, "devices": jax.device_count(), "processes": jax.process_count(),
                      "param_bytes_max": max(per_device.values()), "opt_bytes_max": max(per_device_opt.values())}))


if __name__ == "__main__":
  main()
