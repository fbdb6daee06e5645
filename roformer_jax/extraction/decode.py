"""Host-side (numpy) decoding of GlobalPointer scores, outside jit: entities, GPLinker relations and events.

All decoders take one example's float scores (np.asarray of a device array) and its `CharMap`, use
threshold 0 as the reference (a cell is predicted iff its score > threshold), consider only cells whose
two tokens are text tokens (the reference sets the rows and columns of [CLS] and [SEP] to -inf; padding
is excluded the same way), and return spans in characters, end inclusive.

Caps. An untrained model scores a large share of its L^2 cells above 0, and the GPLinker loops are
O(subjects x objects) and exponential in a clique search (JunnYu/GPLinker_pytorch#3): early evaluations
then take hours. Each decoder therefore keeps at most a fixed number of candidates, the highest-scoring
ones (`max_spans`, `max_entities`, `max_arguments`, `max_group`). A trained model stays far below the
defaults, where the caps change nothing.
"""

from __future__ import annotations

import itertools
from typing import Hashable, Iterable, Optional, Sequence, TypeVar

import numpy as np

from roformer_jax.extraction.spans import CharMap

T = TypeVar("T", bound=Hashable)

MAX_SPANS = 256  # entities per text
MAX_ENTITIES = 64  # subjects, and objects, per text
MAX_ARGUMENTS = 64  # event arguments (triggers included) per text
MAX_GROUP = 20  # arguments of one event type entering the clique search (<= 3^(20/3) ~ 1.5k cliques)
TRIGGER = "触发词"


def _candidates(scores: np.ndarray, cmap: CharMap, threshold: float, limit: Optional[int], upper: bool
                ) -> list[tuple[int, int, int]]:
  """(head, i, j) of cells > threshold over text tokens (with `upper`, i <= j), the `limit` best, in
  index order."""
  scores = np.asarray(scores)
  if scores.ndim != 3 or scores.shape[1:] != (len(cmap), len(cmap)):
    raise ValueError(f"scores {scores.shape} must be [heads, {len(cmap)}, {len(cmap)}] for this CharMap")
  real = cmap.real
  keep = (scores > threshold) & real[None, :, None] & real[None, None, :]
  if upper:
    keep &= np.triu(np.ones(keep.shape[1:], bool))[None]
  h, i, j = np.nonzero(keep)
  if limit is not None and len(h) > limit:
    best = np.sort(np.argsort(-scores[h, i, j], kind="stable")[:limit])
    h, i, j = h[best], i[best], j[best]
  return list(zip(h.tolist(), i.tolist(), j.tolist()))


def decode_entities(scores: np.ndarray, cmap: CharMap, labels: Sequence[str], threshold: float = 0.0,
                    max_spans: Optional[int] = MAX_SPANS) -> list[tuple[int, int, str]]:
  """NER (bojone/GlobalPointer `recognize`): scores [H, L, L] -> [(start, end, label)], every cell above
  the threshold (nested and overlapping spans allowed), spans with start token <= end token."""
  if len(labels) != np.shape(scores)[0]:
    raise ValueError(f"{len(labels)} labels for {np.shape(scores)[0]} heads")
  return [cmap.char_span(i, j) + (labels[h],) for h, i, j in _candidates(scores, cmap, threshold, max_spans, True)]


def decode_relations(entity_scores: np.ndarray, head_scores: np.ndarray, tail_scores: np.ndarray, cmap: CharMap,
                     predicates: Sequence[str], threshold: float = 0.0, max_entities: Optional[int] = MAX_ENTITIES
                     ) -> list[tuple[tuple[int, int], str, tuple[int, int]]]:
  """GPLinker relations (duie_v1.py `extract_spoes`): entity [2, L, L] (0 = subject, 1 = object), head and
  tail [P, L, L] -> sorted [((s_start, s_end), predicate, (o_start, o_end))], character spans.

  For every subject (s_h, s_t) and object (o_h, o_t) emit each p with head[p, s_h, o_h] > threshold and
  tail[p, s_t, o_t] > threshold.
  """
  head_scores, tail_scores = np.asarray(head_scores), np.asarray(tail_scores)
  if head_scores.shape != tail_scores.shape or head_scores.shape[0] != len(predicates):
    raise ValueError(f"head {head_scores.shape} and tail {tail_scores.shape} scores must both be "
                     f"[{len(predicates)} predicates, L, L]")
  entity_scores = np.asarray(entity_scores)
  if entity_scores.shape[0] != 2:
    raise ValueError(f"entity scores {entity_scores.shape} must have 2 heads (subject, object)")
  subjects = _candidates(entity_scores[:1], cmap, threshold, max_entities, True)
  objects = _candidates(entity_scores[1:], cmap, threshold, max_entities, True)
  if not subjects or not objects:
    return []
  s = np.array([(i, j) for _, i, j in subjects])
  o = np.array([(i, j) for _, i, j in objects])
  # [P, S, O] at once: the pairs loop of the reference, vectorised.
  hit = (head_scores[:, s[:, 0][:, None], o[:, 0][None, :]] > threshold) & \
        (tail_scores[:, s[:, 1][:, None], o[:, 1][None, :]] > threshold)
  out = set()
  for p, a, b in zip(*np.nonzero(hit)):
    out.add((cmap.char_span(*s[a]), predicates[p], cmap.char_span(*o[b])))
  return sorted(out)


