"""The one table between our parameter tree and the PyTorch ports' tensor names.

Both the `roformer` package (v1 and v2) and `transformers` (v1) use these names
(roformer-spec.md §5.2). Import uses it one way, export the other.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from roformer_jax.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Entry:
  torch_name: str          # without the "roformer." prefix for encoder tensors
  path: tuple[str, ...]    # our params path
  kind: str                # how to convert: see to_ours / to_torch


def entries(cfg: ModelConfig, with_mlm: bool) -> list[Entry]:
  """Every tensor the model has, in a stable order."""
  out: list[Entry] = []
  bias = cfg.use_bias

  def add(torch_name, path, kind):
    out.append(Entry(torch_name, tuple(path), kind))

  def norm(torch_prefix, path):
    if cfg.version == "v1":  # v2's RMS norm has no parameters
      add(f"{torch_prefix}.weight", path + ["scale"], "vector")
      add(f"{torch_prefix}.bias", path + ["bias"], "vector")

  def dense(torch_prefix, path, kind, has_bias):
    add(f"{torch_prefix}.weight", path + ["kernel"], kind)
    if has_bias:
      add(f"{torch_prefix}.bias", path + ["bias"], "heads_bias" if kind == "qkv" else "vector")

  enc = ["roformer"]
  add("roformer.embeddings.word_embeddings.weight", enc + ["embeddings", "word_embeddings"], "embedding")
  add("roformer.embeddings.token_type_embeddings.weight", enc + ["embeddings", "token_type_embeddings"], "embedding")
  norm("roformer.embeddings.LayerNorm", enc + ["embeddings", "norm"])
  if cfg.embed_size != cfg.hidden_size:
    dense("roformer.embeddings_project", enc + ["embeddings", "project"], "linear", True)
  for i in range(cfg.num_layers):
    t, p = f"roformer.encoder.layer.{i}", enc + [f"layer_{i}"]
    for name in ("query", "key", "value"):
      dense(f"{t}.attention.self.{name}", p + ["attention", name], "qkv", bias)
    dense(f"{t}.attention.output.dense", p + ["attention", "output"], "attn_out", bias)
    norm(f"{t}.attention.output.LayerNorm", p + ["attention_norm"])
    dense(f"{t}.intermediate.dense", p + ["ffn", "intermediate"], "linear", bias)
    dense(f"{t}.output.dense", p + ["ffn", "output"], "linear", bias)
    norm(f"{t}.output.LayerNorm", p + ["ffn_norm"])
  if with_mlm and cfg.version == "v1":
    dense("cls.predictions.transform.dense", ["mlm", "transform"], "linear", True)
    norm("cls.predictions.transform.LayerNorm", ["mlm", "norm"])
    add("cls.predictions.bias", ["mlm", "bias"], "vector")
  return out


# Tensors the ports save that carry no weights of ours: the sinusoidal table (not a weight), and
# the tied decoder (checked against the word embeddings, never loaded twice).
IGNORED = ("roformer.encoder.embed_positions.weight",)
TIED_DECODER = "cls.predictions.decoder.weight"


def to_ours(kind: str, value: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """PyTorch layout -> ours. torch Linear.weight is [out, in]; our kernels are [in, ...out]."""
  h, d = cfg.num_heads, cfg.head_size
  if kind == "qkv":
    return value.T.reshape(value.shape[1], h, d)
  if kind == "heads_bias":
    return value.reshape(h, d)
  if kind == "attn_out":
    return value.T.reshape(h, d, value.shape[0])
  if kind == "linear":
    return value.T
  return value  # embedding, vector


def to_torch(kind: str, value: np.ndarray) -> np.ndarray:
  """Ours -> PyTorch layout (the inverse of to_ours)."""
  if kind == "qkv":
    return value.reshape(value.shape[0], -1).T
  if kind == "heads_bias":
    return value.reshape(-1)
  if kind == "attn_out":
    return value.reshape(-1, value.shape[-1]).T
  if kind == "linear":
    return value.T
  return value


def torch_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of one of our parameters of `shape`."""
  return to_torch(kind, np.empty(shape, np.int8)).shape
