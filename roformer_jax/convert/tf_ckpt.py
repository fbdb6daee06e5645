"""The bert4keras TF release layout (`bert_config.json` + `bert_model.ckpt.*` + `vocab.txt`), in and out.

The releases use Google-BERT variable names (roformer-spec.md §5.1); v2 is v1 minus every
gamma, beta and bias. Names are not a second table: `tf_name` derives each one from the port
name in `torch_names.entries`, and TF kernels are the ports' `Linear.weight` transposed.
TensorFlow (`pip install roformer-jax[tf]`) is imported only when a checkpoint is read or written.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import flax.linen as nn
import jax
import numpy as np

from roformer_jax.config import ConfigError, ModelConfig
from roformer_jax.convert import torch_names
from roformer_jax.convert.load import CheckpointError, config_from_hf, tree_get, tree_set
from roformer_jax.model import RoFormerForMaskedLM, RoFormerModel, stack_layers

CONFIG_FILE = "bert_config.json"
CHECKPOINT_PREFIX = "bert_model.ckpt"

# Variables a training checkpoint may carry next to the weights (Google BERT's run_pretraining
# saves the step and Adam slots); they are not part of the model.
NON_WEIGHTS = re.compile(r"(^global_step$|/adam_[mv]$|/Adam(_\d+)?$|^bad_steps$|^loss_scale$)")

# The port kinds whose tensor is a Linear.weight: TF stores those [in, out], PyTorch [out, in].
_KERNEL_KINDS = ("qkv", "attn_out", "linear")


def tf_name(entry: torch_names.Entry) -> str:
  """The Google-BERT variable name of one tensor, derived from its port name."""
  name = entry.torch_name
  if name == "cls.predictions.bias":
    return "cls/predictions/output_bias"
  name = re.sub(r"^roformer\.", "bert.", name)
  name = re.sub(r"\.encoder\.layer\.(\d+)\.", r".encoder.layer_\1.", name)
  name = name.replace("bert.embeddings_project.", "bert.encoder.embedding_hidden_mapping_in.")
  stem, leaf = name.rsplit(".", 1)
  if entry.kind == "embedding":  # bert/embeddings/word_embeddings has no /weight leaf
    return stem.replace(".", "/")
  if stem.endswith("LayerNorm"):
    leaf = {"weight": "gamma", "bias": "beta"}[leaf]
  elif leaf == "weight":
    leaf = "kernel"
  return f"{stem}/{leaf}".replace(".", "/")


def to_tf(kind: str, value: np.ndarray) -> np.ndarray:
  """Ours -> TF layout."""
  value = torch_names.to_torch(kind, value)
  return value.T if kind in _KERNEL_KINDS else value


def from_tf(kind: str, value: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """TF layout -> ours."""
  return torch_names.to_ours(kind, value.T if kind in _KERNEL_KINDS else value, cfg)


def _tf_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  return to_tf(kind, np.empty(shape, np.int8)).shape


def _import_tf():
  try:
    import tensorflow as tf  # heavy (seconds) and optional: only for TF checkpoints
  except ImportError:
    raise ImportError("reading or writing a bert4keras/TF checkpoint needs TensorFlow: "
                      "pip install 'roformer-jax[tf]' (tensorflow-cpu)") from None
  return tf


# ----------------------------------------------------------------------------------------------
# Import
# ----------------------------------------------------------------------------------------------
class TFCheckpoint(Mapping):
  """The variables of a TF checkpoint, read one at a time (`shape` without reading)."""

  def __init__(self, prefix: str | os.PathLike):
    tf = _import_tf()
    self.prefix = str(prefix)
    try:
      self._reader = tf.train.load_checkpoint(self.prefix)
    except Exception as e:  # TF raises NotFoundError / DataLossError with long C++ messages
      raise CheckpointError(f"{self.prefix}: cannot read the TF checkpoint: {str(e).splitlines()[0]}") from None
    self._shapes = {k: tuple(v) for k, v in self._reader.get_variable_to_shape_map().items()}

  def shape(self, name: str) -> tuple[int, ...]:
    return self._shapes[name]

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self._shapes:
      raise KeyError(name)
    try:
      return np.asarray(self._reader.get_tensor(name), np.float32)
    except Exception as e:  # a truncated or corrupt data file surfaces only here
      raise CheckpointError(f"{self.prefix}: cannot read variable {name}: {str(e).splitlines()[0]}") from None

  def __iter__(self) -> Iterator[str]:
    return iter(self._shapes)

  def __len__(self) -> int:
    return len(self._shapes)


def _shape(variables: Mapping[str, Any], name: str) -> tuple[int, ...]:
  return variables.shape(name) if hasattr(variables, "shape") else tuple(np.shape(variables[name]))


def detect_version(names: Iterable[str], hidden_act: str | None, ckpt: str = CHECKPOINT_PREFIX,
                   config: str = CONFIG_FILE) -> str:
  """'v1' or 'v2' from the variables (gamma/beta/bias exist only in v1) and hidden_act (relu: v2).

  bert_config.json has no norm_type, so both witnesses are asked and must agree.
  """
  params = [n for n in names if n.startswith(("bert/", "cls/")) and not NON_WEIGHTS.search(n)]
  v1_only = sorted(n for n in params if n.endswith(("/gamma", "/beta", "/bias")))
  by_vars = "v1" if v1_only else "v2"
  by_act = {"relu": "v2", "gelu": "v1"}.get(hidden_act) if hidden_act is not None else None
  if by_act is not None and by_act != by_vars:
    if by_vars == "v1":
      found = f"has {len(v1_only)} gamma/beta/bias tensors (e.g. {v1_only[0]}), as RoFormer v1"
    else:
      found = "has no LayerNorm gamma/beta nor bias tensors, as RoFormerV2"
    says = "RoFormer v1" if by_act == "v1" else "RoFormerV2"
    raise CheckpointError(f"{ckpt} {found}, but {config} says hidden_act={hidden_act!r}, as {says}; "
                          "the two disagree, so the folder mixes a config and weights of different models")
  return by_vars


def config_from_bert(bert: dict[str, Any], names: Iterable[str], source: str = CONFIG_FILE,
                     ckpt: str = CHECKPOINT_PREFIX, **overrides) -> ModelConfig:
  """ModelConfig from a Google-BERT style `bert_config.json` and the checkpoint's variable names."""
  version = detect_version(names, bert.get("hidden_act"), ckpt, source)
  hf = dict(bert, model_type="roformer", norm_type="layer_norm" if version == "v1" else "rms_norm",
            use_bias=version == "v1")
  return config_from_hf(hf, source, **overrides)


