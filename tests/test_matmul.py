"""roformer_jax.matmul: the weight matmul's hand-written backward against JAX's own autodiff and a float64
reference, the materialised transposes, and the compiled form XLA:CPU's fast bf16 matmuls need."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from roformer_jax import rope
from roformer_jax.matmul import matmul, swap_minor, transpose_copy


@pytest.mark.parametrize("w_transposed", [False, True])
@pytest.mark.parametrize("x_shape", [(4, 24, 16), (1, 7, 16), (96, 16), (2, 3, 5, 16)])
def test_float32_matches_autodiff_of_the_plain_product(x_shape, w_transposed):
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(*x_shape), jnp.float32)
  w = jnp.asarray(rng.randn(*((24, 16) if w_transposed else (16, 24))) * 0.1, jnp.float32)
  ct = jnp.asarray(rng.randn(*x_shape[:-1], 24), jnp.float32)
  plain = lambda x, w: jnp.dot(x, w.T if w_transposed else w, precision="highest")
  ours = lambda x, w: matmul(x, w, w_transposed=w_transposed)
  y, vjp = jax.vjp(ours, x, w)
  y_ref, vjp_ref = jax.vjp(plain, x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for got, want in zip(vjp(ct), vjp_ref(ct)):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w_transposed", [False, True])
def test_bfloat16_accumulates_in_float32_and_returns_float32_weight_grads(w_transposed):
  """bf16 operands, float32 products: the result equals a float64 product of the bf16-rounded operands
  to float32 accuracy (a bf16-rounded gradient would be off by ~1e-3 relative)."""
  rng = np.random.RandomState(2)
  x = jnp.asarray(rng.randn(8, 64, 48), jnp.bfloat16)
  w = jnp.asarray(rng.randn(*((32, 48) if w_transposed else (48, 32))) * 0.1, jnp.float32)
  ct = jnp.asarray(rng.randn(8, 64, 32), jnp.bfloat16)
  y, vjp = jax.vjp(lambda x, w: matmul(x, w, out_dtype=jnp.float32, w_transposed=w_transposed), x, w)
  dx, dw = vjp(ct.astype(jnp.float32))
  assert y.dtype == jnp.float32 and dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
  f64 = lambda t: np.asarray(t.astype(jnp.float32), np.float64)
  wb = f64(w.astype(jnp.bfloat16))
  wk = wb.T if w_transposed else wb  # [K, N]
  xs, cs = f64(x).reshape(-1, 48), f64(ct).reshape(-1, 32)
  np.testing.assert_allclose(f64(y).reshape(-1, 32), xs @ wk, rtol=1e-5, atol=1e-5)
  want_dw = xs.T @ cs
  np.testing.assert_allclose(f64(dw), want_dw.T if w_transposed else want_dw, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(f64(dx).reshape(-1, 48), cs @ wk.T, rtol=1e-2, atol=1e-2)  # dx is bf16 by design


def test_shape_mismatch_names_both_shapes():
  with pytest.raises(ValueError, match=r"x \(2, 5\) and w \(4, 3\)"):
    matmul(jnp.ones((2, 5)), jnp.ones((4, 3)))


def test_transpose_copy_is_the_transpose_for_every_permutation():
  # bf16: the dtype that takes the split-axis copy (float32 gets the plain transpose).
  x = jnp.asarray(np.random.RandomState(3).randn(4, 6, 9, 5), jnp.bfloat16)
  want = np.asarray(x.astype(jnp.float32))
  for perm in itertools.permutations(range(4)):
    np.testing.assert_array_equal(transpose_copy(x, perm).astype(jnp.float32), want.transpose(perm))
  for shape in [(7, 3), (1, 5), (13, 2), (2, 3, 16, 8)]:  # prime and unit axes fall back to a plain transpose
    y = jnp.asarray(np.random.RandomState(4).randn(*shape), jnp.bfloat16)
    np.testing.assert_array_equal(swap_minor(y).astype(jnp.float32), np.swapaxes(np.asarray(y.astype(jnp.float32)), -1, -2))


def _dots(fn, *args):
  """(operand dtypes, whether the lhs is contracted over its minor axis) of every dot in fn's compiled HLO."""
  hlo = jax.jit(fn).lower(*args).compile().as_text()
  params = {name: (dtype, dims.count(",") + 1)
            for name, dtype, dims in re.findall(r"%?([\w.]+) = (\w+)\[([^\]]*)\]", hlo)}
  dots = re.findall(r"dot\(%?([\w.]+), %?([\w.]+)\), (?:lhs_batch_dims=\{[\d,]*\}, )?"
                    r"lhs_contracting_dims=\{(\d+)\}", hlo)
  return [((params[a][0], params[b][0]), int(c) == params[a][1] - 1) for a, b, c in dots]


