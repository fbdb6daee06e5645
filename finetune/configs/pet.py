"""PET on the embedded product reviews (finetune/pet.py): a pattern's blank filled by the MLM head.

  python -m finetune.run --config finetune/configs/pet.py --workdir workdir/pet --config.init=workdir/tiny_cpu \
      [--config.regime=few_shot --config.k=200 --config.pattern=P1 --config.seed=0]

The reference (kexue 7764): batch 32, Adam, no schedule, evaluated every epoch, the best dev accuracy kept. Its
lr 1e-5 and ~1000 epochs are for a BERT-base; the tiny CPU model here takes a larger rate and fewer epochs.
"""

import ml_collections

from finetune.configs.common import base_config


def get_config():
  c = base_config()
  c.task = "pet"
  c.regime = "few_shot"             # zero_shot | unsupervised | few_shot | semi_supervised
  c.k = 200                         # labelled training examples (few_shot, semi_supervised)
  c.kshot_mode = "stratified"       # stratified | balanced
  c.pattern = "P1"                  # P1..P5 (finetune-spec §a.1) or a pattern string with one ＿ and {text}
  c.verbalizer = ml_collections.ConfigDict({"pos": "很", "neg": "不"})  # label -> word (one or more tokens)
  c.data_dir = "workdir/data"       # where the reviews' splits are prepared (once, atomically)
  c.model.overrides = dict(hidden_dropout=0.1, attention_dropout=0.1)
  c.seq_len = 128
  c.batch_size = 32
  c.epochs = 20
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-4
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_steps = 0
  c.optimizer.decay = "constant"
  c.best_metric = "eval_accuracy"
  # finetune.pet_compare (`make finetune`): the [CLS] baseline's learning rate; 0 = optimizer.learning_rate.
  c.baseline_learning_rate = 0.0
  return c
