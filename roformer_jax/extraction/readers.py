"""Readers for the official NER, relation and event extraction files, in a folder the user gives.

  ner = load_cluener("/data/cluener")           # {"train": Corpus, "dev": Corpus, "test": Corpus}
  ner = load_cmeee("/data/CMeEE")
  predicates, rel = load_duie("/data/duie")      # DuIE v1 (LIC2019)
  labels, ev = load_duee("/data/duee")           # DuEE 1.0

Formats (finetune-spec §b.5, c.2, c.5; spans are (start, end) characters, end INCLUSIVE throughout):

* CLUENER2020: train.json, dev.json, test.json, JSON lines
  {"text", "label": {type: {entity: [[start, end], ...]}}}.
* CMeEE (CBLUE): CMeEE_{train,dev,test}.json, one JSON list of
  {"text", "entities": [{"start_idx", "end_idx", "type", "entity"}]}.
* DuIE v1 (LIC2019): all_50_schemas, train_data.json, dev_data.json, test1_data_postag.json, JSON lines
  {"text", "spo_list": [{"subject", "predicate", "object", "subject_type", "object_type"}], "postag"}.
* DuEE 1.0: duee_event_schema.json, duee_train.json, duee_dev.json, duee_test2.json (or test1), JSON lines
  {"text", "id", "event_list": [{"event_type", "trigger", "trigger_start_index",
  "arguments": [{"role", "argument", "argument_start_index", "alias"}], "class"}]}.

Test files have no labels (their examples come with empty label lists and `labelled=False`).

Errors: a line that does not parse, a missing or mistyped field, an entity type, predicate, event type or
role that is not in the dataset's type list / schema raise `DataError("file:line: why")`. A span outside
its text, or whose characters differ from the entity / argument text the file gives, is an error too
unless `strict=False`, which drops that entity / argument and lists it in `Corpus.skipped`. CMeEE
entities with start > end are always dropped and listed, as the reference script drops them.

DuIE has no offsets: as the reference (bojone/GPLinker duie_v1.py `load_data`), text, subjects and objects
are normalised with ' '.join(s.split()) on reading, and located (first occurrence) when labels are built
(`spans.relation_label_sets`). DuIE 2.0's complex objects ({"@value": ...}) are not supported.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable, Optional, Sequence, Union

from roformer_jax.data.jsonl import DataError, field, read_json_list, read_jsonl
from roformer_jax.extraction.decode import TRIGGER

PathLike = Union[str, os.PathLike]
Entity = tuple[int, int, str]  # (start, end inclusive, type)
Triple = tuple[str, str, str]  # (subject, predicate, object)
Argument = tuple[str, str, str, int]  # (event_type, role, argument text, start); the trigger is a role

# Sorted, as the reference scripts order their heads (categories = sorted(set of types seen)).
CLUENER_TYPES = ("address", "book", "company", "game", "government", "movie", "name", "organization", "position",
                 "scene")
CMEEE_TYPES = ("bod", "dep", "dis", "dru", "equ", "ite", "mic", "pro", "sym")


@dataclasses.dataclass(frozen=True)
class NerExample:
  text: str
  entities: tuple[Entity, ...]
  id: Optional[Union[str, int]] = None
  where: str = ""  # "file:line"


@dataclasses.dataclass(frozen=True)
class RelationExample:
  text: str
  triples: tuple[Triple, ...]
  where: str = ""


@dataclasses.dataclass(frozen=True)
class EventExample:
  text: str
  events: tuple[tuple[Argument, ...], ...]  # each event: its trigger first, then its arguments
  id: Optional[str] = None
  where: str = ""


@dataclasses.dataclass
class Corpus:
  """The examples of one file; `skipped` lists "file:line: why" for each entity/argument dropped."""
  path: pathlib.Path
  examples: list
  labelled: bool
  skipped: list[str] = dataclasses.field(default_factory=list)

  def __len__(self) -> int:
    return len(self.examples)


def _find(folder: PathLike, names: Sequence[str], what: str, required: bool = True) -> Optional[pathlib.Path]:
  """The first of `names` that exists in `folder` (or one folder down, as the archives unpack)."""
  folder = pathlib.Path(folder).expanduser()
  for name in names:
    for path in [folder / name, *sorted(folder.glob(f"*/{name}"))]:
      if path.is_file():
        return path
  if required:
    raise FileNotFoundError(f"{folder}: no {what} file (looked for {', '.join(names)})")
  return None


def _span_error(where: str, why: str, strict: bool, skipped: list[str]) -> None:
  if strict:
    raise DataError(f"{where}: {why} (strict=False drops such spans and lists them)")
  skipped.append(f"{where}: {why}")


def _check_span(text: str, start: int, end: int, surface: Optional[str], where: str, strict: bool,
                skipped: list[str]) -> bool:
  """Whether characters [start, end] lie in `text` (and spell `surface`); raises or records otherwise."""
  if not 0 <= start <= end < len(text):
    _span_error(where, f"span [{start}, {end}] is outside the text (length {len(text)})", strict, skipped)
    return False
  if surface is not None and text[start:end + 1] != surface:
    _span_error(where, f"span [{start}, {end}] is {text[start:end + 1]!r} in the text, not {surface!r}", strict,
                skipped)
    return False
  return True


def _int(obj: dict, key: str, where: str) -> int:
  return field(obj, key, int, where)


def _type(kind: str, types: Sequence[str], where: str, what: str = "entity type") -> str:
  if kind not in types:
    raise DataError(f"{where}: unknown {what} {kind!r} (known: {', '.join(types)})")
  return kind


# ------------------------------------------------------------------------------------------------
# NER
# ------------------------------------------------------------------------------------------------
def read_cluener(path: PathLike, types: Sequence[str] = CLUENER_TYPES, strict: bool = True) -> Corpus:
  """A CLUENER2020 file (JSON lines); a file with no "label" on any line is a test file."""
  skipped: list[str] = []
  examples, labelled, unlabelled = [], False, None
  for n, obj in read_jsonl(path):
    where = f"{path}:{n}"
    text = field(obj, "text", str, where)
    entities = []
    unlabelled = unlabelled or ("label" not in obj and where)
    if "label" in obj:
      labelled = True
      for kind, found in field(obj, "label", dict, where).items():
        _type(kind, types, where)
        if not isinstance(found, dict):
          raise DataError(f"{where}: label[{kind!r}] is {type(found).__name__}, expected {{entity: [[start, end]]}}")
        for surface, positions in found.items():
          if not isinstance(positions, list):
            raise DataError(f"{where}: label[{kind!r}][{surface!r}] is not a list of [start, end]")
          for pos in positions:
            if not (isinstance(pos, list) and len(pos) == 2 and all(type(p) is int for p in pos)):
              raise DataError(f"{where}: label[{kind!r}][{surface!r}] holds {pos!r}, expected [start, end] ints")
            if _check_span(text, pos[0], pos[1], surface, where, strict, skipped):
              entities.append((pos[0], pos[1], kind))
    examples.append(NerExample(text, tuple(entities), obj.get("id"), where))
  _all_or_none(labelled, unlabelled, "label")
  return Corpus(pathlib.Path(path), examples, labelled, skipped)


def _all_or_none(labelled: bool, unlabelled: str | None, key: str) -> None:
  """A file is labelled on every line (train, dev) or on none (test): one line without is a broken line,
  which would otherwise train as a sentence with no entities."""
  if labelled and unlabelled:
    raise DataError(f"{unlabelled}: no {key!r} field, which the file's other lines have")


def read_cmeee(path: PathLike, types: Sequence[str] = CMEEE_TYPES, strict: bool = True) -> Corpus:
  """A CMeEE file (one JSON list); a file with no "entities" on any example is a test file."""
  skipped: list[str] = []
  examples, labelled, unlabelled = [], False, None
  for n, obj in read_json_list(path):
    where = f"{path}:{n}"
    text = field(obj, "text", str, where)
    entities = []
    unlabelled = unlabelled or ("entities" not in obj and where)
    if "entities" in obj:
      labelled = True
      for k, e in enumerate(field(obj, "entities", list, where)):
        at = f"{where}: entities[{k}]"
        if not isinstance(e, dict):
          raise DataError(f"{at} is {type(e).__name__}, expected an object")
        start, end = _int(e, "start_idx", at), _int(e, "end_idx", at)
        kind = _type(field(e, "type", str, at), types, at)
        if start > end:  # the reference keeps start <= end only
          skipped.append(f"{at}: start_idx {start} > end_idx {end}, dropped as the reference does")
          continue
        surface = e.get("entity") if isinstance(e.get("entity"), str) else None
        if _check_span(text, start, end, surface, at, strict, skipped):
          entities.append((start, end, kind))
    examples.append(NerExample(text, tuple(entities), obj.get("id"), where))
  _all_or_none(labelled, unlabelled, "entities")
  return Corpus(pathlib.Path(path), examples, labelled, skipped)


def _load(folder: PathLike, files: dict[str, Sequence[str]], reader: Callable[..., Corpus], **kw) -> dict[str, Corpus]:
  paths = {split: _find(folder, names, split, required=split != "test") for split, names in files.items()}
  return {split: reader(path, **kw) for split, path in paths.items() if path is not None}


CLUENER_FILES = {"train": ("train.json",), "dev": ("dev.json",), "test": ("test.json",)}
CMEEE_FILES = {s: (f"CMeEE_{s}.json", f"CMeEE-V2_{s}.json") for s in ("train", "dev", "test")}


def load_cluener(folder: PathLike, strict: bool = True) -> dict[str, Corpus]:
  """{split: Corpus} of a CLUENER2020 folder (train and dev required, test if present)."""
  return _load(folder, CLUENER_FILES, read_cluener, strict=strict)


def load_cmeee(folder: PathLike, strict: bool = True) -> dict[str, Corpus]:
  """{split: Corpus} of a CMeEE folder (train and dev required, test if present)."""
  return _load(folder, CMEEE_FILES, read_cmeee, strict=strict)


# ------------------------------------------------------------------------------------------------
# Relations: DuIE v1
# ------------------------------------------------------------------------------------------------
def normalize(text: str) -> str:
  """' '.join(text.split()): runs of whitespace -> one space, ends stripped (the reference's `normalize`)."""
  return " ".join(text.split())


def read_duie_schema(path: PathLike) -> list[str]:
  """Predicates of `all_50_schemas` (JSON lines {"subject_type", "predicate", "object_type"}), de-duplicated
  in file order: predicate i is head i."""
  predicates: dict[str, None] = {}
  for n, obj in read_jsonl(path):
    predicates.setdefault(field(obj, "predicate", str, f"{path}:{n}"))
  if not predicates:
    raise DataError(f"{path}: no predicates")
  return list(predicates)


def read_duie(path: PathLike, predicates: Sequence[str], strict: bool = True) -> Corpus:
  """A DuIE v1 file (JSON lines); "spo_list" on every line, or on none (the test file). A triple with an
  empty subject or object is an error, or with `strict=False` dropped and listed in `Corpus.skipped`."""
  examples, labelled, unlabelled, skipped = [], False, None, []
  for n, obj in read_jsonl(path):
    where = f"{path}:{n}"
    text = normalize(field(obj, "text", str, where))
    triples = []
    unlabelled = unlabelled or ("spo_list" not in obj and where)
    if "spo_list" in obj:
      labelled = True
      for k, spo in enumerate(field(obj, "spo_list", list, where)):
        at = f"{where}: spo_list[{k}]"
        if not isinstance(spo, dict):
          raise DataError(f"{at} is {type(spo).__name__}, expected an object")
        if isinstance(spo.get("object"), dict):
          raise DataError(f"{at}: a DuIE 2.0 complex object ({{'@value': ...}}); only DuIE v1 is supported")
        s, o = normalize(field(spo, "subject", str, at)), normalize(field(spo, "object", str, at))
        p = _type(field(spo, "predicate", str, at), predicates, at, "predicate")
        if not s or not o:
          _span_error(at, "empty subject or object", strict, skipped)
          continue
        triples.append((s, p, o))
    examples.append(RelationExample(text, tuple(triples), where))
  _all_or_none(labelled, unlabelled, "spo_list")
  return Corpus(pathlib.Path(path), examples, labelled, skipped)


DUIE_FILES = {"train": ("train_data.json",), "dev": ("dev_data.json",),
              "test": ("test1_data_postag.json", "test_data.json", "test1_data.json")}


def load_duie(folder: PathLike, strict: bool = True) -> tuple[list[str], dict[str, Corpus]]:
  """(predicates, {split: Corpus}) of a DuIE v1 folder (all_50_schemas, train and dev, test if present)."""
  predicates = read_duie_schema(_find(folder, ("all_50_schemas", "all_50_schemas.json"), "schema"))
  return predicates, _load(folder, DUIE_FILES, read_duie, predicates=predicates, strict=strict)


# ------------------------------------------------------------------------------------------------
# Events: DuEE 1.0
# ------------------------------------------------------------------------------------------------
def read_duee_schema(path: PathLike) -> list[tuple[str, str]]:
  """The labels (event_type, role) of `duee_event_schema.json` in the reference's order: per line, the
  trigger (`TRIGGER`) then the roles of "role_list"."""
  labels: list[tuple[str, str]] = []
  for n, obj in read_jsonl(path):
    where = f"{path}:{n}"
    kind = field(obj, "event_type", str, where)
    if any(k == kind for k, _ in labels):
      raise DataError(f"{where}: event type {kind!r} appears twice")
    labels.append((kind, TRIGGER))
    for k, r in enumerate(field(obj, "role_list", list, where)):
      if not isinstance(r, dict):
        raise DataError(f"{where}: role_list[{k}] is {type(r).__name__}, expected an object")
      labels.append((kind, field(r, "role", str, f"{where}: role_list[{k}]")))
  if not labels:
    raise DataError(f"{path}: no event types")
  return labels


def read_duee(path: PathLike, labels: Sequence[tuple[str, str]], strict: bool = True) -> Corpus:
  """A DuEE 1.0 file (JSON lines); "event_list" on every line, or on none (the test file).

  Each event becomes (event_type, TRIGGER, trigger, trigger_start_index) followed by its arguments
  (event_type, role, argument, argument_start_index), as the reference's `load_data`.
  """
  known = set(labels)
  kinds = sorted({k for k, _ in labels})
  skipped: list[str] = []
  examples, labelled, unlabelled = [], False, None
  for n, obj in read_jsonl(path):
    where = f"{path}:{n}"
    text = field(obj, "text", str, where)
    events = []
    unlabelled = unlabelled or ("event_list" not in obj and where)
    if "event_list" in obj:
      labelled = True
      for k, e in enumerate(field(obj, "event_list", list, where)):
        at = f"{where}: event_list[{k}]"
        if not isinstance(e, dict):
          raise DataError(f"{at} is {type(e).__name__}, expected an object")
        kind = _type(field(e, "event_type", str, at), kinds, at, "event type")
        trigger, start = field(e, "trigger", str, at), _int(e, "trigger_start_index", at)
        event = []
        if _check_span(text, start, start + len(trigger) - 1, trigger, f"{at} trigger", strict, skipped):
          event.append((kind, TRIGGER, trigger, start))
        for j, a in enumerate(field(e, "arguments", list, at)):
          aat = f"{at}.arguments[{j}]"
          if not isinstance(a, dict):
            raise DataError(f"{aat} is {type(a).__name__}, expected an object")
          role, argument = field(a, "role", str, aat), field(a, "argument", str, aat)
          if (kind, role) not in known:
            raise DataError(f"{aat}: role {role!r} is not a role of {kind!r} in the schema")
          astart = _int(a, "argument_start_index", aat)
          if _check_span(text, astart, astart + len(argument) - 1, argument, aat, strict, skipped):
            event.append((kind, role, argument, astart))
        events.append(tuple(event))
    examples.append(EventExample(text, tuple(events), obj.get("id"), where))
  _all_or_none(labelled, unlabelled, "event_list")
  return Corpus(pathlib.Path(path), examples, labelled, skipped)


DUEE_FILES = {"train": ("duee_train.json",), "dev": ("duee_dev.json",),
              "test": ("duee_test2.json", "duee_test1.json", "duee_test.json")}


def load_duee(folder: PathLike, strict: bool = True) -> tuple[list[tuple[str, str]], dict[str, Corpus]]:
  """(labels, {split: Corpus}) of a DuEE 1.0 folder (duee_event_schema.json, train and dev, test if present)."""
  labels = read_duee_schema(_find(folder, ("duee_event_schema.json",), "schema"))
  return labels, _load(folder, DUEE_FILES, read_duee, labels=labels, strict=strict)

