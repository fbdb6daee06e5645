"""RoFormer (v1) and RoFormerV2 encoders as pure Flax linen modules.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`) and every
main activation is constrained to (`batch`, `length`, ...), so sharding is a rules table away
(see MaxText). Parameters are float32; the compute dtype comes from the config, while norm
statistics, softmax and RoPE angles stay float32.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from roformer_jax import attention as attention_lib
from roformer_jax import mixers
from roformer_jax import rope as rope_lib
from roformer_jax.config import ModelConfig
from roformer_jax.matmul import matmul

Array = jax.Array


# ----------------------------------------------------------------------------------------------
# Initialisers
# ----------------------------------------------------------------------------------------------
def _v2_init(fan: int, num_layers: int) -> nn.initializers.Initializer:
  # RoFormerV2 (bert4keras ff75758): truncated normal at +-2 sigma; 1.13684723 = 1/0.8796 restores
  # unit variance after truncation; the 1/sqrt(layers) factor keeps deep post-norm stacks stable.
  return nn.initializers.truncated_normal(1.13684723 / math.sqrt(fan) / math.sqrt(num_layers))


def _kernel_init(cfg: ModelConfig, fan_in: int) -> nn.initializers.Initializer:
  if cfg.version == "v2":
    return _v2_init(fan_in, cfg.num_layers)
  return nn.initializers.normal(0.02)  # BERT / v1 initializer_range


def _param(init, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(init, axes)


def _constrain(x: Array, axes: tuple[str | None, ...]) -> Array:
  return nn.with_logical_constraint(x, axes)


def matmul_precision(cfg: ModelConfig):
  """The context every model (and head) traces its matmuls under: `cfg.matmul_precision`, resolved.

  One switch for the weight matmuls and every attention variant alike; float32 stays float32 on GPUs and
  TPUs (see ModelConfig.matmul_precision)."""
  return jax.default_matmul_precision(cfg.precision)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------
class Norm(nn.Module):
  """v1: LayerNorm with scale and bias; v2: parameter-free RMS norm. Statistics in float32."""
  cfg: ModelConfig
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dtype = x.dtype
    x = x.astype(jnp.float32)
    if self.cfg.version == "v2":
      y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.cfg.norm_eps)
    else:
      mean = jnp.mean(x, axis=-1, keepdims=True)
      var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)  # biased, as BERT
      y = (x - mean) * jax.lax.rsqrt(var + self.cfg.norm_eps)
      scale = self.param("scale", _param(nn.initializers.ones, ("embed",)), (self.features,), jnp.float32)
      bias = self.param("bias", _param(nn.initializers.zeros, ("embed",)), (self.features,), jnp.float32)
      y = y * scale + bias
    return y.astype(dtype)


class Dense(nn.Module):
  """A dense layer over the trailing `in_axes` dims, with logical names for its kernel axes."""
  cfg: ModelConfig
  features: tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  in_axes: int = 1
  use_bias: bool | None = None  # None: as the version says (v1 yes, v2 no)
  kernel_init: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[-self.in_axes:]
    fan_in = math.prod(in_shape)
    init = self.kernel_init or _kernel_init(self.cfg, fan_in)
    kernel = self.param("kernel", _param(init, self.kernel_axes), in_shape + self.features, jnp.float32)
    dtype = jnp.dtype(self.cfg.dtype)
    # One [..., fan_in] x [fan_in, fan_out] matmul (roformer_jax.matmul: float32 accumulation, a backward
    # that keeps XLA:CPU on its fast matmuls). Under a sharded mesh XLA keeps the merged dims sharded.
    lead = x.shape[:-self.in_axes]
    y = matmul(x.reshape(lead + (fan_in,)).astype(dtype), kernel.reshape(fan_in, -1))
    y = y.reshape(lead + self.features)
    use_bias = self.cfg.use_bias if self.use_bias is None else self.use_bias
    if use_bias:
      bias = self.param("bias", _param(nn.initializers.zeros, self.kernel_axes[-len(self.features):]),
                        self.features, jnp.float32)
      y = y + bias.astype(dtype)
    return y


def _activation(cfg: ModelConfig, x: Array) -> Array:
  # v1: exact erf GELU (JAX defaults to the tanh approximation); v2: ReLU.
  return jax.nn.relu(x) if cfg.version == "v2" else jax.nn.gelu(x, approximate=False)


class SelfAttention(nn.Module):
  """Multi-head self-attention; with `query_positions` [B, P], only those positions' outputs
  ([B, P, hidden]): queries there, keys and values everywhere.

  With `decode`, a key/value cache (collection "cache", [B, T, heads, head_size], T = the length the
  cache was initialised with): x [B, P, hidden] are new tokens at cache slots `cache_positions` [B, P]
  (also their RoPE positions); their keys and values are written there, and their queries attend to the
  whole cache under `mask` (which `RoFormerModel` builds over the T slots)."""
  cfg: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x: Array, mask: attention_lib.AttentionMask, rope: tuple[Array, Array],
               deterministic: bool, query_positions: Array | None = None,
               cache_positions: Array | None = None) -> Array:
    cfg = self.cfg
    heads = (cfg.num_heads, cfg.head_size)
    options = dict(cfg.attention_options)
    xq = x
    if query_positions is not None:
      xq = gather_positions(x, query_positions)
      options["query_rope"] = tuple(gather_positions(t, query_positions) for t in rope)
      if mask.segment_ids is not None:
        mask = mask.replace(query_segment_ids=gather_positions(mask.segment_ids, query_positions))
      if mask.causal_ids is not None:
        mask = mask.replace(query_causal_ids=gather_positions(mask.causal_ids, query_positions))
    q = Dense(cfg, heads, ("embed", "heads", "kv"), name="query")(xq)
    k = Dense(cfg, heads, ("embed", "heads", "kv"), name="key")(x)
    v = Dense(cfg, heads, ("embed", "heads", "kv"), name="value")(x)
    q, k, v = (_constrain(t, ("batch", "length", "heads", "kv")) for t in (q, k, v))
    if cfg.rotary_value:
      v = rope_lib.apply_rope(v, *rope)
    attend = attention_lib.get_attention(cfg.attention)
    if self.decode:
      initialised = self.has_variable("cache", "cached_key")
      cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
      cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
      if initialised:  # (at init the cache is only shaped: run as a plain layer)
        rows = jnp.arange(k.shape[0])[:, None]
        cached_k.value = cached_k.value.at[rows, cache_positions].set(k)
        cached_v.value = cached_v.value.at[rows, cache_positions].set(v)
        k, v = cached_k.value, cached_v.value
        # Queries at P of the T slots: a variant that takes query subsets (default: softmax).
        if attention_lib.supports_query_subset(cfg.attention) and attention_lib.supports_causal_ids(cfg.attention):
          options = {**dict(cfg.attention_options), "query_rope": rope}
        else:
          attend, options = attention_lib.get_attention("softmax"), {"query_rope": rope}
        rope = rope_lib.rope_angles(rope_lib.default_positions(k.shape[0], k.shape[1]), cfg.head_size,
                                    cfg.rope_base)
    dropout_rng = None
    if not deterministic and cfg.attention_dropout > 0:
      dropout_rng = self.make_rng("dropout")
    out = attend(q, k, v, mask, rope=rope, dropout_rate=cfg.attention_dropout, dropout_rng=dropout_rng,
                 deterministic=deterministic, **options)
    out = _constrain(out, ("batch", "length", "heads", "kv"))
    return Dense(cfg, (cfg.hidden_size,), ("heads", "kv", "embed"), in_axes=2, name="output")(out)


class FeedForward(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    h = Dense(cfg, (cfg.intermediate_size,), ("embed", "mlp"), name="intermediate")(x)
    h = _constrain(_activation(cfg, h), ("batch", "length", "mlp"))
    return Dense(cfg, (cfg.hidden_size,), ("mlp", "embed"), name="output")(h)


class EncoderLayer(nn.Module):
  """Post-norm block: x = Norm(x + a * Mix(x)); x = Norm(x + a * FFN(x)).

  `Mix` is self-attention (any attention function) or a registered token mixer; a registered
  block (GAU) replaces both halves. `residual_scale` (a) is the RoFormerV2 recipe's warm-up
  factor, 1 at inference. With `scanned`, returns (x, None) as nn.scan wants.

  With `output_positions` [B, P] it returns only those rows, [B, P, hidden]. Everything after the
  keys and values is row-wise, so for a query-subset attention (`prunes_last_layer`) the queries,
  the output projection, the FFN and the norms run at those P rows only: the same values, at
  ~P/L of the layer's cost. Other variants run the full layer and gather.

  With `decode`, the attention keeps a key/value cache and x holds new tokens at `cache_positions`
  (see `SelfAttention`); the layer is never pruned then.
  """
  cfg: ModelConfig
  scanned: bool = False
  decode: bool = False

  @nn.compact
  def __call__(self, x: Array, mask: attention_lib.AttentionMask, rope: tuple[Array, Array],
               deterministic: bool, residual_scale: Array | float = 1.0, output_positions: Array | None = None,
               cache_positions: Array | None = None):
    cfg = self.cfg
    pruned = output_positions is not None and prunes_last_layer(cfg) and not self.decode
    if cfg.attention in mixers.BLOCKS:
      x = mixers.BLOCKS[cfg.attention](cfg, name="block")(x, mask, rope, deterministic, residual_scale)
    else:
      drop = nn.Dropout(cfg.hidden_dropout, deterministic=deterministic)
      if pruned:
        a = SelfAttention(cfg, name="attention")(x, mask, rope, deterministic, output_positions)
        x = gather_positions(x, output_positions)
      else:
        if self.decode:
          a = SelfAttention(cfg, decode=True, name="attention")(x, mask, rope, deterministic,
                                                                cache_positions=cache_positions)
        else:
          mixer = mixers.TOKEN_MIXERS.get(cfg.attention, SelfAttention)
          a = mixer(cfg, name="attention")(x, mask, rope, deterministic)
      x = Norm(cfg, cfg.hidden_size, name="attention_norm")(x + residual_scale * drop(a))
      x = _constrain(x, ("batch", "length", "embed"))
      f = FeedForward(cfg, name="ffn")(x)
      x = Norm(cfg, cfg.hidden_size, name="ffn_norm")(x + residual_scale * drop(f))
    if output_positions is not None and not pruned:
      x = gather_positions(x, output_positions)
    x = _constrain(x, ("batch", "length", "embed"))
    return (x, None) if self.scanned else x


def prunes_last_layer(cfg: ModelConfig) -> bool:
  """Whether the last layer computes only the requested output rows (see `EncoderLayer`)."""
  return (cfg.attention not in mixers.BLOCKS and cfg.attention not in mixers.TOKEN_MIXERS
          and attention_lib.supports_query_subset(cfg.attention))


_REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole layer
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,  # keep weight matmuls
}


def _layer_class(cfg: ModelConfig, scan_length: int | None = None, decode: bool = False):
  """The layer class as configured: remat'd, and scanned over `scan_length` layers (None: not scanned).
  Decoding (no gradients) is never remat'd; its key/value cache scans with the params."""
  cls = EncoderLayer
  if cfg.remat != "none" and not decode:
    # argnum 4 (self=0, x, mask, rope, deterministic) is a Python bool: static for remat.
    # prevent_cse only outside a scan (inside one it is not needed, and costs).
    cls = nn.remat(cls, static_argnums=(4,), policy=_REMAT_POLICIES[cfg.remat], prevent_cse=scan_length is None)
  if scan_length is not None:
    cls = nn.scan(cls, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True, "dropout": True},
                  in_axes=(nn.broadcast,) * (6 if decode else 4), length=scan_length,
                  metadata_params={nn.PARTITION_NAME: "layers"})
  return cls


