"""PET on the embedded product reviews: a pattern with a blank, the MLM head fills it (kexue 7764).

The four regimes of the post (finetune-spec §a.3): `zero_shot` (no training: the checkpoint's MLM head and the
pattern), `unsupervised` (MLM on the unlabelled training texts only, then the pattern), `few_shot` (K labelled
examples with the pattern) and `semi_supervised` (the K labelled with the pattern and the rest of the training
texts without, shuffled together). Training is the reference's (random 15% masking over all tokens, the label
word forced at the blank, full-vocabulary cross-entropy at every target; `roformer_jax.pet`); the dev accuracy
of the pattern picks the final params; the test accuracy is reported. The library pieces are `roformer_jax.pet`;
this file only wires them into the train loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log, Task, fixed_seq_len


def resolve_pattern(pattern: str) -> str:
  """A pattern string, or the name of one of the post's five (P1..P5)."""
  from roformer_jax.pet import patterns
  if pattern in patterns.SENTIMENT_PATTERNS:
    return patterns.SENTIMENT_PATTERNS[pattern]
  if "{text}" not in pattern:  # e.g. 'P9': say which names exist, not only that {text} is missing
    raise ConfigError(f"config.pattern = {pattern!r}: not a pattern name ({', '.join(patterns.SENTIMENT_PATTERNS)}) "
                      "nor a pattern with {text} and a blank")
  return pattern


class StepBatches:
  """grain's random access over a step-indexed batch function: a checkpointable iterator whose global batch
  k is `batches.batch(k)` whatever the process count (each process takes its block of rows)."""

  def __init__(self, batches, process_index: int, local_batch: int):
    self.batches, self.process_index, self.local_batch = batches, process_index, local_batch

  def __len__(self) -> int:
    return 2**40  # endless, for all practical purposes

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    rows = slice(self.process_index * self.local_batch, (self.process_index + 1) * self.local_batch)
    return {k: v[rows] for k, v in self.batches.batch(int(step)).items() if k != "example_index"}


class PetTask(Task):
  """A pattern-exploiting MLM fine-tune of the checkpoint in `config.init` (its MLM head included)."""

  name = "pet"

  def __init__(self, cfg):
    from roformer_jax.pet import batches
    self.cfg = cfg
    self.seq_len = fixed_seq_len(cfg)
    if cfg.regime not in batches.REGIMES:
      raise ConfigError(f"config.regime = {cfg.regime!r}; expected one of {list(batches.REGIMES)}")
    self.trains = cfg.regime != "zero_shot"

  def prepare(self, local_dir: Path, log: Log) -> None:
    from finetune.configs.common import model_overrides
    from roformer_jax import load_tokenizer
    from roformer_jax.model import RoFormerForMaskedLM
    from roformer_jax.pet import batches, patterns, reviews
    from roformer_jax.train.pretrained import Pretrained

    cfg = self.cfg
    self.pretrained = Pretrained(cfg.init, with_mlm=True, **model_overrides(cfg))
    self.model_config = self.pretrained.model_config
    self.vocab_file = self.pretrained.vocab_file(cfg.vocab)
    tokenizer = load_tokenizer(self.vocab_file)
    folder = reviews.prepare_reviews(Path(cfg.data_dir).expanduser())
    self.splits = reviews.load_reviews(folder)
    train = self.splits["train"]
    self.encoder = patterns.PetEncoder(tokenizer, resolve_pattern(cfg.pattern), dict(cfg.verbalizer),
                                       train.label_names, max_length=self.seq_len)
    self.labelled, self.unlabelled = batches.regime_data(cfg.regime, train, cfg.k, cfg.seed, cfg.kshot_mode)
    self.model = RoFormerForMaskedLM(self.model_config)
    self.train_size = len(self.labelled) + len(self.unlabelled)
    if self.trains:
      self.batches = batches.PetTrainBatches(self.encoder, self.labelled, self.unlabelled,
                                             batch_size=cfg.batch_size, seed=cfg.seed,
                                             vocab_size=self.model_config.vocab_size)
    self.log = log

  def describe(self) -> str:
    return (f"regime {self.cfg.regime}, pattern {self.encoder.pattern.source!r}, verbalizer {dict(self.cfg.verbalizer)}; "
            f"{len(self.labelled)} labelled + {len(self.unlabelled)} unlabelled; dev {len(self.splits['dev'])}, "
            f"test {len(self.splits['test'])}; init {self.pretrained.folder}")

  def init_params(self, rng) -> Any:
    return self.model.init(rng, np.ones((1, self.seq_len), np.int32))["params"]

  def initial_params(self, params: Any) -> Any:
    params, new = self.pretrained.load_into(params)
    if new:
      self.log(f"new params (initialised): {', '.join(new)}")
    return params

  def loss_fn(self):
    from roformer_jax import objectives
    return objectives.masked_lm_loss(self.model)

  def train_iterator(self, local_batch: int):
    import grain
    import jax
    source = StepBatches(self.batches, jax.process_index(), local_batch)
    return iter(grain.MapDataset.source(source).to_iter_dataset())

  host_counters = ("masked_overflow",)

  def _eval(self, split: str, local_batch: int):
    import jax
    from roformer_jax.pet import batches
    data = self.splits[split]
    n = len(data)
    for batch in batches.eval_batches(self.encoder, data, local_batch * jax.process_count()):
      rows = slice(jax.process_index() * local_batch, (jax.process_index() + 1) * local_batch)
      yield {k: v[rows] for k, v in batch.items()}

  def eval_batches(self, local_batch: int):
    return self._eval("dev", local_batch)

  def eval_fn(self):
    from roformer_jax.pet import scoring
    return scoring.label_eval(self.model, self.encoder.label_token_ids)

  def eval_metrics(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    n = max(float(sums["weight"]), 1.0)
    return {"eval_accuracy": float(sums["correct"]) / n, "eval_label_loss": float(sums["loss"]) / n}

  def step_flops(self, metrics: dict[str, float]) -> float:
    from roformer_jax.train import flops
    return flops.train_flops(self.model_config, self.cfg.batch_size, self.seq_len,
                             metrics.get("weight", float("nan")) / self.cfg.batch_size)

  def export_params(self, params: Any) -> Any:
    return params

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Dev and test accuracy of the final params (the best dev ones when training)."""
    out = {"task": "pet", "regime": self.cfg.regime, "pattern": self.encoder.pattern.source, "k": len(self.labelled),
           "seed": self.cfg.seed}
    for split in ("dev", "test"):
      out[f"{split}_accuracy"] = self.eval_metrics(runner.sums(params, self._eval(split, runner.local_batch)))[
          "eval_accuracy"]
    return out
