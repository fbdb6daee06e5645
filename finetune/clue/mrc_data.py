"""Readers for CLUE's reading-comprehension and multiple-choice files (CMRC2018, C3, CHID), and their
submission files, as the reference scripts read and write them (ZhuiyiTechnology/roformer-v2 `clue/`, which
bojone/CLUE-bert4keras's src/ matches except CHID's input, noted below).

CMRC2018 (SQuAD layout): {"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers":
  [{"text", "answer_start"}]}]}]}]}. Every question is cut into windows of its context (`cmrc_windows`):
  (maxlen - len(question) - 3) characters, starting every `stride` = 128 characters, the last one reaching the
  end; a window holds the answer iff the whole answer lies inside it. As the reference, one set of windows
  per answer (dev questions have up to 3), texts lower-cased with accents stripped (bert4keras
  `lowercase_and_normalize`); a question without answers (the test file) gets one set without answers. A
  question leaving no room for context is cut to (maxlen - 3) // 2 characters (`window_question`; the
  reference's windows would hold no context).
C3: one JSON list of [paragraphs, [{"question", "choice": [...], "answer", "id"}...], doc id]; the passage is
  the paragraphs joined by "||", choices padded to 4 with "无效答案" (and cut at 4); the label is the answer's
  index in the choices (test questions have no answer: label None).
CHID: JSON lines {"candidates": [10 idioms], "content": [paragraphs with #idiom012345# blanks]}, answers in a
  separate JSON {"#idiom012345#": candidate index}. One example per blank: its left and right context with
  the other blanks as "_____", trimmed together to `maxlen - 8` characters by dropping characters from the
  outer end of the longer side (the roformer-v2 layout [CLS] left [SEP] idiom [SEP] right [SEP]; CLUE-bert4keras
  puts the idiom first and marks the blanks with [MASK]s and [unused1] instead). Blanks of one line share its
  candidates and are assigned jointly (`mrc_metrics.assign_idioms`).

Bad lines raise DataError naming the file and line (JSON lines, C3's list elements) or the JSON path
(CMRC2018's nested objects, e.g. `data[3].paragraphs[0].qas[2]`). A CMRC2018 answer whose text is not at its
answer_start is no error: as the reference, its label is the span of the answer's length at answer_start
(counted in `Question.misaligned`); an answer_start outside the context is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import unicodedata
from typing import Optional, Sequence, Union

from roformer_jax.data.jsonl import DataError, field, read_json_list, read_jsonl, read_text

PathLike = Union[str, os.PathLike]

# task -> split -> file name in the official folder (cmrc2018_public/, c3_public/, chid_public/). C3's train and
# dev are two files each (dialogue "d-" and mixed-genre "m-"), read in the reference's order (m first).
FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "cmrc2018": {"train": ("train.json",), "dev": ("dev.json",), "test": ("test.json",)},
    "c3": {"train": ("m-train.json", "d-train.json"), "dev": ("m-dev.json", "d-dev.json"),
           "test": ("test1.1.json",), "test1.0": ("test1.0.json",)},
    "chid": {"train": ("train.json", "train_answer.json"), "dev": ("dev.json", "dev_answer.json"),
             "test": ("test1.1.json",), "test1.0": ("test1.0.json",)},
}
SUBMISSIONS = {"cmrc2018": {"test": "cmrc2018_predict.json"},
               "c3": {"test": "c311_predict.json", "test1.0": "c310_predict.json"},
               "chid": {"test": "chid11_predict.json", "test1.0": "chid10_predict.json"}}
C3_CHOICES, C3_FILLER = 4, "无效答案"
CHID_CANDIDATES = 10
BLANK = re.compile(r"#idiom\d{6}#")


def normalize(text: str) -> str:
  """bert4keras `lowercase_and_normalize`: lower case, NFD, combining marks (category Mn) removed."""
  return "".join(ch for ch in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(ch) != "Mn")


# ------------------------------------------------------------------------------------------------ CMRC2018
@dataclasses.dataclass(frozen=True)
class Window:
  """One question over one window of its context; `start`/`end` the answer's [start, end) characters in
  `context`, (-1, -1) where the window does not hold it."""
  qid: str
  question: str
  context: str
  answer: str
  start: int
  end: int
  offset: int  # the window's first character in the (normalised) full context


@dataclasses.dataclass(frozen=True)
class Question:
  qid: str
  question: str
  context: str  # as in the file (answers are cut from it)
  answers: tuple[str, ...]
  misaligned: int = 0  # answers whose text is not at their answer_start (labelled there all the same)


def window_question(question: str, maxlen: int) -> str:
  """The normalised question as windows hold it: cut to its first (maxlen - 3) // 2 characters where it leaves
  no room for context. (The reference keeps it whole: its windows then hold no context at all, and their
  sequences run past maxlen, which fixed-length arrays cannot hold.)"""
  q = normalize(question)
  return q[:(maxlen - 3) // 2] if len(q) >= maxlen - 3 else q


def cmrc_windows(qid: str, question: str, context: str, answer: str, start: int, maxlen: int = 512,
                 stride: int = 128) -> list[Window]:
  """The reference's `stride_split`: windows of (maxlen - len(question) - 3) characters every `stride`; `start`:
  the answer's first character in `context` as written (answer_start). A question leaving no room for context
  is cut (`window_question`)."""
  q, c, a = window_question(question, maxlen), normalize(context), normalize(answer)
  if start > 0:  # the answer's start in the normalised context (the reference keeps the file's: off by the
    start = len(normalize(context[:start]))  # characters normalising adds or drops before it, e.g. Hangul)
  end = start + len(a)
  width = maxlen - len(q) - 3
  if width <= 0:
    raise ValueError(f"maxlen {maxlen} leaves no room for context (it must be at least 4)")
  out, n = [], 0
  while True:
    lo, hi = n * stride, n * stride + width
    if lo <= start < end <= hi:
      out.append(Window(qid, q, c[lo:hi], a, start - lo, end - lo, lo))
    else:
      out.append(Window(qid, q, c[lo:hi], "", -1, -1, lo))
    if hi >= len(c):
      return out
    n += 1


def read_cmrc(path: PathLike, maxlen: int = 512, stride: int = 128) -> tuple[list[Question], list[Window]]:
  """The questions of a CMRC2018 file and their windows (grouped by question, in file order)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file")
  try:
    root = json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(root, dict):
    raise DataError(f"{path}: expected a JSON object with 'data'")
  questions, windows = [], []
  for i, doc in enumerate(field(root, "data", list, f"{path}")):
    where_doc = f"{path}: data[{i}]"
    if not isinstance(doc, dict):
      raise DataError(f"{where_doc}: expected a JSON object")
    for j, par in enumerate(field(doc, "paragraphs", list, where_doc)):
      where_par = f"{where_doc}.paragraphs[{j}]"
      context = field(par, "context", str, where_par)
      for k, qa in enumerate(field(par, "qas", list, where_par)):
        where = f"{where_par}.qas[{k}]"
        qid, question = str(field(qa, "id", (str, int), where)).strip(), field(qa, "question", str, where)
        answers, misaligned = [], 0
        for m, ans in enumerate(qa.get("answers") or []):
          text = field(ans, "text", str, f"{where}.answers[{m}]")
          start = field(ans, "answer_start", int, f"{where}.answers[{m}]")
          if start < -1 or start + len(text) > len(context):
            raise DataError(f"{where}.answers[{m}]: answer_start {start} (+ {len(text)} characters of {text!r}) "
                            f"is outside the context ({len(context)} characters)")
          # A text not at its answer_start is labelled at answer_start all the same, as the reference trains
          # (its span: len(text) characters from answer_start); counted, prepare says how many.
          misaligned += start != -1 and context[start:start + len(text)] != text
          answers.append((text, start))
        try:
          if not answers or answers[0][1] == -1:  # the test file: windows without answers, once
            windows.extend(cmrc_windows(qid, question, context, "", -1, maxlen, stride))
          for text, start in answers:
            if start == -1:
              break  # as the reference
            windows.extend(cmrc_windows(qid, question, context, text, start, maxlen, stride))
        except ValueError as e:
          raise DataError(f"{where}: {e}") from None
        questions.append(Question(qid, question, context, tuple(t for t, s in answers if s != -1), misaligned))
  if not questions:
    raise DataError(f"{path}: no questions")
  return questions, windows