def _model(cfg: ModelConfig, with_mlm: bool) -> nn.Module:
  return RoFormerForMaskedLM(cfg) if with_mlm else RoFormerModel(cfg)


@functools.lru_cache(maxsize=16)  # tracing init costs ~1 s; periodic exports ask again and again
def param_shapes(cfg: ModelConfig, with_mlm: bool) -> dict:
  """Our params' shapes (per-layer layout), keyed by entries() paths; do not mutate."""
  model = _model(cfg.replace(scan_layers=False), with_mlm)
  shapes = jax.eval_shape(lambda: nn.meta.unbox(
      model.init(jax.random.PRNGKey(0), np.ones((1, 2), np.int32))["params"]))
  return shapes if with_mlm else {"roformer": shapes}  # entries() paths start at "roformer"


def params_from_tf(variables: Mapping[str, np.ndarray], cfg: ModelConfig, with_mlm: bool,
                   source: str = CHECKPOINT_PREFIX, ignore: Iterable[str] = ()) -> dict:
  """Our params tree from Google-BERT-named variables, checking that every variable is accounted for.

  Shapes are checked before any tensor is read, so a wrong config fails fast on a large checkpoint.
  """
  shapes = param_shapes(cfg, with_mlm)
  names = set(variables)
  params: dict = {}
  errors = []
  for e in torch_names.entries(cfg, with_mlm):
    name = tf_name(e)
    want = _tf_shape(e.kind, tree_get(shapes, e.path).shape)
    if name not in names:
      errors.append(f"missing variable {name} (shape {want})")
      continue
    names.discard(name)
    got = _shape(variables, name)
    if tuple(got) != tuple(want):
      errors.append(f"variable {name} has shape {tuple(got)}, the config needs {want}")
      continue
    if not errors:  # after the first error only names and shapes matter
      tree_set(params, e.path, from_tf(e.kind, np.asarray(variables[name], np.float32), cfg))
  patterns = [re.compile(p) for p in ignore]
  unexpected = sorted(n for n in names if not NON_WEIGHTS.search(n) and not any(p.search(n) for p in patterns))
  if not with_mlm:
    unexpected = [n for n in unexpected if not n.startswith("cls/")]
  errors += [f"unexpected variable {n} {tuple(_shape(variables, n))}" for n in unexpected]
  if errors:
    hint = ""
    if any("pooler" in m or "position_embeddings" in m for m in errors):
      hint += "\n(the model has no pooler nor learned positions; pass ignore=[r'pooler'] to drop such variables)"
    raise CheckpointError(f"{source}: {len(errors)} variable(s) do not match the model:\n  " +
                          "\n  ".join(errors) + hint)
  params = params if with_mlm else params["roformer"]
  return stack_layers(params, cfg.num_layers) if cfg.scan_layers else params


