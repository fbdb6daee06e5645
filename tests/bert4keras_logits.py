"""MLM logits from bert4keras, the authors' own library, for the parity tests (not a test module).

`run(jobs, tmp)` runs this file as a script, once for many checkpoints:

    python tests/bert4keras_logits.py JOBS.json

JOBS.json lists {"folder", "model" ("roformer" | "roformer_v2"), "ids", "segments", "out", optional
"application" ("encoder" by default, or "unilm" for the seq2seq mask from the segment ids)}: each
folder holds bert_config.json + bert_model.ckpt.*, ids/segments are .npy int arrays [B, L], and the
logits [B, L, V] go to `out` (.npy). A separate process because bert4keras needs TF_KERAS and
TF_USE_LEGACY_KERAS set before TensorFlow is first imported, and TF takes seconds to import.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ENV = {
    "TF_KERAS": "1",
    "TF_USE_LEGACY_KERAS": "1",  # bert4keras 0.11.5 needs Keras 2 (tf-keras) on TF >= 2.16
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",  # plain float32 kernels
    "CUDA_VISIBLE_DEVICES": "",
}


def run(jobs, tmp):
  """MLM logits for each job (folder, model, ids, segments[, application]), from one bert4keras process."""
  tmp = Path(tmp)
  spec = []
  for n, (folder, model, ids, segments, *application) in enumerate(jobs):
    np.save(tmp / f"b4k_ids{n}.npy", np.asarray(ids, np.int32))
    np.save(tmp / f"b4k_seg{n}.npy", np.asarray(segments, np.int32))
    spec.append(dict(folder=str(folder), model=model, ids=str(tmp / f"b4k_ids{n}.npy"),
                     segments=str(tmp / f"b4k_seg{n}.npy"), out=str(tmp / f"b4k_logits{n}.npy"),
                     application=application[0] if application else "encoder"))
  (tmp / "b4k_jobs.json").write_text(json.dumps(spec))
  proc = subprocess.run([sys.executable, __file__, str(tmp / "b4k_jobs.json")], env={**os.environ, **ENV},
                        capture_output=True, text=True, timeout=300)
  if proc.returncode != 0:
    raise RuntimeError(f"bert4keras failed:\n{proc.stderr[-4000:]}")
  return [np.load(s["out"]) for s in spec]


def main(jobs_file):
  os.environ.update(ENV)
  from bert4keras.backend import K
  from bert4keras.models import build_transformer_model
  with open(jobs_file) as f:
    jobs = json.load(f)
  for job in jobs:
    folder = job["folder"]
    model = build_transformer_model(os.path.join(folder, "bert_config.json"),
                                    os.path.join(folder, "bert_model.ckpt"),
                                    model=job["model"], with_mlm="linear",
                                    application=job.get("application", "encoder"))
    ids, segments = np.load(job["ids"]), np.load(job["segments"])
    logits = model.predict([ids, segments], batch_size=len(ids), verbose=0)
    np.save(job["out"], np.asarray(logits, np.float32))
    K.clear_session()


if __name__ == "__main__":
  main(sys.argv[1])
