"""Host-side decoding (entities, GPLinker relations and events, the clique search), the label builders and
the reference metrics."""

import itertools
import time

import numpy as np
import pytest

from roformer_jax.extraction import decode, metrics, spans


def _char_cmap(n_chars, length=None):
  """CharMap of a char-level encoding: [CLS] c_0 .. c_{n-1} [SEP] then padding up to `length`."""
  length = length or n_chars + 2
  offsets = np.zeros((length, 2), np.int64)
  offsets[1:n_chars + 1, 0] = np.arange(n_chars)
  offsets[1:n_chars + 1, 1] = np.arange(1, n_chars + 1)
  return spans.CharMap.from_offsets(offsets)


# ------------------------------------------------------------------------------------------------
# Clique search
# ------------------------------------------------------------------------------------------------
def _edges(pairs):
  return {frozenset(p) for p in pairs}


def test_clique_search_blog_example():
  """kexue 8926: A-D and D-H are two events sharing D; B and E are not linked."""
  first, second = "ABCD", "DEFGH"
  linked = _edges(itertools.combinations(first, 2)) | _edges(itertools.combinations(second, 2))
  assert decode.clique_search(list("ABCDEFGH"), linked) == [tuple("ABCD"), tuple("DEFGH")]
  # All linked: one event; nothing linked: every node alone.
  assert decode.clique_search(list("ABC"), _edges(itertools.combinations("ABC", 2))) == [tuple("ABC")]
  assert decode.clique_search(list("ABC"), set()) == [("A",), ("B",), ("C",)]
  assert decode.clique_search([], set()) == []


def _brute_force_maximal_cliques(n, adj):
  """Every subset that is a clique and that no other node extends, by enumeration of all 2^n subsets."""
  cliques = []
  for mask in range(1, 1 << n):
    nodes = [v for v in range(n) if mask >> v & 1]
    if all(adj[u, v] for u, v in itertools.combinations(nodes, 2)):
      if not any(all(adj[w, v] for v in nodes) for w in range(n) if not mask >> w & 1):
        cliques.append(tuple(nodes))
  return sorted(cliques)


def test_clique_search_equals_maximal_cliques_on_random_graphs():
  rng = np.random.default_rng(0)
  for trial in range(60):
    n = int(rng.integers(1, 12))
    adj = np.triu(rng.random((n, n)) < rng.choice([0.2, 0.5, 0.8, 0.95]), 1)
    adj = adj | adj.T
    linked = {frozenset((u, v)) for u, v in zip(*np.nonzero(adj))}
    want = _brute_force_maximal_cliques(n, adj)
    assert decode.clique_search(list(range(n)), linked) == want, trial
    # Node order and names do not matter.
    perm = rng.permutation(n)
    renamed = {frozenset((int(perm[u]), int(perm[v]))) for u, v in map(tuple, linked)}
    got = decode.clique_search(list(rng.permutation(n)), renamed)
    assert got == sorted(tuple(sorted(int(perm[v]) for v in c)) for c in want), trial


# ------------------------------------------------------------------------------------------------
# Decoders
# ------------------------------------------------------------------------------------------------
def test_decode_entities_thresholds_special_tokens_and_caps():
  cmap = _char_cmap(5, length=9)  # [CLS] 5 chars [SEP] 2 pads
  s = np.full((2, 9, 9), -5.0, np.float32)
  s[0, 1, 2] = 3.0  # chars 0..1
  s[1, 3, 3] = 0.5  # char 2
  s[1, 1, 5] = 1.0  # nested/overlapping allowed: chars 0..4
  s[0, 0, 3] = s[0, 2, 6] = s[0, 7, 8] = 9.0  # [CLS], [SEP], padding: never
  s[0, 4, 2] = 9.0  # end before start: never
  s[1, 2, 2] = 0.0  # not above the threshold
  got = decode.decode_entities(s, cmap, ["PER", "LOC"])
  assert sorted(got) == [(0, 1, "PER"), (0, 4, "LOC"), (2, 2, "LOC")]
  assert sorted(decode.decode_entities(s, cmap, ["PER", "LOC"], max_spans=2)) == [(0, 1, "PER"), (0, 4, "LOC")]
  with pytest.raises(ValueError, match="3 labels for 2 heads"):
    decode.decode_entities(s, cmap, ["A", "B", "C"])


