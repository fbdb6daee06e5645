"""CMRC2018 on the train loop: a one-head GlobalPointer over the reference's sliding windows
(ZhuiyiTechnology/roformer-v2 `clue/cmrc2018.py`, finetune-spec §d.2).

Each question is cut into windows of its context (`mrc_data.cmrc_windows`: seq_len - len(question) - 3
characters every `config.clue.stride`). A window is encoded as the reference does:
  [CLS] question [SEP] left answer right [SEP]
with left / answer / right (the context before, in and after the answer) tokenised *separately*, so the
answer always starts and ends on tokens; its label is the (start, end) token cell, and (0, 0) ([CLS], [CLS])
for a window that does not hold the whole answer. The encoder attends to everything; spans may start and end
only at [CLS] and the context tokens (the reference's `CustomMasking`: question and last [SEP] masked).

Loss: softmax cross-entropy over the L*L cells of the one head (masked cells out), mean over windows.
Per question the answer is the best cell ([CLS] row and column excluded) of its best-scoring window, mapped
back to the window's characters. Dev: the reference's strict metric (that window's cell equals its label;
`eval_strict`, the model selection as the reference) and the official EM/F1 (`eval_em`, `eval_f1`; here as
fractions, the official script prints percentages). Test: <workdir>/predictions/cmrc2018_predict.json.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from finetune.clue import mrc_data
from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log, Task

# bert4keras optimizer2: batch 16 x 2 accumulation steps = 32 windows per update.
RECIPES: dict[str, dict] = {"cmrc2018": {"max_len": 512, "batch_size": 32, "accum_steps": 2, "epochs": 10}}
FOLDER = "cmrc2018_public"
_CHUNK = 1024  # texts per tokenizer call: bounds the padded [chunk, longest] arrays


@dataclasses.dataclass
class Windows:
  """The encoded windows of one split: model arrays and each token's [start, end) characters in its window
  (-1 for [CLS], the question, [SEP] and padding)."""
  questions: list[mrc_data.Question]
  windows: list[mrc_data.Window]
  arrays: dict[str, np.ndarray]  # input_ids, token_type_ids, attention_mask, span_mask [N, L]; labels [N, 2]
  starts: np.ndarray
  ends: np.ndarray
  truncated: int  # windows cut to seq_len (cannot happen with a char vocab: tokens <= characters)

  def __len__(self) -> int:
    return len(self.windows)


def _pieces(tokenizer, texts: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """text -> (ids, [n, 2] char offsets) without [CLS]/[SEP], each distinct text tokenised once."""
  out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  unique = sorted(set(texts))
  for k in range(0, len(unique), _CHUNK):
    chunk = unique[k:k + _CHUNK]
    enc = tokenizer.encode_batch(chunk)
    for text, ids, offsets, n in zip(chunk, enc["input_ids"], enc["offsets"], enc["attention_mask"].sum(1)):
      out[text] = (ids[1:n - 1].copy(), offsets[1:n - 1].copy())
  return out


def encode_windows(tokenizer, questions: list[mrc_data.Question], windows: list[mrc_data.Window],
                   seq_len: int) -> Windows:
  """The reference's `data_generator` rows, padded to `seq_len`; see the module docstring."""
  texts = [w.question for w in windows]
  for w in windows:
    texts += [w.context] if w.start < 0 else [w.context[:w.start], w.context[w.start:w.end], w.context[w.end:]]
  pieces = _pieces(tokenizer, texts)
  n = len(windows)
  ids = np.zeros((n, seq_len), np.int32)
  span_mask = np.zeros((n, seq_len), np.int32)
  starts = np.full((n, seq_len), -1, np.int32)
  ends = np.full((n, seq_len), -1, np.int32)
  labels = np.zeros((n, 2), np.int32)
  truncated = 0
  for r, w in enumerate(windows):
    q = len(pieces[w.question][0]) + 2  # [CLS] question [SEP]
    if w.start < 0:
      parts = [(pieces[w.context], 0)]
    else:
      parts = [(pieces[w.context[:w.start]], 0), (pieces[w.context[w.start:w.end]], w.start),
               (pieces[w.context[w.end:]], w.end)]
    c_ids = np.concatenate([p[0] for p, _ in parts])
    c_off = np.concatenate([p[1] + shift for p, shift in parts])
    room = seq_len - q - 1
    if len(c_ids) > room:  # keep the last [SEP]; an answer cut off becomes "no answer"
      truncated += 1
      c_ids, c_off = c_ids[:room], c_off[:room]
    total = q + len(c_ids) + 1
    ids[r, 0], ids[r, 1:q - 1], ids[r, q - 1] = tokenizer.cls_id, pieces[w.question][0], tokenizer.sep_id
    ids[r, q:total - 1], ids[r, total - 1] = c_ids, tokenizer.sep_id
    span_mask[r, 0], span_mask[r, q:total - 1] = 1, 1
    starts[r, q:total - 1], ends[r, q:total - 1] = c_off[:, 0], c_off[:, 1]
    if w.start >= 0:
      left, answer = len(parts[0][0][0]), len(parts[1][0][0])
      start, end = q + left, q + left + answer - 1
      if answer and end < total - 1:  # else (0, 0): an all-blank answer has no tokens
        labels[r] = start, end
  arrays = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": (ids != 0).astype(np.int32),
            "span_mask": span_mask, "labels": labels}
  return Windows(questions, windows, arrays, starts, ends, truncated)


