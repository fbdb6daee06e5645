"""MLP-Mixer token mixing (Tolstikhin et al. 2021): one MLP across the length axis, shared by channels.

  y[:, l, c] = Σ_m W2[m, l] · gelu(Σ_j W1[j, m] x[:, j, c] + b1[m]) + b2[l]

W1 and W2 are sized for a fixed maximum length; a shorter sequence uses their leading rows and
columns, which equals zero-padding it to the maximum. Padded tokens are zeroed first. Options
(`ModelConfig.attention_options`): mixer_max_length (default 512), mixer_hidden (default 256).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from roformer_jax.mixers import read_options, register_mixer

OPTIONS = {"mixer_max_length": 512, "mixer_hidden": 256}


def mixer_options(cfg) -> tuple[int, int]:
  """(max_length, hidden) from cfg.attention_options, validated."""
  opts = read_options(cfg, "mixer", OPTIONS, ("mixer_max_length", "mixer_hidden"))
  return opts["mixer_max_length"], opts["mixer_hidden"]


@register_mixer("mixer")
class TokenMLP(nn.Module):
  """Called (x, mask, rope, deterministic) -> [B, L, hidden]; raises if L exceeds the fixed maximum."""
  cfg: object

  @nn.compact
  def __call__(self, x, mask, rope, deterministic: bool):
    del rope, deterministic
    max_length, hidden = mixer_options(self.cfg)
    length = x.shape[1]
    if length > max_length:
      raise ValueError(f"attention='mixer' has a fixed maximum length of {max_length} tokens "
                       f"(ModelConfig.attention_options mixer_max_length); got a sequence of {length}")
    if mask.segment_ids is not None:
      raise ValueError("attention='mixer' mixes absolute positions and cannot honour packed segment_ids")
    init = nn.initializers.lecun_normal()
    param = lambda name, i, axes, shape: self.param(name, nn.with_logical_partitioning(i, axes), shape, jnp.float32)
    w1 = param("w1", init, ("length", "mlp"), (max_length, hidden))
    b1 = param("b1", nn.initializers.zeros, ("mlp",), (hidden,))
    w2 = param("w2", init, ("mlp", "length"), (hidden, max_length))
    b2 = param("b2", nn.initializers.zeros, ("length",), (max_length,))
    dtype = jnp.dtype(self.cfg.dtype)
    x = jnp.where(mask.key_mask[:, :, None], x, 0).astype(dtype)
    h = jnp.einsum("bjc,jm->bmc", x, w1[:length].astype(dtype)) + b1[:, None].astype(dtype)
    h = jax.nn.gelu(h, approximate=False)
    return jnp.einsum("bmc,ml->blc", h, w2[:, :length].astype(dtype)) + b2[:length, None].astype(dtype)
