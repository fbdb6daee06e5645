"""[CLS] sequence classification of labelled texts: the task's data, metrics and test predictions.

The model is `roformer_jax.heads.SequenceClassifier` on the encoder of `config.init`; the loss is
`roformer_jax.objectives.classification_loss`. Texts are `[CLS] text [SEP]`, truncated and padded to
`config.seq_len`, segment ids 0 (as the reference scripts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log, Task, fixed_seq_len


def encode(tokenizer, texts: list[str], seq_len: int) -> dict[str, np.ndarray]:
  """[N, seq_len] int32 input_ids, token_type_ids and attention_mask."""
  out = tokenizer.encode_batch(texts, max_length=seq_len, pad_to=seq_len, return_offsets=False)
  return {k: out[k].astype(np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}


class ClassifyTask(Task):
  """Labelled texts (train, dev, optional test) -> a fine-tuned [CLS] classifier, best dev params kept."""

  name = "classify"

  def __init__(self, cfg):
    self.cfg = cfg
    self.seq_len = fixed_seq_len(cfg)
    if cfg.pooling not in ("first", "mean", "max"):
      raise ConfigError(f"config.pooling: unknown pooling {cfg.pooling!r}; expected first, mean or max")
    for key in ("train", "dev"):
      if not cfg.data[key]:
        raise ConfigError(f"config.data.{key} is empty: give a .tsv (text<TAB>label) or .jsonl file")

  def prepare(self, local_dir: Path, log: Log) -> None:
    from finetune.configs.common import model_overrides
    from roformer_jax import load_tokenizer
    from roformer_jax.data import labeled
    from roformer_jax.heads import SequenceClassifier
    from roformer_jax.train.pretrained import Pretrained

    cfg, data = self.cfg, self.cfg.data
    self.pretrained = Pretrained(cfg.init, **model_overrides(cfg))
    self.model_config = self.pretrained.model_config
    self.vocab_file = self.pretrained.vocab_file(cfg.vocab)
    tokenizer = load_tokenizer(self.vocab_file)
    read = lambda key: labeled.read_labeled(data[key], text_field=data.text_field, label_field=data.label_field)
    splits = {key: read(key) for key in ("train", "dev", "test") if data[key]}
    self.labels = list(data.labels) or sorted({e.label for e in splits["train"]})
    if len(self.labels) < 2:
      raise ConfigError(f"config.data.labels: a classifier needs at least 2 labels, got {self.labels} "
                        f"(from {'config.data.labels' if data.labels else data.train})")
    source = "config.data.labels" if data.labels else (  # a stray tab in train makes a label: show where
        f"the labels of {data.train}, first at " + ", ".join(
            f"{label!r}: line {n}" for label, n in sorted(labeled.first_lines(splits["train"]).items())))
    self.splits = {}
    for key, examples in splits.items():
      arrays = encode(tokenizer, [e.text for e in examples], self.seq_len)
      arrays["labels"] = np.asarray(labeled.label_ids(examples, self.labels, data[key], source), np.int32)
      self.splits[key] = arrays
    self.texts = {key: [e.text for e in examples] for key, examples in splits.items()}
    self.train_size = len(splits["train"])
    self.model = SequenceClassifier(self.model_config, len(self.labels), cfg.pooling)
    self.log = log

  def describe(self) -> str:
    sizes = ", ".join(f"{k} {len(v['labels'])} ({Path(self.cfg.data[k]).name})" for k, v in self.splits.items())
    return f"labels {self.labels}; {sizes}; seq_len {self.seq_len}; init {self.pretrained.folder}"

  def init_params(self, rng) -> Any:
    return self.model.init(rng, np.ones((1, self.seq_len), np.int32))["params"]

  def initial_params(self, params: Any) -> Any:
    params, new = self.pretrained.load_into(params)
    self.log(f"encoder from {self.pretrained.folder}; new params (initialised): {', '.join(new)}")
    return params

  def loss_fn(self):
    from roformer_jax import objectives
    return objectives.classification_loss(self.model)

  def train_iterator(self, local_batch: int):
    import jax
    from roformer_jax.data import pipeline
    return iter(pipeline.examples_train_dataset(self.splits["train"], batch_size=local_batch, seed=self.cfg.seed,
                                                process_index=jax.process_index(),
                                                process_count=jax.process_count()))

  def _batches(self, split: str, local_batch: int):
    import jax
    from roformer_jax.data import pipeline
    return iter(pipeline.examples_eval_dataset(self.splits[split], batch_size=local_batch,
                                               process_index=jax.process_index(),
                                               process_count=jax.process_count()))

  def eval_batches(self, local_batch: int):
    return self._batches("dev", local_batch)

  def eval_fn(self):
    from roformer_jax import objectives
    return objectives.classification_eval(self.model)

  def eval_metrics(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    n = max(float(sums["weight"]), 1.0)
    return {"eval_accuracy": float(sums["accuracy"]) / n, "eval_loss": float(sums["loss"]) / n,
            "eval_examples": float(sums["weight"])}

  def step_flops(self, metrics: dict[str, float]) -> float:
    from roformer_jax.train import flops
    cfg, b = self.model_config, self.cfg.batch_size
    rows = 1 if self.cfg.pooling == "first" else None  # first pooling runs the last layer at [CLS] only
    head = 2 * b * cfg.hidden_size * len(self.labels)
    return 3.0 * (flops.encoder_flops(cfg, b, self.seq_len, rows) + head)

  def write_assets(self, workdir: Any) -> None:
    super().write_assets(workdir)
    (workdir / ".labels.json.tmp").write_text(json.dumps(self.labels, ensure_ascii=False))
    (workdir / ".labels.json.tmp").replace(workdir / "labels.json")

  def export_params(self, params: Any) -> Any:
    return params["roformer"]  # the fine-tuned encoder, in the ports' layout

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Dev accuracy of the final params, and with a test file its accuracy and predictions."""
    import jax
    out = {"dev_accuracy": self.eval_metrics(runner.sums(params, self._batches("dev", runner.local_batch)))[
        "eval_accuracy"]}
    if "test" not in self.splits:
      return out
    logits_fn = lambda p, batch: {"logits": self.model.apply({"params": p}, batch["input_ids"],
                                                             batch["token_type_ids"], batch["attention_mask"])}
    logits = [runner.predict(logits_fn, params, b)["logits"] for b in self._batches("test", runner.local_batch)]
    n = len(self.splits["test"]["labels"])
    predicted = np.concatenate(logits)[:n].argmax(-1)  # global rows in order; the padding rows are last
    out["test_accuracy"] = float(np.mean(predicted == self.splits["test"]["labels"]))
    if jax.process_index() == 0:
      path = out_dir / "predictions" / "test.jsonl"
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.with_name(f".{path.name}.tmp")
      with open(tmp, "w", encoding="utf-8") as f:
        for i, (text, p) in enumerate(zip(self.texts["test"], predicted)):
          f.write(json.dumps({"id": i, "label": self.labels[int(p)], "text": text}, ensure_ascii=False) + "\n")
      os.replace(tmp, path)
      out["predictions"] = str(path)
    return out
