"""Readers for the official CLUE classification files, and test predictions in the submission format.

  split = read_split("csl", "/data/csl_public", "train")      # -> Split(examples=[Example, ...])
  arrays = classify.encode_examples(tokenizer, split.examples, max_len=recipe("csl")["max_len"])
  for name in test_splits("csl", "/data/csl_public"):        # "test" (CLUE 1.1), "test1.0" where present
    write_predictions("csl", read_split("csl", "/data/csl_public", name), predicted_class_ids, out_dir)

Inputs, as the reference scripts build them (bojone/CLUE-bert4keras cc3c17e `load_data`):

| task    | fields                                   | text_a                               | text_b    |
|---------|------------------------------------------|--------------------------------------|-----------|
| afqmc   | sentence1, sentence2, label "0"/"1"      | sentence1                            | sentence2 |
| tnews   | sentence, label "100".."116" (15 codes)  | sentence (keywords unused)           | -         |
| iflytek | sentence, label "0".."118"               | sentence                             | -         |
| ocnli   | sentence1, sentence2, label (3 classes)  | sentence1                            | sentence2 |
| cmnli   | as ocnli                                 | sentence1                            | sentence2 |
| csl     | abst, keyword [..], label "0"/"1"        | "；".join(keyword) (U+FF1B)          | abst      |
| cluewsc | text, target{span1/2_index/_text}, label | text with span1 as _x_, span2 as [y] | -         |

OCNLI/CMNLI lines whose label is not one of the three ("-": annotators disagreed) are dropped, as the
reference does; each drop is listed in `Split.dropped`. Any other unusable line (invalid JSON, a missing
field, a field of the wrong type, an unknown label, a span outside its text) raises DataError naming the
file, the line and the field. Train and dev lines must have a label; the test files have none and must
have an `id`, which the submission repeats. The reference instead gives an unlabelled train/dev line a
default label (`l.get('label', 0)`); here that is an error.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Optional, Sequence, Union

from finetune.clue.tasks import FILES, FOLDERS, RECIPES, SUBMISSIONS, TASKS
from roformer_jax.data.classify import Example
from roformer_jax.data.jsonl import DataError, field, read_jsonl, write_jsonl

PathLike = Union[str, os.PathLike]
# CLUEWSC span marks: CLUE-bert4keras wraps span1 (the noun) in _..._ and span2 (the pronoun) in [...];
# the roformer-v2 copy of the scripts wraps both in [[...]].
WSC_STYLES = ("clue-bert4keras", "roformer-v2")
_DROP_UNKNOWN = ("ocnli", "cmnli")


@dataclasses.dataclass
class Split:
  """The examples of one split file; `dropped` and `warnings` are "file:line: why" lines."""
  task: str
  split: str
  path: pathlib.Path
  examples: list[Example]
  dropped: list[str] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)

  @property
  def labelled(self) -> bool:
    return not self.split.startswith("test")


def split_path(task: str, data_dir: PathLike, split: str) -> pathlib.Path:
  """The official file of `split` ("train", "dev", "test" or "test1.0") in the task's folder."""
  if task not in FILES:
    raise KeyError(f"unknown CLUE task {task!r}; expected one of {TASKS}")
  if split not in FILES[task]:
    raise KeyError(f"{task} has no split {split!r}; expected one of {tuple(FILES[task])}")
  return pathlib.Path(data_dir) / FILES[task][split]


def task_dir(task: str, data_dir: PathLike) -> pathlib.Path:
  """The folder holding `task`'s files: `data_dir` itself, or its subfolder <official folder> (afqmc_public/)
  or <task> (afqmc/), whichever has the train file; FileNotFoundError names the places looked at."""
  split_path(task, data_dir, "train")  # names an unknown task
  root = pathlib.Path(data_dir)
  candidates = [root, root / FOLDERS[task], root / task]
  for folder in candidates:
    if split_path(task, folder, "train").is_file():
      return folder
  raise FileNotFoundError(f"{root}: no {task} files (looked for {FILES[task]['train']} in "
                          f"{', '.join(str(c) for c in candidates)})")


def test_splits(task: str, data_dir: PathLike) -> list[str]:
  """The test splits whose files are in `data_dir` ("test" first); FileNotFoundError if there is none."""
  split_path(task, data_dir, "test")  # names an unknown task
  names = [s for s in FILES[task] if s.startswith("test") and split_path(task, data_dir, s).is_file()]
  if not names:
    files = [FILES[task][s] for s in FILES[task] if s.startswith("test")]
    raise FileNotFoundError(f"{data_dir}: no {task} test file ({' or '.join(files)})")
  return names


def _label(obj: dict, task: str, where: str) -> Optional[int]:
  """The class id of obj's label; None for a label the NLI tasks drop."""
  value = field(obj, "label", (str, int), where)
  labels = RECIPES[task]["labels"]
  if str(value) in labels:
    return labels.index(str(value))
  if task in _DROP_UNKNOWN:
    return None
  known = f"{labels}" if len(labels) < 20 else f"'{labels[0]}'..'{labels[-1]}'"
  raise DataError(f"{where}: label {value!r} is not a {task} label ({known})")


