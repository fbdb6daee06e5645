"""Pinyin -> characters over People's Daily with TeaForN (finetune/seq2seq.py; `make finetune-seq2seq`).

  python -m finetune.run --config finetune/configs/pinyin.py --workdir workdir/pinyin \
      --config.init=workdir/tiny_cpu [--config.teaforn.n=2 --config.decode.beam_size=4 --config.seed=0]

Sized for the tiny CPU checkpoint (workdir/tiny_cpu): no dropout (fewer steps than one pass over the data
need no regularising), a rate a 2-layer 128-wide model takes, evaluated on dev each epoch.
"""

import ml_collections

from finetune.configs.common import base_config


def get_config():
  c = base_config()
  c.task = "seq2seq"
  c.data_dir = "workdir/data"       # where the pinyin splits are prepared (once, atomically)
  c.teaforn = ml_collections.ConfigDict(dict(
      n=2,                          # passes; 1 = plain teacher forcing
      weights=(),                   # lambda_k, one per pass; () = 1 for every pass
      reuse_source=True,            # passes 2..N recompute the target rows only (exact; see teaforn.py)
  ))
  c.decode = ml_collections.ConfigDict(dict(
      beam_size=0,                  # > 1: finish() also decodes dev and test with beam search of this size
      length_penalty=0.0,           # beam score = log p / length ** length_penalty
  ))
  c.fill_source = True              # fill the source with [MASK] to the longest sentence's width (see seq2seq.py)
  c.eval_examples = 0               # the first dev sentences, decoded at each evaluation and in finish; 0 = all
  c.test_examples = 0               # the first test sentences (scored, with the baseline, in finish); 0 = all
  c.model.overrides = dict(hidden_dropout=0.0, attention_dropout=0.0)
  c.seq_len = 0                     # 0 = what the data needs (2 x longest sentence + 3)
  c.batch_size = 32
  c.epochs = 2
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 3e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_steps = 50
  c.optimizer.decay = "cosine"
  c.best_metric = "eval_char_accuracy"
  return c
