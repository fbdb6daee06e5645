"""CSL title generation (abstract -> title) with UniLM and TeaForN, as bert4keras's
`examples/task_seq2seq_autotitle_csl.py` (finetune-spec §e.2), on `finetune.seq2seq`'s task.

Files: `config.data.dir` with `train.tsv`, `val.tsv`, `test.tsv` (`title<TAB>abstract` lines;
`roformer_jax.seq2seq.csl`). Each example is [CLS] abstract [SEP] title [SEP], segment 0 then 1, under the
UniLM mask; the loss reads the logits before each title token and the final [SEP]. The example truncates
abstract and title together to `maxlen` 256 for training, but decodes from the abstract cut to 256 - 32 tokens;
here training sees the abstract as decoding does (at most `seq_len - max_title` tokens, [CLS] and [SEP]
included), and the title's first `max_title - 1` tokens before its [SEP], so a row fits `seq_len`.

Evaluation each epoch, as the example's `Evaluator`: greedy decoding of every dev abstract (up to `max_title`
tokens, ending at [SEP]), the generated ids joined back to text, ROUGE-1/2/L and BLEU as the example computes
them (`csl.title_scores`); the best `config.best_metric` (BLEU, as the example keeps) is kept. `finish`: the same
on dev and test with the best params (and beam search with `config.decode.beam_size` > 1), and the test
predictions in <workdir>/predictions/test.jsonl (written atomically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from finetune.seq2seq import Seq2SeqArrays, Seq2SeqTask, StepBatches, seq2seq_step_flops
from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log

METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu")


def metric_name(name: str) -> str:
  return name.replace("-", "_")  # rouge_1, ... in summaries, metrics.jsonl and best_metric


class CslTask(Seq2SeqTask):
  """CSL abstract -> title on a UniLM RoFormer from `config.init` (see the module docstring)."""

  name = "csl"

  def __init__(self, cfg):
    super().__init__(cfg)
    if not cfg.data.dir:
      raise ConfigError("config.data.dir is empty: give the folder of the CSL files (train.tsv, val.tsv, test.tsv)")
    if not 2 <= cfg.max_title < cfg.seq_len - 2:
      raise ConfigError(f"config.max_title = {cfg.max_title}: must be >= 2 and leave room for the abstract in "
                        f"config.seq_len = {cfg.seq_len}")

  def prepare(self, local_dir: Path, log: Log) -> None:
    from finetune.configs.common import model_overrides
    from roformer_jax import load_tokenizer
    from roformer_jax.model import RoFormerForMaskedLM
    from roformer_jax.seq2seq import csl
    from roformer_jax.train.pretrained import Pretrained

    cfg = self.cfg
    self.pretrained = Pretrained(cfg.init, with_mlm=True, **model_overrides(cfg))
    self.model_config = self.pretrained.model_config
    self.vocab_file = self.pretrained.vocab_file(cfg.vocab)
    self.tokenizer = load_tokenizer(self.vocab_file)
    self.vocab = {"[SEP]": self.tokenizer.sep_id}
    self.folder = Path(cfg.data.dir).expanduser()
    self.splits = csl.load_csl(self.folder)
    if cfg.eval_examples:
      self.splits["dev"] = self.splits["dev"][:cfg.eval_examples]
    if cfg.test_examples:
      self.splits["test"] = self.splits["test"][:cfg.test_examples]
    self.arrays = {s: self._encode(ex) for s, ex in self.splits.items()}
    self.seq_len = max(int(np.max(a.source_length + a.length)) + 1 for a in self.arrays.values())
    self.max_new_tokens = cfg.max_title  # the example's AutoTitle(maxlen=32)
    self.train_size = len(self.arrays["train"])
    self.batches = StepBatches(self.arrays["train"], cfg.batch_size, self.seq_len, cfg.seed)
    self.model = RoFormerForMaskedLM(self.model_config)
    self.log = log

  def _encode(self, examples) -> Seq2SeqArrays:
    tok, cfg = self.tokenizer, self.cfg
    src = tok.encode_batch([e.abstract for e in examples], max_length=cfg.seq_len - cfg.max_title,
                           return_offsets=False)
    sources = [row[:n].tolist() for row, n in zip(src["input_ids"], src["attention_mask"].sum(1))]
    tgt = tok.encode_batch([e.title for e in examples], max_length=cfg.max_title + 1, return_offsets=False)
    targets = [row[1:n - 1].tolist() for row, n in zip(tgt["input_ids"], tgt["attention_mask"].sum(1))]
    return Seq2SeqArrays(sources, targets, max(map(len, sources)), cfg.max_title - 1, tok.sep_id, tok.unk_id)

  def describe(self) -> str:
    sizes = ", ".join(f"{s} {len(a)}" for s, a in self.arrays.items())
    return (f"CSL abstract -> title ({self.folder}): {sizes}; seq_len {self.seq_len}, titles <= "
            f"{self.cfg.max_title - 1} tokens; TeaForN n = {self.cfg.teaforn.n}, weights {self.weights}; "
            f"init {self.pretrained.folder}")

  def decode_texts(self, tokens: np.ndarray) -> list[str]:
    """Generated ids -> text up to the first [SEP] (the tokenizer's decode, as the example's)."""
    sep, out = self.tokenizer.sep_id, []
    for row in np.asarray(tokens):
      ends = np.flatnonzero(row == sep)
      out.append(self.tokenizer.decode(row[:ends[0]] if len(ends) else row))
    return out

  def _scores(self, split: str, fn, params, runner, prefix: str = "") -> tuple[dict[str, float], list[str]]:
    from roformer_jax.seq2seq import csl
    texts = self._decode_split(split, fn, params, runner)
    scores = csl.title_scores(texts, [e.title for e in self.splits[split]])
    return {f"{prefix}{metric_name(k)}": v for k, v in scores.items()}, texts

  def evaluate(self, params: Any, runner: Any) -> dict[str, float]:
    """Greedy titles of the dev abstracts scored on the host (ROUGE and BLEU need the strings)."""
    return self._scores("dev", self._greedy, params, runner, "eval_")[0]

  def step_flops(self, metrics: dict[str, float]) -> float:
    from roformer_jax.seq2seq import teaforn
    reuse = self.reuse_source and teaforn.reuses_source(self.model_config, deterministic=False)
    return seq2seq_step_flops(self.model_config, self.cfg.batch_size, self.seq_len, self.cfg.max_title,
                              self.cfg.teaforn.n, reuse)

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Greedy (and beam) dev and test scores of the final params, and the test predictions."""
    import jax
    out: dict[str, Any] = {"task": self.name, "n": int(self.cfg.teaforn.n), "weights": list(self.weights)}
    predictions: dict[str, list[str]] = {}
    for split in ("dev", "test"):
      for prefix, fn in self.decoders().items():
        scores, texts = self._scores(split, fn, params, runner, f"{prefix}{split}_")
        out.update(scores)
        if split == "test":
          predictions[prefix.rstrip("_") or "greedy"] = texts
    if jax.process_index() == 0:
      from roformer_jax.data.jsonl import write_jsonl
      rows = ({"id": i, "title": ex.title, **{k: v[i] for k, v in predictions.items()}}
              for i, ex in enumerate(self.splits["test"]))
      out["predictions"] = str(write_jsonl(out_dir / "predictions" / "test.jsonl", rows))  # atomic
    return out
