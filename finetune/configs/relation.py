"""GPLinker relation extraction (finetune/gplinker.py RelationTask): DuIE v1 files, or synthetic relations over
People's Daily text (roformer_jax/extraction/synthetic.py: person_place, org_place).

  python -m finetune.run --config finetune/configs/relation.py --workdir workdir/relation \
      --config.init=workdir/tiny_cpu [--config.data.source=duie --config.data.dir=/data/duie --config.data.max_train=0]

The reference (bojone/GPLinker duie_v1.py, finetune-spec §c.2): BERT-base, maxlen 128, batch 64, 20 epochs,
Adam 2e-5, Efficient GlobalPointers of head size 64. The defaults here are sized for the tiny CPU model of
`make pretrain` on 2 cores: a larger rate, 10 epochs.
"""

import ml_collections

from finetune.configs.common import base_config


def get_config():
  c = base_config()
  c.task = "relation"
  c.head = "egp"                    # egp (Efficient GlobalPointer, the final scripts) | gp
  c.head_size = 64
  c.head_bias = True                # bert4keras' default, which the GPLinker scripts keep
  c.from_scratch = False            # True: random init with config.init's architecture and vocab
  c.data_dir = "workdir/data"       # where the synthetic data (and People's Daily under it) is prepared
  c.data = ml_collections.ConfigDict(dict(
      source="people_daily",        # people_daily (synthetic labels over real text) | duie (official files)
      dir="",                       # duie: the folder of all_50_schemas, train_data.json, dev_data.json, ...
      strict=True,                  # False: a triple with an empty subject or object is dropped and counted
      max_train=0,                  # the first N sentences of each split (0 = all: 3,460 synthetic)
      max_dev=1000,
      max_test=0))
  # Candidate caps of the host decoder: an untrained model scores much of its L^2 cells above 0, and the
  # subject x object loop would then take minutes per evaluation (JunnYu/GPLinker_pytorch#3).
  c.decode = ml_collections.ConfigDict(dict(max_entities=64))
  c.model.overrides = dict(hidden_dropout=0.1, attention_dropout=0.1)
  c.seq_len = 128
  c.batch_size = 32
  c.epochs = 10
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_steps = 0
  c.optimizer.decay = "constant"
  c.best_metric = "eval_f1"
  return c