def _naive_relations(ent, head, tail, cmap, predicates):
  """duie_v1.py extract_spoes, as written (loops over sets)."""
  ent = ent.copy()
  real = cmap.real
  ent[:, ~real] = -np.inf
  ent[:, :, ~real] = -np.inf
  subjects, objects = set(), set()
  for l, h, t in zip(*np.where(ent > 0)):
    if h <= t:
      (subjects if l == 0 else objects).add((h, t))
  out = set()
  for sh, st in subjects:
    for oh, ot in objects:
      for p in set(np.where(head[:, sh, oh] > 0)[0]) & set(np.where(tail[:, st, ot] > 0)[0]):
        out.add((cmap.char_span(sh, st), predicates[p], cmap.char_span(oh, ot)))
  return sorted(out)


def test_decode_relations_equals_the_reference_loops():
  rng = np.random.default_rng(0)
  cmap = _char_cmap(10, length=14)
  predicates = ["p0", "p1", "p2"]
  for _ in range(5):
    ent = rng.normal(-2, 2, (2, 14, 14)).astype(np.float32)
    head, tail = (rng.normal(-0.5, 1, (3, 14, 14)).astype(np.float32) for _ in range(2))
    got = decode.decode_relations(ent, head, tail, cmap, predicates, max_entities=None)
    assert got == _naive_relations(ent, head, tail, cmap, predicates) and got


def test_untrained_scores_decode_fast_under_the_caps():
  """Random scores (half the cells above 0) at L=128: the capped decoders finish in well under a second."""
  rng = np.random.default_rng(0)
  length = 128
  cmap = _char_cmap(length - 2)
  labels = [(f"type{t}", role) for t in range(3) for role in (decode.TRIGGER, "r1", "r2")]
  start = time.perf_counter()
  ents = decode.decode_entities(rng.normal(size=(3, length, length)), cmap, ["a", "b", "c"])
  rels = decode.decode_relations(*(rng.normal(size=(k, length, length)) for k in (2, 10, 10)), cmap,
                                 [f"p{i}" for i in range(10)])
  events = decode.decode_events(*(rng.normal(size=(k, length, length)) for k in (len(labels), 1, 1)), cmap, labels)
  elapsed = time.perf_counter() - start
  assert len(ents) == decode.MAX_SPANS and rels and events
  assert elapsed < 5, elapsed


def test_decode_events_links_cliques_and_trigger_filter():
  labels = [("attack", decode.TRIGGER), ("attack", "attacker"), ("attack", "target"), ("die", decode.TRIGGER),
            ("die", "victim")]
  cmap = _char_cmap(12, length=14)
  arg = np.full((5, 14, 14), -3.0)
  head = np.full((1, 14, 14), -3.0)
  tail = np.full((1, 14, 14), -3.0)
  # attack #1: trigger tok 1-1, attacker 3-4; attack #2: trigger 6-6, attacker 3-4 (shared), target 8-9;
  # die: victim 11-11 alone, no trigger.
  nodes = {"t1": (0, 1, 1), "a": (1, 3, 4), "t2": (0, 6, 6), "tg": (2, 8, 9), "v": (4, 11, 11)}
  for a, h, t in nodes.values():
    arg[a, h, t] = 2.0

  def link(x, y):
    (_, h1, t1), (_, h2, t2) = nodes[x], nodes[y]
    head[0, min(h1, h2), max(h1, h2)] = tail[0, min(t1, t2), max(t1, t2)] = 1.0

  for x, y in [("t1", "a"), ("t2", "a"), ("t2", "tg"), ("a", "tg")]:
    link(x, y)
  events = decode.decode_events(arg, head, tail, cmap, labels, trigger=None)
  assert events == [
      (("attack", "attacker", 2, 3), ("attack", decode.TRIGGER, 0, 0)),
      (("attack", "attacker", 2, 3), ("attack", "target", 7, 8), ("attack", decode.TRIGGER, 5, 5)),
      (("die", "victim", 10, 10),)]  # each event sorted (TRIGGER sorts after ASCII roles)
  assert decode.decode_events(arg, head, tail, cmap, labels) == events[:2]  # trigger=TRIGGER drops "die"
  # A head link alone is not a link.
  tail[0, 4, 6] = -1.0  # attacker (tail token 4) - trigger 2 (tail token 6): head link only
  split = decode.decode_events(arg, head, tail, cmap, labels, trigger=None)
  assert (("attack", "target", 7, 8), ("attack", decode.TRIGGER, 5, 5)) in split
  assert (("attack", "attacker", 2, 3), ("attack", "target", 7, 8)) in split
  text = "abcdefghijkl"
  assert decode.event_texts(text, events[:1]) == [(("attack", "attacker", "cd", 2), ("attack", decode.TRIGGER, "a", 0))]


