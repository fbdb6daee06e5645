"""Pretraining as a `roformer_jax.train.task.Task`: whole-word-masking MLM on a prepared corpus."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from roformer_jax.train.task import Log, Task, fixed_seq_len


def model_config(cfg):
  import roformer_jax
  return roformer_jax.get_config(cfg.model.preset, **dict(cfg.model.overrides), attention=cfg.attention,
                                 dtype=cfg.dtype, scan_layers=cfg.scan_layers, remat=cfg.remat)


class PretrainTask(Task):
  """The MLM model, the corpus pipeline (`pretrain.data.Pipeline`) and the masked-token metrics."""

  name = "pretrain"
  host_counters = ("masked_overflow",)  # tokens of selected words that did not fit the prediction slots

  def __init__(self, cfg):
    self.cfg = cfg
    self.seq_len = fixed_seq_len(cfg)

  def prepare(self, local_dir: Path, log: Log) -> None:
    from pretrain import data as data_lib
    from roformer_jax.model import RoFormerForMaskedLM
    # Data: prepared once (tokenised, packed, cached atomically), then a per-process grain iterator.
    self.data = data_lib.Pipeline(self.cfg, local_dir)
    self.vocab_file = self.data.vocab_file
    # Embedding rows rounded up to a multiple of 128 (fast, evenly shardable matmuls); the extra
    # ids never occur in the data.
    self.model_config = model_config(self.cfg).replace(vocab_size=-(-self.data.vocab_size // 128) * 128)
    self.model = RoFormerForMaskedLM(self.model_config)

  def describe(self) -> str:
    return self.data.describe()

  def init_params(self, rng) -> Any:
    return self.model.init(rng, np.ones((1, self.seq_len), np.int32))["params"]

  def loss_fn(self):
    from roformer_jax import objectives
    return objectives.masked_lm_loss(self.model, self.cfg.residual_warmup_steps)

  def train_iterator(self, local_batch: int):
    return self.data.train_iterator(local_batch)

  def reposition(self, iterator, step: int) -> None:
    self.data.reposition(iterator, step)

  def eval_batches(self, local_batch: int):
    return itertools.islice(self.data.eval_batches(local_batch), self.cfg.eval_batches or None)

  def eval_fn(self):
    import jax.numpy as jnp
    from roformer_jax import objectives
    base = objectives.masked_lm_eval(self.model)
    vocab = self.model_config.vocab_size

    def eval_fn(params, batch):
      # The label histogram gives the constant predictor's accuracy (always the most frequent token of
      # these same masks): the baseline the MLM accuracy is read against.
      counts = jnp.zeros((vocab,), jnp.float32).at[batch["masked_labels"].reshape(-1)].add(
          batch["masked_weights"].reshape(-1).astype(jnp.float32))
      return dict(base(params, batch), label_counts=counts)
    return eval_fn

  def eval_metrics(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    weight = max(float(sums["weight"]), 1.0)
    counts = sums["label_counts"]
    return {"eval_mlm_accuracy": float(sums["accuracy"]) / weight, "eval_loss": float(sums["loss"]) / weight,
            "eval_majority_accuracy": float(counts.max() / max(counts.sum(), 1.0)),
            "eval_tokens": float(sums["weight"])}

  def eval_summary(self, m: dict[str, float]) -> str:
    return (f"masked-token accuracy {m['eval_mlm_accuracy']:.4f} (majority-token baseline "
            f"{m['eval_majority_accuracy']:.4f}), loss {m['eval_loss']:.4f}")

  def step_flops(self, metrics: dict[str, float]) -> float:
    # MFU counts the head at the masked tokens actually predicted (metrics["weight"]), not the slots.
    from roformer_jax.train import flops
    b = self.cfg.batch_size
    return flops.train_flops(self.model_config, b, self.seq_len, metrics["weight"] / b)
