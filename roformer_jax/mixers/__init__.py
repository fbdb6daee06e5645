"""Token mixers that are not an attention function: they replace a layer's attention module
(`TOKEN_MIXERS`) or the whole attention + FFN block (`BLOCKS`, e.g. GAU).

A token mixer is a linen module `Mixer(cfg)` called as `(x, mask, rope, deterministic) -> [B, L, hidden]`;
a block is `Block(cfg)` called as `(x, mask, rope, deterministic, residual_scale) -> [B, L, hidden]`.
Both are chosen by `ModelConfig.attention`, like the attention functions.
"""

from __future__ import annotations

import flax.linen as nn

TOKEN_MIXERS: dict[str, type[nn.Module]] = {}
BLOCKS: dict[str, type[nn.Module]] = {}


def read_options(cfg, name: str, defaults: dict, positive_ints: tuple[str, ...] = ()) -> dict:
  """`defaults` overridden by cfg.attention_options; unknown keys and non-positive ints raise,
  naming the config key."""
  opts = {**defaults, **dict(cfg.attention_options)}
  unknown = sorted(set(opts) - set(defaults))
  if unknown:
    raise ValueError(f"ModelConfig.attention_options: unknown keys {unknown} for attention={name!r}; "
                     f"known: {sorted(defaults)}")
  for key in positive_ints:
    value = opts[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"ModelConfig.attention_options {key}={value!r} must be a positive int")
  return opts


def register_mixer(name: str):
  def wrap(cls):
    TOKEN_MIXERS[name] = cls
    return cls
  return wrap


def register_block(name: str):
  def wrap(cls):
    BLOCKS[name] = cls
    return cls
  return wrap


# Registration happens on import of each mixer module (pure: no I/O).
from roformer_jax.mixers import fnet as _fnet  # noqa: E402,F401
from roformer_jax.mixers import gau as _gau  # noqa: E402,F401
from roformer_jax.mixers import mixer as _mixer  # noqa: E402,F401
from roformer_jax.mixers import synthesizer as _synthesizer  # noqa: E402,F401
