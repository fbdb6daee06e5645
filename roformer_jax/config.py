"""Model configuration: one frozen dataclass, validated on construction, plus the published presets."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

VERSIONS = ("v1", "v2")
DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots")
MATMUL_PRECISIONS = ("auto", "default", "high", "highest")


def known_attention() -> list[str]:
  """Every name `ModelConfig.attention` accepts: attention functions, token mixers and blocks."""
  from roformer_jax import attention, mixers  # lazy: keeps config import-light
  return sorted(set(attention.available()) | set(mixers.TOKEN_MIXERS) | set(mixers.BLOCKS))


class ConfigError(ValueError):
  """A configuration value is invalid; the message names the field."""


def _real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


class DataError(ValueError):
  """A data line that cannot be used; the message starts with `file:line:`. The one class for every reader
  (re-exported by `roformer_jax.data.jsonl`, `data.sources`, `pet.reviews`), so the CLIs catch them all."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and switches of a RoFormer (v1) or RoFormerV2 encoder.

  v1 is post-LayerNorm BERT with biases and an erf-GELU FFN; v2 drops every bias, uses a
  parameter-free RMS norm and a ReLU FFN. Both use interleaved RoPE on q and k.
  """

  version: str = "v2"
  vocab_size: int = 12000
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  type_vocab_size: int = 2
  # Width of the token embeddings; None means hidden_size. When it differs, v1 inserts
  # an `embeddings_project` dense layer and the MLM transform maps back to it.
  embedding_size: int | None = None
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  norm_eps: float = 1e-12
  rope_base: float = 10000.0
  rotary_value: bool = False
  pad_token_id: int = 0
  # Compute dtype; parameters are always float32, norms / softmax / RoPE angles too.
  dtype: str = "float32"
  attention: str = "softmax"
  # Extra keyword options for the attention variant (block sizes, ...), as (key, value) pairs
  # so the config stays hashable.
  attention_options: tuple[tuple[str, Any], ...] = ()
  # Training-time layout of the layer stack: nn.scan keeps compile time flat in depth (params then
  # carry a leading `layers` axis); remat recomputes each layer's activations in the backward pass.
  # Measured on XLA:CPU: remat only lowers compiled memory together with scan_layers=True (unrolled,
  # XLA re-fuses the recomputation away); see docs/BENCHMARKS.md, attention variants.
  scan_layers: bool = False
  remat: str = "none"
  # Precision of every matmul in the model, every attention variant alike (jax.default_matmul_precision).
  # "auto" (the default): "highest" when dtype is float32, so float32 means float32 on every platform (GPUs
  # otherwise run float32 dots as TF32, ~4e-4 from the reference; TPUs as bf16 passes), and "default" for
  # bfloat16, whose operands are bf16 anyway (products accumulate in float32 either way). "default", "high"
  # and "highest" are JAX's own levels, as given.
  matmul_precision: str = "auto"

  def __post_init__(self):
    if self.version not in VERSIONS:
      raise ConfigError(f"ModelConfig.version: unknown version {self.version!r}; expected one of {VERSIONS}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "type_vocab_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"ModelConfig.{name} must be a positive int, got {value!r}")
    if self.embedding_size is not None and (not isinstance(self.embedding_size, int) or self.embedding_size <= 0):
      raise ConfigError(f"ModelConfig.embedding_size must be a positive int or None, got {self.embedding_size!r}")
    if self.version == "v2" and self.embed_size != self.hidden_size:
      raise ConfigError("ModelConfig.embedding_size: RoFormerV2 has no embedding mapping; it must equal hidden_size")
    if self.hidden_size % self.num_heads:
      raise ConfigError(
          f"ModelConfig.hidden_size ({self.hidden_size}) must be divisible by ModelConfig.num_heads ({self.num_heads})")
    if self.head_size % 2:
      raise ConfigError(
          f"ModelConfig.num_heads: head size hidden_size/num_heads = {self.head_size} must be even for RoPE")
    for name in ("hidden_dropout", "attention_dropout"):
      value = getattr(self, name)
      if not (_real(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"ModelConfig.{name} must be in [0, 1), got {value!r}")
    for name in ("norm_eps", "rope_base"):  # (NaN and inf would pass a plain `> 0`)
      value = getattr(self, name)
      if not (_real(value) and math.isfinite(value) and value > 0):
        raise ConfigError(f"ModelConfig.{name} must be positive and finite, got {value!r}")
    for name in ("rotary_value", "scan_layers"):  # a string such as "no" would be truthy
      if not isinstance(getattr(self, name), bool):
        raise ConfigError(f"ModelConfig.{name} must be a bool, got {getattr(self, name)!r}")
    if not (isinstance(self.attention_options, tuple)
            and all(isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str) for kv in self.attention_options)):
      raise ConfigError(f"ModelConfig.attention_options must be a tuple of (key, value) pairs (it keeps the config "
                        f"hashable), got {self.attention_options!r}")
    if self.dtype not in DTYPES:
      raise ConfigError(f"ModelConfig.dtype: unknown dtype {self.dtype!r}; expected one of {DTYPES}")
    if self.remat not in REMAT_POLICIES:
      raise ConfigError(f"ModelConfig.remat: unknown policy {self.remat!r}; expected one of {REMAT_POLICIES}")
    if self.matmul_precision not in MATMUL_PRECISIONS:
      raise ConfigError(f"ModelConfig.matmul_precision: unknown value {self.matmul_precision!r}; "
                        f"expected one of {MATMUL_PRECISIONS}")
    if self.attention not in known_attention():
      raise ConfigError(f"ModelConfig.attention: unknown variant {self.attention!r}; known: {known_attention()}")
    pad = self.pad_token_id
    if not (isinstance(pad, numbers.Integral) and not isinstance(pad, bool) and 0 <= pad < self.vocab_size):
      raise ConfigError(f"ModelConfig.pad_token_id ({self.pad_token_id}) must be in [0, vocab_size={self.vocab_size})")

  @property
  def head_size(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def embed_size(self) -> int:
    return self.embedding_size or self.hidden_size

  @property
  def precision(self) -> str:
    """The JAX matmul precision this config resolves to (see `matmul_precision`)."""
    if self.matmul_precision == "auto":
      return "highest" if self.dtype == "float32" else "default"
    return self.matmul_precision

  @property
  def use_bias(self) -> bool:
    return self.version == "v1"

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _v2(layers: int, hidden: int, heads: int) -> ModelConfig:
  return ModelConfig(version="v2", vocab_size=12000, hidden_size=hidden, num_layers=layers, num_heads=heads,
                     intermediate_size=4 * hidden)


def _v1(layers: int, hidden: int, heads: int, vocab: int) -> ModelConfig:
  return ModelConfig(version="v1", vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                     intermediate_size=4 * hidden)


# The released checkpoints' shapes (roformer-spec.md §2.3, §3).
PRESETS: dict[str, ModelConfig] = {
    "roformer_v2_small": _v2(6, 384, 6),
    "roformer_v2_base": _v2(12, 768, 12),
    "roformer_v2_large": _v2(24, 1024, 16),
    "roformer_v1_char_small": _v1(6, 384, 6, 12000),
    "roformer_v1_char_base": _v1(12, 768, 12, 12000),
    "roformer_v1_small": _v1(6, 384, 6, 50000),
    "roformer_v1_base": _v1(12, 768, 12, 50000),
    # For CPU runs and tests: deliberately not 4H and not head size 64.
    "tiny": ModelConfig(version="v2", vocab_size=12000, hidden_size=128, num_layers=2, num_heads=4,
                        intermediate_size=384),
}


def get_config(name: str, **overrides) -> ModelConfig:
  """A preset by name, with field overrides (e.g. `get_config("tiny", vocab_size=5000)`)."""
  if name not in PRESETS:
    raise ConfigError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides)
