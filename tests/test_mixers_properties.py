"""Token mixers and blocks: each one's defining property against a NumPy oracle, their option errors,
and a short MLM training run of every attention variant inside the real encoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import roformer_jax as rj
from roformer_jax import attention as attn
from roformer_jax import mixers
from roformer_jax import rope as rope_lib

B, L = 2, 12


def _cfg(name, **kw):
  return rj.get_config("tiny", num_layers=1, hidden_size=64, num_heads=2, intermediate_size=128, vocab_size=300,
                       attention=name, **kw)


def _x_mask(cfg, seed=0):
  rng = np.random.RandomState(seed)
  x = jnp.asarray(rng.randn(B, L, cfg.hidden_size), jnp.float32)
  key_mask = jnp.asarray(np.arange(L)[None] < np.array([[L], [8]]))
  return x, attn.AttentionMask(key_mask)


def _run(cls, cfg, x, mask, *extra):
  rope = rope_lib.rope_angles(rope_lib.default_positions(B, x.shape[1]), cfg.head_size)
  module = cls(cfg)
  params = nn.meta.unbox(module.init(jax.random.PRNGKey(0), x, mask, rope, True, *extra).get("params", {}))
  out = module.apply({"params": params}, x, mask, rope, True, *extra)
  return jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), params), np.asarray(out, np.float64)


def _rms(x):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-12)


def test_fnet_is_the_real_part_of_the_2d_fft():
  cfg = _cfg("fnet")
  x, mask = _x_mask(cfg)
  _, got = _run(mixers.TOKEN_MIXERS["fnet"], cfg, x, mask)
  xm = np.where(np.asarray(mask.key_mask)[:, :, None], np.asarray(x, np.float64), 0.0)
  np.testing.assert_allclose(got, np.fft.fft2(xm, axes=(1, 2)).real, atol=1e-4)
  with pytest.raises(ValueError, match="attention='fnet' .* cannot honour packed segment_ids"):
    _run(mixers.TOKEN_MIXERS["fnet"], cfg, x, attn.AttentionMask(mask.key_mask, jnp.ones((B, L), jnp.int32)))


def test_mixer_is_a_token_mlp_equal_to_zero_padding_to_its_fixed_maximum_length():
  cfg = _cfg("mixer", attention_options=(("mixer_max_length", 16), ("mixer_hidden", 8)))
  x, mask = _x_mask(cfg)
  params, got = _run(mixers.TOKEN_MIXERS["mixer"], cfg, x, mask)
  xm = np.where(np.asarray(mask.key_mask)[:, :, None], np.asarray(x, np.float64), 0.0)
  # Zero-padding to the fixed maximum length, then the full token MLP, then cropping: same answer.
  full = np.concatenate([xm, np.zeros((B, 16 - L, cfg.hidden_size))], 1)
  h = np.einsum("bjc,jm->bmc", full, params["w1"]) + params["b1"][:, None]
  h = np.asarray(jax.nn.gelu(jnp.asarray(h), approximate=False), np.float64)
  want = (np.einsum("bmc,ml->blc", h, params["w2"]) + params["b2"][:, None])[:, :L]
  np.testing.assert_allclose(got, want, atol=1e-4)
  with pytest.raises(ValueError, match=r"fixed maximum length of 16 tokens .*mixer_max_length.*sequence of 20"):
    _run(mixers.TOKEN_MIXERS["mixer"], cfg, jnp.zeros((B, 20, cfg.hidden_size)), attn.AttentionMask(
        jnp.ones((B, 20), bool)))
  with pytest.raises(ValueError, match=r"mixer_hidden=0 must be a positive int"):
    _run(mixers.TOKEN_MIXERS["mixer"], _cfg("mixer", attention_options=(("mixer_hidden", 0),)), x, mask)


@pytest.mark.parametrize("kind", ["dense", "random"])
def test_synthesizer_weights_come_from_tokens_alone(kind):
  cfg = _cfg("synthesizer", attention_options=(("synthesizer_kind", kind), ("synthesizer_max_length", 16)))
  x, mask = _x_mask(cfg)
  seg = np.where(np.arange(L) < 5, 1, 2)[None].repeat(B, 0)
  mask = attn.AttentionMask(mask.key_mask, jnp.asarray(seg))
  params, got = _run(mixers.TOKEN_MIXERS["synthesizer"], cfg, x, mask)
  xd = np.asarray(x, np.float64)
  if kind == "random":  # input-independent weights
    logits = np.broadcast_to(params["random"][:, :L, :L], (B, cfg.num_heads, L, L))
  else:  # token i's weights are a function of x_i alone: no query-key products
    hid = np.maximum(xd @ params["w1"] + params["b1"], 0)
    logits = np.einsum("ble,ehm->bhlm", hid, params["w2"][:, :, :L]) + params["b2"][None, :, None, :L]
  visible = np.asarray(mask.dense())
  logits = np.where(visible, logits, -1e30)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  v = np.einsum("bld,dhk->blhk", xd, params["value"]["kernel"])
  want = np.einsum("bhqk,bkhd,hde->bqe", probs, v, params["output"]["kernel"])
  np.testing.assert_allclose(got, want, atol=1e-4)
  with pytest.raises(ValueError, match=r"synthesizer_kind='conv'"):
    _run(mixers.TOKEN_MIXERS["synthesizer"], _cfg("synthesizer", attention_options=(("synthesizer_kind", "conv"),)),
         x, mask)


def test_gau_is_squared_relu_attention_over_a_shared_key_gated_by_u():
  cfg = _cfg("gau", attention_options=(("gau_expansion", 2), ("gau_key_size", 64)))
  x, mask = _x_mask(cfg, 1)
  params, got = _run(mixers.BLOCKS["gau"], cfg, x, mask, 1.0)
  xd = np.asarray(x, np.float64)
  swish = lambda t: t / (1 + np.exp(-t))
  uv = swish(np.einsum("bld,dte->blte", xd, params["uv"]["kernel"]))
  u, v = uv[:, :, 0], uv[:, :, 1]
  z = swish(xd @ params["z"]["kernel"])
  rope = rope_lib.rope_angles(rope_lib.default_positions(B, L), cfg.head_size)
  rot = lambda t: np.asarray(rope_lib.apply_rope(jnp.asarray(t.reshape(B, L, 2, 32), jnp.float32), *rope),
                             np.float64).reshape(B, L, 64)
  q = rot(z * params["scale"][0] + params["offset"][0])
  k = rot(z * params["scale"][1] + params["offset"][1])
  visible = np.asarray(mask.dense()[:, 0])
  a = np.where(visible, np.maximum(np.einsum("bqs,bks->bqk", q, k) / 8.0, 0) ** 2, 0)
  a /= visible.sum(-1, keepdims=True)
  want = _rms(xd + (u * (a @ v)) @ params["output"]["kernel"])
  np.testing.assert_allclose(got, want, atol=2e-4)
  with pytest.raises(ValueError, match=r"gau_key_size=48 must be a multiple of the head size 32"):
    _run(mixers.BLOCKS["gau"], _cfg("gau", attention_options=(("gau_key_size", 48),)), x, mask, 1.0)


TRAINABLE = {
    "dot_product": dict(attention_dropout=0.0),  # jax.nn has no attention dropout
    "blockwise": dict(attention_options=(("block_q", 8), ("block_k", 8))),
    "pallas": dict(attention_options=(("block_q", 8), ("block_k", 8))),
    "linear": {}, "gau": {}, "fnet": {},
    "mixer": dict(attention_options=(("mixer_max_length", 16),)),
    "synthesizer": dict(attention_options=(("synthesizer_max_length", 16),)),
}


@pytest.mark.parametrize("name", sorted(TRAINABLE))
def test_every_variant_trains_in_the_encoder(name):
  cfg = _cfg(name, **TRAINABLE[name])
  model = rj.RoFormerForMaskedLM(cfg)
  params = rj.init_params(model, jax.random.PRNGKey(0), L)
  rng = np.random.RandomState(0)
  labels = jnp.asarray(rng.randint(5, cfg.vocab_size, (B, L)))
  attention_mask = jnp.asarray(np.arange(L)[None] < np.array([[L], [9]]))
  positions = jnp.asarray([[1, 4, 7], [0, 3, 8]])
  ids = jnp.where(attention_mask, labels, 0).at[jnp.arange(B)[:, None], positions].set(3)  # 3 = [MASK]
  tx = optax.adam(3e-3)

  def loss_fn(p, rng):
    logits = model.apply({"params": p}, ids, attention_mask=attention_mask, masked_positions=positions,
                         deterministic=False, rngs={"dropout": rng})
    targets = jnp.take_along_axis(labels, positions, axis=1)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  @jax.jit
  def step(p, state, rng):
    loss, grads = jax.value_and_grad(loss_fn)(p, rng)
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  state, losses = tx.init(params), []
  for i in range(3):
    params, state, loss = step(params, state, jax.random.PRNGKey(i))
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.1, losses
