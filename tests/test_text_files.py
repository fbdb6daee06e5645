"""Users' text files as editors write them: a UTF-8 BOM, Windows (\\r\\n) and old-Mac (\\r) line endings read as
the plain file does, and errors still name the line an editor shows."""

import io
import json

import pytest

from finetune.clue import data as clue_data
from finetune.clue import mrc_data
from roformer_jax.data import jsonl, labeled, sources
from roformer_jax.extraction import people_daily, readers
from roformer_jax.pet import reviews
from roformer_jax.seq2seq import csl

BOM = b"\xef\xbb\xbf"
STYLES = {"bom+crlf": (BOM, b"\r\n"), "bom+cr": (BOM, b"\r"), "cr": (b"", b"\r"), "bom": (BOM, b"\n")}


def _line(where):
  return where.rsplit(":", 1)[1]


def _write(path, lines, style="plain", final=True):
  bom, eol = STYLES.get(style, (b"", b"\n"))
  path.write_bytes(bom + eol.join(line.encode("utf-8") for line in lines) + (eol if final else b""))
  return path


@pytest.mark.parametrize("data", [b"", b"a", b"a\n", b"a\r", b"a\r\n", b"\r\n\r\n", b"a\r\rb\n\nc", b"\xe4\xbd\xa0\r\n\xff\r",
                                  b"a\r\n\r\nb\r", BOM + b"x\ry", b"x" + BOM + b"\n" + BOM])
def test_raw_lines_split_as_text_mode(tmp_path, data):
  path = tmp_path / "f.txt"
  path.write_bytes(data)
  # Python's text mode is the reference for where lines end; only the first line's BOM is dropped.
  expected = [line.rstrip("\n").encode("latin-1") for line in io.open(path, encoding="latin-1", newline=None)]
  if expected and expected[0].startswith(BOM):
    expected[0] = expected[0][len(BOM):]
  assert [raw for _, raw in jsonl.raw_lines(path)] == expected
  assert [n for n, _ in jsonl.raw_lines(path)] == list(range(1, len(expected) + 1))


@pytest.mark.parametrize("style", list(STYLES))
def test_line_readers_ignore_bom_and_line_endings(tmp_path, style):
  def both(name, lines, read, **kw):
    plain = read(_write(tmp_path / "plain" / name, lines, **kw))
    other = read(_write(tmp_path / style / name, lines, style, **kw))
    return plain, other

  for d in ("plain", style, f"{style}-corpus", "plain-corpus"):
    (tmp_path / d).mkdir()
  rows = [json.dumps({"text": t, "label": l, "content": t}, ensure_ascii=False) for t, l in [("你好", "1"), ("再见", "0")]]
  cases = [
      both("a.jsonl", rows, lambda p: list(jsonl.read_jsonl(p))),
      both("b.jsonl", rows, lambda p: [e[:2] for e in labeled.read_labeled(p)]),
      both("c.tsv", ["你好\t1", "", "再见\t0"], lambda p: labeled.read_labeled(p), final=False),
      both("d.tsv", ["标题\t摘要", "题二\t摘要二"], lambda p: [(e.title, e.abstract, _line(e.where)) for e in csl.read_csl_tsv(p)]),
      both("pos.txt", ["好", "很好"], lambda p: list(reviews.read_review_file(p))),
      both("e.txt", ["迈向/v  新/a  世纪/n", "", "[中国/ns  政府/n]nt  好/a"],
           lambda p: [(k, e.text, e.entities, _line(e.where)) for k, e in people_daily.read_people_daily(p)[0]]),
      both("train.json", [json.dumps({"text": "北京", "label": {"address": {"北京": [[0, 1]]}}}, ensure_ascii=False)],
           lambda p: [(e.entities, _line(e.where)) for e in readers.read_cluener(p).examples]),
      both("list.json", ["[", '{"text": "a"},', '{"text": "b"}', "]"], lambda p: list(jsonl.read_json_list(p))),
  ]
  for plain, other in cases:
    assert other == plain and plain
  for d, name in ((f"{style}-corpus", style), ("plain-corpus", "plain")):
    _write(tmp_path / d / "x.txt", ["第一行", "第二行"], name)
    _write(tmp_path / d / "y.jsonl", rows, name)
  docs = [list(sources.folder_documents(tmp_path / d)) for d in ("plain-corpus", f"{style}-corpus")]
  assert docs[1] == docs[0] and [d.text for d in docs[0]] == ["第一行", "第二行", "你好", "再见"]
  squad = json.dumps({"data": [{"paragraphs": [{"id": "p", "context": "北京是首都", "qas": [
      {"id": "q", "question": "首都?", "answers": [{"text": "北京", "answer_start": 0}]}]}]}]}, ensure_ascii=False, indent=1)
  cmrc = [mrc_data.read_cmrc(_write(tmp_path / d / "cmrc.json", squad.split("\n"), s))[0]
          for d, s in (("plain", "plain"), (style, style))]
  assert cmrc[1] == cmrc[0]


@pytest.mark.parametrize("style", list(STYLES))
def test_errors_name_the_line_an_editor_shows(tmp_path, style):
  path = _write(tmp_path / "a.jsonl", ['{"text": "一", "label": "1"}', "", '{"text": 2, "label": "0"}'], style)
  with pytest.raises(jsonl.DataError, match=rf"a\.jsonl:3: field 'text' is not a non-empty string"):
    labeled.read_labeled(path)
  path = _write(tmp_path / "t.tsv", ["标题\t摘要", "只有标题"], style)
  with pytest.raises(jsonl.DataError, match=r"t\.tsv:2: expected title<TAB>abstract"):
    csl.read_csl_tsv(path)
  (tmp_path / "corpus").mkdir()
  _write(tmp_path / "corpus" / "b.jsonl", ['{"content": "ok"}', '{"content": 1}'], style)
  with pytest.raises(sources.CorpusError, match=r"b\.jsonl:2: text field"):
    list(sources.folder_documents(tmp_path / "corpus"))
  path = _write(tmp_path / "list.json", ["[", '{"text": "a"},', "", "3", "]"], style)
  with pytest.raises(jsonl.DataError, match=r"list\.json:4: expected a JSON object"):
    list(jsonl.read_json_list(path))
  path = _write(tmp_path / "bad.json", ["{", '"data":', "[}"], style)
  with pytest.raises(jsonl.DataError, match=r"bad\.json:3: invalid JSON"):
    mrc_data.read_cmrc(path)
  path.write_bytes(STYLES[style][0] + STYLES[style][1].join([b"[", b"\xff", b"]"]))
  with pytest.raises(jsonl.DataError, match=r"bad\.json:2: invalid UTF-8"):
    list(jsonl.read_json_list(path))


def test_clue_split_with_bom_and_crlf(tmp_path):
  lines = [json.dumps({"sentence1": "一", "sentence2": "二", "label": "1", "id": i}, ensure_ascii=False) for i in range(2)]
  _write(tmp_path / "train.json", lines, "bom+crlf")
  split = clue_data.read_split("afqmc", tmp_path, "train")
  assert [(e.text_a, e.text_b, e.label) for e in split.examples] == [("一", "二", 1)] * 2
