"""C3 and CHID on the train loop: one [CLS] score per choice, softmax cross-entropy across a question's choices.

Inputs as the reference (ZhuiyiTechnology/roformer-v2 `clue/c3.py`, `chid.py`), segment ids 0:
* C3, per choice: [CLS] passage [SEP] question [SEP] choice [SEP], at most 512 tokens, cut by bert4keras
  `truncate_sequences(maxlen, -2, choice, question, passage)`: while too long, the longest part (the first of
  choice, question, passage on a tie) loses its last token before its [SEP].
* CHID, per candidate: [CLS] left [SEP] idiom [SEP] right [SEP] (contexts trimmed by `mrc_data.chid_contexts`).
Rows are padded to `seq_len` (C3 512, CHID 64). `batch_size` counts questions (blanks), over the accumulation
steps: C3 16 = 4 per micro-step x 4 (bert4keras `optimizer4`), CHID 24 = 12 x 2. Dev accuracy is the argmax per
question for C3; for CHID it is the per-passage assignment (`mrc_metrics.assign_idioms`), during training too,
so that the best checkpoint is chosen by it, as the reference's evaluator does (`eval_argmax_accuracy`: the
plain argmax, logged beside it); CHID's test predictions use the assignment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from finetune.classify import ClassifyTask
from finetune.clue import mrc_data
from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log

# task -> recipe (as finetune.clue.tasks.RECIPES). accum_steps: bert4keras optimizer2 / optimizer4.
RECIPES: dict[str, dict] = {
    "c3": {"max_len": 512, "batch_size": 16, "accum_steps": 4, "epochs": 10, "num_choices": 4},
    "chid": {"max_len": 64, "batch_size": 24, "accum_steps": 2, "epochs": 5, "num_choices": 10},
}
FOLDERS = {"c3": "c3_public", "chid": "chid_public"}


def _ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
  """Token ids of each text without [CLS]/[SEP]."""
  out = tokenizer.encode_batch(list(texts), return_offsets=False)
  lengths = out["attention_mask"].sum(1)
  return [row[1:n - 1].tolist() for row, n in zip(out["input_ids"], lengths)]


def truncate_sequences(maxlen: int, index: int, *sequences: list) -> None:
  """bert4keras `truncate_sequences`, in place."""
  while sum(len(s) for s in sequences) > maxlen:
    longest = int(np.argmax([len(s) for s in sequences]))
    sequences[longest].pop(index)


def encode_c3(tokenizer, examples: Sequence[mrc_data.ChoiceExample], seq_len: int) -> list[list[list[int]]]:
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  texts = sorted({t for e in examples for t in (e.passage, e.question, *e.choices)})
  ids = dict(zip(texts, _ids(tokenizer, texts)))
  rows = []
  for e in examples:
    choices = []
    for c in e.choices:
      p, q, a = [cls] + ids[e.passage] + [sep], ids[e.question] + [sep], ids[c] + [sep]
      truncate_sequences(seq_len, -2, a, q, p)
      choices.append(p + q + a)
    rows.append(choices)
  return rows


def encode_chid(tokenizer, examples: Sequence[mrc_data.BlankExample], seq_len: int) -> list[list[list[int]]]:
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  texts = sorted({t for e in examples for t in (e.left, e.right, *e.candidates)})
  ids = dict(zip(texts, _ids(tokenizer, texts)))
  rows = []
  for e in examples:
    rows.append([([cls] + ids[e.left] + [sep] + ids[c] + [sep] + ids[e.right] + [sep])[:seq_len]
                 for c in e.candidates])
  return rows


def to_arrays(rows: list[list[list[int]]], labels: Sequence, seq_len: int) -> dict[str, np.ndarray]:
  n, c = len(rows), len(rows[0])
  ids = np.zeros((n, c, seq_len), np.int32)
  for i, choices in enumerate(rows):
    for j, r in enumerate(choices):
      ids[i, j, :len(r)] = r
  return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": (ids != 0).astype(np.int32),
          "labels": np.array([-1 if x is None else x for x in labels], np.int32)}


class ChoiceTask(ClassifyTask):
  """C3 or CHID (`config.clue.task`) from `config.clue.dir`; see the module docstring."""

  name = "clue"

  def __init__(self, cfg):
    from finetune.configs.clue import resolve
    resolve(cfg)
    self.cfg, self.task, self.seq_len = cfg, cfg.clue.task, cfg.seq_len
    if not cfg.clue.dir or not Path(cfg.clue.dir).expanduser().is_dir():
      raise ConfigError(f"config.clue.dir={cfg.clue.dir!r}: no such folder (the official {self.task} files)")

  def _folder(self) -> Path:
    root = Path(self.cfg.clue.dir).expanduser()
    first = mrc_data.FILES[self.task]["train"][0]
    for folder in (root, root / FOLDERS[self.task], root / self.task):
      if (folder / first).is_file():
        return folder
    raise ConfigError(f"config.clue.dir={root}: no {self.task} files ({first} in it, {FOLDERS[self.task]}/ or "
                      f"{self.task}/)")

  def _read(self, folder: Path, split: str):
    files = [folder / f for f in mrc_data.FILES[self.task][split]]
    labelled = not split.startswith("test")
    if self.task == "c3":
      return mrc_data.read_c3(files, labelled=labelled)
    return mrc_data.read_chid(files[0], files[1] if labelled else None, maxlen=self.seq_len)

  def prepare(self, local_dir: Path, log: Log) -> None:
    from finetune.configs.common import model_overrides
    from roformer_jax import load_tokenizer
    from roformer_jax.heads import SequenceClassifier
    from roformer_jax.train.pretrained import Pretrained
    cfg = self.cfg
    folder = self._folder()
    names = ["train", "dev"] + [s for s in ("test", "test1.0") if cfg.clue.predict and all(
        (folder / f).is_file() for f in mrc_data.FILES[self.task][s])]
    self.data = {name: self._read(folder, name) for name in names}
    self.pretrained = Pretrained(cfg.init, **model_overrides(cfg))
    self.model_config = self.pretrained.model_config
    self.vocab_file = self.pretrained.vocab_file(cfg.vocab)
    tokenizer = load_tokenizer(self.vocab_file)
    encode = encode_c3 if self.task == "c3" else encode_chid
    self.splits = {name: to_arrays(encode(tokenizer, ex, self.seq_len), [e.label for e in ex], self.seq_len)
                   for name, ex in self.data.items()}
    self.labels = [str(i) for i in range(RECIPES[self.task]["num_choices"])]
    self.train_size = len(self.data["train"])
    self.model = SequenceClassifier(self.model_config, 1, cfg.pooling, use_bias=cfg.head_bias)
    self.log = log

  def describe(self) -> str:
    sizes = ", ".join(f"{name} {len(ex)}" for name, ex in self.data.items())
    return f"CLUE {self.task}, {len(self.labels)} choices; {sizes}; seq_len {self.seq_len}"

  def init_params(self, rng) -> Any:
    return self.model.init(rng, np.ones((1, 1, self.seq_len), np.int32))["params"]

  def step_flops(self, metrics: dict[str, float]) -> float:
    from roformer_jax.train import flops
    rows = self.cfg.batch_size * len(self.labels)
    return 3.0 * flops.encoder_flops(self.model_config, rows, self.seq_len, 1 if self.cfg.pooling == "first" else None)

  def _logits(self, params, runner, name: str) -> np.ndarray:
    fn = lambda p, batch: {"logits": self.model.apply({"params": p}, batch["input_ids"], batch["token_type_ids"],
                                                      batch["attention_mask"])}
    out = [runner.predict(fn, params, b)["logits"] for b in self._batches(name, runner.local_batch)]
    return np.concatenate(out)[:len(self.data[name])]

  def evaluate(self, params: Any, runner: Any) -> dict[str, float]:
    if self.task != "chid":
      return super().evaluate(params, runner)
    logits = np.asarray(self._logits(params, runner, "dev"), np.float64)  # [blanks, candidates]
    labels = self.splits["dev"]["labels"]
    top = logits.max(1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    return {"eval_accuracy": float(np.mean(self._choose("dev", logits) == labels)),
            "eval_argmax_accuracy": float(np.mean(logits.argmax(1) == labels)),
            "eval_loss": float(-np.mean(logp[np.arange(len(labels)), labels])), "eval_examples": float(len(labels))}

  def _choose(self, name: str, logits: np.ndarray) -> np.ndarray:
    from finetune.clue import mrc_metrics
    if self.task == "chid":
      return mrc_metrics.assign_idioms([e.passage for e in self.data[name]], logits)
    return mrc_metrics.choose(logits, len(self.labels))[0]

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    import jax
    dev = self._choose("dev", self._logits(params, runner, "dev"))
    out: dict[str, Any] = {"clue_task": self.task, "dev_accuracy": float(np.mean(dev == self.splits["dev"]["labels"])),
                           "dev_examples": len(dev)}
    predictions = {}
    for name in self.data:
      if name.startswith("test"):
        chosen = self._choose(name, self._logits(params, runner, name))
        if jax.process_index() == 0:
          write = mrc_data.write_c3_predictions if self.task == "c3" else mrc_data.write_chid_predictions
          predictions[name] = str(write(self.data[name], chosen, name, out_dir / "predictions"))
    if predictions:
      out["predictions"] = predictions
    return out

