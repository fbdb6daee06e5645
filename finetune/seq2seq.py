"""UniLM seq2seq fine-tuning with TeaForN: pinyin -> characters over People's Daily (issue 15 §3).

Data, splits, the most-frequent-character baseline and the metrics are `roformer_jax.seq2seq.pinyin`. Each
example is [CLS] source [SEP] target [SEP] (segment 0, then 1) under the UniLM mask, on the checkpoint's MLM
model (`config.init`, its MLM head included).

Source tokens: the checkpoint's char vocabulary has no pinyin syllables, only single latin letters, so a
syllable spelled out takes its letters as word pieces (2.85 tokens a syllable on average, measured on 3,000
training sentences with workdir/tiny_cpu's vocab; up to 106 tokens a sentence) and the model would first have to
learn which letters make which syllable and where each starts. Instead each syllable is one token: the id of a
character that reads that way (`pinyin.unit_codes`: its most frequent one in the training split, distinct for
each syllable, so the code keeps all of the pinyin). Source and target then have one token per character, and
the source reads as the baseline's output, which the model learns to correct.

With `config.fill_source` (default) the source is filled with [MASK] up to the longest sentence, so the k-th
character is always the same distance after its syllable: under RoPE that is one relative offset, which a
2-layer model picks up at once. Measured, tiny_cpu, 60 steps of 32 at lr 3e-3, 256 dev sentences: 39.5% dev
character accuracy filled, 3.1% with the source's natural length (the offset then changes with each sentence).

Loss: `teaforn.teaforn_loss_at` (= `teaforn_loss`, the LM head on the target positions only) with
`config.teaforn.n` passes (1 = teacher forcing) and weights `config.teaforn.weights` (() = 1 for every pass);
with `config.teaforn.reuse_source` (default) passes 2..N compute the target rows only and read the source's
from pass 1 (exact; off by itself under dropout). Evaluation on dev each epoch: cached greedy decoding,
character accuracy and exact match counted on the device. `finish`: greedy (and with `config.decode.beam_size`
> 1 beam) decoding of dev and test, the metrics on the decoded strings, the baseline on the same splits, and
the test predictions in <workdir>/predictions/test.jsonl (written atomically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log, Task


class Seq2SeqArrays:
  """One split as fixed-width arrays: source [N, S] (token ids [CLS] ... [SEP], 0-padded), target [N, T]
  (token ids; -1 past the end, and for a token that should never count as right), length [N] (target tokens)."""

  def __init__(self, sources: list[list[int]], targets: list[list[int]], source_width: int, target_width: int,
               sep: int, unk: int):
    n = len(sources)
    self.source = np.zeros((n, source_width), np.int32)
    self.target = np.full((n, target_width), -1, np.int32)
    self.length = np.zeros((n,), np.int32)
    for i, (src, tgt) in enumerate(zip(sources, targets)):
      self.source[i, :len(src)] = src
      self.target[i, :len(tgt)] = tgt
      self.length[i] = len(tgt)
    self.source_length = np.sum(self.source != 0, axis=1).astype(np.int32)
    self.sep, self.unk = sep, unk

  def __len__(self) -> int:
    return len(self.length)

  def sequences(self, rows: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
    """Training rows: source then tgt [SEP], types 0 then 1, 0-padded to seq_len; and where the loss reads
    logits: the source's [SEP] and every target character (each scores the next token), T + 1 slots a row,
    mask 0 past the row's end."""
    b, p = len(rows), self.target.shape[1] + 1
    ids = np.zeros((b, seq_len), np.int32)
    types = np.zeros((b, seq_len), np.int32)
    positions = np.zeros((b, p), np.int32)
    mask = np.zeros((b, p), np.int32)
    for j, r in enumerate(rows):
      k, s = int(self.length[r]), int(self.source_length[r])
      tgt = np.where(self.target[r, :k] < 0, self.unk, self.target[r, :k])
      ids[j, :s + k + 1] = np.concatenate([self.source[r, :s], tgt, [self.sep]])
      types[j, s:s + k + 1] = 1
      positions[j, :k + 1] = s - 1 + np.arange(k + 1)
      mask[j, :k + 1] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": (ids != 0).astype(np.int32),
            "loss_positions": positions, "loss_mask": mask}


