"""The fused AVX-512 CPU attention kernel (roformer_jax/kernels/cpu_attention.cc) behind `softmax`:
that it is built and used here, that it equals the einsum reference (forward and gradients, with padding,
packed documents, rows that see no key, a query subset, and lengths and head sizes off its 12 x 32 tiles),
causal ids (UniLM, a causal LM), that its build is atomic and reports failure, and that other platforms
never see it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from roformer_jax import attention as attn
from roformer_jax import rope as rope_lib
from roformer_jax.attention import softmax
from roformer_jax.kernels import cpu_attention

_TARGET = "roformer_jax_cpu_attention"


def _case(b, lk, h, d, seed=0):
  rng = np.random.RandomState(seed)
  q, k, v = (jnp.asarray(rng.randn(b, lk, h, d), jnp.float32) for _ in range(3))
  lengths = np.array([lk] + [max(1, lk - 29 * i) for i in range(1, b)])
  key_mask = jnp.asarray(np.arange(lk)[None] < lengths[:, None])
  seg = np.where(np.arange(lk) < lk // 3, 1, 2)[None].repeat(b, 0)
  seg[-1, lengths[-1]:] = 7  # padded queries with an id no visible key has: rows that see no key
  rope = rope_lib.rope_angles(rope_lib.default_positions(b, lk), d)
  return q, k, v, attn.AttentionMask(key_mask, jnp.asarray(seg, jnp.int32)), rope


def _value_and_grads(fn, q, k, v):
  w = jnp.cos(jnp.arange(q.shape[-1] * q.shape[-2], dtype=jnp.float32)).reshape(q.shape[-2:])
  return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(fn(q, k, v) * w), (0, 1, 2)))(q, k, v)


def test_the_kernel_is_built_and_used_on_this_cpu():
  # CI runs on AVX-512 machines: the fast path must not silently fall back there.
  assert cpu_attention.available() == cpu_attention._cpu_has_avx512()
  q, k, v, mask, rope = _case(2, 40, 2, 64)
  hlo = lambda impl: jax.jit(jax.grad(lambda q: jnp.sum(softmax.softmax_attention(
      q, k, v, mask, rope=rope, implementation=impl)))).lower(q).compile().as_text()
  assert (_TARGET in hlo("auto")) == cpu_attention.available()
  assert _TARGET not in hlo("xla")
  # Not for dropout or bf16: those keep the XLA path.
  bf = lambda x: x.astype(jnp.bfloat16)
  text = jax.jit(lambda q: softmax.softmax_attention(bf(q), bf(k), bf(v), mask, rope=rope)).lower(q).as_text()
  assert _TARGET not in text
  text = jax.jit(lambda q: softmax.softmax_attention(q, k, v, mask, rope=rope, dropout_rate=0.1,
                                                     dropout_rng=jax.random.PRNGKey(0),
                                                     deterministic=False)).lower(q).as_text()
  assert _TARGET not in text
  with pytest.raises(ValueError, match="implementation must be 'auto' or 'xla'"):
    softmax.softmax_attention(q, k, v, mask, rope=rope, implementation="fast")


@pytest.mark.parametrize("b, lk, h, d", [(2, 130, 3, 64), (3, 37, 2, 16), (1, 200, 1, 96), (2, 64, 2, 32)])
def test_kernel_matches_the_reference(b, lk, h, d):
  q, k, v, mask, rope = _case(b, lk, h, d)
  want, want_g = _value_and_grads(lambda q, k, v: softmax.reference_attention(q, k, v, mask, rope=rope), q, k, v)
  for packed in (True, False):
    m = mask if packed else attn.AttentionMask(mask.key_mask)
    if not packed:
      want, want_g = _value_and_grads(lambda q, k, v: softmax.reference_attention(q, k, v, m, rope=rope), q, k, v)
    got, g = _value_and_grads(lambda q, k, v: softmax.softmax_attention(q, k, v, m, rope=rope), q, k, v)
    np.testing.assert_allclose(got, want, rtol=2e-5)
    for x, y, what in zip(g, want_g, "qkv"):
      np.testing.assert_allclose(x, y, atol=2e-5 * float(jnp.max(jnp.abs(y))), err_msg=f"d{what}, packed={packed}")
  # No RoPE at all.
  want, want_g = _value_and_grads(lambda q, k, v: softmax.reference_attention(q, k, v, mask), q, k, v)
  got, g = _value_and_grads(lambda q, k, v: softmax.softmax_attention(q, k, v, mask), q, k, v)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  for x, y in zip(g, want_g):
    np.testing.assert_allclose(x, y, atol=2e-5 * float(jnp.max(jnp.abs(y))))


def test_kernel_with_a_query_subset():
  # The encoder's last layer: queries at P of the L positions (Lq != Lk), with their own rope and ids.
  q, k, v, mask, rope = _case(2, 150, 3, 64)
  pos = jnp.asarray(np.random.RandomState(1).choice(150, size=(2, 23)))
  take = lambda t: jnp.take_along_axis(t, pos.reshape(pos.shape + (1,) * (t.ndim - 2)), axis=1)
  sub = mask.replace(query_segment_ids=take(mask.segment_ids))
  qrope = tuple(take(t) for t in rope)
  qs = take(q)
  ref = lambda q, k, v: softmax.reference_attention(q, k, v, sub, rope=rope, query_rope=qrope)
  fast = lambda q, k, v: softmax.softmax_attention(q, k, v, sub, rope=rope, query_rope=qrope)
  want, want_g = _value_and_grads(ref, qs, k, v)
  got, g = _value_and_grads(fast, qs, k, v)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  for x, y in zip(g, want_g):
    np.testing.assert_allclose(x, y, atol=2e-5 * float(jnp.max(jnp.abs(y))))


def _uses_kernel(fn, q, k, v) -> bool:
  return _TARGET in jax.jit(jax.grad(lambda q: jnp.sum(fn(q, k, v)))).lower(q).compile().as_text()


@pytest.mark.parametrize("b, lk, h, d", [(2, 130, 3, 64), (3, 37, 2, 16)])
def test_kernel_with_causal_ids_matches_the_reference(b, lk, h, d):
  """UniLM's seq2seq mask (cumsum of the token types, bert4keras's `application='unilm'`) and a causal LM
  (0..L-1) as causal ids: the kernel compares them with <= and equals the reference, padding included, over
  all queries and over a query subset with its own ids."""
  q, k, v, mask, rope = _case(b, lk, h, d)
  types = (np.arange(lk)[None] >= np.array([lk // 2 + 3 * i for i in range(b)])[:, None]).astype(np.int32)
  for ids in (np.cumsum(types, axis=1), np.broadcast_to(np.arange(lk), (b, lk))):
    m = attn.AttentionMask(mask.key_mask, causal_ids=jnp.asarray(ids, jnp.int32))
    fast = lambda q, k, v: softmax.softmax_attention(q, k, v, m, rope=rope)
    assert _uses_kernel(fast, q, k, v)
    want, want_g = _value_and_grads(lambda q, k, v: softmax.reference_attention(q, k, v, m, rope=rope), q, k, v)
    got, g = _value_and_grads(fast, q, k, v)
    np.testing.assert_allclose(got, want, rtol=2e-5)
    for x, y, what in zip(g, want_g, "qkv"):
      np.testing.assert_allclose(x, y, atol=2e-5 * float(jnp.max(jnp.abs(y))), err_msg=f"d{what}")
    pos = jnp.asarray(np.random.RandomState(2).choice(lk, size=(b, 9)))
    take = lambda t: jnp.take_along_axis(t, pos.reshape(pos.shape + (1,) * (t.ndim - 2)), axis=1)
    sub = m.replace(query_causal_ids=take(m.causal_ids))
    qrope = tuple(take(t) for t in rope)
    want, want_g = _value_and_grads(
        lambda q, k, v: softmax.reference_attention(q, k, v, sub, rope=rope, query_rope=qrope), take(q), k, v)
    got, g = _value_and_grads(
        lambda q, k, v: softmax.softmax_attention(q, k, v, sub, rope=rope, query_rope=qrope), take(q), k, v)
    np.testing.assert_allclose(got, want, rtol=2e-5)
    for x, y in zip(g, want_g):
      np.testing.assert_allclose(x, y, atol=2e-5 * float(jnp.max(jnp.abs(y))))


def test_segments_and_causal_ids_together_take_the_xla_path():
  q, k, v, mask, rope = _case(2, 40, 2, 16)
  both = mask.replace(causal_ids=jnp.broadcast_to(jnp.arange(40, dtype=jnp.int32), (2, 40)))
  fast = lambda q, k, v: softmax.softmax_attention(q, k, v, both, rope=rope)
  assert not _uses_kernel(fast, q, k, v)
  np.testing.assert_allclose(fast(q, k, v), softmax.reference_attention(q, k, v, both, rope=rope), rtol=2e-5, atol=1e-6)


def test_kernel_under_vmap():
  # A leading vmapped axis (per-example gradients, ensembles) runs the kernel once per element.
  q, k, v, mask, rope = _case(2, 40, 2, 64)
  stack = lambda x: jnp.stack([x, 0.5 * x])
  f = lambda fn: jax.vmap(lambda q, k, v: fn(q, k, v, mask, rope=rope))(stack(q), stack(k), stack(v))
  np.testing.assert_allclose(f(softmax.softmax_attention), f(softmax.reference_attention), rtol=2e-5, atol=1e-6)


def test_rows_that_see_no_key_are_uniform_and_get_no_gradient():
  q, k, v, mask, rope = _case(2, 70, 2, 64)
  out = softmax.softmax_attention(q, k, v, mask, rope=rope)
  blind = np.asarray(mask.key_mask[-1]) == 0  # padded queries of the last row (id 7): no visible key
  np.testing.assert_allclose(np.asarray(out)[-1, blind], np.broadcast_to(np.asarray(v[-1]).mean(0), out[-1, blind].shape),
                             rtol=1e-5, atol=1e-6)
  dq = jax.grad(lambda q: jnp.sum(softmax.softmax_attention(q, k, v, mask, rope=rope) ** 2))(q)
  assert np.all(np.asarray(dq)[-1, blind] == 0)


def test_build_is_atomic_and_failure_names_the_source(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.setenv("CXX", "false")  # a compiler that always fails
  with pytest.raises(RuntimeError, match=r"building .*cpu_attention\.cc failed"):
    cpu_attention.build()
  assert not list((tmp_path / "roformer_jax" / "kernels").iterdir())  # no half-written library left
  monkeypatch.delenv("CXX")
  path = cpu_attention.build()
  assert path.parent == tmp_path / "roformer_jax" / "kernels" and path.stat().st_size > 0
  assert cpu_attention.build() == path  # cached


def test_other_platforms_never_see_the_kernel():
  # Lowered for TPU from this CPU host, the same program takes the XLA path (lax.platform_dependent).
  q, k, v, mask, rope = _case(2, 64, 2, 64)
  f = jax.jit(jax.grad(lambda q: jnp.sum(softmax.softmax_attention(q, k, v, mask, rope=rope))))
  text = f.trace(q).lower(lowering_platforms=("tpu",)).as_text()
  assert _TARGET not in text
  assert _TARGET in f.trace(q).lower(lowering_platforms=("cpu",)).as_text() or not cpu_attention.available()


_SHARDED = r"""
import re, jax, jax.numpy as jnp, flax.linen as nn
from roformer_jax import attention as attn, rope as rope_lib
from roformer_jax.attention import softmax as sm
from roformer_jax.train import sharding
B, L, H, D = 8, 48, 4, 64
q, k, v = (jax.random.normal(key, (B, L, H, D)) for key in jax.random.split(jax.random.PRNGKey(0), 3))
mask = attn.AttentionMask(jnp.arange(L)[None] < jnp.arange(L - 8, L)[:, None], jnp.where(jnp.arange(L) < 20, 1, 2) * jnp.ones((B, 1), jnp.int32))
rope = rope_lib.rope_angles(rope_lib.default_positions(B, L), D)
for shape in [(8, 1, 1), (2, 2, 2), (1, 4, 2)]:
  mesh = sharding.make_mesh(*shape)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    spec = sharding.logical_to_sharding(nn.logical_to_mesh_axes(("batch", "length", "heads", "kv")), mesh)
    out = {}
    for impl in ("xla", "auto"):
      f = jax.jit(jax.grad(lambda q, k, v: jnp.sum(jnp.sin(sm.softmax_attention(q, k, v, mask, rope=rope, implementation=impl))), (0, 1, 2)), in_shardings=(spec,) * 3)
      text = f.lower(q, k, v).compile().as_text()
      out[impl] = f(q, k, v)
    assert ("roformer_jax_cpu_attention" in text) == KERNEL, shape
    assert not re.findall(r"all-gather\(", text), (shape, "the kernel's operands were gathered")
    for a, b in zip(out["xla"], out["auto"]):
      assert float(jnp.max(jnp.abs(a - b))) < 2e-5 * float(jnp.max(jnp.abs(a))), shape
