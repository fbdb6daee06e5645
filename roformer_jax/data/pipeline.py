"""grain pipelines over prepared rows (pretraining) or in-memory examples (fine-tuning): per-process sharding,
shuffle, repeat, a row transform, batch.

Sharding is by row of the *global* stream, not by file: the global stream (shuffled per epoch by
grain, repeated) is cut into global batches, and process p takes the p-th contiguous block of each.
Every process thus gets data even when there are fewer files or rows than processes, the processes
never overlap within a step, and global batch k is the same rows *in the same order* whatever the
process count: `jax.make_array_from_process_local_data` concatenates the blocks in process order,
so even per-row randomness (dropout) matches a single-process run.

Each row reaching the transform carries `index` (its row number in the split) and `epoch`, so a
transform such as MLM masking can seed itself from (seed, index, epoch) alone.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import grain
import numpy as np

from roformer_jax.data.builder import PreparedData
from roformer_jax.data.packing import ROW_KEYS, unstack

Row = dict[str, Any]


class _WithEpoch(grain.transforms.MapWithIndex):
  """Element g of the repeated, shuffled row numbers -> {index, epoch = g // rows}."""

  def __init__(self, rows: int):
    self.rows = rows

  def map_with_index(self, g: int, index: int) -> Row:
    return {"index": index, "epoch": g // self.rows}


def _first_epoch(index: int) -> Row:
  return {"index": index, "epoch": 0}


class _ReadBatch(grain.transforms.Map):
  """A batch of {index, epoch} -> the stacked `transform(row)` of those rows.

  Reading a whole batch in one call matters: a single ArrayRecord read pays a fixed cost
  (zstd setup, a thread hand-off) several times larger than the 2 KB row itself. Indices past
  the end of the split are all-zero padding rows (segment 0, word 0: nothing attended or masked).
  """

  def __init__(self, rows: Sequence[Any], seq_len: int, transform: Callable[[Row], Row]):
    self._rows, self._n, self._seq_len = rows, len(rows), seq_len
    self._transform = transform.map if isinstance(transform, grain.transforms.Map) else transform

  def map(self, batch: Row) -> Row:
    keys = [int(i) for i in batch["index"] if i < self._n]
    read_many = getattr(self._rows, "__getitems__", None)
    records = iter(read_many(keys) if read_many else [self._rows[i] for i in keys])
    examples = []
    for index, epoch in zip(batch["index"], batch["epoch"]):
      if index < self._n:
        row = unstack(next(records))
      else:
        row = {k: np.zeros(self._seq_len, np.int32) for k in ROW_KEYS}
      row["index"], row["epoch"] = int(index), int(epoch)
      examples.append(self._transform(row))
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class _ProcessBlock(grain.transforms.Map):
  """A global batch of {index, epoch} -> this process's contiguous block of it."""

  def __init__(self, process_index: int, batch_size: int):
    self.start, self.stop = process_index * batch_size, (process_index + 1) * batch_size

  def map(self, batch: Row) -> Row:
    return {k: v[self.start:self.stop] for k, v in batch.items()}


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index ({process_index}) must be in [0, process_count={process_count})")


def _read_options(num_threads: int, prefetch: int) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)


def train_dataset(prepared: PreparedData, split: str, *, batch_size: int, seed: int,
                  process_index: int, process_count: int,
                  transform: Callable[[Row], Row], num_threads: int = 2,
                  prefetch: int = 4) -> grain.IterDataset:
  """Endless per-process batches of `transform(row)`, reshuffled every epoch.

  Args:
    prepared: the output of `prepare`.
    split: "train" (or "heldout", to overfit on purpose).
    batch_size: rows per batch on this process (the global batch is batch_size * process_count).
    seed: the shuffle seed (the transform seeds itself).
    process_index, process_count: this process's place, e.g. jax.process_index()/process_count().
    transform: a grain transform (or picklable callable) from a row dict to an example dict.
    num_threads, prefetch: grain read threads and their buffer (batches).

  Returns:
    a grain IterDataset; `iter(...)` gives a checkpointable `grain.DatasetIterator`.
  """
  _check_process(process_index, process_count)
  rows = prepared.data_source(split)
  if not len(rows):
    raise ValueError(f"{prepared.path}: split {split!r} is empty; nothing to train on")
  # Only row numbers go through shuffle / repeat / shard / batch; rows are read per batch.
  ds = grain.MapDataset.range(len(rows)).shuffle(seed=seed % 2**32).repeat()  # reshuffled per epoch
  ds = ds.map_with_index(_WithEpoch(len(rows)))
  ds = ds.batch(batch_size * process_count, drop_remainder=True).map(_ProcessBlock(process_index, batch_size))
  ds = ds.map(_ReadBatch(rows, prepared.seq_len, transform))
  return ds.to_iter_dataset(_read_options(num_threads, prefetch))


def eval_dataset(prepared: PreparedData, split: str, *, batch_size: int, process_index: int,
                 process_count: int, transform: Callable[[Row], Row], num_threads: int = 2,
                 prefetch: int = 4) -> grain.IterDataset:
  """One deterministic pass over `split` in order, padded with all-zero rows to whole global batches.

  Every process yields the same number of batches (ceil(rows / (batch_size * process_count))),
  so a multi-host eval loop never waits on a process that ran out.
  """
  _check_process(process_index, process_count)
  rows = prepared.data_source(split)
  global_batch = batch_size * process_count
  total = math.ceil(len(rows) / global_batch) * global_batch
  ds = grain.MapDataset.range(total).map(_first_epoch).batch(global_batch, drop_remainder=True)
  ds = ds.map(_ProcessBlock(process_index, batch_size)).map(_ReadBatch(rows, prepared.seq_len, transform))
  return ds.to_iter_dataset(_read_options(num_threads, prefetch))


# ----------------------------------------------------------------------------------------------
# In-memory examples (fine-tuning): the same sharding, shuffling and (index, epoch) rows as above
# ----------------------------------------------------------------------------------------------
def num_examples(examples: dict[str, np.ndarray]) -> int:
  sizes = {k: len(v) for k, v in examples.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"examples: arrays of different lengths {sizes}")
  return next(iter(sizes.values()))


class _TakeExamples(grain.transforms.Map):
  """A batch of {index, epoch} -> those examples, stacked, with `weights` (1 real, 0 padding).

  Indices past the end are all-zero padding rows. With a `transform`, each row dict (its arrays plus
  `index` and `epoch`) goes through it first, so per-example randomness can seed itself from those;
  `weights` is set after it.
  """

  def __init__(self, examples: dict[str, np.ndarray], transform: Callable[[Row], Row] | None):
    self._examples, self._n = examples, num_examples(examples)
    self._transform = transform.map if isinstance(transform, grain.transforms.Map) else transform

  def map(self, batch: Row) -> Row:
    index = np.asarray(batch["index"])
    real = index < self._n
    take = np.where(real, index, 0)
    out = {k: np.where(real.reshape((-1,) + (1,) * (v.ndim - 1)), v[take], np.zeros_like(v[:1]))
           for k, v in self._examples.items()}
    out["weights"] = real.astype(np.float32)
    if self._transform is None:
      return out
    rows = [dict({k: v[i] for k, v in out.items()}, index=int(index[i]), epoch=int(batch["epoch"][i]))
            for i in range(len(index))]
    rows = [self._transform(r) for r in rows]
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k not in ("index", "epoch")}
    stacked["weights"] = out["weights"]  # padding stays padding whatever the transform returns
    return stacked


