"""The extraction heads and losses against bert4torch, the PyTorch reference the project names for them.

bert4torch 0.6.2 (`bert4torch.layers.GlobalPointer`, `EfficientGlobalPointer`, `bert4torch.losses`) runs in
this process, loaded by `bench.common.bert4torch_heads` (its own files, without the package's __init__).
Weights map one to one except in its EfficientGlobalPointer, which takes q and k from the two halves of its
projection and the start bias first, where the paper (and bert4keras, and ours) take q and k from the even
and odd columns and the end bias first: the same function up to a permutation of weights, which the test
applies. bert4torch masks padding with -inf and the lower triangle by subtracting 1e12; ours gives every
masked cell `losses.MASKED`. Values and gradients (to the inputs and every weight) are compared on the cells
both keep; tolerances are float32 round-off, 1e-5 relative + 1e-5 absolute.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from roformer_jax import heads, losses
from roformer_jax.bench.common import bert4torch_heads

_pointer, _b4t_losses = bert4torch_heads()
TorchGP, TorchEGP = _pointer.GlobalPointer, _pointer.EfficientGlobalPointer
MultilabelCategoricalCrossentropy = _b4t_losses.MultilabelCategoricalCrossentropy
SparseMultilabelCategoricalCrossentropy = _b4t_losses.SparseMultilabelCategoricalCrossentropy

TOL = dict(rtol=1e-5, atol=1e-5)
B, L, D, H, HEAD = 2, 7, 16, 3, 8
LENGTHS = (5, 7)  # the first example is padded
SWITCHES = list(itertools.product([True, False], [True, False], [True, False]))  # rope, tril, bias


def _mask() -> np.ndarray:
  return np.arange(L)[None, :] < np.asarray(LENGTHS)[:, None]


def _torch_layer(efficient: bool, rope: bool, tril: bool, bias: bool, seed: int):
  torch.manual_seed(seed)
  cls = TorchEGP if efficient else TorchGP
  layer = cls(D, H, HEAD, RoPE=rope, use_bias=bias, tril_mask=tril)
  with torch.no_grad():  # biases start at 0 in PyTorch: draw them so that they are tested
    for p in layer.parameters():
      p.normal_(0, 0.3)
  return layer


def _flax_params(t: dict, efficient: bool, bias: bool) -> dict:
  """Our parameters from a bert4torch layer's named tensors t (nn.Linear weights are [out, in])."""
  if not efficient:
    p = {"dense": {"kernel": t["dense.weight"].T.reshape(D, H, 2, HEAD)}}
    if bias:
      p["dense"]["bias"] = t["dense.bias"].reshape(H, 2, HEAD)
    return p
  # Our p[2i] is its q[i] = s[i], our p[2i+1] its k[i] = s[d+i]; our bias [h, 0] scores the end token, its
  # [h, 0] the start.
  halves = np.stack([np.arange(HEAD), HEAD + np.arange(HEAD)], -1).reshape(-1)
  ends_first = np.stack([2 * np.arange(H) + 1, 2 * np.arange(H)], -1).reshape(-1)
  q_kernel = t["q_dense.weight"].T[halves][:, ends_first]
  p = {"p_dense": {"kernel": t["p_dense.weight"].T[:, halves]},
       "q_dense": {"kernel": q_kernel.reshape(2 * HEAD, H, 2)}}
  if bias:
    p["p_dense"]["bias"] = t["p_dense.bias"][halves]
    p["q_dense"]["bias"] = t["q_dense.bias"][ends_first].reshape(H, 2)
  return p


def _ours(efficient: bool, rope: bool, tril: bool, bias: bool):
  cls = heads.EfficientGlobalPointer if efficient else heads.GlobalPointer
  return cls(heads=H, head_size=HEAD, rope=rope, tril_mask=tril, use_bias=bias)


def _labels(rng) -> np.ndarray:
  """Dense labels [B, H, L, L] on valid cells (i <= j, both real tokens), rows with none included."""
  y = np.zeros((B, H, L, L), np.float32)
  y[0, 0, 1, 2] = y[0, 2, 3, 3] = y[1, 1, 1, 6] = y[1, 1, 2, 4] = y[1, 0, 0, 0] = 1
  return y