class Embeddings(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    init = _v2_init(cfg.embed_size, cfg.num_layers) if cfg.version == "v2" else nn.initializers.normal(0.02)
    self.word_embeddings = self.param("word_embeddings", _param(init, ("vocab", "embed")),
                                      (cfg.vocab_size, cfg.embed_size), jnp.float32)
    self.token_type_embeddings = self.param("token_type_embeddings", _param(init, (None, "embed")),
                                            (cfg.type_vocab_size, cfg.embed_size), jnp.float32)
    self.norm = Norm(cfg, cfg.embed_size)
    self.dropout = nn.Dropout(cfg.hidden_dropout)
    if cfg.embed_size != cfg.hidden_size:
      self.project = Dense(cfg, (cfg.hidden_size,), (None, "embed"))

  def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool) -> Array:
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    x = (jnp.take(self.word_embeddings, input_ids, axis=0) +
         jnp.take(self.token_type_embeddings, token_type_ids, axis=0)).astype(dtype)
    if cfg.version == "v2":  # bert4keras order: dropout, then norm (v1: norm, then dropout)
      x = self.norm(self.dropout(x, deterministic=deterministic))
    else:
      x = self.dropout(self.norm(x), deterministic=deterministic)
    if cfg.embed_size != cfg.hidden_size:
      x = self.project(x)
    return _constrain(x, ("batch", "length", "embed"))

  def attend(self, h: Array) -> Array:
    """Tied decoder: h @ E^T, accumulated and returned in float32."""
    return matmul(h, self.word_embeddings, out_dtype=jnp.float32, w_transposed=True)


