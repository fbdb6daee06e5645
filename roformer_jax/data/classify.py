"""Single-text and text-pair classification examples, encoded the way the bert4keras fine-tune scripts do.

`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, at most `max_len` tokens, the longer text losing tokens from
its right first and the first text on a tie (bert4keras `Tokenizer.encode(a, b, maxlen=...)`). Segment
ids are all 0, also for pairs: the CLUE reference scripts feed zeros, so the token-type embedding is a
constant. Rows are right-padded with id 0 to `pad_to` (static shapes for jit; padding is masked).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import numpy as np

IGNORE_LABEL = -1  # label id of an example without a gold label (a test file)


@dataclasses.dataclass(frozen=True)
class Example:
  """One example: its text(s), its label id (None where the file has no label) and its id in the file."""
  text_a: str
  text_b: Optional[str] = None
  label: Optional[int] = None
  id: Union[int, str, None] = None


def encode_examples(tokenizer, examples: Sequence[Example], max_len: int,
                    pad_to: Optional[int] = None) -> dict[str, np.ndarray]:
  """int32 `input_ids`, `token_type_ids` (zeros), `attention_mask` [N, pad_to or longest] and `labels` [N]
  (IGNORE_LABEL where an example has none). Examples must be all single texts or all pairs."""
  if not examples:
    raise ValueError("no examples to encode")
  pairs = {e.text_b is not None for e in examples}
  if len(pairs) != 1:
    raise ValueError("examples mix single texts and text pairs")
  text_b = [e.text_b for e in examples] if pairs.pop() else None
  out = tokenizer.encode_batch([e.text_a for e in examples], text_b, max_length=max_len, pad_to=pad_to,
                               return_offsets=False, truncation="bert4keras")
  out["token_type_ids"] = np.zeros_like(out["token_type_ids"])
  out["labels"] = np.array([IGNORE_LABEL if e.label is None else e.label for e in examples], np.int32)
  return out