@pytest.mark.parametrize("efficient", [False, True], ids=["GlobalPointer", "EfficientGlobalPointer"])
@pytest.mark.parametrize("rope,tril,bias", SWITCHES)
def test_heads_and_ner_loss_match_bert4torch(efficient, rope, tril, bias):
  """Scores, then the NER loss as bert4torch's examples use it (MultilabelCategoricalCrossentropy over
  [B * H, L * L]) and its gradients to the hidden states and the weights."""
  seed = 8 * efficient + 4 * rope + 2 * tril + bias
  rng = np.random.default_rng(seed)
  x = rng.normal(0, 1, (B, L, D)).astype(np.float32)
  mask = _mask()
  y = _labels(rng)
  layer = _torch_layer(efficient, rope, tril, bias, seed)
  tx = torch.tensor(x, requires_grad=True)
  t_scores = layer(tx, torch.tensor(mask.astype(np.int64)))
  t_loss = MultilabelCategoricalCrossentropy()(t_scores.reshape(B * H, -1), torch.tensor(y).reshape(B * H, -1))
  t_loss.backward()
  want = t_scores.detach().numpy()

  weights = {k: p.detach().numpy() for k, p in layer.named_parameters()}
  module, params = _ours(efficient, rope, tril, bias), _flax_params(weights, efficient, bias)
  ours = np.asarray(module.apply({"params": params}, jnp.asarray(x), jnp.asarray(mask)))
  kept = ours != losses.MASKED
  assert 0.3 * ours.size < kept.sum() < ours.size
  np.testing.assert_array_equal(kept, want > -1e9)  # the same cells masked
  np.testing.assert_allclose(ours[kept], want[kept], **TOL)

  def loss(params, x):
    return losses.global_pointer_crossentropy(jnp.asarray(y), module.apply({"params": params}, x, jnp.asarray(mask)))
  value, (g_params, g_x) = jax.value_and_grad(loss, argnums=(0, 1))(params, jnp.asarray(x))
  np.testing.assert_allclose(value, t_loss.item(), **TOL)
  np.testing.assert_allclose(g_x, tx.grad.numpy(), **TOL)
  # The weights' gradients, mapped into our layout the same way as the weights.
  want_g = _flax_params({k: p.grad.numpy() for k, p in layer.named_parameters()}, efficient, bias)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), g_params, want_g)


def test_dense_multilabel_loss_matches_bert4torch():
  """Per-row values against bert4torch's (which returns their mean), with masked cells, a badly missed
  positive, a positive-dominated row and an all-high row; and the gradients."""
  rng = np.random.default_rng(1)
  rows, c = 6, 12
  y_pred = rng.normal(0, 3, (rows, c)).astype(np.float32)
  y_true = np.zeros((rows, c), np.float32)
  y_true[1, :8] = 1
  y_pred[1, :8] = rng.uniform(20, 40, 8)
  y_true[2, [0, 4]] = y_true[3, 1] = y_true[5, 2] = 1
  y_pred[3, 1] = -30.0
  y_pred[5] = rng.uniform(20, 40, c)
  y_pred[:, -3:] = -1e12  # masked cells, no labels there
  ref = MultilabelCategoricalCrossentropy()
  want = [ref(torch.tensor(y_pred[i:i + 1]), torch.tensor(y_true[i:i + 1])).item() for i in range(rows)]
  np.testing.assert_allclose(losses.multilabel_categorical_crossentropy(y_true, y_pred), want, **TOL)
  tp = torch.tensor(y_pred, requires_grad=True)
  ref(tp, torch.tensor(y_true)).backward()
  grad = jax.grad(lambda s: losses.multilabel_categorical_crossentropy(y_true, s).mean())(jnp.asarray(y_pred))
  np.testing.assert_allclose(grad, tp.grad.numpy(), **TOL)


@pytest.mark.parametrize("mask_zero", [False, True])
def test_sparse_multilabel_loss_matches_bert4torch(mask_zero):
  """bert4torch's SparseMultilabelCategoricalCrossentropy (GPLinker's loss) per row: padding (mask_zero),
  repeats, the threshold class, and a positive-dominated row where the eps clip engages."""
  rng = np.random.default_rng(2)
  b, h, c, p = 3, 4, 20, 5
  y_pred = rng.normal(0, 3, (b, h, c)).astype(np.float32)
  y_true = rng.integers(1, c - 2, (b, h, p))
  y_true[0, 0] = [3, 5, 7, 0, 0] if mask_zero else [3, 5, 7, 7, 7]
  y_true[1, 0] = [1, 2, 3, 4, 6]
  y_pred[1, 0, [1, 2, 3, 4, 6]] = rng.uniform(25, 40, 5)  # 1 - e^{b-a} below eps: the clip
  y_true[2, 3] = c  # the threshold class
  ref = SparseMultilabelCategoricalCrossentropy(mask_zero=mask_zero)
  tp = torch.tensor(y_pred, requires_grad=True)
  want = ref(tp, torch.tensor(y_true))
  want.sum().backward()
  ours = losses.sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero)
  np.testing.assert_allclose(ours, want.detach().numpy(), **TOL)
  grad = jax.grad(lambda s: losses.sparse_multilabel_categorical_crossentropy(y_true, s, mask_zero).sum())(y_pred)
  np.testing.assert_allclose(grad, tp.grad.numpy(), **TOL)
  assert np.isclose(ours[1, 0], want[1, 0].item(), rtol=1e-5) and want[1, 0].item() > 0


def test_the_loader_serves_a_process_twice():
  """A second call (another test file in the same pytest worker) returns the same modules."""
  assert bert4torch_heads() == (_pointer, _b4t_losses)