def _default_mask(input_ids: Array, attention_mask: Array | None, pad_token_id: int) -> Array:
  if attention_mask is None:
    return input_ids != pad_token_id
  return attention_mask.astype(bool)


def _causal_ids(cfg: ModelConfig, input_ids: Array, token_type_ids: Array | None, unilm: bool,
                causal_ids: Array | None) -> Array | None:
  """Explicit causal ids, else UniLM's from the segments (cumsum of token_type_ids) when `unilm`; refused by
  attention variants that cannot take them."""
  if causal_ids is None and unilm:
    causal_ids = jnp.cumsum(jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids,
                            axis=-1, dtype=jnp.int32)
  if causal_ids is not None and not attention_lib.supports_causal_ids(cfg.attention):
    raise ValueError(f"attention={cfg.attention!r} cannot take a UniLM / causal mask (causal_ids); use one "
                     "of softmax, dot_product, blockwise, pallas")
  return causal_ids


class RoFormerModel(nn.Module):
  """The encoder: returns hidden states [batch, length, hidden] in the compute dtype.

  Args (to __call__):
    input_ids: [B, L] int token ids.
    token_type_ids: [B, L] segment ids; zeros if None.
    attention_mask: [B, L], 1 = real token; if None, id `pad_token_id` (0) is padding.
    position_ids: [B, L] or [L] explicit RoPE positions; 0..L-1 if None.
    segment_ids: [B, L] packed-document ids; attention never crosses documents when given.
    residual_scale: the RoFormerV2 residual warm-up factor alpha (1 = plain post-norm).
    output_positions: [B, P]; if given, only the hidden states there, [B, P, hidden]. The last
      layer then runs its queries, FFN and norms at those rows only (see `EncoderLayer`).
    unilm: UniLM's seq2seq mask from `token_type_ids` (0 source, 1 target), as bert4keras
      `application='unilm'`: causal_ids = cumsum(token_type_ids) (`roformer_jax.seq2seq.mask`).
    causal_ids: [B, L] explicit causal ids (key k visible to query q iff ids[k] <= ids[q]; see
      `attention.AttentionMask`); wins over `unilm`.
    inputs_embeds: [B, L, hidden] vectors to run the stack on instead of the embedding layer's output
      (TeaForN re-feeds hidden states); input_ids then only give the default padding mask.

  With `decode=True` (generation), the attention layers keep a key/value cache of T slots (T = the
  length at `init`; see `roformer_jax.seq2seq.decode`): each call takes new tokens [B, P] with explicit
  `position_ids` [B, P] (their cache slots and RoPE positions) and `causal_ids` [B, P], and attends to
  everything cached so far plus themselves. Only attention variants that take `causal_ids` decode.
  """
  cfg: ModelConfig
  decode: bool = False

  def setup(self):
    self.embeddings = Embeddings(self.cfg)
    scan = self.cfg.num_layers if self.cfg.scan_layers else None
    layer = _layer_class(self.cfg, scan, self.decode)
    if self.cfg.scan_layers:
      self.layers = layer(self.cfg, scanned=True, decode=self.decode, name="layers")
    else:
      self.layers = [layer(self.cfg, decode=self.decode, name=f"layer_{i}") for i in range(self.cfg.num_layers)]
    if self.decode:
      self.decode_state = DecodeState()

  def __call__(self, input_ids: Array, token_type_ids: Array | None = None, attention_mask: Array | None = None,
               *, position_ids: Array | None = None, segment_ids: Array | None = None,
               deterministic: bool = True, residual_scale: Array | float = 1.0,
               output_positions: Array | None = None, unilm: bool = False, causal_ids: Array | None = None,
               inputs_embeds: Array | None = None) -> Array:
    causal_ids = _causal_ids(self.cfg, input_ids, token_type_ids, unilm, causal_ids)
    with matmul_precision(self.cfg):
      if self.decode:
        return self._decode(input_ids, token_type_ids, attention_mask, position_ids, causal_ids, output_positions)
      return self._encode(input_ids, token_type_ids, attention_mask, position_ids, segment_ids, deterministic,
                          residual_scale, output_positions, causal_ids, inputs_embeds)

  def _decode(self, input_ids, token_type_ids, attention_mask, position_ids, causal_ids, output_positions):
    """New tokens [B, P] into the cache at `position_ids` [B, P]; see the class docstring."""
    cfg = self.cfg
    if cfg.attention in mixers.BLOCKS or cfg.attention in mixers.TOKEN_MIXERS:
      raise ValueError(f"attention={cfg.attention!r} has no key/value cache to decode with")
    if position_ids is None or causal_ids is None:
      raise ValueError("decode=True: pass the new tokens' position_ids (cache slots) and causal_ids (or unilm=True "
                       "for a whole sequence at init)")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    batch, length = input_ids.shape
    position_ids = jnp.broadcast_to(position_ids, (batch, length))
    causal_ids = jnp.broadcast_to(causal_ids, (batch, length)).astype(jnp.int32)
    key_mask = _default_mask(input_ids, attention_mask, cfg.pad_token_id)
    # The mask over all T slots: what is cached (real tokens only) plus these tokens, by causal ids.
    mask = self.decode_state(key_mask, causal_ids, position_ids, self.is_initializing())
    rope = rope_lib.rope_angles(position_ids, cfg.head_size, cfg.rope_base)
    x = self.embeddings(input_ids, token_type_ids, True)
    if cfg.scan_layers:
      x, _ = self.layers(x, mask, rope, True, 1.0, None, position_ids)
    else:
      for layer in self.layers:
        x = layer(x, mask, rope, True, 1.0, None, position_ids)
    return x if output_positions is None else gather_positions(x, output_positions)

  def _inputs(self, input_ids, token_type_ids, attention_mask, position_ids, segment_ids, causal_ids,
              inputs_embeds, deterministic):
    """(x, mask, rope): the first layer's input, the attention mask and the RoPE angles of an encoding."""
    cfg = self.cfg
    batch, length = input_ids.shape
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    mask = attention_lib.AttentionMask(_default_mask(input_ids, attention_mask, cfg.pad_token_id), segment_ids,
                                       causal_ids=causal_ids)
    if position_ids is None:
      position_ids = rope_lib.default_positions(batch, length)
    position_ids = jnp.broadcast_to(position_ids, (batch, length))
    rope = rope_lib.rope_angles(position_ids, cfg.head_size, cfg.rope_base)
    if inputs_embeds is None:
      x = self.embeddings(input_ids, token_type_ids, deterministic)
    else:
      x = _constrain(inputs_embeds.astype(jnp.dtype(cfg.dtype)), ("batch", "length", "embed"))
    return x, mask, rope

  def _encode(self, input_ids, token_type_ids, attention_mask, position_ids, segment_ids, deterministic,
              residual_scale, output_positions, causal_ids=None, inputs_embeds=None):
    cfg = self.cfg
    x, mask, rope = self._inputs(input_ids, token_type_ids, attention_mask, position_ids, segment_ids, causal_ids,
                                 inputs_embeds, deterministic)
    if not cfg.scan_layers:
      for layer in self.layers[:-1]:
        x = layer(x, mask, rope, deterministic, residual_scale)
      return self.layers[-1](x, mask, rope, deterministic, residual_scale, output_positions)
    if (output_positions is None or self.is_initializing() or cfg.num_layers == 1
        or not prunes_last_layer(cfg)):
      x, _ = self.layers(x, mask, rope, deterministic, residual_scale)
      return x if output_positions is None else gather_positions(x, output_positions)
    return self._scanned_then_last(x, mask, rope, deterministic, residual_scale, output_positions)

  def _scanned_then_last(self, x, mask, rope, deterministic, residual_scale, output_positions):
    # The scan runs one body for every layer, so the pruned last layer is applied on its own: the
    # stacked params are split (the first L - 1 scanned, the last alone) at apply time, and the param
    # tree and checkpoints keep the one scanned layout.
    cfg = self.cfg
    first = jax.tree_util.tree_map(lambda p: p[:-1], self.layers.variables["params"])
    rngs = self._dropout_rngs(deterministic)
    scanned = _layer_class(cfg, cfg.num_layers - 1)(cfg, scanned=True, parent=None)
    x, _ = scanned.apply({"params": first}, x, mask, rope, deterministic, residual_scale, rngs=rngs)
    return self._layer(cfg.num_layers - 1, x, mask, rope, deterministic, residual_scale, output_positions, rngs)

  def _dropout_rngs(self, deterministic):
    """{"dropout": key} for layers applied on their own (`_layer`), when there is dropout to draw."""
    cfg = self.cfg
    if not deterministic and (cfg.hidden_dropout > 0 or cfg.attention_dropout > 0):
      return {"dropout": self.make_rng("dropout")}
    return {}

  def _layer(self, i, x, mask, rope, deterministic, residual_scale, output_positions, rngs):
    """Layer i alone; in the scanned layout its params are sliced from the stack at apply time (the param
    tree and checkpoints keep the one layout) and dropout keys are `rngs` folded with i."""
    if not self.cfg.scan_layers:
      return self.layers[i](x, mask, rope, deterministic, residual_scale, output_positions)
    params = jax.tree_util.tree_map(lambda p: p[i], self.layers.variables["params"])
    rngs = {k: jax.random.fold_in(v, i) for k, v in rngs.items()}
    return _layer_class(self.cfg)(self.cfg, parent=None).apply({"params": params}, x, mask, rope, deterministic,
                                                             residual_scale, output_positions, rngs=rngs)

  def layer_states(self, input_ids: Array, token_type_ids: Array | None = None, attention_mask: Array | None = None,
                   *, deterministic: bool = True, residual_scale: Array | float = 1.0, unilm: bool = False,
                   causal_ids: Array | None = None, inputs_embeds: Array | None = None,
                   rows: Array | None = None, context: Array | None = None) -> Array:
    """[num_layers + 1, B, L, hidden]: the input of every layer, then the final output.

    With `rows` [B, P] and `context` (an earlier call's result), only the hidden states at `rows` are
    computed, from `inputs_embeds` there; every other position is read from `context`, layer by layer
    (keys and values everywhere, queries and the FFN at `rows`). That is exact when no other position
    attends to `rows` and their inputs equal the context's (under the UniLM mask: the source never
    sees the target), which is how TeaForN reuses the source across passes. A row index >= L pads."""
    cfg = self.cfg
    batch, length = input_ids.shape
    causal_ids = _causal_ids(cfg, input_ids, token_type_ids, unilm, causal_ids)
    with matmul_precision(cfg):
      x, mask, rope = self._inputs(input_ids, token_type_ids, attention_mask, None, None, causal_ids,
                                   inputs_embeds, deterministic)
      rngs = self._dropout_rngs(deterministic)
      if rows is None:
        states = [x]
        for i in range(cfg.num_layers):
          states.append(self._layer(i, states[-1], mask, rope, deterministic, residual_scale, None, rngs))
        return jnp.stack(states)
      b, at = jnp.arange(batch)[:, None], jnp.minimum(rows, length - 1)
      put = lambda full, new: full.at[b, rows].set(new, mode="drop")  # padding rows (>= L) write nothing
      states = [put(context[0], gather_positions(x, at))]
      for i in range(cfg.num_layers):
        states.append(put(context[i + 1], self._layer(i, states[-1], mask, rope, deterministic, residual_scale,
                                                      at, rngs)))
    return jnp.stack(states)


