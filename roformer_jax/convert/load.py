"""`from_pretrained`: (model, params) from the layouts the PyTorch ports publish.

A folder with `config.json` and `model.safetensors` or `pytorch_model.bin` (or either's sharded index).
The `roformer` package's configs (v1 and v2: `norm_type`, `use_bias`) and `transformers`
RoFormer configs (v1) are both read. Every tensor is accounted for: a missing, unexpected or
mis-shaped one raises `CheckpointError` naming it, so v2 weights can never end up silently in a
v1 model (the ports' best-known failure), nor the reverse.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import flax.linen as nn
import jax
import numpy as np

from roformer_jax.config import ConfigError, ModelConfig
from roformer_jax.convert import torch_names
from roformer_jax.model import RoFormerForMaskedLM, RoFormerModel, stack_layers


class CheckpointError(ValueError):
  """A checkpoint does not match the model its config describes; the message names the tensor."""


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------
def config_from_hf(hf: dict[str, Any], source: str = "config.json", **overrides) -> ModelConfig:
  """ModelConfig from a `roformer`-package or `transformers` RoFormer config dict."""
  def need(key):
    if key not in hf:
      raise ConfigError(f"{source}: missing key {key!r}")
    return hf[key]

  model_type = hf.get("model_type", "roformer")
  if model_type != "roformer":
    raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'roformer'")
  norm_type = hf.get("norm_type", "layer_norm")  # transformers' RoFormer has no such key: v1
  use_bias = hf.get("use_bias", True)
  version = "v1" if norm_type == "layer_norm" else "v2"
  if use_bias != (version == "v1"):
    raise ConfigError(f"{source}: use_bias={use_bias} with norm_type={norm_type!r} is neither RoFormer v1 "
                      "(layer_norm with biases) nor RoFormerV2 (RMS norm without biases)")
  act = hf.get("hidden_act", "gelu" if version == "v1" else "relu")
  expected_act = "gelu" if version == "v1" else "relu"
  if act != expected_act:
    raise ConfigError(f"{source}: hidden_act={act!r}; RoFormer {version} uses {expected_act!r}")
  hidden = need("hidden_size")
  embedding_size = hf.get("embedding_size") or hidden
  fields = dict(
      version=version,
      vocab_size=need("vocab_size"),
      hidden_size=hidden,
      num_layers=need("num_hidden_layers"),
      num_heads=need("num_attention_heads"),
      intermediate_size=need("intermediate_size"),
      type_vocab_size=hf.get("type_vocab_size", 2),
      embedding_size=None if embedding_size == hidden else embedding_size,
      hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
      norm_eps=hf.get("layer_norm_eps", 1e-12),
      rotary_value=hf.get("rotary_value", False),
      pad_token_id=hf.get("pad_token_id", 0) or 0,
  )
  fields.update(overrides)
  try:
    return ModelConfig(**fields)
  except ConfigError as e:
    raise ConfigError(f"{source}: {e}") from None


# ----------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------
def _shards(index: Path) -> list[Path]:
  """The shard files an index (`save_pretrained(max_shard_size=...)`) names, each once, checked to exist."""
  try:
    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{index}: invalid JSON at line {e.lineno}: {e.msg}") from None
  except (KeyError, TypeError):
    raise CheckpointError(f"{index}: no 'weight_map' {{tensor: shard file}}") from None
  files = sorted({index.parent / f for f in weight_map.values()})
  missing = [f.name for f in files if not f.is_file()]
  if missing:
    raise FileNotFoundError(f"{index}: shard file(s) {missing} not found in {index.parent}")
  return files


def read_torch_tensors(folder: Path) -> tuple[dict[str, np.ndarray], str]:
  """All tensors of a ports' folder as float32 numpy arrays, and the file(s) they came from."""
  single = folder / "model.safetensors"
  index = folder / "model.safetensors.index.json"
  binary = folder / "pytorch_model.bin"
  binary_index = folder / "pytorch_model.bin.index.json"
  tensors = {}
  if single.exists() or index.exists():  # safetensors first, as transformers
    from safetensors.numpy import load_file
    for f in [single] if single.exists() else _shards(index):
      tensors.update(load_file(str(f)))
    source = single.name if single.exists() else index.name
  elif binary.exists() or binary_index.exists():
    try:
      import torch
    except ImportError:
      raise CheckpointError(f"{binary}: reading pytorch_model.bin needs torch (pip install torch); "
                            "or convert the folder to model.safetensors") from None
    for f in [binary] if binary.exists() else _shards(binary_index):
      state = torch.load(f, map_location="cpu", weights_only=True)
      tensors.update({k: v.float().numpy() for k, v in state.items()})
    source = binary.name if binary.exists() else binary_index.name
  else:
    raise FileNotFoundError(f"{folder}: no weights found (looked for model.safetensors, "
                            "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)")
  return {k: np.asarray(v, np.float32) for k, v in tensors.items()}, source


