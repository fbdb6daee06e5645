"""Small, learnable relation and event tasks over real text: People's Daily sentences, synthetic labels.

These are NOT information-extraction benchmarks. The text and its PER / LOC / ORG entities are People's Daily's
(`people_daily`, the NER labels of the PKU annotation); the relations and events are made by the fixed rules
below, so a model can learn them and a GPLinker run on CPU has something measurable to reach. Sentences come
from the prepared People's Daily NER splits (train / dev / test, fixed by `people_daily.SPLIT_SEED`) and keep
their split. Sentences longer than `MAX_CHARS` characters are left out (they would be cut at seq_len 128).

Relations (DuIE v1 format, two predicates; "nearest to the right" = the entity whose start is smallest among
those that start after the subject ends, at most `WINDOW` characters after it):
* `person_place`: (PER, person_place, the nearest LOC to the right of that PER);
* `org_place`: (ORG, org_place, the nearest LOC to the right of that ORG).
DuIE has no offsets: readers find subjects and objects by first occurrence. A sentence in which some entity's
text first occurs elsewhere than at that entity (a repeated name, or a name inside another word) is left out, so
that the first occurrences are the rule's mentions. Every sentence with a triple is kept; of the other sentences
with entities, every `NEGATIVE_EVERY`-th of its split (in file order) is kept as a negative.

Events (DuEE 1.0 format, four event types): every occurrence of a trigger word of `TRIGGERS` that overlaps no
entity is one event of that word's type, with up to two arguments:
* `主体` (agent): the nearest PER or ORG that ends before the trigger (largest end), at most `WINDOW` characters
  before it;
* `客体` (object): the nearest PER, LOC or ORG that starts after the trigger (smallest start), at most `WINDOW`
  characters after it.
Every sentence with a trigger is kept; of the sentences with entities and no trigger, every
`NEGATIVE_EVERY`-th of its split (in file order) is kept as a negative.

`prepare_relations(data_dir)` / `prepare_events(data_dir)` write the official files (`all_50_schemas`,
`train_data.json`, ... / `duee_event_schema.json`, `duee_train.json`, ...) once per source content into
`<data_dir>/<name>/<key>/`, atomically (a temporary sibling renamed into place); `readers.load_duie` /
`load_duee` read them as they read the official data. Nothing is read at import.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable, Iterable, Optional, Sequence, Union

from roformer_jax.data.jsonl import write_jsonl
from roformer_jax.extraction import people_daily
from roformer_jax.extraction.decode import TRIGGER
from roformer_jax.extraction.readers import NerExample

PathLike = Union[str, os.PathLike]
FORMAT = "synthetic-v1"  # bump when a rule changes: part of every key
MAX_CHARS = 126
WINDOW = 20
NEGATIVE_EVERY = 8
PREDICATES = ("person_place", "org_place")
SUBJECT_TYPES = {"PER": "person_place", "ORG": "org_place"}
TRIGGERS = {"会见": "会见", "会晤": "会见", "接见": "会见",
            "访问": "访问", "考察": "访问", "视察": "访问",
            "举行": "举行", "召开": "举行", "举办": "举行",
            "出席": "出席", "参加": "出席"}
EVENT_TYPES = ("会见", "访问", "举行", "出席")
AGENT, OBJECT = "主体", "客体"
FILE_NAMES = {"relation": {"train": "train_data.json", "dev": "dev_data.json", "test": "test_data.json"},
              "event": {"train": "duee_train.json", "dev": "duee_dev.json", "test": "duee_test2.json"}}

Triple = tuple[str, str, str]
Argument = tuple[str, str, str, int]


def _right_of(end: int, entities: Iterable[tuple[int, int, str]], kinds: Sequence[str]):
  """The entity of `kinds` with the smallest start > end, within WINDOW characters; None if none."""
  found = [e for e in entities if e[2] in kinds and end < e[0] <= end + 1 + WINDOW]
  return min(found, default=None)


def _left_of(start: int, entities: Iterable[tuple[int, int, str]], kinds: Sequence[str]):
  """The entity of `kinds` with the largest end < start, within WINDOW characters; None if none."""
  found = [e for e in entities if e[2] in kinds and start - 1 - WINDOW <= e[1] < start]
  return max(found, key=lambda e: (e[1], e[0]), default=None)


def first_occurrences(example: NerExample) -> bool:
  """Whether every entity's text first occurs in the sentence at that entity (what DuIE's readers assume)."""
  return all(example.text.find(example.text[s:e + 1]) == s for s, e, _ in example.entities)


def relation_triples(example: NerExample) -> list[Triple]:
  """The sentence's (subject, predicate, object) triples by the module's rules, sorted."""
  text, out = example.text, set()
  for s, e, kind in example.entities:
    if kind in SUBJECT_TYPES:
      obj = _right_of(e, example.entities, ("LOC",))
      if obj is not None:
        out.add((text[s:e + 1], SUBJECT_TYPES[kind], text[obj[0]:obj[1] + 1]))
  return sorted(out)


def trigger_spans(example: NerExample) -> list[tuple[int, str]]:
  """(start, word) of every trigger word occurrence that overlaps no entity, in text order."""
  out = []
  for word in TRIGGERS:
    at = example.text.find(word)
    while at >= 0:
      end = at + len(word) - 1
      if not any(s <= end and at <= e for s, e, _ in example.entities):
        out.append((at, word))
      at = example.text.find(word, at + 1)
  return sorted(out)


def sentence_events(example: NerExample) -> list[tuple[Argument, ...]]:
  """The sentence's events by the module's rules: each (type, TRIGGER, word, start) then its arguments."""
  text, events = example.text, []
  for at, word in trigger_spans(example):
    kind = TRIGGERS[word]
    event = [(kind, TRIGGER, word, at)]
    agent = _left_of(at, example.entities, ("PER", "ORG"))
    if agent is not None:
      event.append((kind, AGENT, text[agent[0]:agent[1] + 1], agent[0]))
    obj = _right_of(at + len(word) - 1, example.entities, ("PER", "LOC", "ORG"))
    if obj is not None:
      event.append((kind, OBJECT, text[obj[0]:obj[1] + 1], obj[0]))
    events.append(tuple(event))
  return events


def _negative(count: list[int]) -> bool:
  """Whether this negative is kept: the 1st, (1 + NEGATIVE_EVERY)-th, ... of its split."""
  count[0] += 1
  return (count[0] - 1) % NEGATIVE_EVERY == 0


def relation_rows(sentences: Sequence[NerExample]) -> tuple[list[dict], int]:
  """DuIE lines: sentences with a triple and every NEGATIVE_EVERY-th other one with entities; and how many
  sentences the first-occurrence rule left out."""
  rows, left_out, negatives = [], 0, [0]
  for ex in sentences:
    if not ex.entities or len(ex.text) > MAX_CHARS:
      continue
    if not first_occurrences(ex):
      left_out += 1
      continue
    triples = relation_triples(ex)
    if not triples and not _negative(negatives):
      continue
    types = dict(person_place=("人物", "地点"), org_place=("机构", "地点"))
    rows.append({"text": ex.text, "postag": [], "spo_list": [
        {"subject": s, "predicate": p, "object": o, "subject_type": types[p][0], "object_type": types[p][1]}
        for s, p, o in triples]})
  return rows, left_out


def event_rows(sentences: Sequence[NerExample], split: str) -> list[dict]:
  """DuEE lines: sentences with a trigger, and every NEGATIVE_EVERY-th sentence with entities and none."""
  rows, negatives = [], [0]
  for n, ex in enumerate(sentences):
    if len(ex.text) > MAX_CHARS:
      continue
    events = sentence_events(ex)
    if not events and (not ex.entities or not _negative(negatives)):
      continue
    rows.append({"text": ex.text, "id": f"{split}-{n}", "event_list": [
        {"event_type": e[0][0], "trigger": e[0][2], "trigger_start_index": e[0][3], "class": e[0][0],
         "arguments": [{"role": r, "argument": a, "argument_start_index": s, "alias": []} for _, r, a, s in e[1:]]}
        for e in events]})
  return rows


def schema(kind: str) -> list[dict]:
  """The schema file's lines: DuIE predicates ("relation") or DuEE event types with their roles ("event")."""
  if kind == "relation":
    return [{"subject_type": "人物", "predicate": "person_place", "object_type": "地点"},
            {"subject_type": "机构", "predicate": "org_place", "object_type": "地点"}]
  return [{"event_type": t, "role_list": [{"role": AGENT}, {"role": OBJECT}], "id": t} for t in EVENT_TYPES]