class DecodeState(nn.Module):
  """The decoding cache's mask state over its T slots (collection "cache"): which slots hold real tokens
  and their causal ids. Returns the AttentionMask for the new tokens' queries over all slots."""

  @nn.compact
  def __call__(self, key_mask: Array, causal_ids: Array, positions: Array,
               initializing: bool) -> attention_lib.AttentionMask:
    filled = self.variable("cache", "key_mask", jnp.zeros, key_mask.shape, bool)
    ids = self.variable("cache", "causal_ids", jnp.zeros, causal_ids.shape, jnp.int32)
    if initializing:  # shapes only; the model runs on its inputs as a plain encoder
      return attention_lib.AttentionMask(key_mask, causal_ids=causal_ids)
    rows = jnp.arange(key_mask.shape[0])[:, None]
    filled.value = filled.value.at[rows, positions].set(key_mask)
    ids.value = ids.value.at[rows, positions].set(causal_ids)
    return attention_lib.AttentionMask(filled.value, causal_ids=ids.value, query_causal_ids=causal_ids)


def gather_positions(x: Array, positions: Array) -> Array:
  """x [B, L, ...] at positions [B, P] -> [B, P, ...]."""
  idx = positions.reshape(positions.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


class MLMHead(nn.Module):
  """v1: dense + GELU + LayerNorm, then the tied decoder + output bias. v2: dropout, then the tied decoder
  (bert4keras `RoFormerV2`'s "Output-MLM-Dropout" at the hidden dropout rate; the PyTorch ports leave it out,
  which only changes training)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, h: Array, embeddings: Embeddings, deterministic: bool = True) -> Array:
    cfg = self.cfg
    if cfg.version == "v1":
      h = Dense(cfg, (cfg.embed_size,), (None, "embed"), name="transform")(h)
      h = Norm(cfg, cfg.embed_size, name="norm")(_activation(cfg, h))
    else:
      h = nn.Dropout(cfg.hidden_dropout, deterministic=deterministic)(h)
    logits = embeddings.attend(h)
    if cfg.version == "v1":
      bias = self.param("bias", _param(nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,), jnp.float32)
      logits = logits + bias
    return logits


class RoFormerForMaskedLM(nn.Module):
  """Encoder + MLM head. Returns float32 logits [B, L, V], or [B, P, V] at `masked_positions` [B, P].

  The gathered form is what training uses: logits are never materialised for unmasked tokens.

  It is also the seq2seq LM head: with `unilm=True` (UniLM mask from token_type_ids, see `RoFormerModel`)
  the logits at position i score token i + 1, as bert4keras `application='unilm', with_mlm=True`.
  `decode=True` keeps a key/value cache for generation (`roformer_jax.seq2seq.decode`).
  """
  cfg: ModelConfig
  decode: bool = False

  def setup(self):
    self.roformer = RoFormerModel(self.cfg, decode=self.decode)
    self.mlm = MLMHead(self.cfg)

  def __call__(self, input_ids: Array, token_type_ids: Array | None = None, attention_mask: Array | None = None,
               *, masked_positions: Array | None = None, position_ids: Array | None = None,
               segment_ids: Array | None = None, deterministic: bool = True,
               residual_scale: Array | float = 1.0, unilm: bool = False, causal_ids: Array | None = None,
               inputs_embeds: Array | None = None) -> Array:
    return self.hidden_and_logits(input_ids, token_type_ids, attention_mask, masked_positions=masked_positions,
                                  position_ids=position_ids, segment_ids=segment_ids, deterministic=deterministic,
                                  residual_scale=residual_scale, unilm=unilm, causal_ids=causal_ids,
                                  inputs_embeds=inputs_embeds)[1]

  def hidden_and_logits(self, input_ids: Array, token_type_ids: Array | None = None,
                        attention_mask: Array | None = None, *, masked_positions: Array | None = None,
                        **kwargs) -> tuple[Array, Array]:
    """(final hidden states, logits): `__call__`'s logits with the hidden states they came from."""
    # At `masked_positions` the encoder's last layer runs only at those rows (exact, ~P/L of its cost).
    h = self.roformer(input_ids, token_type_ids, attention_mask, output_positions=masked_positions, **kwargs)
    return h, _constrain(self.head(h, kwargs.get("deterministic", True)), ("batch", "length", "vocab"))

  def layer_states(self, input_ids: Array, *args, **kwargs) -> Array:
    """The encoder's `RoFormerModel.layer_states` (every layer's input, then the final hidden states)."""
    return self.roformer.layer_states(input_ids, *args, **kwargs)

  def head(self, hidden: Array, deterministic: bool = True) -> Array:
    """The LM head on hidden states [..., hidden] -> float32 logits [..., vocab] (v2: with its dropout when
    not `deterministic`, drawn from the "dropout" rng)."""
    with matmul_precision(self.cfg):
      return self.mlm(hidden, self.roformer.embeddings, deterministic)

  def embed(self, input_ids: Array, token_type_ids: Array | None = None, deterministic: bool = True) -> Array:
    """The embedding layer's output [B, L, hidden]: what `inputs_embeds` replaces."""
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    with matmul_precision(self.cfg):
      return self.roformer.embeddings(input_ids, token_type_ids, deterministic)


def init_params(model: nn.Module, rng: jax.Array, length: int = 8) -> dict:
  """Unboxed float32 params for `model` (logical axis metadata stripped)."""
  ids = jnp.ones((1, length), jnp.int32)
  return nn.meta.unbox(model.init(rng, ids)["params"])


def logical_axes(model: nn.Module, length: int = 8) -> dict:
  """The params tree with each leaf replaced by its logical axis names (a PartitionSpec)."""
  ids = jnp.ones((1, length), jnp.int32)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids))["params"]
  return nn.get_partition_spec(boxed)


def stack_layers(params: dict, num_layers: int) -> dict:
  """Per-layer params (`layer_0` ... `layer_{L-1}`) -> the scanned layout (`layers`, leading axis L).

  Works on the encoder's tree or on the MLM model's (which nests it under `roformer`).
  """
  if "roformer" in params:
    return {**params, "roformer": stack_layers(params["roformer"], num_layers)}
  layers = [params[f"layer_{i}"] for i in range(num_layers)]
  rest = {k: v for k, v in params.items() if not k.startswith("layer_")}
  return {**rest, "layers": jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)}


def unstack_layers(params: dict) -> dict:
  """The scanned layout -> per-layer params (the inverse of `stack_layers`)."""
  if "roformer" in params:
    return {**params, "roformer": unstack_layers(params["roformer"])}
  if "layers" not in params:
    return params
  stacked = params["layers"]
  n = jax.tree_util.tree_leaves(stacked)[0].shape[0]
  rest = {k: v for k, v in params.items() if k != "layers"}
  return {**rest, **{f"layer_{i}": jax.tree_util.tree_map(lambda x: x[i], stacked) for i in range(n)}}