def examples_train_dataset(examples: dict[str, np.ndarray], *, batch_size: int, seed: int, process_index: int,
                           process_count: int, transform: Callable[[Row], Row] | None = None,
                           num_threads: int = 1, prefetch: int = 2) -> grain.IterDataset:
  """Endless per-process batches of in-memory examples, reshuffled every epoch (as `train_dataset`).

  Args:
    examples: name -> array with a leading example axis [N, ...] (token ids, labels, ...).
    batch_size: rows per batch on this process (the global batch is batch_size * process_count).
    seed: the shuffle seed.
    process_index, process_count: this process's place.
    transform: optional per-row map (a row holds each array's row plus `index` and `epoch`).
    num_threads, prefetch: grain read threads and their buffer (batches).

  Returns:
    a grain IterDataset of {name: [batch_size, ...]} plus `weights` [batch_size] (all 1 here);
    `iter(...)` gives a checkpointable iterator, global batch k the same rows whatever the process count.
  """
  _check_process(process_index, process_count)
  n = num_examples(examples)
  if not n:
    raise ValueError("examples: no training examples")
  ds = grain.MapDataset.range(n).shuffle(seed=seed % 2**32).repeat()
  ds = ds.map_with_index(_WithEpoch(n))
  ds = ds.batch(batch_size * process_count, drop_remainder=True).map(_ProcessBlock(process_index, batch_size))
  ds = ds.map(_TakeExamples(examples, transform))
  return ds.to_iter_dataset(_read_options(num_threads, prefetch))


def examples_eval_dataset(examples: dict[str, np.ndarray], *, batch_size: int, process_index: int,
                          process_count: int, transform: Callable[[Row], Row] | None = None,
                          num_threads: int = 1, prefetch: int = 2) -> grain.IterDataset:
  """One pass over in-memory examples in order, padded to whole global batches with `weights` 0 rows.

  Global row i of the pass is example i: outputs gathered over the global batch (`loop.Runner.predict`)
  line up with the examples.
  """
  _check_process(process_index, process_count)
  n = num_examples(examples)
  global_batch = batch_size * process_count
  total = math.ceil(n / global_batch) * global_batch
  ds = grain.MapDataset.range(total).map(_first_epoch).batch(global_batch, drop_remainder=True)
  ds = ds.map(_ProcessBlock(process_index, batch_size)).map(_TakeExamples(examples, transform))
  return ds.to_iter_dataset(_read_options(num_threads, prefetch))
