"""roformer-jax: RoFormer and RoFormerV2 encoders in JAX/Flax.

The names below load on first use, so `import roformer_jax.train.hostmem` (which a CLI runs before it
re-executes itself) does not pay for importing JAX and Flax first.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "roformer_jax.config", "ConfigError": "roformer_jax.config", "PRESETS": "roformer_jax.config",
    "get_config": "roformer_jax.config", "RoFormerModel": "roformer_jax.model",
    "RoFormerForMaskedLM": "roformer_jax.model", "init_params": "roformer_jax.model", "logical_axes": "roformer_jax.model",
}


def from_pretrained(path, **kwargs):
  """(model, params) from a checkpoint folder; see `roformer_jax.convert.load.from_pretrained`."""
  from roformer_jax.convert.load import from_pretrained as _load
  return _load(path, **kwargs)


def load_tokenizer(path, **kwargs):
  """A tokenizer from a checkpoint folder, vocab.txt or SentencePiece model."""
  from roformer_jax.tokenization import load_tokenizer as _load
  return _load(path, **kwargs)


def __getattr__(name: str) -> Any:
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  try:  # submodules, e.g. roformer_jax.model after a bare `import roformer_jax`
    return importlib.import_module(f"{__name__}.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"{__name__}.{name}":
      raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))


__all__ = ["ModelConfig", "ConfigError", "PRESETS", "get_config", "RoFormerModel", "RoFormerForMaskedLM",
           "init_params", "logical_axes", "from_pretrained", "load_tokenizer"]
