"""Attention variants (`softmax` itself included) against the einsum reference: forward, gradients, padding, packing, dropout,
O(n) memory, and the Pallas kernel's lowering to Triton and Mosaic. Small shapes; Pallas runs interpreted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from roformer_jax import attention as attn
from roformer_jax import rope as rope_lib
from roformer_jax.attention import blockwise
from roformer_jax.attention.softmax import reference_attention

B, L, H, D = 2, 37, 2, 16  # L deliberately not a block multiple


def _inputs(seed=0, dtype=jnp.float32):
  rng = np.random.RandomState(seed)
  q, k, v = (jnp.asarray(rng.randn(B, L, H, D), dtype) for _ in range(3))
  key_mask = jnp.asarray(np.arange(L)[None] < np.array([[L], [23]]))
  rope = rope_lib.rope_angles(rope_lib.default_positions(B, L), D)
  return q, k, v, key_mask, rope


def _masks(key_mask):
  # Packed: two documents in row 0; row 1 has one document then padding with its own id 0, so its
  # padded queries see no key at all (the fully masked rows every variant must handle like softmax).
  seg = np.where(np.arange(L) < 15, 1, 2)[None].repeat(B, 0)
  seg[1, 23:] = 0
  return {"padding": attn.AttentionMask(key_mask), "packed": attn.AttentionMask(key_mask, jnp.asarray(seg))}


def _loss(name, mask, rope, **options):
  weights = jnp.cos(jnp.arange(D, dtype=jnp.float32))  # a non-uniform cotangent
  fn = reference_attention if name == "reference" else attn.get_attention(name)
  return lambda q, k, v: jnp.sum(fn(q, k, v, mask, rope=rope, **options).astype(jnp.float32) * weights)


EXACT = {
    "softmax": {},  # the default: the reference's maths with a hand-written backward
    "dot_product": {},
    "blockwise": dict(block_q=16, block_k=8),
    "pallas": dict(block_q=16, block_k=8),  # interpret=True by default on CPU
}


@pytest.mark.parametrize("masking", ["padding", "packed"])
@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_variants_match_the_reference(name, masking):
  q, k, v, key_mask, rope = _inputs()
  mask = _masks(key_mask)[masking]
  want = reference_attention(q, k, v, mask, rope=rope)
  got = attn.get_attention(name)(q, k, v, mask, rope=rope, **EXACT[name])
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
  want_grads = jax.grad(_loss("reference", mask, rope), (0, 1, 2))(q, k, v)
  grads = jax.grad(_loss(name, mask, rope, **EXACT[name]), (0, 1, 2))(q, k, v)
  for g, w, what in zip(grads, want_grads, "qkv"):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5, err_msg=f"d{what}")


def test_splash_matches_softmax_on_whole_blocks():
  """JAX's TPU splash kernel, interpreted; it needs L to be a multiple of its block (here 128)."""
  rng = np.random.RandomState(4)
  n = 128
  q, k, v = (jnp.asarray(rng.randn(B, n, H, 32), jnp.float32) for _ in range(3))
  key_mask = jnp.asarray(np.arange(n)[None] < np.array([[n], [90]]))
  seg = np.where(np.arange(n) < 50, 1, 2)[None].repeat(B, 0)
  seg[1, 90:] = 0  # padded queries of row 1 see no key
  mask = attn.AttentionMask(key_mask, jnp.asarray(seg))
  rope = rope_lib.rope_angles(rope_lib.default_positions(B, n), 32)
  loss = lambda name, **o: (lambda q, k, v: jnp.sum(attn.get_attention(name)(q, k, v, mask, rope=rope, **o) ** 2))
  want, want_grads = jax.value_and_grad(loss("softmax"), (0, 1, 2))(q, k, v)
  got, grads = jax.value_and_grad(loss("splash", block=128), (0, 1, 2))(q, k, v)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-5)
  with pytest.raises(ValueError, match=r"sequence length 37 must be a multiple of attention_options block=16"):
    attn.get_attention("splash")(*_inputs()[:3], attn.AttentionMask(_inputs()[3]), block=16)


