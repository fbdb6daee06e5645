"""Defaults every fine-tuning config starts from: the train loop's keys plus the checkpoint to start from.

Override any key on the command line: --config.init=workdir/tiny_cpu --config.epochs=5
--config.optimizer.learning_rate=3e-5 --config.model.overrides.hidden_dropout=0.0 ...
"""

import ml_collections

from roformer_jax.train import loop


def base_config() -> ml_collections.ConfigDict:
  # The loop's keys (steps/epochs, batch_size, accum_steps, seed, intervals, keep, best_metric, mesh,
  # optimizer, ...) and their comments: roformer_jax.train.loop.default_config.
  c = loop.default_config()
  c.task = ""                       # finetune.run.TASKS key; each task config sets it
  c.init = ""                       # the checkpoint to start from: anything roformer_jax.from_pretrained reads
                                    # (a ports' folder, a bert4keras TF release, a pretraining workdir or step)
  c.vocab = ""                      # vocab.txt; "" = the one beside the checkpoint (or in its workdir)

  # Model: the checkpoint's architecture; only these run-time fields change.
  # ModelConfig fields set over the checkpoint's: dropout as the released RoFormer configs (0.1).
  c.model = ml_collections.ConfigDict(dict(overrides=dict(hidden_dropout=0.1, attention_dropout=0.1)))
  c.attention = ""                  # "" = the checkpoint's attention variant
  c.dtype = "float32"               # compute dtype; params are float32 master weights
  c.scan_layers = False
  c.remat = "none"

  # Run: epochs over a small labelled set, evaluated and checkpointed once per epoch.
  c.seq_len = 128
  c.steps = 0                       # 0 = epochs x ceil(train examples / batch_size)
  c.epochs = 3
  c.batch_size = 32
  c.log_every = 10
  c.eval_every = 0                  # 0 = every epoch
  c.checkpoint_every = 0            # 0 = every epoch
  c.keep = 2
  c.best_metric = "eval_accuracy"   # the dev metric whose best params make the final predictions

  # Optimiser: AdamW at a fine-tuning rate, constant after a short warm-up.
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 2e-5
  c.optimizer.weight_decay = 0.01
  c.optimizer.decay_exclude = ("norm", "bias")
  c.optimizer.warmup_steps = 0
  c.optimizer.decay = "constant"
  return c


def model_overrides(cfg) -> dict:
  """The ModelConfig fields a run sets over its checkpoint's."""
  out = dict(cfg.model.overrides, dtype=cfg.dtype, scan_layers=cfg.scan_layers, remat=cfg.remat)
  if cfg.attention:
    out["attention"] = cfg.attention
  return out
