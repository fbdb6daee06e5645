"""bert4keras' GlobalPointer layers and multilabel losses, run for the extraction tests (not a test module).

`run(jobs, tmp)` runs this file as a script in a separate process (bert4keras needs TF_KERAS and
TF_USE_LEGACY_KERAS before TensorFlow is imported; see bert4keras_logits.py) and returns one dict of
numpy arrays per job. Arrays travel as .npz files. Jobs:

* {"kind": "mce", "y_true", "y_pred"}: `backend.multilabel_categorical_crossentropy` -> {"loss", "grad"}
  (grad = d sum(loss) / d y_pred).
* {"kind": "sparse_mce", "y_true", "y_pred", "mask_zero"}: `sparse_multilabel_categorical_crossentropy`.
* {"kind": "ner_loss" | "gplinker_loss", "y_true", "y_pred"}: the loss functions of the reference scripts
  (bojone/GlobalPointer `global_pointer_crossentropy`, bojone/GPLinker `globalpointer_crossentropy`),
  copied below from the scripts; they call bert4keras' own losses.
* {"kind": "layer", "layer": "GlobalPointer" | "EfficientGlobalPointer", "kwargs": {...}, "x", "mask",
  "weights": [names]}: the layer's output on x [B, L, D] with the boolean mask [B, L], after setting
  its weights (Keras order) from the named arrays -> {"scores"}.
* {"kind": "rematch", "vocab": PATH, "texts": [...], "maxlen": int}: for each text, the reference scripts'
  `start_mapping` / `end_mapping` ({first char: token}, {last char: token}) from
  `Tokenizer(vocab, do_lower_case=True).rematch(text, tokenize(text, maxlen))` -> {"start{n}", "end{n}"}
  as [char, token] rows.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bert4keras_logits import ENV  # the environment bert4keras needs (tests/ is on sys.path, as script or module)


def run(jobs, tmp):
  """Results of `jobs` (dicts as above; array values are numpy arrays), from one bert4keras process."""
  tmp = Path(tmp)
  spec = []
  for n, job in enumerate(jobs):
    arrays = {k: np.asarray(v) for k, v in job.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in job.items() if k not in arrays}
    np.savez(tmp / f"b4k_in{n}.npz", **arrays)
    spec.append(dict(rest, arrays=str(tmp / f"b4k_in{n}.npz"), out=str(tmp / f"b4k_out{n}.npz")))
  (tmp / "b4k_jobs.json").write_text(json.dumps(spec))
  proc = subprocess.run([sys.executable, __file__, str(tmp / "b4k_jobs.json")], env={**os.environ, **ENV},
                        capture_output=True, text=True, timeout=300)
  if proc.returncode != 0:
    raise RuntimeError(f"bert4keras failed:\n{proc.stderr[-4000:]}")
  return [dict(np.load(s["out"])) for s in spec]


def _reference_losses():
  from bert4keras.backend import K, multilabel_categorical_crossentropy, sparse_multilabel_categorical_crossentropy

  # bojone/GlobalPointer@1e66ba3 PeopleDaily_GlobalPointer.py (same in CLUENER_/CMeEE_GlobalPointer.py)
  def global_pointer_crossentropy(y_true, y_pred):
    bh = K.prod(K.shape(y_pred)[:2])
    y_true = K.reshape(y_true, (bh, -1))
    y_pred = K.reshape(y_pred, (bh, -1))
    return K.mean(multilabel_categorical_crossentropy(y_true, y_pred))

  # bojone/GPLinker@461fb1f duie_v1.py (same in duee_v1.py)
  def globalpointer_crossentropy(y_true, y_pred):
    shape = K.shape(y_pred)
    y_true = y_true[..., 0] * K.cast(shape[2], K.floatx()) + y_true[..., 1]
    y_pred = K.reshape(y_pred, (shape[0], -1, K.prod(shape[2:])))
    loss = sparse_multilabel_categorical_crossentropy(y_true, y_pred, True)
    return K.mean(K.sum(loss, axis=1))

  return global_pointer_crossentropy, globalpointer_crossentropy


def _job(job, a):
  import tensorflow as tf
  from bert4keras import backend, layers
  ner_loss, gplinker_loss = _reference_losses()
  kind = job["kind"]
  if kind == "rematch":
    from bert4keras.tokenizers import Tokenizer
    tok, out = Tokenizer(job["vocab"], do_lower_case=True), {}
    for n, text in enumerate(job["texts"]):
      mapping = tok.rematch(text, tok.tokenize(text, maxlen=job["maxlen"]))
      start = {j[0]: i for i, j in enumerate(mapping) if j}  # as every reference script builds them
      end = {j[-1]: i for i, j in enumerate(mapping) if j}
      out[f"start{n}"] = np.array(sorted(start.items()), np.int64).reshape(-1, 2)
      out[f"end{n}"] = np.array(sorted(end.items()), np.int64).reshape(-1, 2)
    return out
  if kind == "layer":
    layer = getattr(layers, job["layer"])(**job["kwargs"])
    x, mask = tf.constant(a["x"]), tf.constant(a["mask"].astype(bool))
    layer(x, mask=mask)  # builds the weights
    layer.set_weights([a[n] for n in job["weights"]])
    return {"scores": layer(x, mask=mask).numpy()}
  y_true = tf.constant(a["y_true"])
  y_pred = tf.Variable(a["y_pred"])
  with tf.GradientTape() as tape:
    if kind == "mce":
      loss = backend.multilabel_categorical_crossentropy(y_true, y_pred)
    elif kind == "sparse_mce":
      loss = backend.sparse_multilabel_categorical_crossentropy(y_true, y_pred, bool(job["mask_zero"]))
    elif kind == "ner_loss":
      loss = ner_loss(y_true, y_pred)
    elif kind == "gplinker_loss":
      loss = gplinker_loss(tf.cast(y_true, tf.float32), y_pred)
    else:
      raise ValueError(kind)
    total = tf.reduce_sum(loss)
  return {"loss": loss.numpy(), "grad": tape.gradient(total, y_pred).numpy()}


def main(jobs_file):
  os.environ.update(ENV)
  for job in json.loads(Path(jobs_file).read_text()):
    np.savez(job["out"], **_job(job, np.load(job["arrays"])))


if __name__ == "__main__":
  main(sys.argv[1])