# ------------------------------------------------------------------------------------------------
# Labels -> scores -> decode: the round trip is exact
# ------------------------------------------------------------------------------------------------
def _scores(sets, length):
  """+5 at every labelled cell, -5 elsewhere: what a perfect model outputs."""
  s = np.full((len(sets), length, length), -5.0, np.float32)
  for h, pairs in enumerate(sets):
    for i, j in pairs:
      s[h, i, j] = 5.0
  return s


def test_round_trip_entities_relations_events():
  text = "张三在北京大学读书，李四在北京工作"
  cmap = _char_cmap(len(text))
  length = len(cmap)
  types = {"PER": 0, "LOC": 1, "ORG": 2}
  gold = [(0, 1, "PER"), (3, 4, "LOC"), (3, 6, "ORG"), (10, 11, "PER"), (13, 14, "LOC")]
  sets, dropped = spans.entity_label_sets(gold + [(2, 40, "LOC")], cmap, types)
  assert dropped == 1  # beyond the text: not on token boundaries
  dense = spans.dense_labels([sets], length)
  assert dense.shape == (1, 3, length, length) and dense.sum() == len(gold)
  got = decode.decode_entities(_scores(sets, length), cmap, list(types))
  assert sorted(got) == sorted(gold)
  assert metrics.entity_scores([got], [gold])["f1"] == pytest.approx(1.0)

  predicates = {"就读": 0, "工作地": 1}
  triples = [("张三", "就读", "北京大学"), ("李四", "工作地", "北京"), ("王五", "就读", "北京")]
  rsets, dropped = spans.relation_label_sets(text, triples, cmap, predicates)
  assert dropped == 1  # 王五 is not in the text
  assert rsets[0][1] == {(4, 7), (4, 5)}  # objects by FIRST occurrence: 北京 at char 3 (token 4)
  rel = decode.decode_relations(*(_scores(sets, length) for sets in rsets), cmap, list(predicates))
  got = [(text[s:e + 1], p, text[os:oe + 1]) for (s, e), p, (os, oe) in rel]
  assert sorted(got) == [("张三", "就读", "北京大学"), ("李四", "工作地", "北京")]
  assert metrics.triple_scores([got], [triples])["recall"] == pytest.approx(2 / 3)

  labels = [("学习", decode.TRIGGER), ("学习", "学生"), ("学习", "学校"), ("工作", decode.TRIGGER), ("工作", "地点")]
  index = {label: i for i, label in enumerate(labels)}
  events = [[("学习", decode.TRIGGER, "读书", 7), ("学习", "学生", "张三", 0), ("学习", "学校", "北京大学", 3)],
            [("工作", decode.TRIGGER, "工作", 15), ("工作", "地点", "北京", 13)]]
  esets, dropped = spans.event_label_sets(events, cmap, index)
  assert dropped == 0 and esets[1] == [{(1, 4), (1, 8), (4, 8), (14, 16)}]
  assert spans.pair_labels([esets[0]]).shape == (1, len(labels), 1, 2)
  assert spans.pair_labels([esets[1]]).shape == (1, 1, 4, 2)  # the head link set has 4 pairs
  ev = decode.decode_events(*(_scores(sets, length) for sets in esets), cmap, labels)
  assert metrics.event_scores([decode.event_texts(text, ev)], [events]) == pytest.approx(
      dict(event_f1=1, event_precision=1, event_recall=1, argument_f1=1, argument_precision=1, argument_recall=1))


