"""Tokens <-> characters, and the training labels of the GlobalPointer tasks (finetune-spec §0.1, b.2, c.1, c.4).

Every span here is (start, end) with `end` INCLUSIVE, in characters of the text or in token positions
of the encoded sequence ([CLS] = 0), as the reference scripts and the official files count.

`CharMap` is built from a tokenizer's `offsets` (`roformer_jax.tokenization`, [L, 2] char offsets, end
exclusive, (0, 0) for [CLS]/[SEP]/padding). As the reference's `tokenizer.rematch` maps: a character span
maps to tokens iff its first character starts a token and its last character ends one (or the span is
silently dropped from the training labels: it is not a token boundary, or truncation cut it off);
tokens (i, j) map back to characters [start of i, end of j].

Label builders return Python sets per head (deduplicated as the reference's sets) and skip what does
not align; `dense_labels` / `pair_labels` turn them into the arrays the losses take.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

Span = tuple[int, int]  # (start, end), end inclusive


@dataclasses.dataclass(frozen=True, eq=False)
class CharMap:
  """Token <-> character mapping of one encoded text: `starts`/`ends` [L] are each token's first and last
  (inclusive) character, -1 for [CLS], [SEP] and padding."""
  starts: np.ndarray
  ends: np.ndarray

  def __post_init__(self):
    starts, ends = np.asarray(self.starts, np.int64), np.asarray(self.ends, np.int64)
    if starts.shape != ends.shape or starts.ndim != 1:
      raise ValueError(f"CharMap: starts {starts.shape} and ends {ends.shape} must be equal 1-D shapes")
    object.__setattr__(self, "starts", starts)
    object.__setattr__(self, "ends", ends)
    real = np.flatnonzero(starts >= 0).tolist()
    # dicts built in token order: a later token wins a shared character, as in the reference
    object.__setattr__(self, "_start_map", {int(starts[t]): t for t in real})
    object.__setattr__(self, "_end_map", {int(ends[t]): t for t in real})

  @classmethod
  def from_offsets(cls, offsets: np.ndarray, attention_mask: Optional[np.ndarray] = None) -> "CharMap":
    """From tokenizer offsets [L, 2] (end exclusive); a token is real iff it covers >= 1 character."""
    offsets = np.asarray(offsets, np.int64)
    real = offsets[:, 1] > offsets[:, 0]
    if attention_mask is not None:
      real &= np.asarray(attention_mask).astype(bool)
    return cls(np.where(real, offsets[:, 0], -1), np.where(real, offsets[:, 1] - 1, -1))

  def __len__(self) -> int:
    return len(self.starts)

  @property
  def real(self) -> np.ndarray:
    """[L] bool: the token stands for text (not [CLS]/[SEP]/padding)."""
    return self.starts >= 0

  def token_span(self, start: int, end: int) -> Optional[Span]:
    """Tokens (i, j) of the character span [start, end], or None if it is not on token boundaries."""
    i, j = self._start_map.get(start), self._end_map.get(end)  # type: ignore[attr-defined]
    return None if i is None or j is None else (i, j)

  def char_span(self, i: int, j: int) -> Span:
    """Characters [first of token i, last of token j]; both tokens must be real."""
    if self.starts[i] < 0 or self.starts[j] < 0:
      raise ValueError(f"token {i if self.starts[i] < 0 else j} is not a text token")
    return int(self.starts[i]), int(self.ends[j])


def char_maps(offsets: np.ndarray, attention_mask: Optional[np.ndarray] = None) -> list[CharMap]:
  """One CharMap per row of a batch's offsets [B, L, 2] (and attention_mask [B, L])."""
  offsets = np.asarray(offsets)
  return [CharMap.from_offsets(offsets[b], None if attention_mask is None else attention_mask[b])
          for b in range(offsets.shape[0])]


# ------------------------------------------------------------------------------------------------
# Label sets
# ------------------------------------------------------------------------------------------------
def entity_label_sets(entities: Iterable[tuple[int, int, str]], cmap: CharMap, types: Mapping[str, int]
                      ) -> tuple[list[set[Span]], int]:
  """NER: per type, the token spans of `entities` (start, end, type) that align; and how many did not."""
  sets: list[set[Span]] = [set() for _ in range(len(types))]
  dropped = 0
  for start, end, kind in entities:
    span = cmap.token_span(start, end)
    if span is None:
      dropped += 1
    else:
      sets[types[kind]].add(span)
  return sets, dropped


