"""The UniLM mask through the attention boundary: every exact variant, fed only the compact causal ids, equals
the einsum reference fed the explicit n x n mask (padding, ragged source lengths, forward and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from roformer_jax import attention as attn
from roformer_jax import rope as rope_lib
from roformer_jax.attention.softmax import _dense
from roformer_jax.seq2seq.mask import unilm_causal_ids, unilm_dense_mask

B, L, H, D = 3, 37, 2, 16  # L deliberately not a block multiple
SRC = (5, 17, 30)  # ragged source lengths
TOTAL = (37, 29, 34)  # real tokens per row; the rest is padding (segment 0 there, as bert4keras pads)


def _case(seed=0):
  rng = np.random.RandomState(seed)
  q, k, v = (jnp.asarray(rng.randn(B, L, H, D), jnp.float32) for _ in range(3))
  pos = np.arange(L)[None]
  tt = ((pos >= np.array(SRC)[:, None]) & (pos < np.array(TOTAL)[:, None])).astype(np.int32)
  key_mask = pos < np.array(TOTAL)[:, None]
  rope = rope_lib.rope_angles(rope_lib.default_positions(B, L), D)
  return q, k, v, jnp.asarray(tt), jnp.asarray(key_mask), rope


def _explicit(q, k, v, dense, rope):
  """The einsum reference on an explicit mask (no AttentionMask involved)."""
  return _dense(q, k, v, dense, (rope, rope), None, 0.0)


def test_unilm_ids_are_bert4keras_mask():
  _, _, _, tt, key_mask, _ = _case()
  dense = np.asarray(unilm_dense_mask(tt, jnp.ones_like(key_mask)))[:, 0]
  for b in range(B):
    s, n = SRC[b], TOTAL[b]
    assert dense[b, :s, :s].all() and not dense[b, :s, s:n].any()  # source sees source only
    for t in range(s, n):  # target t sees the source and targets <= t
      np.testing.assert_array_equal(dense[b, t, :n], np.arange(n) <= t)


@pytest.mark.parametrize("name,options", [("softmax", {}), ("dot_product", {}),
                                          ("blockwise", dict(block_q=16, block_k=8)),
                                          ("pallas", dict(block_q=16, block_k=8))])
def test_variants_build_the_unilm_mask_in_their_blocks(name, options):
  q, k, v, tt, key_mask, rope = _case()
  mask = attn.AttentionMask(key_mask, causal_ids=unilm_causal_ids(tt))
  dense = unilm_dense_mask(tt, key_mask)
  want = _explicit(q, k, v, dense, rope)
  fn = attn.get_attention(name)
  got = fn(q, k, v, mask, rope=rope, **options)
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
  w = jnp.cos(jnp.arange(D, dtype=jnp.float32))
  want_g = jax.grad(lambda *a: jnp.sum(_explicit(*a, dense, rope) * w), (0, 1, 2))(q, k, v)
  got_g = jax.grad(lambda *a: jnp.sum(fn(*a, mask, rope=rope, **options) * w), (0, 1, 2))(q, k, v)
  for g, r, what in zip(got_g, want_g, "qkv"):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5, err_msg=f"d{what}")


@pytest.mark.parametrize("name", ["blockwise", "pallas"])
def test_unilm_with_packed_segments(name):
  # Causal ids and packed segments together: both conditions hold in the tile.
  q, k, v, tt, key_mask, rope = _case(1)
  seg = jnp.asarray(np.where(np.arange(L) < 20, 1, 2)[None].repeat(B, 0))
  mask = attn.AttentionMask(key_mask, seg, causal_ids=unilm_causal_ids(tt))
  want = _explicit(q, k, v, mask.dense(), rope)
  got = attn.get_attention(name)(q, k, v, mask, rope=rope, block_q=16, block_k=8)
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)


def test_query_subset_takes_query_causal_ids():
  q, k, v, tt, key_mask, rope = _case(2)
  ids = unilm_causal_ids(tt)
  pos = jnp.asarray([[3, 20, 30], [0, 18, 28], [29, 31, 33]])
  take = lambda x: jnp.take_along_axis(x, pos.reshape(pos.shape + (1,) * (x.ndim - 2)), 1)
  full = attn.get_attention("softmax")(q, k, v, attn.AttentionMask(key_mask, causal_ids=ids), rope=rope)
  sub = attn.AttentionMask(key_mask, causal_ids=ids, query_causal_ids=take(ids))
  got = attn.get_attention("softmax")(take(q), k, v, sub, rope=rope, query_rope=tuple(take(t) for t in rope))
  np.testing.assert_allclose(got, take(full), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("platform, target", [("gpu", "__gpu$xla.gpu.triton"), ("tpu", "tpu_custom_call")])
def test_pallas_unilm_kernels_lower_for_triton_and_mosaic(platform, target, monkeypatch):
  """The causal-id refs lower for the devices too (lowering only: no accelerator here), as test_attention's."""
  from jax import export
  if platform == "tpu":
    from jax._src.pallas.mosaic import tpu_info
    monkeypatch.setitem(tpu_info.registry, jax.devices()[0].device_kind,
                        lambda: tpu_info.get_tpu_info_for_chip(tpu_info.ChipVersion.TPU_V5E, 1))
  n = 256
  x = jax.ShapeDtypeStruct((1, n, 2, 64), jnp.bfloat16)

  def fwd_bwd(q, k, v, key_mask, types):
    mask = attn.AttentionMask(key_mask, causal_ids=unilm_causal_ids(types))
    rope = rope_lib.rope_angles(rope_lib.default_positions(1, n), 64)
    fn = lambda q, k, v: attn.get_attention("pallas")(q, k, v, mask, rope=rope, platform=platform, interpret=False)
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(out)

  masks = (jax.ShapeDtypeStruct((1, n), jnp.bool_), jax.ShapeDtypeStruct((1, n), jnp.int32))
  exported = export.export(jax.jit(fwd_bwd), platforms=["cuda" if platform == "gpu" else "tpu"],
                           disabled_checks=[export.DisabledSafetyCheck.custom_call(target)])(x, x, x, *masks)
  assert exported.mlir_module().count(f"@{target}" if platform == "gpu" else target) >= 3


def test_model_refuses_unilm_where_the_variant_would_ignore_it():
  import roformer_jax as rj
  from roformer_jax.model import RoFormerModel
  cfg = rj.get_config("roformer_v2_small", vocab_size=20, hidden_size=16, num_layers=1, num_heads=2,
                      intermediate_size=16, attention="linear")
  ids = jnp.ones((1, 6), jnp.int32)
  with pytest.raises(ValueError, match=r"attention='linear' cannot take a UniLM / causal mask"):
    RoFormerModel(cfg).init(jax.random.PRNGKey(0), ids, jnp.zeros_like(ids), unilm=True)