def test_softmax_dropout_no_rope_and_bfloat16_match_the_reference():
  """The hand-written backward against autodiff of the reference: the same Bernoulli draw, no RoPE, bf16."""
  q, k, v, key_mask, rope = _inputs(5)
  mask = _masks(key_mask)["packed"]
  for options in (dict(dropout_rate=0.3, dropout_rng=jax.random.PRNGKey(7), deterministic=False), dict(rope=None)):
    options = {"rope": rope, **options}
    r = options.pop("rope")
    want, want_grads = jax.value_and_grad(_loss("reference", mask, r, **options), (0, 1, 2))(q, k, v)
    got, grads = jax.value_and_grad(_loss("softmax", mask, r, **options), (0, 1, 2))(q, k, v)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(grads, want_grads):
      np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
  qb, kb, vb = (t.astype(jnp.bfloat16) for t in (q, k, v))
  got = attn.get_attention("softmax")(qb, kb, vb, mask, rope=rope)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got, reference_attention(qb, kb, vb, mask, rope=rope))
  grad = lambda fn: jax.grad(lambda q: jnp.sum(fn(q, kb, vb, mask, rope=rope).astype(jnp.float32)))(qb)
  g = grad(attn.get_attention("softmax"))
  assert g.dtype == jnp.bfloat16
  np.testing.assert_allclose(g.astype(jnp.float32), grad(reference_attention).astype(jnp.float32), atol=2e-2)


def test_blockwise_bfloat16_and_no_rope():
  q, k, v, key_mask, rope = _inputs(1, jnp.bfloat16)
  mask = _masks(key_mask)["packed"]
  for r in (rope, None):
    want = reference_attention(q, k, v, mask, rope=r).astype(jnp.float32)
    got = attn.get_attention("blockwise")(q, k, v, mask, rope=r, block_q=8, block_k=16)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(jnp.float32), want, atol=3e-2)


def _dense_with_hash_dropout(q, k, v, mask, rope, seed, rate):
  """The softmax reference with blockwise's counter-hash dropout mask materialised in full."""
  q, k = rope_lib.apply_rope(q, *rope), rope_lib.apply_rope(k, *rope)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D)
  probs = jax.nn.softmax(jnp.where(mask.dense(), s, jnp.finfo(jnp.float32).min), axis=-1)
  keep = blockwise.dropout_keep(seed, jnp.arange(B)[:, None, None, None], jnp.arange(H)[None, :, None, None],
                                jnp.arange(L)[:, None], jnp.arange(L)[None, :], rate)
  probs = jnp.where(keep, probs / (1 - rate), 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def test_dropout_is_the_same_hash_mask_in_blockwise_and_pallas():
  q, k, v, key_mask, rope = _inputs(2)
  mask = _masks(key_mask)["packed"]
  rng, rate = jax.random.PRNGKey(7), 0.3
  seed = blockwise.dropout_seed(rng)[0]
  weights = jnp.cos(jnp.arange(D, dtype=jnp.float32))
  ref = lambda q, k, v: jnp.sum(_dense_with_hash_dropout(q, k, v, mask, rope, seed, rate) * weights)
  want, want_grads = jax.value_and_grad(ref, (0, 1, 2))(q, k, v)
  for name in ("blockwise", "pallas"):
    loss = _loss(name, mask, rope, dropout_rate=rate, dropout_rng=rng, deterministic=False, block_q=16, block_k=8)
    got, grads = jax.value_and_grad(loss, (0, 1, 2))(q, k, v)
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=name)
    for g, w in zip(grads, want_grads):
      np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5, err_msg=name)
  keep = blockwise.dropout_keep(seed, 0, 0, jnp.arange(512)[:, None], jnp.arange(512)[None, :], rate)
  assert abs(float(jnp.mean(keep)) - (1 - rate)) < 0.01


@pytest.mark.parametrize("block_q, block_k", [(24, 32), (32, 24)])
def test_pallas_blocks_that_do_not_divide_each_other(block_q, block_k):
  # 24 and 32: the padded length must be a multiple of both (96 here, not 64), or the last rows go uncomputed.
  rng = np.random.RandomState(6)
  n = 60
  q, k, v = (jnp.asarray(rng.randn(1, n, H, D), jnp.float32) for _ in range(3))
  mask = attn.AttentionMask(jnp.ones((1, n), bool))
  rope = rope_lib.rope_angles(rope_lib.default_positions(1, n), D)
  options = dict(block_q=block_q, block_k=block_k)
  want = reference_attention(q, k, v, mask, rope=rope)
  np.testing.assert_allclose(attn.get_attention("pallas")(q, k, v, mask, rope=rope, **options), want, atol=2e-6,
                             rtol=1e-5)
  want_grads = jax.grad(_loss("reference", mask, rope), (0, 1, 2))(q, k, v)
  for g, w in zip(jax.grad(_loss("pallas", mask, rope, **options), (0, 1, 2))(q, k, v), want_grads):
    np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


