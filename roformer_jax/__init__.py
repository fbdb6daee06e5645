"""roformer-jax: RoFormer and RoFormerV2 encoders in JAX/Flax."""

from roformer_jax.config import PRESETS, ConfigError, ModelConfig, get_config
from roformer_jax.model import RoFormerForMaskedLM, RoFormerModel, init_params, logical_axes


def from_pretrained(path, **kwargs):
  """(model, params) from a checkpoint folder; see `roformer_jax.convert.load.from_pretrained`."""
  from roformer_jax.convert.load import from_pretrained as _load
  return _load(path, **kwargs)


def load_tokenizer(path, **kwargs):
  """A tokenizer from a checkpoint folder, vocab.txt or SentencePiece model."""
  from roformer_jax.tokenization import load_tokenizer as _load
  return _load(path, **kwargs)


__all__ = ["ModelConfig", "ConfigError", "PRESETS", "get_config", "RoFormerModel", "RoFormerForMaskedLM",
           "init_params", "logical_axes", "from_pretrained", "load_tokenizer"]
