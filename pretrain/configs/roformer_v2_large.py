"""RoFormerV2-large with the reference recipe (roformer-spec.md §4): MLM, seq 512, batch 512, LAMB
lr 1.76e-3, eps 1e-6, weight decay 0.01 on every tensor, piecewise-linear schedule from 0.

The released script counts its schedule in 64-example micro-steps (batch 64 x accumulation 8);
here one step is one 512-example update, so the breakpoints are divided by 8.
"""

from pretrain.configs.common import base_config


def get_config():
  c = base_config()
  c.model.preset = "roformer_v2_large"
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
  c.optimizer.decay = "piecewise"
  c.optimizer.points = {"4000": 1.0, "40000": 0.5, "160000": 0.1, "320000": 0.01}
  c.data.corpus = "embedded"  # point at your corpus: --config.data.corpus=/path/to/wudao_jsonl
  return c