def write_cmrc_predictions(answers: dict[str, str], out_dir: PathLike) -> pathlib.Path:
  """cmrc2018_predict.json: {question id: answer text} (indent 4, not ASCII-escaped, as the reference)."""
  return _write_json(pathlib.Path(out_dir) / SUBMISSIONS["cmrc2018"]["test"], answers)


# ------------------------------------------------------------------------------------------------ C3
@dataclasses.dataclass(frozen=True)
class ChoiceExample:
  """A C3 question: passage, question, exactly 4 choices, the answer's index (None for a test question)."""
  passage: str
  question: str
  choices: tuple[str, ...]
  label: Optional[int]
  id: Union[int, str, None]


def read_c3(paths: Sequence[PathLike], labelled: bool = True) -> list[ChoiceExample]:
  """The questions of C3 files (each one JSON list of [paragraphs, questions, doc id])."""
  out = []
  for path in paths:
    for line, doc in read_json_list(path, element=list):
      where = f"{path}:{line}"
      if len(doc) < 2 or not isinstance(doc[0], list) or not isinstance(doc[1], list):
        raise DataError(f"{where}: expected [paragraphs, questions, id], got {json.dumps(doc, ensure_ascii=False):.60}")
      if not all(isinstance(p, str) for p in doc[0]):
        raise DataError(f"{where}: the paragraphs must be strings")
      passage = "||".join(doc[0])
      for k, qa in enumerate(doc[1]):
        w = f"{where}: question {k}"
        if not isinstance(qa, dict):
          raise DataError(f"{w}: expected a JSON object")
        choices = field(qa, "choice", list, w)
        if not choices or not all(isinstance(c, str) for c in choices):
          raise DataError(f"{w}: field 'choice' must be a non-empty list of strings")
        if len(choices) > C3_CHOICES:
          raise DataError(f"{w}: {len(choices)} choices; C3 has at most {C3_CHOICES}")
        choices = tuple(choices) + (C3_FILLER,) * (C3_CHOICES - len(choices))
        label = None
        if labelled:
          answer = field(qa, "answer", str, w)
          if answer not in choices:
            raise DataError(f"{w}: answer {answer!r} is not one of the choices {list(choices)}")
          label = choices.index(answer)
        out.append(ChoiceExample(passage, field(qa, "question", str, w), choices, label,
                                 qa.get("id") if labelled else field(qa, "id", (str, int), w)))
  if not out:
    raise DataError(f"{', '.join(map(str, paths))}: no questions")
  return out