def test_pallas_takes_a_mask_shared_by_the_batch_at_full_batch():
  # The kernels index every mask operand by the grid's batch program id; Triton does not bounds-check that
  # index, so a [1, L] key mask or ids (one mask for every row) must reach pallas_call as [B, L].
  q, k, v, key_mask, rope = _inputs()
  seg = jnp.asarray(np.where(np.arange(L) < 15, 1, 2))[None]
  shared = attn.AttentionMask(key_mask[1:], seg, causal_ids=seg)
  rows = attn.AttentionMask(*(jnp.broadcast_to(t, (B, L)) for t in (key_mask[1:], seg)),
                            causal_ids=jnp.broadcast_to(seg, (B, L)))
  fn = lambda q, k, v, m: attn.get_attention("pallas")(q, k, v, m, rope=rope, **EXACT["pallas"])
  np.testing.assert_allclose(fn(q, k, v, shared), reference_attention(q, k, v, rows, rope=rope), atol=2e-6, rtol=1e-5)
  jaxpr = jax.make_jaxpr(lambda q, k, v: jax.vjp(lambda *a: fn(*a, shared), q, k, v)[1](q))(q, k, v)

  def calls(j):
    for e in j.eqns:
      yield from [e] if e.primitive.name == "pallas_call" else ()
      for sub in jax.extend.core.jaxprs_in_params(e.params):
        yield from calls(sub)

  found = list(calls(jaxpr.jaxpr))
  assert len(found) == 3  # fwd, dkv, dq
  for call in found:
    for x in call.invars:
      assert x.aval.ndim < 2 or x.aval.shape[0] == B, x.aval


def test_blockwise_temporary_memory_is_linear_in_length():
  def temp_bytes(name, n, **options):
    x = jax.ShapeDtypeStruct((1, n, 4, 64), jnp.float32)
    mask = attn.AttentionMask(jnp.ones((1, n), bool))
    loss = lambda q, k, v: jnp.sum(attn.get_attention(name)(q, k, v, mask, rope=None, **options))
    compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  blocks = dict(block_q=128, block_k=128)
  assert temp_bytes("blockwise", 4096, **blocks) / temp_bytes("blockwise", 1024, **blocks) < 5.0
  assert temp_bytes("softmax", 4096) / temp_bytes("softmax", 1024) > 12.0


def test_linear_attention_equals_its_quadratic_form():
  q, k, v, key_mask, rope = _inputs(3)
  for masking, mask in _masks(key_mask).items():
    phi_q, phi_k = (np.asarray(jax.nn.elu(t) + 1.0, np.float64) for t in (q, k))
    rq, rk = (np.asarray(rope_lib.apply_rope(jnp.asarray(t, jnp.float32), *rope), np.float64) for t in (phi_q, phi_k))
    visible = np.asarray(mask.dense()[:, 0], np.float64)  # [B, Lq, Lk]
    num = np.einsum("bqhd,bkhd->bhqk", rq, rk) * visible[:, None]
    den = np.einsum("bqhd,bkhd->bhqk", phi_q, phi_k) * visible[:, None]
    want = np.einsum("bhqk,bkhd->bqhd", num, np.asarray(v, np.float64)) / (den.sum(-1).transpose(0, 2, 1)[..., None]
                                                                         + 1e-6)
    got = attn.get_attention("linear")(q, k, v, mask, rope=rope)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=masking)
  # Segment ids outside [0, max_segments) are loud, not silently dropped.
  bad = attn.AttentionMask(key_mask, jnp.full((B, L), 3))
  assert np.isnan(attn.get_attention("linear")(q, k, v, bad, rope=rope, max_segments=2)).all()


