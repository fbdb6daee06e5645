"""Runner.predict on a mesh whose processes hold their batch rows in several blocks (as on TPU pods, where a host's
chips are not consecutive along the batch axes): prints one JSON line with the rows that came back.

Run by tests in N processes (the device count and jax.distributed are fixed at start-up):
  python tests/multidevice/predict_order.py --coordinator localhost:PORT --num_processes 2 --process_id 0
"""

import argparse
import json


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--coordinator")
  p.add_argument("--num_processes", type=int)
  p.add_argument("--process_id", type=int)
  a = p.parse_args()

  from roformer_jax.train.distributed import init_distributed
  init_distributed(a.coordinator, a.num_processes, a.process_id, timeout_s=120)
  import jax
  import numpy as np
  from jax.sharding import Mesh
  from roformer_jax.train import loop, sharding

  # Devices taken from the processes in turn: process p's devices hold batch blocks p, p + P, p + 2P, ...
  by_process = [[d for d in jax.devices() if d.process_index == i] for i in range(jax.process_count())]
  devices = [d for group in zip(*by_process) for d in group]
  mesh = Mesh(np.asarray(devices).reshape(len(devices), 1, 1), sharding.MESH_AXES)
  batch, local = 2 * len(devices), 2 * len(devices) // jax.process_count()
  # This process's rows of the global batch, as the pipelines give them: rows p * local ... (p + 1) * local - 1.
  rows = np.arange(jax.process_index() * local, (jax.process_index() + 1) * local, dtype=np.int32)
  runner = loop.Runner(None, mesh, local)
  fn = lambda params, b: {"row": b["row"], "twice": 2 * b["row"][:, None], "total": b["row"].sum()}
  out = runner.predict(fn, None, {"row": rows})
  sums = runner.sums(None, [{"row": rows}], fn=lambda params, b: {"total": b["row"].sum()})
  print(json.dumps({"process": jax.process_index(), "batch": batch, "row": out["row"].tolist(),
                    "twice": out["twice"][:, 0].tolist(), "total": int(out["total"]), "sums": float(sums["total"])}))


if __name__ == "__main__":
  main()
