"""Task heads on the encoder that several fine-tuning tasks share."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from roformer_jax.config import ModelConfig
from roformer_jax.model import Dense, RoFormerModel

POOLINGS = ("first", "mean", "max")


class SequenceClassifier(nn.Module):
  """Encoder -> pooled vector -> dense -> float32 logits [B, num_labels].

  As the CLUE baselines (finetune-spec §d.1): the last layer's output, pooled as the first token ([CLS],
  default), the mean or the max over real tokens, then one dense layer with the encoder's initialiser
  (RoFormerV2: truncated normal scaled by fan-in and depth, no bias; v1: N(0, 0.02) with bias). With
  `first` pooling the last layer runs at [CLS] only (`output_positions`): the same values for ~1/L of
  that layer's cost. Params: {"roformer": encoder, "classifier": {"kernel" [hidden, num_labels], ...}}.
  """
  cfg: ModelConfig
  num_labels: int
  pooling: str = "first"

  def setup(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"SequenceClassifier.pooling: unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
    self.roformer = RoFormerModel(self.cfg)
    self.classifier = Dense(self.cfg, (self.num_labels,), ("embed", None))

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array | None = None,
               attention_mask: jax.Array | None = None, *, position_ids: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    encode = lambda **kw: self.roformer(input_ids, token_type_ids, attention_mask, position_ids=position_ids,
                                        deterministic=deterministic, **kw)
    if self.pooling == "first":
      pooled = encode(output_positions=jnp.zeros((input_ids.shape[0], 1), jnp.int32))[:, 0]  # [B, hidden]
    else:
      h = encode().astype(jnp.float32)  # [B, L, hidden]
      mask = input_ids != self.cfg.pad_token_id if attention_mask is None else attention_mask.astype(bool)
      mask = mask[..., None]  # [B, L, 1]
      if self.pooling == "mean":
        pooled = jnp.sum(jnp.where(mask, h, 0.0), axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1)
      else:
        pooled = jnp.max(jnp.where(mask, h, -jnp.inf), axis=1)
      pooled = pooled.astype(jnp.dtype(self.cfg.dtype))
    return self.classifier(pooled).astype(jnp.float32)