def _normalise_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  # A bare RoFormerModel saves its tensors without the "roformer." prefix.
  if any(k.startswith("roformer.") for k in tensors):
    return tensors
  return {(k if k.startswith("cls.") else f"roformer.{k}"): v for k, v in tensors.items()}


def params_from_torch(tensors: dict[str, np.ndarray], cfg: ModelConfig, with_mlm: bool,
                      source: str = "checkpoint", ignore: Iterable[str] = ()) -> dict:
  """Our params tree from port-named tensors, checking that every tensor is accounted for."""
  tensors = _normalise_names(dict(tensors))
  # The v1 output bias is saved under one or both names (one tied tensor when the head is built).
  # The `roformer` port unties them when from_pretrained loads a checkpoint, and its forward uses
  # decoder.bias: after fine-tuning there, only that name holds the trained bias.
  alias = tensors.pop("cls.predictions.decoder.bias", None)
  if alias is not None:
    tensors["cls.predictions.bias"] = alias
  model = RoFormerForMaskedLM(cfg.replace(scan_layers=False)) if with_mlm else RoFormerModel(
      cfg.replace(scan_layers=False))
  shapes = jax.eval_shape(lambda: nn.meta.unbox(
      model.init(jax.random.PRNGKey(0), np.ones((1, 2), np.int32))["params"]))
  if not with_mlm:  # RoFormerModel's tree has no "roformer" level; entries() are written with it
    shapes = {"roformer": shapes}
  params: dict = {}
  errors = []
  for e in torch_names.entries(cfg, with_mlm):
    expected = tree_get(shapes, e.path).shape
    value = tensors.pop(e.torch_name, None)
    if value is None:
      errors.append(f"missing tensor {e.torch_name} (shape {torch_names.torch_shape(e.kind, expected)})")
      continue
    want = torch_names.torch_shape(e.kind, expected)
    if tuple(value.shape) != tuple(want):
      errors.append(f"tensor {e.torch_name} has shape {tuple(value.shape)}, the config needs {tuple(want)}")
      continue
    tree_set(params, e.path, torch_names.to_ours(e.kind, value, cfg))
  decoder = tensors.pop(torch_names.TIED_DECODER, None)
  words = params.get("roformer", {}).get("embeddings", {}).get("word_embeddings")
  if decoder is not None and words is not None:
    if decoder.shape != words.shape or not np.array_equal(decoder, words):
      errors.append(f"tensor {torch_names.TIED_DECODER} differs from the word embeddings; "
                    "RoFormer ties them and an untied decoder cannot be represented")
  for name in torch_names.IGNORED:
    tensors.pop(name, None)
  patterns = [re.compile(p) for p in ignore]
  unexpected = sorted(k for k in tensors if not any(p.search(k) for p in patterns))
  if not with_mlm:
    unexpected = [k for k in unexpected if not k.startswith("cls.")]
  errors += [f"unexpected tensor {k} {tuple(tensors[k].shape)}" for k in unexpected]
  if errors:
    hint = ""
    if any("LayerNorm" in m or ".bias" in m for m in errors):
      hint = (f"\n(config says RoFormer {cfg.version}: v1 has LayerNorm weights and biases, v2 has none; "
              "check norm_type/use_bias in config.json)")
    raise CheckpointError(f"{source}: {len(errors)} tensor(s) do not match the model:\n  " +
                          "\n  ".join(errors) + hint)
  params = params if with_mlm else params["roformer"]
  return stack_layers(params, cfg.num_layers) if cfg.scan_layers else params


