"""Synthesizer (Tay et al. 2021): attention weights synthesised without query-key dot products.

  dense:  logits[h, i, :] = relu(x_i W1 + b1) W2[:, h, :] + b2[h, :]   (from token i alone)
  random: logits[h] = R[h]                                               (learned, input-independent)

then A = softmax(logits over the first L keys, masked like `softmax`), out = (A · x W_v) W_o per head.
Both are sized for a fixed maximum length. Options (`ModelConfig.attention_options`):
synthesizer_kind ("dense" | "random", default "dense"), synthesizer_max_length (default 512).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from roformer_jax.mixers import read_options, register_mixer

KINDS = ("dense", "random")
OPTIONS = {"synthesizer_kind": "dense", "synthesizer_max_length": 512}


def synthesizer_options(cfg) -> tuple[str, int]:
  """(kind, max_length) from cfg.attention_options, validated."""
  opts = read_options(cfg, "synthesizer", OPTIONS, ("synthesizer_max_length",))
  if opts["synthesizer_kind"] not in KINDS:
    raise ValueError(f"ModelConfig.attention_options synthesizer_kind={opts['synthesizer_kind']!r}: "
                     f"expected one of {KINDS}")
  return opts["synthesizer_kind"], opts["synthesizer_max_length"]


def synthesized_logits(params: dict, x: jax.Array, kind: str, length: int) -> jax.Array:
  """[B, H, L, L] float32 logits from the module's params (also the tests' oracle input)."""
  if kind == "random":
    r = params["random"][:, :length, :length]
    return jnp.broadcast_to(r, (x.shape[0],) + r.shape)
  h = jax.nn.relu(jnp.einsum("bld,de->ble", x, params["w1"]) + params["b1"])
  return jnp.einsum("ble,ehm->bhlm", h, params["w2"][:, :, :length]) + params["b2"][None, :, None, :length]


@register_mixer("synthesizer")
class Synthesizer(nn.Module):
  """Called (x, mask, rope, deterministic) -> [B, L, hidden]; raises if L exceeds the fixed maximum."""
  cfg: object

  @nn.compact
  def __call__(self, x, mask, rope, deterministic: bool):
    from roformer_jax import model as model_lib  # lazy: model imports the mixer registries
    del rope
    cfg = self.cfg
    kind, max_length = synthesizer_options(cfg)
    length = x.shape[1]
    if length > max_length:
      raise ValueError(f"attention='synthesizer' has a fixed maximum length of {max_length} tokens "
                       f"(ModelConfig.attention_options synthesizer_max_length); got a sequence of {length}")
    param = lambda name, init, axes, shape: self.param(name, nn.with_logical_partitioning(init, axes), shape,
                                                       jnp.float32)
    d, heads = cfg.hidden_size, cfg.num_heads
    if kind == "random":
      params = {"random": param("random", nn.initializers.normal(1.0), ("heads", None, "length"),
                                (heads, max_length, max_length))}
    else:
      params = {"w1": param("w1", nn.initializers.lecun_normal(), ("embed", "mlp"), (d, d)),
                "b1": param("b1", nn.initializers.zeros, ("mlp",), (d,)),
                "w2": param("w2", nn.initializers.lecun_normal(), ("mlp", "heads", "length"), (d, heads, max_length)),
                "b2": param("b2", nn.initializers.zeros, ("heads", "length"), (heads, max_length))}
    logits = synthesized_logits(params, x.astype(jnp.float32), kind, length)
    logits = jnp.where(mask.dense(), logits, jnp.finfo(jnp.float32).min)
    probs = nn.Dropout(cfg.attention_dropout, deterministic=deterministic)(jax.nn.softmax(logits, axis=-1))
    v = model_lib.Dense(cfg, (heads, cfg.head_size), ("embed", "heads", "kv"), name="value")(x)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
    return model_lib.Dense(cfg, (d,), ("heads", "kv", "embed"), in_axes=2, name="output")(out)
