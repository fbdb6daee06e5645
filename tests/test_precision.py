"""ModelConfig.matmul_precision: one stated switch for every matmul of the model and every attention variant."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import roformer_jax as rj
from roformer_jax.bench import attention as bench_attention
from roformer_jax.config import ConfigError
from roformer_jax.model import RoFormerForMaskedLM


def test_default_resolves_by_dtype():
  assert rj.get_config("tiny", dtype="float32").precision == "highest"
  assert rj.get_config("tiny", dtype="bfloat16").precision == "default"
  assert rj.get_config("tiny", dtype="float32", matmul_precision="high").precision == "high"
  with pytest.raises(ConfigError, match="matmul_precision"):
    rj.get_config("tiny", matmul_precision="tf32")


def _dot_precisions(cfg):
  model = RoFormerForMaskedLM(cfg)
  ids = np.ones((1, 8), np.int32)
  params = rj.init_params(model, jax.random.PRNGKey(0))
  jaxpr = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, ids, masked_positions=np.zeros((1, 2), np.int32)))(
      params))
  return re.findall(r"precision=\(?(Precision\.\w+|None)", jaxpr)  # dot_general is the only op with one here


@pytest.mark.parametrize("attention", ["softmax", "dot_product", "blockwise"])
def test_every_matmul_follows_the_key(attention):
  cfg = rj.get_config("tiny", dtype="float32", attention=attention, attention_options=(
      (("implementation", "xla"),) if attention == "softmax" else ()))
  found = _dot_precisions(cfg)
  assert found and set(found) == {"Precision.HIGHEST"}, found  # float32 means float32, on GPUs and TPUs too
  found = _dot_precisions(cfg.replace(matmul_precision="default"))
  # ... except rope's two identity products (sin, cos; CPU-only branch, exact by construction).
  assert found.count("Precision.HIGHEST") == 2 and set(found) == {"Precision.DEFAULT", "Precision.HIGHEST"}, found


def test_bench_records_compile_time_refusals(monkeypatch):
  """A variant that raises while compiling (cuDNN missing, a shape refused) is a row, not the sweep's end."""
  from roformer_jax import attention as attn

  def refuses(q, k, v, mask, **kw):
    raise RuntimeError("cuDNN is not detected.")

  monkeypatch.setitem(attn._REGISTRY, "refuses", refuses)
  base = rj.config.ModelConfig(hidden_size=64, num_heads=2, intermediate_size=128, num_layers=1)
  row = bench_attention.measure("refuses", 16, "fwd", base, 1, {}, 1, 2**30, 10.0, 0.0)
  assert row["status"] == "unsupported"
  row = bench_attention.measure("softmax", 16, "fwd", base, 1, {}, 1, 2**30, 10.0, 0.0)
  assert row["status"] == "ok"
