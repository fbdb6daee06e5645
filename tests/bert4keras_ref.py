"""bert4keras' optimisers, learning-rate schedule and Tokenizer.encode, run for the tests (not a test module).

`run(jobs, tmp)` runs this file as a script in a separate process (bert4keras needs TF_KERAS and
TF_USE_LEGACY_KERAS before TensorFlow is imported; see bert4keras_logits.py) and returns its results:

* {"adafactor": {"kwargs": {...}, "params": PATH.npz, "grads": PATH.npz}}: bert4keras `AdaFactor(**kwargs)`
  applied to tf.Variables initialised from params.npz with grads.npz[name][t] at step t; returns
  {name: [steps + 1, ...]} (the initial values, then the values after each step). kwargs with
  `grad_accum_steps` n: `extend_with_gradient_accumulation(AdaFactor)`, grads.npz holding n micro-batches per
  update (update k happens at its call n * k, the call at 0 on a zero gradient); the values after each update.
* {"lamb": {...}}: the same with the RoFormerV2 pretraining recipe's optimiser (train_mlm.py), kwargs to
  `extend_with_piecewise_linear_lr(extend_with_layer_adaptation(extend_with_weight_decay(Adam)))`;
  {"adamw": {...}}: `extend_with_piecewise_linear_lr(extend_with_weight_decay(Adam))` (RoFormer v1's).
* {"piecewise": {"schedule": {step: factor}, "steps": [t, ...]}}: `bert4keras.backend.piecewise_linear(t,
  schedule)` at those steps.
* {"encode": {"vocab": PATH, "maxlen": int, "pairs": [[a, b or null], ...]}}: token ids of
  `Tokenizer(vocab, do_lower_case=True).encode(a, b, maxlen=maxlen)` for each pair.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bert4keras_logits import ENV  # the environment bert4keras needs (tests/ is on sys.path, as script or module)


def run(jobs, tmp):
  """Results of `jobs` (a list of the dicts above), from one bert4keras process."""
  tmp = Path(tmp)
  (tmp / "b4k_jobs.json").write_text(json.dumps(jobs))
  proc = subprocess.run([sys.executable, __file__, str(tmp / "b4k_jobs.json"), str(tmp / "b4k_out.json")],
                        env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300)
  if proc.returncode != 0:
    raise RuntimeError(f"bert4keras failed:\n{proc.stderr[-4000:]}")
  out = json.loads((tmp / "b4k_out.json").read_text())
  return [{k: np.asarray(v, np.float32) for k, v in r.items()} if {"adafactor", "lamb", "adamw"} & set(j)
          else np.asarray(r, np.float32) if "piecewise" in j else r for j, r in zip(jobs, out)]


def optimizer(job, kind):
  import tensorflow as tf
  from bert4keras.backend import keras
  # bert4keras 0.11.5 subclasses `keras.optimizers.Optimizer`, which was OptimizerV2 when it was
  # written; tf-keras >= 2.11 renamed that class `optimizers.legacy.Optimizer`. Its optimiser code runs
  # unchanged on the class it was written for.
  keras.optimizers.Optimizer = keras.optimizers.legacy.Optimizer
  from bert4keras import optimizers as O
  params, grads = np.load(job["params"]), np.load(job["grads"])
  names = sorted(params.files)
  variables = [tf.Variable(params[n], name=n) for n in names]
  kwargs = dict(job["kwargs"])
  accum = kwargs.get("grad_accum_steps", 1)
  if kind in ("lamb", "adamw"):  # train_mlm.py's AdamW -> LAMB -> LAMBLR
    cls = O.extend_with_weight_decay(O.Adam, name="AdamW")
    if kind == "lamb":
      cls = O.extend_with_layer_adaptation(cls, name="LAMB")
    cls = O.extend_with_piecewise_linear_lr(cls, name=cls.__name__ + "LR")
  else:
    cls = O.AdaFactor
  opt = (O.extend_with_gradient_accumulation(cls, name=cls.__name__ + "G") if accum > 1 else cls)(**kwargs)
  micro = grads[names[0]].shape[0]
  if accum > 1:  # one more call (any gradient) makes the last update
    grads = {n: np.concatenate([grads[n], np.zeros_like(grads[n][:1])]) for n in names}
  history = {n: [params[n]] for n in names}
  for t in range(micro + (accum > 1)):
    opt.apply_gradients([(tf.constant(grads[n][t]), v) for n, v in zip(names, variables)])
    if accum == 1 or (t and t % accum == 0):
      for n, v in zip(names, variables):
        history[n].append(v.numpy())
  return {n: np.stack(h).tolist() for n, h in history.items()}


def piecewise(job):
  from bert4keras.backend import K, piecewise_linear
  schedule = {int(k): v for k, v in job["schedule"].items()}
  return K.eval(piecewise_linear(K.constant(job["steps"], "int64"), schedule)).tolist()


def encode(job):
  from bert4keras.tokenizers import Tokenizer
  tok = Tokenizer(job["vocab"], do_lower_case=True)
  return [tok.encode(a, b, maxlen=job["maxlen"])[0] for a, b in job["pairs"]]


def main(jobs_file, out_file):
  os.environ.update(ENV)
  jobs = json.loads(Path(jobs_file).read_text())
  run_job = {"adafactor": lambda j: optimizer(j, "adafactor"), "lamb": lambda j: optimizer(j, "lamb"),
             "adamw": lambda j: optimizer(j, "adamw"), "piecewise": piecewise, "encode": encode}
  out = [run_job[kind](j) for job in jobs for kind, j in job.items()]
  Path(out_file).write_text(json.dumps(out))


if __name__ == "__main__":
  main(*sys.argv[1:])