def relation_label_sets(text: str, triples: Iterable[tuple[str, str, str]], cmap: CharMap,
                        predicates: Mapping[str, int]) -> tuple[tuple[list[set[Span]], ...], int]:
  """GPLinker relations (bojone/GPLinker duie_v1.py): subject and object found by their FIRST occurrence in
  the lower-cased text; a triple whose subject or object is missing or off token boundaries is dropped.

  Returns ((entity, head, tail), dropped): entity = [subject spans (s_h, s_t), object spans (o_h, o_t)],
  head = per predicate {(s_h, o_h)}, tail = per predicate {(s_t, o_t)}; dropped = triples left out.
  """
  lower = _lower(text)
  entity: list[set[Span]] = [set(), set()]
  head: list[set[Span]] = [set() for _ in range(len(predicates))]
  tail: list[set[Span]] = [set() for _ in range(len(predicates))]
  dropped = 0
  for s, p, o in triples:
    s, o = _lower(s), _lower(o)
    if not s or not o or s not in lower or o not in lower:
      dropped += 1
      continue
    sh, oh = lower.index(s), lower.index(o)
    subj, obj = cmap.token_span(sh, sh + len(s) - 1), cmap.token_span(oh, oh + len(o) - 1)
    if subj is None or obj is None:
      dropped += 1
      continue
    entity[0].add(subj)
    entity[1].add(obj)
    head[predicates[p]].add((subj[0], obj[0]))
    tail[predicates[p]].add((subj[1], obj[1]))
  return (entity, head, tail), dropped


def _lower(text: str) -> str:
  """str.lower() that keeps every character's position: the one character whose lower case is longer
  ('İ' -> 'i̇') stays as it is, so that positions found in the lower-cased text are positions in `text`."""
  low = text.lower()
  return low if len(low) == len(text) else "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def event_label_sets(events: Iterable[Sequence[tuple[str, str, str, int]]], cmap: CharMap,
                     labels: Mapping[tuple[str, str], int]) -> tuple[tuple[list[set[Span]], ...], int]:
  """GPLinker events (bojone/GPLinker duee_v1.py): `events` are lists of (event_type, role, argument text,
  start char), the trigger being one more role.

  Returns ((argument, head, tail), dropped): argument = per label {(h, t)} of each argument; head = [{(min(h1,
  h2), max(h1, h2))}] and tail = [{(min(t1, t2), max(t1, t2))}] over each unordered pair of arguments of one
  event (one head each); dropped = arguments not on token boundaries.
  """
  argument: list[set[Span]] = [set() for _ in range(len(labels))]
  head: set[Span] = set()
  tail: set[Span] = set()
  dropped = 0
  for event in events:
    kept = []
    for kind, role, text, start in event:
      span = cmap.token_span(start, start + len(text) - 1)
      if span is None:
        dropped += 1
        continue
      kept.append(span)
      argument[labels[(kind, role)]].add(span)
    for a in range(len(kept)):
      for b in range(a + 1, len(kept)):
        (h1, t1), (h2, t2) = kept[a], kept[b]
        head.add((min(h1, h2), max(h1, h2)))
        tail.add((min(t1, t2), max(t1, t2)))
  return (argument, [head], [tail]), dropped


# ------------------------------------------------------------------------------------------------
# Arrays
# ------------------------------------------------------------------------------------------------
def dense_labels(batch: Sequence[Sequence[set[Span]]], length: int) -> np.ndarray:
  """[B, H, L, L] float32, 1 at each (head, i, j): the NER labels of bojone/GlobalPointer."""
  heads = len(batch[0]) if batch else 0
  out = np.zeros((len(batch), heads, length, length), np.float32)
  for b, sets in enumerate(batch):
    if len(sets) != heads:
      raise ValueError(f"dense_labels: example {b} has {len(sets)} heads, example 0 has {heads}")
    for h, spans in enumerate(sets):
      for i, j in spans:
        if not (0 <= i < length and 0 <= j < length):
          raise ValueError(f"dense_labels: span ({i}, {j}) of example {b} head {h} is outside length {length}")
        out[b, h, i, j] = 1
  return out


def pair_labels(batch: Sequence[Sequence[set[Span]]], pad_to: Optional[int] = None) -> np.ndarray:
  """[B, H, P, 2] int32 sparse labels: each head's pairs, sorted, padded with (0, 0) (which the sparse
  loss ignores; an empty head is all padding, the reference's "(0, 0) if empty"). P is the most pairs of
  any head (at least 1), or `pad_to` (fixed shapes: one compilation)."""
  heads = len(batch[0]) if batch else 0
  most = max((len(s) for sets in batch for s in sets), default=0)
  p = max(most, 1) if pad_to is None else pad_to
  if most > p:
    raise ValueError(f"pair_labels: a head has {most} pairs > pad_to={pad_to}")
  out = np.zeros((len(batch), heads, p, 2), np.int32)
  for b, sets in enumerate(batch):
    if len(sets) != heads:
      raise ValueError(f"pair_labels: example {b} has {len(sets)} heads, example 0 has {heads}")
    for h, pairs in enumerate(sets):
      if pairs:
        out[b, h, :len(pairs)] = sorted(pairs)
  return out