def test_bfloat16_backward_keeps_every_matmul_in_bf16_with_the_minor_axis_contracted():
  """XLA:CPU multiplies bf16 fast only with the left operand contracted over its minor axis; otherwise it
  converts both operands to float32. Every dot of a bf16 FFN forward + backward must be of that form."""
  x = jnp.ones((8, 128, 384), jnp.bfloat16)
  w1, w2 = jnp.ones((384, 1536)) * 0.01, jnp.ones((1536, 384)) * 0.01

  def loss(w1, w2, x):
    return jnp.sum(matmul(jax.nn.relu(matmul(x, w1)), w2).astype(jnp.float32) ** 2)

  dots = _dots(jax.grad(loss, argnums=(0, 1, 2)), w1, w2, x)
  assert len(dots) == 6
  assert all(dtypes == ("bf16", "bf16") and minor for dtypes, minor in dots), dots


def test_float32_backward_folds_the_transposes_into_its_matmuls():
  """float32 is the other way round: XLA:CPU's float32 matmuls take a transposed operand at full speed, and a
  materialised x^T only costs (5% of the v2_small step at seq 512). No [K, tokens] copy may appear."""
  x = jnp.ones((8, 128, 384))
  w1, w2 = jnp.ones((384, 1536)) * 0.01, jnp.ones((1536, 384)) * 0.01

  def loss(w1, w2, x):
    return jnp.sum(matmul(jax.nn.relu(matmul(x, w1)), w2) ** 2)

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(w1, w2, x).compile().as_text()
  entry = hlo[hlo.index("ENTRY"):]
  assert not re.search(r"= f32\[(384|1536),1024\]", entry), entry


def test_rope_tables_are_exact_and_computed_once():
  """The identity product that materialises the tables changes no bit, and sin/cos are computed once
  however many rotations use them."""
  t = np.random.RandomState(5).randn(3, 100, 32).astype(np.float32) * np.logspace(-30, 30, 32, dtype=np.float32)
  np.testing.assert_array_equal(jax.jit(rope._materialised)(jnp.asarray(t)), t)
  pos = rope.default_positions(2, 300) * 7  # angles up to ~2100 rad

  def three_rotations(x, pos):
    s, c = rope.rope_angles(pos, 64)
    return [rope.apply_rope(x * k, s, c) for k in (1.0, 2.0, 3.0)]

  hlo = jax.jit(three_rotations).lower(jnp.ones((2, 300, 4, 64)), pos).compile().as_text()
  assert hlo.count(" sine(") == 1 and hlo.count(" cosine(") == 1


def test_bfloat16_softmax_attention_backward_keeps_its_matmuls_in_bf16_form():
  from roformer_jax.attention import AttentionMask, softmax
  b, l, h, d = 2, 64, 4, 32
  q = k = v = jnp.ones((b, l, h, d), jnp.bfloat16)
  mask = AttentionMask(jnp.ones((b, l), bool), None)
  tables = rope.rope_angles(rope.default_positions(b, l), d)

  def loss(q, k, v):
    return jnp.sum(softmax.softmax_attention(q, k, v, mask, rope=tables).astype(jnp.float32) ** 2)

  dots = _dots(jax.grad(loss, argnums=(0, 1, 2)), q, k, v)
  # 2 forward + 4 backward batched matmuls, each in the fast form.
  assert dots == [(("bf16", "bf16"), True)] * 6, dots


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_accelerators_get_the_plain_transpose_and_tables(platform):
  """The CPU workarounds are staged per platform: a TPU or GPU lowering has no split copy and no identity
  product (their compilers fold transposes into matmuls and do not duplicate sin/cos)."""
  lower = lambda f, *args: jax.jit(f).trace(*args).lower(lowering_platforms=(platform,)).as_text()
  x = jnp.ones((1024, 384), jnp.bfloat16)
  assert "x128x384" in jax.jit(swap_minor).trace(x).lower(lowering_platforms=("cpu",)).as_text()
  assert "x128x384" not in lower(swap_minor, x) and "transpose" in lower(swap_minor, x)
  positions = rope.default_positions(2, 16)
  assert "dot_general" not in lower(lambda p: rope.rope_angles(p, 64), positions)
  # The weight matmul: JAX's own backward (no custom VJP residuals); on CPU the hand-written one.
  w = jnp.ones((384, 1536))
  grad = lambda x, w: jax.grad(lambda x, w: jnp.sum(matmul(x, w).astype(jnp.float32)), argnums=(0, 1))(x, w)
  hlo_acc, hlo_cpu = lower(grad, x, w), jax.jit(grad).trace(x, w).lower(lowering_platforms=("cpu",)).as_text()
  dots = [line for line in hlo_acc.splitlines() if "dot_general" in line]
  assert len(dots) == 2 and all(line.endswith("bf16>") for line in dots), dots  # no float32-output dW
  assert "x128x384" not in hlo_acc
  assert "x128x384" in hlo_cpu  # the CPU's materialised x^T, written through the split [8, 128, 384]
