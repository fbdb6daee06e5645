"""cuDNN flash attention in training, without a GPU: the path lowers for CUDA on this CPU (jax.export with the
CUDA platform), and its padding, masking and no-key rows are exact against the reference.

The numerical check on the GPU itself is `roformer-bench exactness` (docs/BENCHMARKS.md, GPU section). Here the
wrapper around the kernel (`dot_product.cudnn_attention`) runs with a stand-in for cuDNN's kernel that enforces
the contract the kernel imposes (bf16/fp16, a query count that is a multiple of 64, an even key count, one
boolean [B, 1, Lq, Lk] mask) and computes plain softmax attention in float32.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import roformer_jax as rj
from roformer_jax import attention as attn
from roformer_jax import rope as rope_lib
from roformer_jax.attention import dot_product
from roformer_jax.attention.softmax import reference_attention
from roformer_jax.model import RoFormerForMaskedLM

CUSTOM_CALLS = ("__cudnn$fmhaScaleBiasSoftmax", "__cudnn$fmhaScaleBiasSoftmaxBackward")


@pytest.fixture
def cudnn_here(monkeypatch):
  """JAX's cuDNN attention asks the CUDA plugin for cuDNN's version at trace time; this CPU has none. Lowering
  needs only the number (9.8 here), so the query answers it; everything else is JAX's real lowering."""
  from jax._src.cudnn import fused_attention_stablehlo as fa
  monkeypatch.setattr(fa, "check_cudnn_version", lambda: 90800)
  dot_product.cudnn_available.cache_clear()
  yield
  dot_product.cudnn_available.cache_clear()


