"""The reference scripts' extraction metrics: micro P/R/F1 from per-text sets, X, Y, Z starting at 1e-10.

  X += |R & T|, Y += |R|, Z += |T| per text (R predicted, T gold);  F1 = 2X / (Y + Z), P = X / Y, R = X / Z.

* entities (bojone/GlobalPointer `evaluate`): exact (start, end, type), characters, end inclusive.
* relations (bojone/GPLinker duie_v1.py / bert4keras task_relation_extraction_gplinker.py): (subject,
  predicate, object) strings compared through a key; the reference's `SPO` compares tokenized strings
  (case- and whitespace-insensitive). `spo_key` lower-cases and drops whitespace; pass
  `key=lambda s: tuple(tokenizer.tokenize(s))` for the reference's exact rule.
* events (duee_v1.py `evaluate`): event level, an event = the sorted tuple of its (type, role, text,
  start), predicted events counted only if they hold a trigger, de-duplicated per text, exact equality;
  argument level, the de-duplicated (type, role, text, start) tuples other than triggers.
"""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, Sequence

from roformer_jax.extraction.decode import TRIGGER


class PRF:
  """Micro precision / recall / F1 accumulated text by text, exactly as the reference counts."""

  def __init__(self):
    self.x = self.y = self.z = 1e-10

  def update(self, predicted: Iterable[Hashable], gold: Iterable[Hashable]) -> None:
    r, t = set(predicted), set(gold)
    self.x += len(r & t)
    self.y += len(r)
    self.z += len(t)

  def result(self) -> dict[str, float]:
    return {"f1": 2 * self.x / (self.y + self.z), "precision": self.x / self.y, "recall": self.x / self.z}


def entity_scores(predicted: Iterable[Iterable[tuple[int, int, str]]], gold: Iterable[Iterable[tuple[int, int, str]]]
                  ) -> dict[str, float]:
  """Micro P/R/F1 over exact (start, end, type) per text."""
  prf = PRF()
  for r, t in _paired(predicted, gold):
    prf.update(map(tuple, r), map(tuple, t))
  return prf.result()


def spo_key(text: str) -> str:
  """Lower-cased, whitespace removed (the reference compares tokenizer output, which ignores both)."""
  return "".join(text.lower().split())


def triple_scores(predicted: Iterable[Iterable[tuple[str, str, str]]], gold: Iterable[Iterable[tuple[str, str, str]]],
                  key: Callable[[str], Hashable] = spo_key) -> dict[str, float]:
  """Micro P/R/F1 over (subject, predicate, object) string triples per text, subject and object through `key`."""
  prf = PRF()
  for r, t in _paired(predicted, gold):
    prf.update(((key(s), p, key(o)) for s, p, o in r), ((key(s), p, key(o)) for s, p, o in t))
  return prf.result()


def event_scores(predicted: Iterable[Iterable[Sequence[tuple[str, str, str, int]]]],
                 gold: Iterable[Iterable[Sequence[tuple[str, str, str, int]]]], trigger: str = TRIGGER
                 ) -> dict[str, float]:
  """Event-level and argument-level micro P/R/F1 over events of (type, role, text, start) tuples per text
  (`decode.event_texts` turns decoded events into this form). Keys: event_f1, event_precision,
  event_recall, argument_f1, argument_precision, argument_recall."""
  events, arguments = PRF(), PRF()
  for r, t in _paired(predicted, gold):
    r, t = [list(map(tuple, e)) for e in r], [list(map(tuple, e)) for e in t]
    events.update((tuple(sorted(e)) for e in r if any(a[1] == trigger for a in e)),
                  (tuple(sorted(e)) for e in t))
    arguments.update((a for e in r for a in e if a[1] != trigger), (a for e in t for a in e if a[1] != trigger))
  out = {f"event_{k}": v for k, v in events.result().items()}
  out.update({f"argument_{k}": v for k, v in arguments.result().items()})
  return out


def _paired(predicted, gold):
  predicted, gold = list(predicted), list(gold)
  if len(predicted) != len(gold):
    raise ValueError(f"{len(predicted)} predicted texts but {len(gold)} gold texts")
  return zip(predicted, gold)
