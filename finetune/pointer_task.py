"""What the GlobalPointer tasks share (NER in finetune/ner.py, GPLinker in finetune/gplinker.py): the checkpoint
and tokenizer, fresh or pretrained params, in-memory batches, padded sparse label rows, scores to the host.

A split's labels travel as short padded lists of rows (head, i, j) ([N, E, 3], -1 = padding), never as
[N, heads, L, L]; each task turns them into what its loss needs on the device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log, Task


@dataclasses.dataclass
class Split:
  """One split: its texts and gold labels (characters or strings), the encoded arrays and token <-> char maps."""
  texts: list[str]
  gold: list[Any]
  labelled: bool
  arrays: dict[str, np.ndarray]
  cmaps: list[Any]
  dropped: int  # gold spans not on token boundaries (or truncated): not training labels
  ids: list[Any] = dataclasses.field(default_factory=list)  # each line's own "id" where its file has one

  def __len__(self) -> int:
    return len(self.texts)

  def row_id(self, n: int) -> Any:
    """Row n's id in its file (DuEE, CLUENER test ids), for prediction files; else its row number."""
    return self.ids[n] if n < len(self.ids) and self.ids[n] is not None else n


def padded_rows(rows: Sequence[Sequence[tuple[int, int, int]]], width: int | None = None) -> np.ndarray:
  """[N, E, 3] int32 of each example's (head, i, j) rows, padded with -1; E = the most rows (>= 1) or `width`
  (an example with more rows than `width` is an error: its labels are never silently cut)."""
  most = max((len(r) for r in rows), default=0)
  if width is not None and most > width:
    n = next(n for n, r in enumerate(rows) if len(r) > width)
    raise ValueError(f"padded_rows: example {n} has {len(rows[n])} label rows > width={width}")
  width = max(most, 1) if width is None else width
  out = np.full((len(rows), width, 3), -1, np.int32)
  for n, r in enumerate(rows):
    out[n, :len(r)] = np.asarray(r, np.int32).reshape(-1, 3)
  return out


def set_rows(sets: Sequence[set[tuple[int, int]]]) -> list[tuple[int, int, int]]:
  """Per-head sets of (i, j) -> sorted (head, i, j) rows."""
  return sorted((h, i, j) for h, s in enumerate(sets) for i, j in s)


def check_limits(cfg) -> None:
  for key in ("max_train", "max_dev", "max_test"):
    if cfg.data[key] < 0:
      raise ConfigError(f"config.data.{key} must be >= 0 (0 = all), got {cfg.data[key]}")


class PointerTask(Task):
  """Base of the GlobalPointer tasks. A subclass's `prepare` calls `load_encoder`, then sets `self.model`
  (ids, types, mask -> scores), `self.splits` and `require_splits()`; `rows_to_host` brings a split's
  per-example outputs of one jitted function to the host for decoding."""

  def load_encoder(self, log: Log):
    """The checkpoint's config and vocab (`config.init`); returns the tokenizer."""
    from finetune.configs.common import model_overrides
    from roformer_jax import load_tokenizer
    from roformer_jax.train.pretrained import Pretrained
    cfg = self.cfg
    self.pretrained = Pretrained(cfg.init, **model_overrides(cfg))
    self.model_config = self.pretrained.model_config
    self.vocab_file = self.pretrained.vocab_file(cfg.vocab)
    self.log = log
    self._jitted_outputs: dict[str, Callable] = {}
    return load_tokenizer(self.vocab_file)

  def take(self, key: str, examples: list, labelled: bool) -> list:
    """The first config.data.max_<key> examples (the same subset every run); train and dev must be labelled."""
    limit = self.cfg.data[f"max_{key}"]
    if key in ("train", "dev") and not labelled:
      raise ConfigError(f"config.data: the {self.cfg.data.source} {key} split has no labels")
    return examples[:limit] if limit else examples

  def require_splits(self) -> None:
    for key in ("train", "dev"):
      if key not in self.splits:
        raise ConfigError(f"config.data: the {self.cfg.data.source} data has no {key} examples")
    self.train_size = len(self.splits["train"])

  def init_params(self, rng) -> Any:
    ids = np.ones((1, self.seq_len), np.int32)
    return self.model.init(rng, ids, None, ids)["params"]

  def initial_params(self, params: Any) -> Any:
    if self.cfg.from_scratch:
      self.log(f"from scratch: every param freshly initialised ({self.pretrained.folder}'s architecture)")
      return params
    params, new = self.pretrained.load_into(params)
    self.log(f"encoder from {self.pretrained.folder}; new params (initialised): {', '.join(new)}")
    return params

  def apply(self, params, batch, **kw):
    return self.model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                            batch["attention_mask"], **kw)

  def train_iterator(self, local_batch: int):
    import jax
    from roformer_jax.data import pipeline
    return iter(pipeline.examples_train_dataset(self.splits["train"].arrays, batch_size=local_batch,
                                                seed=self.cfg.seed, process_index=jax.process_index(),
                                                process_count=jax.process_count()))

  def batches(self, split: str, local_batch: int):
    import jax
    from roformer_jax.data import pipeline
    return iter(pipeline.examples_eval_dataset(self.splits[split].arrays, batch_size=local_batch,
                                               process_index=jax.process_index(),
                                               process_count=jax.process_count()))

  def eval_batches(self, local_batch: int):
    return self.batches("dev", local_batch)

  def predict_fn(self, outputs: Callable[[Any, dict], dict]) -> Callable[[Any, dict], dict]:
    """One function object per method for the run (a bound method is a new object each time; the runner
    compiles per object)."""
    return self._jitted_outputs.setdefault(outputs.__name__, outputs)

  def rows_to_host(self, params: Any, runner, split: str, outputs: Callable[[Any, dict], dict]):
    """(row index, {name: numpy row}) for every example of `split` in order (padding rows left out)."""
    n = 0
    total = len(self.splits[split])
    for batch in self.batches(split, runner.local_batch):
      out = runner.predict(self.predict_fn(outputs), params, batch)  # the global batch, padding last
      out = {k: np.asarray(v) for k, v in out.items()}
      for row in range(next(iter(out.values())).shape[0]):
        if n >= total:
          return
        yield n, {k: v[row] for k, v in out.items()}
        n += 1

  def write_json_asset(self, workdir: Any, name: str, value: Any) -> None:
    import json
    (workdir / f".{name}.tmp").write_text(json.dumps(value, ensure_ascii=False))
    (workdir / f".{name}.tmp").replace(workdir / name)

  def export_params(self, params: Any) -> Any:
    return params["roformer"]