def test_relation_labels_keep_positions_when_lower_case_is_longer():
  """'İ'.lower() is two characters: a first occurrence found in text.lower() was one character off, and the
  triple trained on 京在 / 国。 instead of 北京 / 中国."""
  text = "İ北京在中国。"
  cmap = _char_cmap(len(text))
  (entity, head, tail), dropped = spans.relation_label_sets(text, [("北京", "p", "中国")], cmap, {"p": 0})
  assert dropped == 0
  assert entity == [{(2, 3)}, {(5, 6)}] and head == [{(2, 5)}] and tail == [{(3, 6)}]
  (entity, _, _), dropped = spans.relation_label_sets(text, [("İ北京", "p", "中国")], cmap, {"p": 0})
  assert dropped == 0 and entity == [{(1, 3)}, {(5, 6)}]


def test_pair_labels_padding():
  batch = [[{(1, 2), (3, 3)}, set()], [{(2, 2)}, {(1, 1), (1, 4), (2, 5)}]]
  out = spans.pair_labels(batch)
  assert out.shape == (2, 2, 3, 2) and out.dtype == np.int32
  assert out[0, 0].tolist() == [[1, 2], [3, 3], [0, 0]] and out[0, 1].tolist() == [[0, 0]] * 3
  assert spans.pair_labels(batch, pad_to=5).shape == (2, 2, 5, 2)
  with pytest.raises(ValueError, match="3 pairs > pad_to=2"):
    spans.pair_labels(batch, pad_to=2)
  assert spans.pair_labels([[set()]]).shape == (1, 1, 1, 2)


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
def test_entity_and_triple_metrics_count_as_the_reference():
  pred = [[(0, 1, "PER"), (0, 1, "PER"), (3, 4, "LOC")], []]
  gold = [[(0, 1, "PER"), (3, 5, "LOC")], [(2, 2, "ORG")]]
  m = metrics.entity_scores(pred, gold)  # X=1, Y=2 (a set), Z=3
  assert m == pytest.approx(dict(f1=2 / 5, precision=1 / 2, recall=1 / 3))
  assert metrics.entity_scores([[]], [[]])["f1"] == pytest.approx(1.0)  # 1e-10 starts: 2e-10 / 2e-10, as the reference
  t = metrics.triple_scores([[("iPhone 12", "p", "苹果")]], [[("iphone12", "p", "苹果"), ("x", "p", "y")]])
  assert t == pytest.approx(dict(f1=2 / 3, precision=1.0, recall=0.5))
  with pytest.raises(ValueError, match="1 predicted texts but 2 gold"):
    metrics.entity_scores([[]], [[], []])