@functools.lru_cache(maxsize=1024)
def _normalized_ends(context: str) -> np.ndarray:
  """Per character of `context`: where its normalised text ends in `mrc_data.normalize(context)` (normalising
  drops combining marks and expands e.g. Hangul syllables)."""
  return np.cumsum([len(mrc_data.normalize(ch)) for ch in context], dtype=np.int64)


def answer_text(question: mrc_data.Question, window: mrc_data.Window, first: int, last: int) -> str:
  """Characters [first, last) of `window` (normalised text) as the file's context writes them (the case and
  accents as written): the characters whose normalised text they cover, with the marks normalising dropped
  after the last one."""
  if first < 0 or last <= first:
    return ""
  ends = _normalized_ends(question.context)
  lo = int(np.searchsorted(ends, window.offset + first, side="right"))  # the character holding `first`
  hi = int(np.searchsorted(ends, window.offset + last, side="left")) + 1  # ... and `last - 1`
  while hi < len(ends) and ends[hi] == ends[hi - 1]:
    hi += 1
  return question.context[lo:hi]


def answers(data: Windows, cells: np.ndarray, scores: np.ndarray) -> dict[str, str]:
  """qid -> the answer text: the best cell of the question's best window (`mrc_metrics.pick_windows`)."""
  from finetune.clue.mrc_metrics import pick_windows
  by_id = {q.qid: q for q in data.questions}
  out = {}
  for qid, r in pick_windows([w.qid for w in data.windows], scores).items():
    i, j = int(cells[r, 0]), int(cells[r, 1])
    out[qid] = answer_text(by_id[qid], data.windows[r], int(data.starts[r, i]), int(data.ends[r, j]))
  return out


def find_folder(clue_dir: str) -> Path:
  """config.clue.dir, or its cmrc2018_public/ or cmrc2018/: the folder with train.json."""
  root = Path(clue_dir).expanduser()
  for folder in (root, root / FOLDER, root / "cmrc2018"):
    if (folder / "train.json").is_file():
      return folder
  raise ConfigError(f"config.clue.dir={root}: no cmrc2018 files (train.json in it, {FOLDER}/ or cmrc2018/)")