def _batch(b=2, l=96, p=15, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, 500, (b, l)).astype(np.int32)
  seg = np.where(np.arange(l) < l // 3, 1, 2)[None].repeat(b, 0).astype(np.int32)
  seg[1, l - 20:] = 0
  mask = (seg > 0).astype(np.int32)
  pos = np.sort(np.stack([rng.choice(l - 20, p, replace=False) for _ in range(b)]), 1).astype(np.int32)
  return ids, mask, seg, pos


def _export_grad(cfg, platform):
  model = RoFormerForMaskedLM(cfg)
  ids, mask, seg, pos = _batch()
  params = jax.eval_shape(lambda: rj.init_params(model, jax.random.PRNGKey(0)))

  def loss(params):
    logits = model.apply({"params": params}, ids, None, mask, segment_ids=seg, masked_positions=pos)
    return jnp.sum(logits[..., 0])

  checks = [jax.export.DisabledSafetyCheck.custom_call(n) for n in CUSTOM_CALLS]
  exp = jax.export.export(jax.jit(jax.grad(loss)), platforms=[platform], disabled_checks=checks)(params)
  return exp.mlir_module()


def test_train_step_lowers_to_cudnn_for_cuda(cudnn_here):
  cfg = rj.get_config("tiny", dtype="bfloat16", hidden_dropout=0.0, attention_dropout=0.0, num_layers=3)
  text = _export_grad(cfg, "cuda")
  calls = re.findall(r"custom_call @(__cudnn\$\w+)\(([^)]*)\)[^\n]*?: \(([^)]*)\)", text)
  fwd = [c for c in calls if c[0] == CUSTOM_CALLS[0]]
  bwd = [c for c in calls if c[0] == CUSTOM_CALLS[1]]
  assert len(fwd) == len(bwd) == 3  # every layer, forward and backward, the pruned last one included
  biases = sorted(set(re.findall(r"tensor<2x1x(\d+)x96xbf16>", text)))
  # Full layers: 96 queries padded to 128 x 96 keys (packed documents and padding as one bias shared by the
  # heads); the pruned last layer: its 15 masked rows padded to 64. (cuDNN tiles queries by 64.)
  assert biases == ["128", "64"]


def test_cpu_and_float32_never_reach_cudnn(cudnn_here):
  bf16 = rj.get_config("tiny", dtype="bfloat16", hidden_dropout=0.0, attention_dropout=0.0, num_layers=2)
  assert "__cudnn" not in _export_grad(bf16, "cpu")
  assert "__cudnn" not in _export_grad(bf16.replace(dtype="float32"), "cuda")
  assert "__cudnn" not in _export_grad(bf16.replace(attention_options=(("implementation", "xla"),)), "cuda")


def test_without_cudnn_softmax_stays_xla():
  dot_product.cudnn_available.cache_clear()
  assert not dot_product.cudnn_available()  # this CPU's JAX has no CUDA plugin
  q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
  with pytest.raises(ValueError, match="bfloat16 or float16"):
    dot_product.cudnn_attention(q.astype(jnp.float32), q, q, attn.AttentionMask(jnp.ones((1, 8), bool)))


def _contract_kernel(q, k, v, visible):
  """cuDNN's kernel as the wrapper may call it, computed in float32 by plain softmax attention."""
  b, lq, h, d = q.shape
  assert q.dtype == k.dtype == v.dtype and q.dtype in (jnp.bfloat16, jnp.float16)
  assert lq % 64 == 0 and k.shape[1] % 2 == 0, (q.shape, k.shape)
  assert visible.dtype == jnp.bool_ and visible.shape == (b, 1, lq, k.shape[1])
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * d ** -0.5
  # cuDNN adds the mask as a large negative bias (JAX's combine_bias_and_mask: -2**41 in bf16).
  p = jax.nn.softmax(s + jnp.where(visible, 0.0, -2.0 ** 41), axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v.astype(jnp.float32)).astype(q.dtype)


@pytest.mark.parametrize("kind", ["packed", "subset", "odd_padding"])
def test_cudnn_wrapper_is_exact(monkeypatch, kind):
  monkeypatch.setattr(dot_product, "_flash", _contract_kernel)
  b, l, h, d = 3, 37, 2, 64
  rng = np.random.RandomState(1)
  k, v = (jnp.asarray(rng.randn(b, l, h, d), jnp.bfloat16) for _ in range(2))
  key_mask = np.arange(l)[None] < np.array([[l], [25], [0]])  # the last row sees no key at all
  seg = None if kind == "odd_padding" else np.where(np.arange(l) < 12, 1, 2)[None].repeat(b, 0) * key_mask
  rope = rope_lib.rope_angles(rope_lib.default_positions(b, l), d)
  extra, lq = {}, l
  mask = attn.AttentionMask(jnp.asarray(key_mask), None if seg is None else jnp.asarray(seg))
  if kind == "subset":
    pos = np.sort(np.stack([rng.choice(l, 6, replace=False) for _ in range(b)]), 1)
    take = lambda t: jnp.take_along_axis(t, jnp.asarray(pos).reshape(pos.shape + (1,) * (t.ndim - 2)), axis=1)
    extra = dict(query_rope=tuple(take(t) for t in rope))
    mask = mask.replace(query_segment_ids=jnp.asarray(np.take_along_axis(seg, pos, 1)))
    lq = 6
  q = jnp.asarray(rng.randn(b, lq, h, d), jnp.bfloat16)
  w = jnp.asarray(rng.randn(b, lq, h, d), jnp.float32)

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v, mask, rope=rope, **extra).astype(jnp.float32) * w)

  up = [x.astype(jnp.float32) for x in (q, k, v)]
  with jax.default_matmul_precision("highest"):
    ref = reference_attention(*up, mask, rope=rope, **extra)
    ref_g = jax.grad(loss(reference_attention), (0, 1, 2))(*up)
  out = dot_product.cudnn_attention(q, k, v, mask, rope=rope, **extra)
  grads = jax.grad(loss(dot_product.cudnn_attention), (0, 1, 2))(q, k, v)
  rel = lambda a, r: float(jnp.linalg.norm(a.astype(jnp.float32) - r) / jnp.linalg.norm(r))
  # Every row, those that see no key included (they average every value, as the reference's finite fill gives).
  assert out.shape == ref.shape and rel(out, ref) < 1e-2
  np.testing.assert_allclose(np.asarray(out[2], np.float32), np.asarray(ref[2]), atol=2e-2)
  for g, r in zip(grads, ref_g):
    assert rel(g, r) < 1.5e-2
  assert float(jnp.abs(grads[0][2]).max()) == 0.0  # no-key rows send no gradient to their queries
