"""GPLinker event extraction (finetune/gplinker.py EventTask): DuEE 1.0 files, or synthetic events over People's
Daily text (roformer_jax/extraction/synthetic.py: 会见, 访问, 举行, 出席 with 主体 and 客体).

  python -m finetune.run --config finetune/configs/event.py --workdir workdir/event \
      --config.init=workdir/tiny_cpu [--config.data.source=duee --config.data.dir=/data/duee --config.data.max_train=0]

The reference (bojone/GPLinker duee_v1.py, finetune-spec §c.4): BERT-base, maxlen 128, batch 32, 200 epochs,
Adam 2e-5; it keeps the best event-level and the best argument-level checkpoints, here `best_metric` picks one.
The defaults are sized for the tiny CPU model of `make pretrain` on 2 cores.
"""

import ml_collections

from finetune.configs.common import base_config


def get_config():
  c = base_config()
  c.task = "event"
  c.head = "egp"                    # egp (Efficient GlobalPointer, the final scripts) | gp
  c.head_size = 64
  c.head_bias = True                # bert4keras' default, which the GPLinker scripts keep
  c.from_scratch = False
  c.data_dir = "workdir/data"
  c.data = ml_collections.ConfigDict(dict(
      source="people_daily",        # people_daily (synthetic labels over real text) | duee (official files)
      dir="",                       # duee: the folder of duee_event_schema.json, duee_train.json, duee_dev.json, ...
      strict=True,                  # False: an argument outside its text (or misspelt) is dropped and counted
      max_train=0,                  # the first N sentences of each split (0 = all)
      max_dev=0,
      max_test=0))
  # Candidate caps of the host decoder (arguments per text; arguments of one type entering the clique search).
  c.decode = ml_collections.ConfigDict(dict(max_arguments=64, max_group=20))
  c.model.overrides = dict(hidden_dropout=0.1, attention_dropout=0.1)
  c.seq_len = 128
  c.batch_size = 32
  c.epochs = 10
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_steps = 0
  c.optimizer.decay = "constant"
  c.best_metric = "eval_event_f1"
  return c