def tree_get(tree: dict, path: tuple[str, ...]):
  """tree[path[0]][path[1]]..."""
  for p in path:
    tree = tree[p]
  return tree


def tree_set(tree: dict, path: tuple[str, ...], value) -> None:
  """tree[path[0]]...[path[-1]] = value, creating the dicts on the way."""
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------
def from_pretrained(path: str | os.PathLike, *, with_mlm: bool | None = None, dtype: str | None = None,
                    ignore: Iterable[str] = (), **config_overrides) -> tuple[nn.Module, dict]:
  """(model, params) from a checkpoint folder.

  Args:
    path: a folder in the PyTorch ports' layout (config.json + model.safetensors / pytorch_model.bin),
      a pretraining workdir or one of its `checkpoints/<step>` folders (orbax),
      or, when it has no config.json, a bert4keras TF release (bert_config.json + bert_model.ckpt.*;
      read with the optional tensorflow, see `roformer_jax.convert.tf_ckpt`).
    with_mlm: True returns RoFormerForMaskedLM (its head must be in the checkpoint for v1); False
      returns the bare RoFormerModel; None picks the MLM model when the checkpoint can serve it.
    dtype: compute dtype override ("float32" / "bfloat16"); params stay float32.
    ignore: regexes of tensor names that may be present and are dropped (e.g. r"pooler").
    **config_overrides: ModelConfig fields to override (dropout, attention variant, ...).
  """
  folder = Path(path).expanduser().absolute()  # orbax wants absolute paths; people type relative ones
  if not folder.is_dir():
    raise FileNotFoundError(f"{path}: not a checkpoint folder")
  from roformer_jax.convert import orbax_ckpt
  if orbax_ckpt.locate(folder):  # our pretraining workdir, or one of its checkpoint steps
    if with_mlm is False:
      model, params = orbax_ckpt.from_orbax(folder, dtype=dtype, **config_overrides)
      return RoFormerModel(model.cfg), params["roformer"]
    return orbax_ckpt.from_orbax(folder, dtype=dtype, **config_overrides)
  config_file = folder / "config.json"
  if not config_file.exists():
    from roformer_jax.convert import tf_ckpt  # lazy: the TF reader needs the optional tensorflow
    if tf_ckpt.is_tf_release(folder):  # bert4keras release: bert_config.json + bert_model.ckpt.*
      return tf_ckpt.from_tf_checkpoint(folder, with_mlm=with_mlm, dtype=dtype, ignore=ignore,
                                        **config_overrides)
    raise FileNotFoundError(f"{folder}: no config.json")
  try:
    hf = json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise ConfigError(f"{config_file}: invalid JSON at line {e.lineno}: {e.msg}") from None
  if dtype is not None:
    config_overrides["dtype"] = dtype
  cfg = config_from_hf(hf, str(config_file), **config_overrides)
  tensors, source = read_torch_tensors(folder)
  if with_mlm is None:
    names = _normalise_names(tensors)
    with_mlm = cfg.version == "v2" or any(k.startswith("cls.predictions.transform") for k in names)
  params = params_from_torch(tensors, cfg, with_mlm, source=str(folder / source), ignore=ignore)
  model = RoFormerForMaskedLM(cfg) if with_mlm else RoFormerModel(cfg)
  return model, params