def _span(target: dict, n: int, text: str, where: str, warnings: list[str]) -> tuple[int, int]:
  """[start, end) of span n of a CLUEWSC target, by its index and the length of its text (as the reference)."""
  start = field(target, f"span{n}_index", int, f"{where}: target")
  span = field(target, f"span{n}_text", str, f"{where}: target")
  end = start + len(span)
  if start < 0 or end > len(text):
    raise DataError(f"{where}: target span{n} [{start}, {end}) is outside the text ({len(text)} characters)")
  if text[start:end] != span:
    warnings.append(f"{where}: span{n}_text {span!r} != text[{start}:{end}] {text[start:end]!r} (marked by index)")
  return start, end


def mark_wsc_spans(text: str, span1: tuple[int, int], span2: tuple[int, int], style: str = "clue-bert4keras") -> str:
  """CLUEWSC's text with its two spans marked: span1 (the noun) as _x_ and span2 (the pronoun) as [y]
  ("clue-bert4keras"), or both as [[x]] ("roformer-v2")."""
  (s1, e1), (s2, e2) = span1, span2
  if style == "roformer-v2":
    if s1 >= s2:
      (s1, e1), (s2, e2) = (s2, e2), (s1, e1)
    return text[:s1] + "[[" + text[s1:e1] + "]]" + text[e1:s2] + "[[" + text[s2:e2] + "]]" + text[e2:]
  if style != "clue-bert4keras":
    raise ValueError(f"wsc_style={style!r}; expected one of {WSC_STYLES}")
  if s1 < s2:
    return text[:s1] + "_" + text[s1:e1] + "_" + text[e1:s2] + "[" + text[s2:e2] + "]" + text[e2:]
  return text[:s2] + "[" + text[s2:e2] + "]" + text[e2:s1] + "_" + text[s1:e1] + "_" + text[e1:]


def _texts(task: str, obj: dict, where: str, wsc_style: str, warnings: list[str]) -> tuple[str, Optional[str]]:
  if task in ("tnews", "iflytek"):
    return field(obj, "sentence", str, where), None
  if task in ("afqmc", "ocnli", "cmnli"):
    return field(obj, "sentence1", str, where), field(obj, "sentence2", str, where)
  if task == "csl":
    keywords = field(obj, "keyword", list, where)
    if not all(isinstance(k, str) for k in keywords):
      raise DataError(f"{where}: field 'keyword' must be a list of strings")
    return "；".join(keywords), field(obj, "abst", str, where)
  text = field(obj, "text", str, where)
  target = field(obj, "target", dict, where)
  span1, span2 = _span(target, 1, text, where, warnings), _span(target, 2, text, where, warnings)
  return mark_wsc_spans(text, span1, span2, wsc_style), None


def read_split(task: str, data_dir: PathLike, split: str, wsc_style: str = "clue-bert4keras") -> Split:
  """The examples of `split` ("train", "dev", "test", "test1.0") of `task`, read from the official file
  in `data_dir` (the task's folder, e.g. ocnli_public/). See the module docstring for the layouts."""
  if wsc_style not in WSC_STYLES:
    raise ValueError(f"wsc_style={wsc_style!r}; expected one of {WSC_STYLES}")
  path = split_path(task, data_dir, split)
  out = Split(task, split, path, [])
  for n, obj in read_jsonl(path):
    where = f"{path}:{n}"
    text_a, text_b = _texts(task, obj, where, wsc_style, out.warnings)
    if out.labelled:
      label = _label(obj, task, where)
      if label is None:
        out.dropped.append(f"{where}: label {obj['label']!r} is not one of {RECIPES[task]['labels']}")
        continue
      example_id = obj.get("id", n)
    else:
      label, example_id = None, field(obj, "id", (int, str), where)
    out.examples.append(Example(text_a, text_b, label, example_id))
  if not out.examples:
    raise DataError(f"{path}: no examples")
  return out


def write_predictions(task: str, split: Split, predictions: Sequence[int], out_dir: PathLike) -> pathlib.Path:
  """`out_dir`/<submission name> (e.g. afqmc_predict.json): one {"id": "<id>", "label": "<label>"} per line,
  in the test file's order, id and label as strings (as the reference writes them); written atomically."""
  if split.task != task or split.split not in SUBMISSIONS[task]:
    raise ValueError(f"{split.path} ({split.task} {split.split}) is not a {task} test split")
  labels = RECIPES[task]["labels"]
  if len(predictions) != len(split.examples):
    raise ValueError(f"{len(predictions)} predictions for the {len(split.examples)} examples of {split.path}")
  rows = []
  for ex, p in zip(split.examples, predictions):
    if not 0 <= int(p) < len(labels):
      raise ValueError(f"prediction {p} for id {ex.id} is not a class of {task} (0..{len(labels) - 1})")
    rows.append({"id": str(ex.id), "label": labels[int(p)]})
  return write_jsonl(pathlib.Path(out_dir) / SUBMISSIONS[task][split.split], rows)