def _prepare(kind: str, data_dir: PathLike, source: Optional[PathLike],
             rows_of: Callable[[str, list[NerExample]], list[dict]]) -> pathlib.Path:
  ner = people_daily.prepare_people_daily(data_dir, source)
  name = f"people_daily_{kind}"
  key = hashlib.sha256(f"{FORMAT} {kind} {MAX_CHARS} {WINDOW} {NEGATIVE_EVERY} {ner.name}".encode()).hexdigest()[:16]
  root = pathlib.Path(data_dir).expanduser().absolute() / name
  out = root / key
  if (out / "meta.json").is_file():
    return out
  splits = people_daily.load_people_daily(ner)
  root.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
  try:
    schema_file = "all_50_schemas" if kind == "relation" else "duee_event_schema.json"
    write_jsonl(tmp / schema_file, schema(kind))
    sizes = {}
    for split, file in FILE_NAMES[kind].items():
      rows = rows_of(split, splits[split])
      write_jsonl(tmp / file, rows)
      sizes[split] = len(rows)
    meta = dict(name=name, format=FORMAT, source=str(ner), max_chars=MAX_CHARS, window=WINDOW,
                negative_every=NEGATIVE_EVERY, sizes=sizes, note="synthetic labels over real text; see "
                "roformer_jax/extraction/synthetic.py")
    (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    try:
      os.rename(tmp, out)
    except OSError:
      if not (out / "meta.json").is_file():  # not a concurrent writer that finished first
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out


def prepare_relations(data_dir: PathLike, source: Optional[PathLike] = None) -> pathlib.Path:
  """The DuIE-format relation folder (prepared once, atomically); returns it."""
  return _prepare("relation", data_dir, source, lambda split, s: relation_rows(s)[0])


def prepare_events(data_dir: PathLike, source: Optional[PathLike] = None) -> pathlib.Path:
  """The DuEE-format event folder (prepared once, atomically); returns it."""
  return _prepare("event", data_dir, source, lambda split, s: event_rows(s, split))