def write_c3_predictions(examples: Sequence[ChoiceExample], predictions: Sequence[int], split: str,
                         out_dir: PathLike) -> pathlib.Path:
  """c311_predict.json / c310_predict.json: one {"id": str, "label": str(choice index)} per question."""
  from roformer_jax.data.jsonl import write_jsonl
  if len(predictions) != len(examples):
    raise ValueError(f"{len(predictions)} predictions for {len(examples)} C3 questions")
  return write_jsonl(pathlib.Path(out_dir) / SUBMISSIONS["c3"][split],
                     ({"id": str(e.id), "label": str(int(p))} for e, p in zip(examples, predictions)))


# ------------------------------------------------------------------------------------------------ CHID
@dataclasses.dataclass(frozen=True)
class BlankExample:
  """One CHID blank: its trimmed left/right context, the line's candidates, the answer (None for test)."""
  passage: int  # the line (0-based) the blank belongs to: its candidates and joint assignment
  key: str  # "#idiom012345#"
  left: str
  right: str
  candidates: tuple[str, ...]
  label: Optional[int]


def chid_contexts(paragraph: str, maxlen: int = 64) -> list[tuple[str, str, str]]:
  """(blank key, left, right) for each blank of a paragraph, the other blanks as "_____", trimmed together to
  maxlen - 8 characters from the outer end of the longer side (the reference's loop)."""
  out = []
  for m in BLANK.finditer(paragraph):
    left = BLANK.sub("_____", paragraph[:m.start()])
    right = BLANK.sub("_____", paragraph[m.end():])
    n_left, n_right = len(left), len(right)
    while n_left + n_right > maxlen - 8:  # the reference's loop, on lengths (then one slice each)
      if n_left >= n_right:
        n_left -= 1
      else:
        n_right -= 1
    left, right = left[len(left) - n_left:], right[:n_right]
    out.append((m.group(), left, right))
  return out


def read_chid(path: PathLike, answer_path: Optional[PathLike] = None, maxlen: int = 64) -> list[BlankExample]:
  """The blanks of a CHID file, with their answers from `answer_path` (train/dev) or None (test)."""
  answers = None
  if answer_path is not None:
    answer_path = pathlib.Path(answer_path)
    if not answer_path.is_file():
      raise FileNotFoundError(f"{answer_path}: no such file")
    try:
      answers = json.loads(read_text(answer_path))
    except json.JSONDecodeError as e:
      raise DataError(f"{answer_path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(answers, dict):
      raise DataError(f"{answer_path}: expected a JSON object {{blank: candidate index}}")
  out: list[BlankExample] = []
  for i, (n, obj) in enumerate(read_jsonl(path)):
    where = f"{path}:{n}"
    candidates = field(obj, "candidates", list, where)
    if len(candidates) != CHID_CANDIDATES or not all(isinstance(c, str) for c in candidates):
      raise DataError(f"{where}: 'candidates' must be {CHID_CANDIDATES} strings, got {candidates!r:.80}")
    content = field(obj, "content", list, where)
    for paragraph in content:
      if not isinstance(paragraph, str):
        raise DataError(f"{where}: 'content' must be a list of strings")
      for key, left, right in chid_contexts(paragraph, maxlen):
        label = None
        if answers is not None:
          if key not in answers:
            raise DataError(f"{answer_path}: no answer for {key} (blank of {where})")
          label = answers[key]
          if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < CHID_CANDIDATES:
            raise DataError(f"{answer_path}: answer of {key} is {label!r}, expected 0..{CHID_CANDIDATES - 1}")
        out.append(BlankExample(i, key, left, right, tuple(candidates), label))
  if not out:
    raise DataError(f"{path}: no #idiom# blanks")
  return out


def write_chid_predictions(examples: Sequence[BlankExample], predictions: Sequence[int], split: str,
                           out_dir: PathLike) -> pathlib.Path:
  """chid11_predict.json / chid10_predict.json: {"#idiom012345#": candidate index} (indent 4)."""
  if len(predictions) != len(examples):
    raise ValueError(f"{len(predictions)} predictions for {len(examples)} CHID blanks")
  return _write_json(pathlib.Path(out_dir) / SUBMISSIONS["chid"][split],
                     {e.key: int(p) for e, p in zip(examples, predictions)})


def _write_json(path: pathlib.Path, obj) -> pathlib.Path:
  import tempfile
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(obj, f, ensure_ascii=False, indent=4)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return path