def test_event_metrics_trigger_rule_and_dedup():
  T = decode.TRIGGER
  gold = [[[("a", T, "x", 0), ("a", "r", "y", 2)], [("b", T, "z", 5)]]]
  pred = [[[("a", "r", "y", 2), ("a", T, "x", 0)],  # same event, other order: a hit
           [("a", "r", "y", 2), ("a", T, "x", 0)],  # duplicate: counted once
           [("b", "r", "w", 7)]]]  # no trigger: not an event, but its argument counts
  m = metrics.event_scores(pred, gold)
  assert m["event_precision"] == pytest.approx(1.0) and m["event_recall"] == pytest.approx(0.5)
  assert m["argument_precision"] == pytest.approx(0.5) and m["argument_recall"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------
# Labels -> heads + losses -> decode, trained: the pieces fit together
# ------------------------------------------------------------------------------------------------
def _fit(head, loss_fn, ids, mask, labels, steps=150):
  """Trainable embeddings + `head` fitted to `labels` with Adam; returns the scores (numpy)."""
  import flax.linen as nn
  import jax
  import optax

  class Model(nn.Module):
    head: nn.Module

    @nn.compact
    def __call__(self, ids, mask):
      return self.head(nn.Embed(int(ids.max()) + 1, 32)(ids), mask)

  model = Model(head)
  params = model.init(jax.random.PRNGKey(0), ids, mask)
  opt = optax.adam(3e-2)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(labels, model.apply(p, ids, mask)))(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  for _ in range(steps):
    params, state, loss = step(params, state)
  assert np.isfinite(loss)
  return jax.tree_util.tree_map(np.asarray, model.apply(params, ids, mask))


def _synthetic(rng, batch=4, max_chars=12):
  """Texts of distinct characters (first occurrence = the only one) with char-level encodings, padded."""
  chars = [chr(0x4E00 + i) for i in rng.permutation(200)[:batch * max_chars]]
  lengths = rng.integers(max_chars // 2, max_chars + 1, batch)
  texts = ["".join(chars[b * max_chars:b * max_chars + n]) for b, n in enumerate(lengths)]
  length = max_chars + 2
  cmaps = [_char_cmap(len(t), length) for t in texts]
  ids = np.zeros((batch, length), np.int32)
  for b, t in enumerate(texts):
    ids[b, :len(t) + 2] = [1] + [2 + chars.index(c) for c in t] + [1]  # distinct: a span (i, i) has relative
    # position 0, so two tokens with one embedding would get one score
  return texts, cmaps, ids, ids > 0


def _spans(rng, n_chars, k):
  out = set()
  while len(out) < k:
    s = int(rng.integers(0, n_chars))
    out.add((s, int(min(n_chars - 1, s + rng.integers(0, 3)))))
  return sorted(out)


def test_heads_losses_labels_and_decoding_fit_together():
  from roformer_jax import heads, losses
  rng = np.random.default_rng(0)
  texts, cmaps, ids, mask = _synthetic(rng)
  length = ids.shape[1]
  # NER with a dense-label GlobalPointer.
  types = ["A", "B"]
  gold = [[(s, e, types[int(rng.integers(0, 2))]) for s, e in _spans(rng, len(t), 3)] for t in texts]
  sets = [spans.entity_label_sets(g, c, {t: i for i, t in enumerate(types)})[0] for g, c in zip(gold, cmaps)]
  scores = _fit(heads.GlobalPointer(2, 16), losses.global_pointer_crossentropy, ids, mask,
                spans.dense_labels(sets, length))
  pred = [decode.decode_entities(s, c, types) for s, c in zip(scores, cmaps)]
  assert metrics.entity_scores(pred, gold)["f1"] == pytest.approx(1.0)
  # Relations with GPLinker's heads and sparse labels.
  predicates = ["p", "q"]
  triples = []
  for t in texts:
    (s1, e1), (s2, e2), (s3, e3) = _spans(rng, len(t), 3)
    triples.append([(t[s1:e1 + 1], "p", t[s2:e2 + 1]), (t[s3:e3 + 1], "q", t[s2:e2 + 1])])
  rsets = [spans.relation_label_sets(t, tr, c, {p: i for i, p in enumerate(predicates)})[0]
           for t, tr, c in zip(texts, triples, cmaps)]
  labels = tuple(spans.pair_labels([r[k] for r in rsets]) for k in range(3))
  out = _fit(heads.GPLinkerRelation(2, 16), losses.gplinker_crossentropy, ids, mask, labels)
  pred = [[(t[s:e + 1], p, t[os:oe + 1]) for (s, e), p, (os, oe) in decode.decode_relations(*(o[b] for o in out), c,
                                                                                            predicates)]
          for b, (t, c) in enumerate(zip(texts, cmaps))]
  assert metrics.triple_scores(pred, triples)["f1"] == pytest.approx(1.0)
  # Events: two events per text sharing no argument, one of each type.
  labels_ev = [("e1", decode.TRIGGER), ("e1", "r"), ("e2", decode.TRIGGER), ("e2", "r")]
  events = []
  for t in texts:
    (a, b), (c, d), (e, f), (g, h) = _spans(rng, len(t), 4)
    events.append([[("e1", decode.TRIGGER, t[a:b + 1], a), ("e1", "r", t[c:d + 1], c)],
                   [("e2", decode.TRIGGER, t[e:f + 1], e), ("e2", "r", t[g:h + 1], g)]])
  esets = [spans.event_label_sets(ev, c, {l: i for i, l in enumerate(labels_ev)})[0] for ev, c in zip(events, cmaps)]
  labels = tuple(spans.pair_labels([e[k] for e in esets]) for k in range(3))
  out = _fit(heads.GPLinkerEvent(4, 16), losses.gplinker_crossentropy, ids, mask, labels)
  pred = [decode.event_texts(t, decode.decode_events(*(o[b] for o in out), c, labels_ev))
          for b, (t, c) in enumerate(zip(texts, cmaps))]
  m = metrics.event_scores(pred, events)
  assert m["event_f1"] == pytest.approx(1.0) and m["argument_f1"] == pytest.approx(1.0)