def clique_search(nodes: Sequence[T], linked: set[frozenset]) -> list[tuple[T, ...]]:
  """The maximal cliques of the graph on `nodes` whose edges are the 2-sets in `linked` (bojone/GPLinker
  duee_v1.py `clique_search`, finetune-spec §c.4).

  The reference's recursion: if every pair of V is linked, V is one clique; otherwise, for every
  unlinked pair (u, v), recurse on N[u] and N[v] (the node and its neighbours within V) and pool the
  de-duplicated results. Every maximal clique of V lies in N[x] for some x left out of it, and every
  clique found contains the node it was grown from, so the result is exactly the maximal cliques
  (the order of the nodes does not matter). Subsets are memoised, so each is expanded once. Returns
  sorted tuples (nodes sorted), sorted.
  """
  nodes = sorted(set(nodes))
  adjacent = {u: {v for v in nodes if v != u and frozenset((u, v)) in linked} for u in nodes}
  memo: dict[frozenset, list[frozenset]] = {}

  def cliques(group: frozenset) -> list[frozenset]:
    if group in memo:
      return memo[group]
    subsets: dict[frozenset, None] = {}  # insertion-ordered set
    for u, v in itertools.combinations(sorted(group), 2):
      if v not in adjacent[u]:
        for x in (u, v):
          subsets.setdefault(frozenset({x} | (adjacent[x] & group)))
    if not subsets:
      found = [group]
    else:
      found = list(dict.fromkeys(c for sub in subsets for c in cliques(sub)))
    memo[group] = found
    return found

  if not nodes:
    return []
  return sorted(tuple(sorted(c)) for c in cliques(frozenset(nodes)))


def decode_events(argument_scores: np.ndarray, head_scores: np.ndarray, tail_scores: np.ndarray, cmap: CharMap,
                  labels: Sequence[tuple[str, str]], threshold: float = 0.0, trigger: Optional[str] = TRIGGER,
                  max_arguments: Optional[int] = MAX_ARGUMENTS, max_group: Optional[int] = MAX_GROUP
                  ) -> list[tuple[tuple[str, str, int, int], ...]]:
  """GPLinker events (duee_v1.py `extract_events`): argument scores [A, L, L] over `labels` (event_type,
  role), head and tail link scores [1, L, L] (or [L, L]) -> events, each a sorted tuple of
  (event_type, role, start, end) character spans.

  1. arguments: every (label, h, t) above the threshold (the best `max_arguments`);
  2. two arguments are linked iff head[min(h1, h2), max(h1, h2)] > threshold and tail[min(t1, t2),
     max(t1, t2)] > threshold (links depend on the token spans only);
  3. per event type, the maximal cliques of the linked arguments (`clique_search`; a type's best
     `max_group` arguments enter it) are the events;
  4. with `trigger` (a role name), events without a `trigger` argument are dropped (the reference's
     `trigger=True`; its evaluation passes None and filters itself, see metrics.event_scores).

  Two arguments on the same token span (two roles of one span) are two nodes; the reference keys its
  links on spans, which when such a pair is linked makes each of them its own neighbour and repeats it
  inside an event. Here a node is never its own neighbour.
  """
  argument_scores = np.asarray(argument_scores)
  if argument_scores.shape[0] != len(labels):
    raise ValueError(f"argument scores {argument_scores.shape} must have one head per label ({len(labels)})")
  head, tail = np.asarray(head_scores), np.asarray(tail_scores)
  head, tail = (x[0] if x.ndim == 3 else x for x in (head, tail))
  found = _candidates(argument_scores, cmap, threshold, max_arguments, True)
  by_type: dict[str, list[tuple[int, int, int]]] = {}
  for a, h, t in found:
    by_type.setdefault(labels[a][0], []).append((a, h, t))
  events = []
  for kind in sorted(by_type):
    group = by_type[kind]
    if max_group is not None and len(group) > max_group:
      group = sorted(sorted(group, key=lambda n: -argument_scores[n])[:max_group])
    linked = set()
    for (a1, h1, t1), (a2, h2, t2) in itertools.combinations(group, 2):
      if head[min(h1, h2), max(h1, h2)] > threshold and tail[min(t1, t2), max(t1, t2)] > threshold:
        linked.add(frozenset(((a1, h1, t1), (a2, h2, t2))))
    for clique in clique_search(group, linked):
      event = tuple(sorted((kind, labels[a][1]) + cmap.char_span(h, t) for a, h, t in clique))
      if trigger is None or any(role == trigger for _, role, _, _ in event):
        events.append(event)
  return events


def event_texts(text: str, events: Iterable[Sequence[tuple[str, str, int, int]]]
                ) -> list[tuple[tuple[str, str, str, int], ...]]:
  """Events of character spans -> the reference's form: sorted tuples of (event_type, role, text, start)."""
  return [tuple(sorted((k, r, text[s:e + 1], s) for k, r, s, e in event)) for event in events]
