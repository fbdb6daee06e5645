"""Pretraining data: corpora -> tokenised, packed ArrayRecord (tfds) -> grain pipelines.

  prepared = prepare("embedded", tokenizer, seq_len=128, data_dir="~/tensorflow_datasets")
  ds = pipeline.train_dataset(prepared, "train", batch_size=32, seed=0, process_index=0,
                              process_count=1, transform=...)

The MLM iterators built on these are in `pretrain/mlm.py`.
"""

from roformer_jax.data import pipeline
from roformer_jax.data.builder import PreparedData, RoformerPretrainCorpus, prepare, tokenizer_fingerprint
from roformer_jax.data.packing import ROW_KEYS
from roformer_jax.data.sources import EMBEDDED, CorpusError

__all__ = ["prepare", "PreparedData", "RoformerPretrainCorpus", "pipeline", "ROW_KEYS", "EMBEDDED",
           "CorpusError", "tokenizer_fingerprint"]
