"""The pretraining run's data: tokenizer, prepared corpus (cached), and per-process MLM iterators."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from pretrain import mlm


def _embedded_char_vocab(data_dir: Path, max_size: int) -> Path:
  """A char vocab.txt built from the embedded corpus once, cached (written atomically)."""
  from roformer_jax import corpus, tokenization
  path = data_dir / f"vocab_embedded_char_{max_size or 'all'}.txt"
  if not path.exists():
    lines = list(corpus.people_daily_lines()) + list(corpus.review_lines())
    tokenization.write_vocab(tokenization.build_char_vocab(lines, max_size=max_size or None), path)
  return path


class Pipeline:
  """Everything the train loop needs from the data side of a pretraining config."""

  def __init__(self, cfg, local_dir: str | Path):
    """`local_dir` is the run's local folder; the prepared data goes to cfg.data.data_dir (local or
    gs://, read by tfds), by default a `data` folder beside the run."""
    import jax
    from roformer_jax import data, tokenization

    self.cfg = cfg
    local_dir = Path(local_dir).absolute()
    data_dir = cfg.data.data_dir or str(local_dir.parent / "data")
    vocab_dir = Path(data_dir) if "://" not in data_dir else local_dir
    vocab_dir.mkdir(parents=True, exist_ok=True)
    # Process 0 prepares (tokenises, packs, writes atomically); the others then read its cache.
    for turn in ("first", "rest"):
      if (jax.process_index() == 0) == (turn == "first"):
        vocab = cfg.data.vocab or _embedded_char_vocab(vocab_dir, cfg.data.vocab_size)
        self.tokenizer = tokenization.load_tokenizer(vocab)
        self.prepared = data.prepare(cfg.data.corpus, self.tokenizer, cfg.seq_len, data_dir,
                                     text_field=cfg.data.text_field, skip_bad_lines=cfg.data.skip_bad_lines,
                                     num_workers=cfg.data.num_workers)
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"prepared data ({turn})")
    self.vocab_file = getattr(self.tokenizer, "vocab_file", None)
    self.max_predictions = cfg.max_predictions or mlm.default_max_predictions(cfg.seq_len)

  @property
  def vocab_size(self) -> int:
    return self.prepared.vocab_size

  def describe(self) -> str:
    rows = ", ".join(f"{k} {v} rows" for k, v in self.prepared.num_rows.items())
    return (f"{self.cfg.data.corpus} at {self.prepared.path} ({rows}, seq_len {self.prepared.seq_len}, "
            f"vocab {self.vocab_size}, {self.max_predictions} prediction slots per row, "
            f"{self.prepared.bad_lines} bad lines skipped)")

  def train_iterator(self, local_batch: int):
    """The checkpointable grain iterator of this process's training batches."""
    import jax
    return mlm.make_pretrain_iterator(self.prepared, "train", batch_size=local_batch, seed=self.cfg.seed,
                                      process_index=jax.process_index(), process_count=jax.process_count(),
                                      max_predictions=self.max_predictions)

  @staticmethod
  def reposition(iterator, step: int) -> None:
    """Places a fresh train iterator at global step `step`. Global batch k holds the same rows and
    masks whatever the process count, so this resumes a run on a different number of hosts."""
    iterator.set_state({"next_index": step})

  def eval_batches(self, local_batch: int) -> Iterator[dict[str, np.ndarray]]:
    import jax
    it = mlm.make_eval_iterator(self.prepared, "heldout", batch_size=local_batch, seed=self.cfg.seed + 1,
                                process_index=jax.process_index(), process_count=jax.process_count(),
                                max_predictions=self.max_predictions)
    for batch in it:
      batch.pop("masked_overflow", None)
      yield batch

