"""A CLUE classification task (AFQMC ... CLUEWSC) on the train loop: the [CLS] classifier of
`finetune.classify.ClassifyTask` fed from the official files, with the reference's inputs, labels and recipe.

Dev accuracy after every epoch keeps the best params (`config.best_metric`); they predict every test file
present, written as the CLUE submission files (`finetune.clue.data.write_predictions`, atomic) in
<workdir>/predictions/. Config: finetune/configs/clue.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from finetune.classify import ClassifyTask
from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log


class ClueTask(ClassifyTask):
  """`config.clue.task` read from `config.clue.dir`; see the module docstring."""

  name = "clue"

  def __init__(self, cfg):
    from finetune.clue.data import WSC_STYLES
    from finetune.configs.clue import resolve
    resolve(cfg)  # the recipe's seq_len, batch_size, epochs, accum_steps where the config leaves 0
    self.cfg, self.task, self.seq_len = cfg, cfg.clue.task, cfg.seq_len
    if cfg.pooling not in ("first", "mean", "max"):
      raise ConfigError(f"config.pooling: unknown pooling {cfg.pooling!r}; expected first, mean or max")
    if cfg.clue.wsc_style not in WSC_STYLES:
      raise ConfigError(f"config.clue.wsc_style: {cfg.clue.wsc_style!r}; expected one of {WSC_STYLES}")
    if not cfg.clue.dir:
      raise ConfigError("config.clue.dir is empty: give the folder of the official files (e.g. afqmc_public/)")
    if not Path(cfg.clue.dir).expanduser().is_dir():
      raise ConfigError(f"config.clue.dir={cfg.clue.dir}: no such folder")

  def prepare(self, local_dir: Path, log: Log) -> None:
    from finetune.clue import data, tasks
    from finetune.configs.common import model_overrides
    from roformer_jax import load_tokenizer
    from roformer_jax.data.classify import encode_examples
    from roformer_jax.heads import SequenceClassifier
    from roformer_jax.train.pretrained import Pretrained

    cfg = self.cfg
    try:
      folder = data.task_dir(self.task, Path(cfg.clue.dir).expanduser())
    except FileNotFoundError as e:
      raise ConfigError(f"config.clue.dir: {e}") from None
    names = ["train", "dev"] + (data.test_splits(self.task, folder) if cfg.clue.predict else [])
    self.data = {name: data.read_split(self.task, folder, name, cfg.clue.wsc_style) for name in names}
    for split in self.data.values():
      for line in split.dropped + split.warnings:  # the reference drops these silently; say so
        log(f"{self.task}: {line}")
    self.pretrained = Pretrained(cfg.init, **model_overrides(cfg))
    self.model_config = self.pretrained.model_config
    self.vocab_file = self.pretrained.vocab_file(cfg.vocab)
    tokenizer = load_tokenizer(self.vocab_file)
    self.splits = {name: {k: np.asarray(v, np.int32) for k, v in
                          encode_examples(tokenizer, split.examples, self.seq_len, pad_to=self.seq_len).items()}
                   for name, split in self.data.items()}
    self.labels = list(tasks.RECIPES[self.task]["labels"])
    self.train_size = len(self.data["train"].examples)
    self.model = SequenceClassifier(self.model_config, len(self.labels), cfg.pooling, use_bias=cfg.head_bias)
    self.log = log

  def describe(self) -> str:
    sizes = ", ".join(f"{name} {len(s.examples)} ({s.path})" for name, s in self.data.items())
    return (f"CLUE {self.task}, {len(self.labels)} labels; {sizes}; seq_len {self.seq_len}; "
            f"init {self.pretrained.folder}")

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Dev accuracy of the final (best) params; test predictions as the CLUE submission files."""
    import jax

    from finetune.clue.data import write_predictions
    dev = self.eval_metrics(runner.sums(params, self._batches("dev", runner.local_batch)))
    out: dict[str, Any] = {"clue_task": self.task, "dev_accuracy": dev["eval_accuracy"],
                           "dev_examples": int(dev["eval_examples"])}
    logits_fn = lambda p, batch: {"logits": self.model.apply({"params": p}, batch["input_ids"],
                                                             batch["token_type_ids"], batch["attention_mask"])}
    predictions = {}
    for name, split in self.data.items():
      if split.labelled:
        continue
      logits = [runner.predict(logits_fn, params, b)["logits"] for b in self._batches(name, runner.local_batch)]
      predicted = np.concatenate(logits)[:len(split.examples)].argmax(-1)  # padding rows come last
      if jax.process_index() == 0:
        predictions[name] = str(write_predictions(self.task, split, predicted, out_dir / "predictions"))
    if predictions:
      out["predictions"] = predictions
    return out


def make_task(cfg):
  """The task of `config.clue.task`: C3 and CHID score choices (finetune.clue.choice), CMRC2018 points at a span
  (finetune.clue.mrc), CLUENER at entities (finetune.clue.ner), the rest classify."""
  from finetune.clue import choice, mrc, ner
  if cfg.clue.task in choice.RECIPES:
    return choice.ChoiceTask(cfg)
  if cfg.clue.task in mrc.RECIPES:
    return mrc.MrcTask(cfg)
  if cfg.clue.task in ner.RECIPES:
    return ner.ClueNerTask(cfg)
  return ClueTask(cfg)
