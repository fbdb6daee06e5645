"""FNet token mixing (Lee-Thorp et al. 2021): the real part of a 2-D FFT over (length, hidden).

No parameters and no positions: the Fourier transform over the length axis is what mixes tokens,
and it is position-aware by itself, so RoPE is unused. Padded tokens are zeroed first so their
content cannot leak, but the transform still runs over the padded length, as in the paper; packed
segments cannot be separated by a global transform and are refused.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from roformer_jax.mixers import register_mixer


def fourier_mix(x: jax.Array, key_mask: jax.Array) -> jax.Array:
  """Re(FFT2(x)) over axes (length, hidden) of x [B, L, D], padded tokens zeroed; float32 inside."""
  x = jnp.where(key_mask[:, :, None], x.astype(jnp.float32), 0.0)
  return jnp.fft.fft2(x, axes=(1, 2)).real


@register_mixer("fnet")
class FNetMixer(nn.Module):
  """Called (x, mask, rope, deterministic) -> [B, L, hidden], like the attention module it replaces."""
  cfg: object

  @nn.compact
  def __call__(self, x, mask, rope, deterministic: bool):
    del rope, deterministic
    if self.cfg.attention_options:
      raise ValueError(f"ModelConfig.attention_options: attention='fnet' takes no options, got "
                       f"{dict(self.cfg.attention_options)}")
    if mask.segment_ids is not None:
      raise ValueError("attention='fnet' mixes the whole sequence and cannot honour packed segment_ids; "
                       "pack with another attention variant")
    return fourier_mix(x, mask.key_mask).astype(x.dtype)