def test_option_errors_name_the_key():
  q, k, v, key_mask, rope = _inputs()
  mask = attn.AttentionMask(key_mask)
  with pytest.raises(ValueError, match=r"attention_options block_q=0"):
    attn.get_attention("blockwise")(q, k, v, mask, block_q=0)
  with pytest.raises(ValueError, match=r"implementation='flash'"):
    attn.get_attention("dot_product")(q, k, v, mask, implementation="flash")
  with pytest.raises(ValueError, match=r"attention='dot_product' has no attention dropout"):
    attn.get_attention("dot_product")(q, k, v, mask, dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0),
                                      deterministic=False)
  with pytest.raises(TypeError):
    attn.get_attention("softmax")(q, k, v, mask, block_q=8)  # options belong to their variant


@pytest.mark.parametrize("platform, target", [("gpu", "__gpu$xla.gpu.triton"), ("tpu", "tpu_custom_call")])
def test_pallas_kernel_lowers_for_triton_and_mosaic(platform, target, monkeypatch):
  """Lowering (not compiling: no accelerator here) the forward and both backward kernels for the device."""
  from jax import export
  if platform == "tpu":
    # Mosaic's lowering asks the default device for TPU generation facts; pretend to be a v5e.
    from jax._src.pallas.mosaic import tpu_info
    monkeypatch.setitem(tpu_info.registry, jax.devices()[0].device_kind,
                        lambda: tpu_info.get_tpu_info_for_chip(tpu_info.ChipVersion.TPU_V5E, 1))
  n = 256
  x = jax.ShapeDtypeStruct((1, n, 2, 64), jnp.bfloat16)

  def fwd_bwd(q, k, v, key_mask, segment_ids):
    mask = attn.AttentionMask(key_mask, segment_ids)
    rope = rope_lib.rope_angles(rope_lib.default_positions(1, n), 64)
    fn = lambda q, k, v: attn.get_attention("pallas")(q, k, v, mask, rope=rope, platform=platform, interpret=False,
                                                      dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0),
                                                      deterministic=False)
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(out)

  masks = (jax.ShapeDtypeStruct((1, n), jnp.bool_), jax.ShapeDtypeStruct((1, n), jnp.int32))
  exported = export.export(jax.jit(fwd_bwd), platforms=["cuda" if platform == "gpu" else "tpu"],
                           disabled_checks=[export.DisabledSafetyCheck.custom_call(target)])(x, x, x, *masks)
  text = exported.mlir_module()
  assert text.count(f"@{target}" if platform == "gpu" else target) >= 3  # fwd, dkv, dq


@pytest.mark.parametrize("name", sorted(n for n in attn.available() if attn.supports_query_subset(n)))
def test_query_subset_matches_all_queries_then_gather(name):
  # Queries at P of the L positions (their own RoPE tables and segment ids) give those rows of the
  # all-positions output, and the same gradients: what the encoder's pruned last layer relies on.
  q, k, v, key_mask, rope = _inputs(seed=7)
  mask = _masks(key_mask)["packed"]
  pos = jnp.asarray([[0, 3, 14, 15, 30], [1, 2, 22, 23, 36]])  # both documents, row 1's padding too
  take = lambda t: jnp.take_along_axis(t, pos.reshape(pos.shape + (1,) * (t.ndim - 2)), axis=1)
  sub_mask = mask.replace(query_segment_ids=take(mask.segment_ids))
  sub_rope = tuple(take(t) for t in rope)
  weights = jnp.cos(jnp.arange(D, dtype=jnp.float32))
  fn = attn.get_attention(name)

  def full(q, k, v):
    return jnp.sum(take(reference_attention(q, k, v, mask, rope=rope)) * weights)

  def sub(qs, k, v):
    return jnp.sum(fn(qs, k, v, sub_mask, rope=rope, query_rope=sub_rope) * weights)

  got = fn(take(q), k, v, sub_mask, rope=rope, query_rope=sub_rope)
  np.testing.assert_allclose(got, take(reference_attention(q, k, v, mask, rope=rope)), atol=2e-6, rtol=1e-5)
  dq, dk, dv = jax.grad(full, (0, 1, 2))(q, k, v)
  gq, gk, gv = jax.grad(sub, (0, 1, 2))(take(q), k, v)
  np.testing.assert_allclose(gq, take(dq), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(gk, dk, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(gv, dv, atol=1e-5, rtol=1e-5)
