"""Analytic model FLOPs (jax-anchors.md §5, MaxText's conventions) and the peak they are divided by.

Bidirectional attention is counted in full (no causal halving), and the MLM head and the
encoder's last layer only at the gathered positions, since that is all the step computes.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from roformer_jax.config import ModelConfig

# bf16 dense peak per JAX device (levanter's table; H100 without sparsity).
PEAK_BF16 = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
             "TPU v6 lite": 918e12, "TPU v6e": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
             "NVIDIA A100": 312e12}


def encoder_flops(cfg: ModelConfig, batch: int, seq: int, output_rows: float | None = None,
                  query_rows: float | None = None) -> float:
  """Matmul FLOPs of one encoder forward pass; `output_rows` per sequence when only those rows' outputs are
  asked for (`output_positions`): for a query-subset attention (`model.prunes_last_layer`) the last layer's
  queries, output projection and FFN then run at those rows only. `query_rows`: every layer does so
  (`RoFormerModel.layer_states` with `rows`: TeaForN's passes 2..N reusing the source)."""
  d, ff, heads_dim = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_size

  def layer(queries: float) -> float:  # one layer with `queries` output rows per sequence
    return batch * (2 * seq * d * 2 * heads_dim        # k, v at every position
                    + 2 * queries * d * heads_dim      # q
                    + 2 * queries * heads_dim * d      # output projection
                    + 4 * queries * seq * heads_dim    # q k^T and p v, not halved: bidirectional
                    + 2 * queries * d * ff * 2)        # FFN, two matrices

  from roformer_jax.model import prunes_last_layer  # lazy: keeps this module import-light
  if query_rows is not None:
    return float(cfg.num_layers * layer(query_rows if prunes_last_layer(cfg) else seq))
  last = layer(output_rows if output_rows is not None and prunes_last_layer(cfg) else seq)
  return float((cfg.num_layers - 1) * layer(seq) + last)


def forward_flops(cfg: ModelConfig, batch: int, seq: int, predictions: float | None = None) -> float:
  """Matmul FLOPs of one MLM forward pass; `predictions` per sequence for the gathered head (None = all).

  With `predictions`, the last layer is counted as the model runs it (see `encoder_flops`).
  """
  rows = seq if predictions is None else predictions
  head = 2 * batch * rows * cfg.embed_size * cfg.vocab_size
  if cfg.version == "v1":
    head += 2 * batch * rows * cfg.hidden_size * cfg.embed_size  # MLM transform
  return encoder_flops(cfg, batch, seq, predictions) + float(head)


def train_flops(cfg: ModelConfig, batch: int, seq: int, predictions: float | None = None) -> float:
  """Forward + backward (x3) FLOPs of one train step."""
  return 3.0 * forward_flops(cfg, batch, seq, predictions)


def measure_matmul_peak(dtype=jnp.float32, n: int = 2048, repeats: int = 6, min_seconds: float = 1.0,
                        max_seconds: float = 3.0) -> float:
  """FLOP/s of one n x n matmul on the default device, measured in this process: the best of at least
  `repeats` runs and `min_seconds` of them. The peak is what the hardware can reach, so slow runs
  (interference, clocks still ramping up) are discarded; a longer window only raises the estimate,
  which makes the MFU quoted against it conservative. Operands are `dtype`, accumulation float32: the
  model's own matmuls (and, for bf16 on XLA:CPU, twice the speed of a bf16-output product). Where one run is
  slow (e.g. 8 host-platform devices sharing 2 cores: ~1.5 s each) it stops after `max_seconds` and two runs."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  times: list[float] = []
  start = time.perf_counter()
  while len(times) < 2 or (len(times) < repeats or time.perf_counter() - start < min_seconds) and (
      time.perf_counter() - start < max_seconds):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / min(times)


def device_peak(compute_dtype: str = "bfloat16") -> tuple[float, str]:
  """(peak FLOP/s per device, where the figure comes from). Accelerators: the bf16 spec table;
  CPUs (and unknown devices): a matmul measured now in the compute dtype (a bf16 run on a CPU with
  bf16 dot instructions is measured against their peak, not float32's half of it)."""
  kind = jax.devices()[0].device_kind
  for name, peak in PEAK_BF16.items():
    if kind.startswith(name):
      return peak, f"spec bf16 peak of {kind}"
  dtype = jnp.float32 if compute_dtype == "float32" else jnp.bfloat16
  return measure_matmul_peak(dtype), f"measured {jnp.dtype(dtype).name} matmul on {kind}"