def is_tf_release(folder: str | os.PathLike) -> bool:
  folder = Path(folder)
  return (folder / CONFIG_FILE).is_file() and (folder / f"{CHECKPOINT_PREFIX}.index").is_file()


def from_tf_checkpoint(folder: str | os.PathLike, *, with_mlm: bool | None = None, dtype: str | None = None,
                       ignore: Iterable[str] = (), **config_overrides) -> tuple[nn.Module, dict]:
  """(model, params) from a bert4keras release folder; the arguments are `from_pretrained`'s."""
  folder = Path(folder)
  config_file = folder / CONFIG_FILE
  try:
    bert = json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise ConfigError(f"{config_file}: invalid JSON at line {e.lineno}: {e.msg}") from None
  prefix = folder / CHECKPOINT_PREFIX
  variables = TFCheckpoint(prefix)
  if dtype is not None:
    config_overrides["dtype"] = dtype
  cfg = config_from_bert(bert, variables, str(config_file), str(prefix), **config_overrides)
  if with_mlm is None:  # v2's head is the tied decoder alone, so every v2 release can serve MLM
    with_mlm = cfg.version == "v2" or "cls/predictions/transform/dense/kernel" in variables
  params = params_from_tf(variables, cfg, with_mlm, source=str(prefix), ignore=ignore)
  return _model(cfg, with_mlm), params


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------
def bert_config(cfg: ModelConfig, max_position_embeddings: int = 512) -> dict[str, Any]:
  """A Google-BERT style `bert_config.json` that bert4keras' build_transformer_model reads."""
  out = {
      "attention_probs_dropout_prob": cfg.attention_dropout,
      "hidden_act": "gelu" if cfg.version == "v1" else "relu",
      "hidden_dropout_prob": cfg.hidden_dropout,
      "hidden_size": cfg.hidden_size,
      "initializer_range": 0.02,
      "intermediate_size": cfg.intermediate_size,
      "max_position_embeddings": max_position_embeddings,
      "num_attention_heads": cfg.num_heads,
      "num_hidden_layers": cfg.num_layers,
      "type_vocab_size": cfg.type_vocab_size,
      "vocab_size": cfg.vocab_size,
  }
  if cfg.embed_size != cfg.hidden_size:
    out["embedding_size"] = cfg.embed_size
  return out


def write_tf_checkpoint(tensors: Iterable[tuple[str, np.ndarray]], prefix: str | os.PathLike) -> None:
  """Saves (name, array) pairs with tf.compat.v1.train.Saver, as the releases were written.

  Each value is fed through a placeholder, so the graph holds no constant copies: host memory
  is the TF variables plus one tensor in flight. No `checkpoint` state file is written (it would
  record this, possibly temporary, path; loaders name the prefix directly).
  """
  tf = _import_tf()
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    variables = []
    for name, value in tensors:
      value = np.asarray(value, np.float32)
      feed = tf.compat.v1.placeholder(tf.float32, value.shape)
      var = tf.compat.v1.Variable(feed, name=name)
      if var.op.name != name:  # TF uniquifies a repeated name silently ("x_1")
        raise ValueError(f"variable {name} written twice")
      sess.run(var.initializer, {feed: value})
      variables.append(var)
    saver = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V2)
    saver.save(sess, str(prefix), write_meta_graph=False, write_state=False)