class PinyinArrays(Seq2SeqArrays):
  """Pinyin rows: source [CLS] codes [SEP] (or with `fill` filled up to S = max_chars + 2 with [MASK] before the
  [SEP]), target the sentence's char ids (-1 for a character not in the vocab, which then never counts as right)."""

  def __init__(self, examples, codes: dict[str, int], vocab: dict[str, int], max_chars: int, fill: bool):
    cls, sep, unk, mask = vocab["[CLS]"], vocab["[SEP]"], vocab["[UNK]"], vocab["[MASK]"]
    sources, targets = [], []
    for ex in examples:
      k = len(ex.text)
      if k > max_chars:
        raise ValueError(f"{ex.where}: {k} characters, more than {max_chars}")
      sources.append([cls, *(codes.get(u, unk) for u in ex.pinyin)] + [mask] * ((max_chars - k) if fill else 0)
                     + [sep])
      targets.append([vocab.get(c, -1) for c in ex.text])
    super().__init__(sources, targets, max_chars + 2, max_chars, sep, unk)


class StepBatches:
  """Global training batch k for any k: the rows of epoch e are a permutation seeded by (seed, e); a batch
  takes the next batch_size rows of the epochs laid end to end. Deterministic whatever the process count."""

  def __init__(self, data: Seq2SeqArrays, batch_size: int, seq_len: int, seed: int):
    self.data, self.batch_size, self.seq_len, self.seed = data, batch_size, seq_len, seed

  def rows(self, step: int) -> np.ndarray:
    n = len(self.data)
    first = step * self.batch_size
    epochs = range(first // n, (first + self.batch_size - 1) // n + 1)
    order = np.concatenate([np.random.default_rng([self.seed, e]).permutation(n) for e in epochs])
    start = first - epochs[0] * n
    return order[start:start + self.batch_size]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    return self.data.sequences(self.rows(step), self.seq_len)


class Seq2SeqTask(Task):
  """Pinyin -> characters on a UniLM RoFormer from `config.init`, trained with TeaForN."""

  name = "seq2seq"

  def __init__(self, cfg):
    self.cfg = cfg
    if cfg.teaforn.n < 1:
      raise ConfigError(f"config.teaforn.n = {cfg.teaforn.n}: TeaForN needs at least 1 pass (1 = teacher forcing)")
    self.weights = tuple(float(w) for w in cfg.teaforn.weights) or (1.0,) * cfg.teaforn.n
    self.reuse_source = bool(cfg.teaforn.reuse_source)
    if len(self.weights) != cfg.teaforn.n:
      raise ConfigError(f"config.teaforn.weights has {len(self.weights)} values for config.teaforn.n = "
                        f"{cfg.teaforn.n}; give one per pass, or () for 1 each")
    if cfg.decode.beam_size < 0:
      raise ConfigError(f"config.decode.beam_size = {cfg.decode.beam_size}: 0 or 1 = greedy only, > 1 = beam too")

  def prepare(self, local_dir: Path, log: Log) -> None:
    from finetune.configs.common import model_overrides
    from roformer_jax.model import RoFormerForMaskedLM
    from roformer_jax.seq2seq import pinyin
    from roformer_jax.tokenization import read_vocab
    from roformer_jax.train.pretrained import Pretrained

    cfg = self.cfg
    self.pretrained = Pretrained(cfg.init, with_mlm=True, **model_overrides(cfg))
    self.model_config = self.pretrained.model_config
    self.vocab_file = self.pretrained.vocab_file(cfg.vocab)
    self.vocab = {t: i for i, t in enumerate(read_vocab(self.vocab_file))}
    self.tokens = {i: t for t, i in self.vocab.items()}
    for t in ("[CLS]", "[SEP]", "[UNK]", "[MASK]"):
      if t not in self.vocab:
        raise ConfigError(f"{self.vocab_file}: no {t} token; the seq2seq task needs [CLS], [SEP], [UNK], [MASK]")
    self.folder = pinyin.prepare_pinyin(Path(cfg.data_dir).expanduser())
    self.splits = pinyin.load_pinyin(self.folder)
    # The first sentences only (tests, quick looks); the baseline is scored on the same test sentences.
    if cfg.eval_examples:
      self.splits["dev"] = self.splits["dev"][:cfg.eval_examples]
    if cfg.test_examples:
      self.splits["test"] = self.splits["test"][:cfg.test_examples]
    self.max_chars = max(len(ex.text) for s in self.splits.values() for ex in s)
    self.seq_len = 2 * self.max_chars + 3
    if cfg.seq_len and cfg.seq_len < self.seq_len:
      raise ConfigError(f"config.seq_len = {cfg.seq_len}: the data needs {self.seq_len} (2 x {self.max_chars} "
                        "characters + 3); 0 = that")
    self.codes = pinyin.unit_codes(self.splits["train"], self.vocab)
    self.arrays = {s: PinyinArrays(ex, self.codes, self.vocab, self.max_chars, cfg.fill_source)
                   for s, ex in self.splits.items()}
    self.train_size = len(self.arrays["train"])
    self.max_new_tokens = self.max_chars + 1  # the characters and the [SEP] that ends them
    self.batches = StepBatches(self.arrays["train"], cfg.batch_size, self.seq_len, cfg.seed)
    self.model = RoFormerForMaskedLM(self.model_config)
    self.baseline = pinyin.MostFrequent(self.splits["train"])
    self.log = log

  def describe(self) -> str:
    sizes = ", ".join(f"{s} {len(a)}" for s, a in self.arrays.items())
    return (f"pinyin -> characters ({self.folder}): {sizes} sentences of <= {self.max_chars} characters, "
            f"{len(self.codes)} source units; TeaForN n = {self.cfg.teaforn.n}, weights {self.weights}; "
            f"init {self.pretrained.folder}")

  def init_params(self, rng) -> Any:
    return self.model.init(rng, np.ones((1, self.seq_len), np.int32))["params"]

  def initial_params(self, params: Any) -> Any:
    params, new = self.pretrained.load_into(params)
    if new:
      self.log(f"new params (initialised): {', '.join(new)}")
    return params

  def loss_fn(self):
    import jax.numpy as jnp

    from roformer_jax.seq2seq import teaforn
    model, n, weights, reuse = self.model, self.cfg.teaforn.n, self.weights, self.reuse_source

    def loss_fn(params, batch, rng, step):
      del step
      ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
      rows = None
      if reuse:  # every target position: each loss position's successor (see Seq2SeqArrays.sequences)
        rows = jnp.where(batch["loss_mask"] > 0, batch["loss_positions"] + 1, ids.shape[1])
      total, per_pass = teaforn.teaforn_loss_at(model, params, ids, types, mask, batch["loss_positions"],
                                                batch["loss_mask"], num_passes=n, weights=weights,
                                                deterministic=False, dropout_rng=rng, target_rows=rows)
      # A mean over the target tokens; the loop wants sums with their weight.
      count = jnp.sum(batch["loss_mask"]).astype(jnp.float32)
      stats = {"weight": count, **{f"ce_pass{k + 1}": per_pass[k] * count for k in range(n)}}
      return total * count, stats
    return loss_fn

  def train_iterator(self, local_batch: int):
    import grain
    import jax

    from finetune.pet import StepBatches as Rows
    return iter(grain.MapDataset.source(Rows(self.batches, jax.process_index(), local_batch)).to_iter_dataset())

  # --- evaluation -----------------------------------------------------------------------------
  def _batches(self, split: str, local_batch: int):
    """This process's rows of global batches over a split, padded at the end with weight-0 copies of row 0."""
    import jax
    data = self.arrays[split]
    size = local_batch * jax.process_count()
    rows = slice(jax.process_index() * local_batch, (jax.process_index() + 1) * local_batch)
    for start in range(0, len(data), size):
      idx = np.arange(start, start + size)
      weight = (idx < len(data)).astype(np.float32)
      idx = np.where(idx < len(data), idx, 0)
      batch = {"source_ids": data.source[idx], "target_ids": data.target[idx], "target_length": data.length[idx],
               "weight": weight}
      yield {k: v[rows] for k, v in batch.items()}

  def eval_batches(self, local_batch: int):
    return self._batches("dev", local_batch)

  def _greedy(self, params, batch):
    from roformer_jax.seq2seq import decode
    return decode.greedy_decode(self.model_config, params, batch["source_ids"], max_new_tokens=self.max_new_tokens,
                                end_id=self.vocab["[SEP]"]).tokens

  def _beam(self, params, batch):
    from roformer_jax.seq2seq import decode
    out = decode.beam_search(self.model_config, params, batch["source_ids"], beam_size=self.cfg.decode.beam_size,
                             max_new_tokens=self.max_new_tokens, end_id=self.vocab["[SEP]"],
                             length_penalty=self.cfg.decode.length_penalty)
    return out.tokens[:, 0]

  def eval_fn(self):
    import jax.numpy as jnp
    sep, width = self.vocab["[SEP]"], self.max_chars

    def eval_fn(params, batch):
      # Counted as `pinyin.scores` counts the decoded strings: position j < length is right when token j is
      # the reference's character (an [SEP] or pad there never is); exact also needs [SEP] right after.
      tokens = self._greedy(params, batch)
      length, w = batch["target_length"], batch["weight"]
      valid = jnp.arange(width)[None] < length[:, None]
      correct = jnp.sum((tokens[:, :width] == batch["target_ids"]) & valid, axis=1)
      ends = jnp.take_along_axis(tokens, length[:, None], axis=1)[:, 0] == sep
      exact = (correct == length) & ends
      return {"correct": jnp.sum(correct * w), "chars": jnp.sum(length * w), "exact": jnp.sum(exact * w),
              "weight": jnp.sum(w)}
    return eval_fn

  def eval_metrics(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    return {"eval_char_accuracy": float(sums["correct"]) / max(float(sums["chars"]), 1.0),
            "eval_exact_match": float(sums["exact"]) / max(float(sums["weight"]), 1.0)}

  def step_flops(self, metrics: dict[str, float]) -> float:
    from roformer_jax.seq2seq import teaforn
    reuse = self.reuse_source and teaforn.reuses_source(self.model_config, deterministic=False)
    return teaforn_step_flops(self.model_config, self.cfg.batch_size, self.max_chars, self.cfg.teaforn.n, reuse)

  def export_params(self, params: Any) -> Any:
    return params["roformer"]

  def decode_texts(self, tokens: np.ndarray) -> list[str]:
    """Generated ids -> strings, up to the first [SEP]; a token that is not one character becomes
    pinyin.UNKNOWN_CHAR, so positions stay aligned with the reference."""
    from roformer_jax.seq2seq.pinyin import UNKNOWN_CHAR
    sep, out = self.vocab["[SEP]"], []
    for row in tokens:
      chars = []
      for t in row:
        if t == sep:
          break
        tok = self.tokens.get(int(t), "")
        chars.append(tok if len(tok) == 1 else UNKNOWN_CHAR)
      out.append("".join(chars))
    return out

  def _decode_split(self, split: str, fn, params, runner) -> list[str]:
    n = len(self.arrays[split])
    tokens = np.concatenate([runner.predict(fn, params, b) for b in self._batches(split, runner.local_batch)])
    return self.decode_texts(tokens[:n])  # global rows in order; the padding rows are last

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Greedy (and beam) dev and test scores of the final params, the baseline's, and test predictions."""
    import jax

    from roformer_jax.seq2seq import pinyin
    out: dict[str, Any] = {"task": self.name, "data": "pinyin", "n": int(self.cfg.teaforn.n),
                           "weights": list(self.weights)}
    predictions: dict[str, list[str]] = {}
    for split in ("dev", "test"):
      refs = [ex.text for ex in self.splits[split]]
      for prefix, fn in self.decoders().items():
        texts = self._decode_split(split, fn, params, runner)
        for k, v in pinyin.scores(texts, refs).items():
          out[f"{prefix}{split}_{k}"] = v
        if split == "test":
          predictions[prefix.rstrip("_") or "greedy"] = texts
    for k, v in pinyin.scores([self.baseline.predict(ex.pinyin) for ex in self.splits["test"]],
                              [ex.text for ex in self.splits["test"]]).items():
      out[f"baseline_{k}"] = v
    if jax.process_index() == 0:
      from roformer_jax.data.jsonl import write_jsonl
      rows = ({"id": i, "pinyin": " ".join(ex.pinyin), "reference": ex.text,
               **{k: v[i] for k, v in predictions.items()}, "baseline": self.baseline.predict(ex.pinyin)}
              for i, ex in enumerate(self.splits["test"]))
      out["predictions"] = str(write_jsonl(out_dir / "predictions" / "test.jsonl", rows))  # atomic
    return out

  def decoders(self) -> dict[str, Any]:
    """Summary-key prefix -> decoder for `finish`: "" greedy, and "beam{K}_" with config.decode.beam_size > 1."""
    out = {"": self._greedy}
    if self.cfg.decode.beam_size > 1:
      out[f"beam{self.cfg.decode.beam_size}_"] = self._beam
    return out


def teaforn_step_flops(cfg: Any, batch: int, max_chars: int, n: int, reuse: bool) -> float:
  """Matmul FLOPs of one pinyin training step (forward + backward = 3x forward): pass 1 over the whole
  2 x max_chars + 3 sequence, passes 2..N over the max_chars + 1 target rows when they reuse the source,
  and the LM head at the target rows in every pass. The equal-compute budgets of seq2seq_results."""
  return seq2seq_step_flops(cfg, batch, 2 * max_chars + 3, max_chars + 1, n, reuse)


def seq2seq_step_flops(cfg: Any, batch: int, seq_len: int, rows: int, n: int, reuse: bool) -> float:
  """Matmul FLOPs of one UniLM TeaForN step over `seq_len` tokens with `rows` target rows (the generation-start
  [SEP] and the target tokens): pass 1 over the whole sequence, passes 2..N over the target rows when they reuse
  the source, the LM head at the target rows in every pass; x3 for forward + backward."""
  from roformer_jax.train import flops
  head = 2 * batch * rows * cfg.hidden_size * cfg.vocab_size
  later = flops.encoder_flops(cfg, batch, seq_len, query_rows=rows if reuse else None)
  return 3.0 * (flops.encoder_flops(cfg, batch, seq_len) + (n - 1) * later + n * head)