print("ok")
"""


def test_sharded_kernel_runs_per_shard_without_gathering():
  # On 8 CPU devices: data, FSDP + tensor and a mix; the kernel sees its own batch and heads, no all-gather.
  import os
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  script = f"KERNEL = {cpu_attention.available()}\n" + _SHARDED
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_kernel_names_a_misshapen_operand():
  if not cpu_attention.available():
    return  # nothing to call: the XLA path has its own shape checks
  q, k, v, mask, _ = _case(2, 40, 2, 64)
  seg = mask.segment_ids
  with pytest.raises(Exception, match="cpu_attention: v has the wrong shape"):
    jax.block_until_ready(cpu_attention.forward(q, k, v[:, :30], mask.key_mask, seg, seg))


def test_a_mask_shared_by_the_batch_is_broadcast_for_the_kernel():
  # A [1, L] key mask or ids (one mask for every row) broadcast in the reference; the kernel reads [B, L] and
  # read past them. The same values as the per-row masks, and a misshapen one is refused by name.
  q, k, v, mask, rope = _case(3, 40, 2, 16)
  shared = attn.AttentionMask(mask.key_mask[1:2], mask.segment_ids[1:2])
  rows = attn.AttentionMask(*(jnp.broadcast_to(t, (3, 40)) for t in (shared.key_mask, shared.segment_ids)))
  want, want_g = _value_and_grads(lambda q, k, v: softmax.reference_attention(q, k, v, rows, rope=rope), q, k, v)
  got, g = _value_and_grads(lambda q, k, v: softmax.softmax_attention(q, k, v, shared, rope=rope), q, k, v)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  for x, y in zip(g, want_g):
    np.testing.assert_allclose(x, y, atol=2e-5 * float(jnp.max(jnp.abs(y))))
  if cpu_attention.available():
    with pytest.raises(Exception, match="cpu_attention: key_mask has the wrong shape"):
      jax.block_until_ready(cpu_attention.forward(q, k, v, shared.key_mask, mask.segment_ids, mask.segment_ids))