class MrcTask(Task):
  """CMRC2018 from `config.clue.dir`; see the module docstring."""

  name = "clue"

  def __init__(self, cfg):
    from finetune.configs.clue import resolve
    resolve(cfg)
    self.cfg, self.task, self.seq_len = cfg, cfg.clue.task, cfg.seq_len
    if not cfg.clue.dir or not Path(cfg.clue.dir).expanduser().is_dir():
      raise ConfigError(f"config.clue.dir={cfg.clue.dir!r}: no such folder (the official cmrc2018 files)")
    if cfg.clue.stride <= 0:
      raise ConfigError(f"config.clue.stride must be > 0, got {cfg.clue.stride}")
    if cfg.head_size < 0 or cfg.head_size % 2:
      raise ConfigError(f"config.head_size must be 0 (the encoder's) or a positive even number, got {cfg.head_size}")

  def prepare(self, local_dir: Path, log: Log) -> None:
    from finetune.configs.common import model_overrides
    from roformer_jax import load_tokenizer
    from roformer_jax.heads import EncoderPointer
    from roformer_jax.train.pretrained import Pretrained
    cfg = self.cfg
    folder = find_folder(cfg.clue.dir)
    names = ["train", "dev"] + (["test"] if cfg.clue.predict and (folder / "test.json").is_file() else [])
    self.pretrained = Pretrained(cfg.init, **model_overrides(cfg))
    self.model_config = self.pretrained.model_config
    self.vocab_file = self.pretrained.vocab_file(cfg.vocab)
    tokenizer = load_tokenizer(self.vocab_file)
    self.data: dict[str, Windows] = {}
    for name in names:
      path = folder / mrc_data.FILES["cmrc2018"][name][0]
      questions, windows = mrc_data.read_cmrc(path, self.seq_len, cfg.clue.stride)
      misaligned = sum(q.misaligned for q in questions)
      if misaligned:  # trained on as the reference does, but worth knowing
        log(f"cmrc2018 {path}: {misaligned} answers are not at their answer_start: labelled at answer_start "
            f"(the answer's length from there), as the reference")
      cut = sum(len(mrc_data.window_question(q.question, self.seq_len)) < len(mrc_data.normalize(q.question))
                for q in questions)
      if cut:  # the reference would give them windows without context
        log(f"cmrc2018 {path}: {cut} questions of {self.seq_len - 3}+ characters leave no room for context within "
            f"seq_len {self.seq_len}: cut to their first {(self.seq_len - 3) // 2} characters")
      gaps = sum(cfg.clue.stride > self.seq_len - len(mrc_data.window_question(q.question, self.seq_len)) - 3
                 for q in questions)
      if gaps:  # windows narrower than the stride leave context unseen (the reference would too): say so
        log(f"cmrc2018 {path}: for {gaps} questions config.clue.stride={cfg.clue.stride} exceeds the window "
            f"(seq_len {self.seq_len} - question - 3 characters): parts of their contexts are in no window")
      self.data[name] = encode_windows(tokenizer, questions, windows, self.seq_len)
      if self.data[name].truncated:
        log(f"cmrc2018 {path}: {self.data[name].truncated} windows longer than seq_len {self.seq_len} were cut")
    self.train_size = len(self.data["train"])
    mc = self.model_config
    head_size = cfg.head_size or mc.hidden_size // mc.num_heads  # the reference: base.attention_head_size
    self.model = EncoderPointer(mc, 1, head_size, rope=cfg.rope, tril_mask=True, use_bias=cfg.head_bias)
    self.head_size, self.log, self._fns = head_size, log, {}

  def describe(self) -> str:
    sizes = ", ".join(f"{k} {len(d.questions)} questions / {len(d)} windows" for k, d in self.data.items())
    return (f"CLUE cmrc2018; {sizes}; seq_len {self.seq_len}, stride {self.cfg.clue.stride}; "
            f"GlobalPointer(1, {self.head_size}); init {self.pretrained.folder}")

  def init_params(self, rng) -> Any:
    ids = np.ones((1, self.seq_len), np.int32)
    return self.model.init(rng, ids, None, ids)["params"]

  def initial_params(self, params: Any) -> Any:
    params, new = self.pretrained.load_into(params)
    self.log(f"encoder from {self.pretrained.folder}; new params (initialised): {', '.join(new)}")
    return params

  def _forward(self, params, batch, **kw):
    """(scores [B, L*L] float32, loss per window [B]): softmax CE at the label cell start * L + end."""
    import jax
    import jax.numpy as jnp
    scores = self.model.apply({"params": params}, batch["input_ids"], batch["token_type_ids"],
                              batch["attention_mask"], span_mask=batch["span_mask"], **kw)[:, 0]
    length = scores.shape[-1]
    flat = scores.reshape(scores.shape[0], -1).astype(jnp.float32)
    target = batch["labels"][:, 0] * length + batch["labels"][:, 1]
    loss = jax.nn.logsumexp(flat, -1) - jnp.take_along_axis(flat, target[:, None], -1)[:, 0]
    return flat, loss

  def loss_fn(self):
    import jax.numpy as jnp

    def loss_fn(params, batch, rng, step):
      del step
      _, loss = self._forward(params, batch, deterministic=False, rngs={"dropout": rng})
      weights = batch["weights"].astype(jnp.float32)
      return jnp.sum(loss * weights), {"weight": jnp.sum(weights)}  # the loop divides: the mean over windows
    return loss_fn

  def _predict_fn(self):
    if "predict" not in self._fns:  # one function object: the runner compiles it once
      import jax.numpy as jnp

      def predict(params, batch):
        flat, loss = self._forward(params, batch)
        length = batch["input_ids"].shape[1]
        cell = jnp.arange(length * length)
        # The reference's y_pred[:, 0] -= inf; y_pred[:, :, 0] -= inf: no span at [CLS].
        flat = jnp.where((cell // length == 0) | (cell % length == 0), -jnp.inf, flat)
        best = jnp.argmax(flat, -1)
        return {"cells": jnp.stack([best // length, best % length], -1), "score": jnp.max(flat, -1), "loss": loss}
      self._fns["predict"] = predict
    return self._fns["predict"]

  def train_iterator(self, local_batch: int):
    import jax
    from roformer_jax.data import pipeline
    return iter(pipeline.examples_train_dataset(self.data["train"].arrays, batch_size=local_batch,
                                                seed=self.cfg.seed, process_index=jax.process_index(),
                                                process_count=jax.process_count()))

  def _batches(self, split: str, local_batch: int):
    import jax
    from roformer_jax.data import pipeline
    return iter(pipeline.examples_eval_dataset(self.data[split].arrays, batch_size=local_batch,
                                               process_index=jax.process_index(), process_count=jax.process_count()))

  def eval_batches(self, local_batch: int):
    return self._batches("dev", local_batch)

  def predict(self, params: Any, runner, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best cell [N, 2], its score [N], loss [N]) of every window of `split`, in order."""
    outs = [runner.predict(self._predict_fn(), params, b) for b in self._batches(split, runner.local_batch)]
    n = len(self.data[split])  # global rows in order; the padding rows come last
    return tuple(np.concatenate([np.asarray(o[k]) for o in outs])[:n] for k in ("cells", "score", "loss"))

  def split_metrics(self, params: Any, runner, split: str, prefix: str) -> dict[str, float]:
    from finetune.clue import mrc_metrics
    data = self.data[split]
    cells, scores, loss = self.predict(params, runner, split)
    official = mrc_metrics.cmrc_official({q.qid: q.answers for q in data.questions}, answers(data, cells, scores))
    strict = mrc_metrics.cmrc_strict([w.qid for w in data.windows], cells, scores, data.arrays["labels"])
    return {f"{prefix}strict": strict, f"{prefix}em": official["em"] / 100, f"{prefix}f1": official["f1"] / 100,
            f"{prefix}loss": float(np.mean(loss))}

  def evaluate(self, params: Any, runner) -> dict[str, float]:
    return self.split_metrics(params, runner, "dev", "eval_")

  def step_flops(self, metrics: dict[str, float]) -> float:
    from roformer_jax.train import flops
    mc, b, length, d = self.model_config, self.cfg.batch_size, self.seq_len, self.head_size
    head = 2 * b * length * mc.hidden_size * 2 * d + 2 * b * length * length * d
    return 3.0 * (flops.encoder_flops(mc, b, length) + head)

  def export_params(self, params: Any) -> Any:
    return params["roformer"]

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Dev strict / EM / F1 of the final (best) params; the test answers as cmrc2018_predict.json."""
    import jax
    dev = self.split_metrics(params, runner, "dev", "dev_")
    out: dict[str, Any] = {"clue_task": self.task, **dev, "dev_questions": len(self.data["dev"].questions)}
    if "test" in self.data:
      test = self.data["test"]
      cells, scores, _ = self.predict(params, runner, "test")
      if jax.process_index() == 0:
        path = mrc_data.write_cmrc_predictions(answers(test, cells, scores), out_dir / "predictions")  # atomic
        out["predictions"] = {"test": str(path)}
    return out
