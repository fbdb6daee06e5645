"""CLUE classification data: the official file layouts read as the reference scripts read them, bad lines
named by file and line, the submission files, the recipes, and the encoding against bert4keras itself.

The tests write small files in the official formats (the fields and label sets of the *_public.zip files;
the first CLUEWSC line is the dataset's README example). Expected inputs are the reference's
(bojone/CLUE-bert4keras cc3c17e `load_data`), worked out by hand from its code.
"""

import json
import os

import numpy as np
import pytest

from finetune.clue import data as D
from finetune.clue import tasks as T
from roformer_jax import corpus, tokenization
from roformer_jax.data import classify
from roformer_jax.data.jsonl import DataError, write_jsonl

WSC_TEXT = "马克告诉皮特许多关于他自己的谎言，皮特也把这些谎言写进了他的书里。他应该多怀疑。"
WSC_TEXT2 = "裂开的伤口涂满尘土，里面有碎石子和木头刺，我小心翼翼把它们剔除出去。"

# task -> split -> lines (dicts, written one JSON per line).
FILES = {
    "afqmc": {
        "train": [{"sentence1": "蚂蚁借呗等额还款可以换成先息后本吗", "sentence2": "借呗有先息到期还本吗", "label": "0"},
                  {"sentence1": "花呗怎么还款", "sentence2": "花呗如何还钱", "label": "1"}],
        "dev": [{"sentence1": "借呗能提前还吗", "sentence2": "借呗可以提前还款吗", "label": "1"}],
        "test": [{"id": 0, "sentence1": "花呗分期", "sentence2": "借呗分期"},
                 {"id": 1, "sentence1": "花呗提额", "sentence2": "怎么提高花呗额度"}],
    },
    "tnews": {
        "train": [{"label": "102", "label_desc": "news_entertainment", "sentence": "江疏影甜甜圈自拍，迷之角度竟这么好看",
                   "keywords": "江疏影,甜甜圈"},
                  {"label": "116", "label_desc": "news_game", "sentence": "王者荣耀新英雄上线", "keywords": ""}],
        "dev": [{"label": "100", "label_desc": "news_story", "sentence": "老人讲述当年的故事", "keywords": "老人"}],
        "test": [{"id": 0, "sentence": "股市今天大涨", "keywords": "股市"}],
        "test1.0": [{"id": 7, "sentence": "世界杯开幕", "keywords": ""}],
    },
    "iflytek": {
        "train": [{"label": "11", "label_des": "薅羊毛", "sentence": "领红包的应用"},
                  {"label": "118", "label_des": "其他", "sentence": "一款工具"}],
        "dev": [{"label": "0", "label_des": "打车", "sentence": "打车软件"}],
        "test": [{"id": 0, "sentence": "地图导航"}],
    },
    "ocnli": {
        "train": [{"level": "medium", "sentence1": "一月份跟二月份肯定有一个月份有", "sentence2": "肯定有一个月份有",
                   "label": "entailment", "label0": "entailment", "genre": "news", "prem_id": "news_1", "id": 0},
                  {"sentence1": "他来了", "sentence2": "他没来", "label": "contradiction", "id": 1}],
        "dev": [{"sentence1": "天气很好", "sentence2": "今天下雨", "label": "-", "id": 0},
                {"sentence1": "天气很好", "sentence2": "外面有风", "label": "neutral", "id": 1}],
        "test": [{"id": 0, "sentence1": "我在家", "sentence2": "我不在外面"}],
    },
    "cmnli": {
        "train": [{"sentence1": "从概念上讲，奶油略读有两个基本维度", "sentence2": "产品和地理是奶油略读的工作", "label": "neutral"},
                  {"sentence1": "你知道的", "sentence2": "你不知道", "label": "-"}],
        "dev": [{"sentence1": "新的权利很好", "sentence2": "每个人都喜欢最新的福利", "label": "neutral"}],
        "test": [{"id": 0, "sentence1": "他走了", "sentence2": "他离开了"}],
    },
    "csl": {
        "train": [{"id": 1, "abst": "针对水下目标探测问题，提出一种方法", "keyword": ["水声学", "低频", "目标探测"], "label": "1"},
                  {"id": 2, "abst": "研究了一种新的算法", "keyword": ["算法"], "label": "0"}],
        "dev": [{"id": 3, "abst": "本文分析了数据", "keyword": ["数据", "分析"], "label": "0"}],
        "test": [{"id": 4, "abst": "提出一种模型", "keyword": ["模型", "深度学习"]}],
    },
    "cluewsc": {
        "train": [{"target": {"span2_index": 28, "span1_index": 0, "span1_text": "马克", "span2_text": "他"}, "idx": 0,
                   "label": "false", "text": WSC_TEXT},
                  {"target": {"span1_index": 27, "span1_text": "它们", "span2_index": 3, "span2_text": "伤口"}, "idx": 1,
                   "label": "true", "text": WSC_TEXT2}],
        "dev": [{"target": {"span2_index": 27, "span1_index": 3, "span1_text": "伤口", "span2_text": "它们"}, "idx": 0,
                 "label": "true", "text": WSC_TEXT2}],
        "test": [{"id": 0, "target": {"span2_index": 10, "span1_index": 4, "span1_text": "皮特", "span2_text": "他"},
                  "idx": 0, "text": WSC_TEXT}],
        "test1.0": [{"id": 3, "target": {"span2_index": 10, "span1_index": 0, "span1_text": "马克", "span2_text": "他"},
                     "idx": 3, "text": WSC_TEXT}],
    },
}

# task -> split -> [(text_a, text_b, label id, id)] that the reference's load_data gives for FILES.
EXPECTED = {
    "afqmc": {
        "train": [("蚂蚁借呗等额还款可以换成先息后本吗", "借呗有先息到期还本吗", 0, 1), ("花呗怎么还款", "花呗如何还钱", 1, 2)],
        "dev": [("借呗能提前还吗", "借呗可以提前还款吗", 1, 1)],
        "test": [("花呗分期", "借呗分期", None, 0), ("花呗提额", "怎么提高花呗额度", None, 1)],
    },
    "tnews": {
        "train": [("江疏影甜甜圈自拍，迷之角度竟这么好看", None, 2, 1), ("王者荣耀新英雄上线", None, 14, 2)],
        "dev": [("老人讲述当年的故事", None, 0, 1)],
        "test": [("股市今天大涨", None, None, 0)],
        "test1.0": [("世界杯开幕", None, None, 7)],
    },
    "iflytek": {
        "train": [("领红包的应用", None, 11, 1), ("一款工具", None, 118, 2)],
        "dev": [("打车软件", None, 0, 1)],
        "test": [("地图导航", None, None, 0)],
    },
    "ocnli": {
        "train": [("一月份跟二月份肯定有一个月份有", "肯定有一个月份有", 0, 0), ("他来了", "他没来", 2, 1)],
        "dev": [("天气很好", "外面有风", 1, 1)],
        "test": [("我在家", "我不在外面", None, 0)],
    },
    "cmnli": {
        "train": [("从概念上讲，奶油略读有两个基本维度", "产品和地理是奶油略读的工作", 1, 1)],
        "dev": [("新的权利很好", "每个人都喜欢最新的福利", 1, 1)],
        "test": [("他走了", "他离开了", None, 0)],
    },
    "csl": {
        "train": [("水声学；低频；目标探测", "针对水下目标探测问题，提出一种方法", 1, 1), ("算法", "研究了一种新的算法", 0, 2)],
        "dev": [("数据；分析", "本文分析了数据", 0, 3)],
        "test": [("模型；深度学习", "提出一种模型", None, 4)],
    },
    "cluewsc": {
        "train": [("_马克_告诉皮特许多关于他自己的谎言，皮特也把这些谎言写进了[他]的书里。他应该多怀疑。", None, 0, 1),
                  ("裂开的[伤口]涂满尘土，里面有碎石子和木头刺，我小心翼翼把_它们_剔除出去。", None, 1, 2)],
        "dev": [("裂开的_伤口_涂满尘土，里面有碎石子和木头刺，我小心翼翼把[它们]剔除出去。", None, 1, 1)],
        "test": [("马克告诉_皮特_许多关于[他]自己的谎言，皮特也把这些谎言写进了他的书里。他应该多怀疑。", None, None, 0)],
        "test1.0": [("_马克_告诉皮特许多关于[他]自己的谎言，皮特也把这些谎言写进了他的书里。他应该多怀疑。", None, None, 3)],
    },
}
FOLDERS = {"afqmc": "afqmc_public", "tnews": "tnews_public", "iflytek": "iflytek_public", "ocnli": "ocnli_public",
           "cmnli": "cmnli_public", "csl": "csl_public", "cluewsc": "cluewsc2020_public"}


def _write(path, lines):
  path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln, ensure_ascii=False)) + "\n"
                          for ln in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def clue_dir(tmp_path_factory):
  """<root>/<task>_public/ with the official file names of every split in FILES."""
  root = tmp_path_factory.mktemp("clue")
  for task, splits in FILES.items():
    (root / FOLDERS[task]).mkdir()
    for split, lines in splits.items():
      _write(D.split_path(task, root / FOLDERS[task], split), lines)
  return root


def test_every_task_and_split_is_covered():
  assert set(FILES) == set(T.TASKS) == set(T.RECIPES) == set(T.SUBMISSIONS)
  for task in T.TASKS:
    assert set(FILES[task]) == set(T.FILES[task]), task


@pytest.mark.parametrize("task", T.TASKS)
def test_layouts_labels_and_ids_as_the_reference(clue_dir, task):
  for split, expected in EXPECTED[task].items():
    got = D.read_split(task, clue_dir / FOLDERS[task], split)
    assert [(e.text_a, e.text_b, e.label, e.id) for e in got.examples] == expected, (task, split)
    assert got.labelled == (split in ("train", "dev"))
    assert got.warnings == []
  # The class order is the reference's: labels[class id] is the file's label string.
  labels = T.RECIPES[task]["labels"]
  for line, ex in zip(FILES[task]["train"], D.read_split(task, clue_dir / FOLDERS[task], "train").examples):
    assert labels[ex.label] == line["label"]


def test_official_file_names(clue_dir):
  assert T.FILES["ocnli"]["train"] == "train.50k.json"
  assert [T.FILES[t]["dev"] for t in T.TASKS] == ["dev.json"] * 7
  assert D.test_splits("tnews", clue_dir / "tnews_public") == ["test", "test1.0"]
  assert D.test_splits("afqmc", clue_dir / "afqmc_public") == ["test"]
  with pytest.raises(FileNotFoundError, match="no csl test file"):
    D.test_splits("csl", clue_dir)
  with pytest.raises(FileNotFoundError, match="csl_public/nowhere/train.json: no such file"):
    D.read_split("csl", clue_dir / "csl_public" / "nowhere", "train")
  with pytest.raises(KeyError, match="unknown CLUE task 'wsc'"):
    D.read_split("wsc", clue_dir, "train")
  with pytest.raises(KeyError, match="no split 'test1.0'"):
    D.read_split("afqmc", clue_dir / "afqmc_public", "test1.0")


def test_nli_drops_unlabelled_lines_and_lists_them(clue_dir):
  """OCNLI/CMNLI lines labelled "-" are skipped as in the reference, and each one is reported."""
  dev = D.read_split("ocnli", clue_dir / "ocnli_public", "dev")
  assert len(dev.examples) == 1 and len(dev.dropped) == 1
  assert dev.dropped[0].startswith(f"{clue_dir / 'ocnli_public' / 'dev.json'}:1: label '-'")
  train = D.read_split("cmnli", clue_dir / "cmnli_public", "train")
  assert [d.split(": ")[0] for d in train.dropped] == [f"{clue_dir / 'cmnli_public' / 'train.json'}:2"]


def test_tnews_and_iflytek_label_sets():
  tnews = T.RECIPES["tnews"]["labels"]
  assert len(tnews) == 15 and "105" not in tnews and "111" not in tnews
  assert tnews == tuple(str(c) for c in range(100, 117) if c not in (105, 111))
  assert T.RECIPES["iflytek"]["labels"] == tuple(str(i) for i in range(119))


BAD = [  # (task, split, line, phrases the error must contain)
    ("afqmc", "train", '{"sentence1": "a", "label": "0"}', ["missing field 'sentence2'"]),
    ("afqmc", "train", '{"sentence1": "a", "sentence2": "b"}', ["missing field 'label'"]),
    ("afqmc", "train", '{"sentence1": "a", "sentence2": "b", "label": "2"}', ["label '2'", "afqmc"]),
    ("afqmc", "dev", '{"sentence1": "a", "sentence2": 3, "label": "1"}', ["'sentence2' is int", "expected str"]),
    ("afqmc", "test", '{"sentence1": "a", "sentence2": "b"}', ["missing field 'id'"]),
    ("tnews", "train", '{"sentence": "a", "label": "105"}', ["label '105'", "tnews"]),
    ("iflytek", "train", '{"sentence": "a", "label": "119"}', ["label '119'", "'0'..'118'"]),
    ("iflytek", "train", '{"sentence": "a", "label": true}', ["'label' is bool"]),
    ("ocnli", "train", '{"sentence1": "a", "sentence2": "b", "label": "neutral"', ["invalid JSON"]),
    ("cmnli", "dev", '["a", "b"]', ["expected a JSON object, got list"]),
    ("csl", "train", '{"abst": "a", "keyword": "k1；k2", "label": "1"}', ["'keyword' is str", "expected list"]),
    ("csl", "train", '{"abst": "a", "keyword": ["k", 1], "label": "1"}', ["'keyword' must be a list of strings"]),
    ("csl", "train", '{"keyword": ["k"], "label": "1"}', ["missing field 'abst'"]),
    ("cluewsc", "train", '{"text": "他说", "label": "true"}', ["missing field 'target'"]),
    ("cluewsc", "train", '{"text": "他说", "label": "true", "target": {"span1_index": 0, "span1_text": "他", '
     '"span2_index": 1}}', ["target", "missing field 'span2_text'"]),
    ("cluewsc", "train", '{"text": "他说", "label": "true", "target": {"span1_index": 0, "span1_text": "他", '
     '"span2_index": 1, "span2_text": "说话"}}', ["span2 [1, 3) is outside the text (2 characters)"]),
    ("cluewsc", "dev", '{"text": "他说", "label": "yes", "target": {"span1_index": 0, "span1_text": "他", '
     '"span2_index": 1, "span2_text": "说"}}', ["label 'yes'", "('false', 'true')"]),
]


@pytest.mark.parametrize("task,split,line,phrases", BAD, ids=[f"{b[0]}-{b[3][0][:24]}" for b in BAD])
def test_bad_line_is_named_by_file_line_and_field(tmp_path, task, split, line, phrases):
  good = {"train": FILES[task]["train"][0], "dev": FILES[task]["dev"][-1], "test": FILES[task]["test"][0]}[split]
  path = D.split_path(task, tmp_path, split)
  _write(path, [good, "", line])  # the bad line is line 3 (blank lines are skipped but counted)
  with pytest.raises(DataError) as e:
    D.read_split(task, tmp_path, split)
  msg = str(e.value)
  assert msg.startswith(f"{path}:3: "), msg
  for phrase in phrases:
    assert phrase in msg, msg


def test_invalid_utf8_and_empty_files(tmp_path):
  path = D.split_path("afqmc", tmp_path, "train")
  path.write_bytes(json.dumps(FILES["afqmc"]["train"][0]).encode() + b"\n\xff\xfe\n")
  with pytest.raises(DataError, match=r"train.json:2: invalid UTF-8"):
    D.read_split("afqmc", tmp_path, "train")
  path.write_text("\n\n")
  with pytest.raises(DataError, match=r"train.json: no examples"):
    D.read_split("afqmc", tmp_path, "train")


def test_wsc_marks_and_span_checks(tmp_path):
  span1, span2 = (0, 2), (28, 29)
  assert D.mark_wsc_spans(WSC_TEXT, span1, span2, "roformer-v2") == \
      "[[马克]]告诉皮特许多关于他自己的谎言，皮特也把这些谎言写进了[[他]]的书里。他应该多怀疑。"
  assert D.mark_wsc_spans(WSC_TEXT, span2, span1, "roformer-v2") == D.mark_wsc_spans(WSC_TEXT, span1, span2,
                                                                                     "roformer-v2")
  with pytest.raises(ValueError, match="wsc_style='bert'"):
    D.mark_wsc_spans(WSC_TEXT, span1, span2, "bert")
  # A span text that differs from the text at its index: marked by index, as the reference, and reported.
  line = dict(FILES["cluewsc"]["train"][0], target={"span1_index": 0, "span1_text": "皮特", "span2_index": 28,
                                                    "span2_text": "他"})
  _write(D.split_path("cluewsc", tmp_path, "train"), [line])
  got = D.read_split("cluewsc", tmp_path, "train")
  assert got.examples[0].text_a.startswith("_马克_告诉")
  assert len(got.warnings) == 1 and "span1_text '皮特' != text[0:2] '马克'" in got.warnings[0]
  assert got.warnings[0].startswith(f"{D.split_path('cluewsc', tmp_path, 'train')}:1: ")
  v2 = D.read_split("cluewsc", tmp_path, "train", wsc_style="roformer-v2")
  assert v2.examples[0].text_a.startswith("[[马克]]告诉")


@pytest.mark.parametrize("task", T.TASKS)
def test_submission_files(clue_dir, tmp_path, task):
  """<task><version>_predict.json, one {"id": str, "label": str} per test line in file order."""
  labels = T.RECIPES[task]["labels"]
  written = []
  for name in D.test_splits(task, clue_dir / FOLDERS[task]):
    split = D.read_split(task, clue_dir / FOLDERS[task], name)
    preds = [(i * 7 + 1) % len(labels) for i in range(len(split.examples))]
    path = D.write_predictions(task, split, np.asarray(preds), tmp_path)
    assert path == tmp_path / T.SUBMISSIONS[task][name]
    raw = path.read_text(encoding="utf-8")
    rows = [json.loads(x) for x in raw.splitlines()]
    assert raw.endswith("\n") and len(rows) == len(FILES[task][name])
    for row, line, p in zip(rows, FILES[task][name], preds):
      assert list(row) == ["id", "label"]
      assert row == {"id": str(line["id"]), "label": labels[p]}
    # Byte for byte what the reference's json.dumps({'id': str(id), 'label': label}) writes.
    assert raw.splitlines()[0] == json.dumps({"id": str(FILES[task][name][0]["id"]), "label": labels[preds[0]]})
    written.append(path.name)
  expected = {"tnews": ["tnews11_predict.json", "tnews10_predict.json"],
              "cluewsc": ["cluewsc11_predict.json", "cluewsc10_predict.json"],
              "ocnli": ["ocnli_50k_predict.json"]}.get(task, [f"{task}_predict.json"])
  assert written == expected
  assert sorted(os.listdir(tmp_path)) == sorted(expected)  # no temp files left behind


def test_submission_errors_write_nothing(clue_dir, tmp_path):
  split = D.read_split("afqmc", clue_dir / "afqmc_public", "test")
  with pytest.raises(ValueError, match="1 predictions for the 2 examples"):
    D.write_predictions("afqmc", split, [0], tmp_path)
  with pytest.raises(ValueError, match="prediction 2 for id 1 is not a class of afqmc"):
    D.write_predictions("afqmc", split, [0, 2], tmp_path)
  with pytest.raises(ValueError, match="not a afqmc test split"):
    D.write_predictions("afqmc", D.read_split("afqmc", clue_dir / "afqmc_public", "dev"), [0], tmp_path)
  assert os.listdir(tmp_path) == []
  # An existing submission is replaced whole; a writer that fails half-way leaves it as it was.
  (tmp_path / "afqmc_predict.json").write_text("old\n" * 10)
  D.write_predictions("afqmc", split, [1, 1], tmp_path)
  new = '{"id": "0", "label": "1"}\n{"id": "1", "label": "1"}\n'
  assert (tmp_path / "afqmc_predict.json").read_text() == new

  def failing_rows():
    yield {"id": "0", "label": "0"}
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    write_jsonl(tmp_path / "afqmc_predict.json", failing_rows())
  assert (tmp_path / "afqmc_predict.json").read_text() == new
  assert os.listdir(tmp_path) == ["afqmc_predict.json"]


def test_recipes_are_the_reference_hyperparameters():
  for task in T.TASKS:
    r = T.recipe(task)
    assert (r["max_len"], r["batch_size"], r["learning_rate"]) == (128, 32, 5e-4), task
    assert r["epochs"] == (30 if task == "cluewsc" else 10), task
    assert r["num_labels"] == {"afqmc": 2, "tnews": 15, "iflytek": 119, "ocnli": 3, "cmnli": 3, "csl": 2,
                               "cluewsc": 2}[task]
    assert r["optimizer"] == {"name": "adafactor", "learning_rate": 5e-4, "beta1": 0.9,
                              "min_dim_size_to_factor": 10**6, "schedule": "constant"}
  assert T.RECIPES["ocnli"]["labels"] == ("entailment", "neutral", "contradiction")
  assert T.RECIPES["cluewsc"]["labels"] == ("false", "true")
  r = T.recipe("afqmc")
  r["labels"] = ()
  assert T.RECIPES["afqmc"]["labels"] == ("0", "1")  # recipe() hands out a copy
  with pytest.raises(KeyError, match="unknown CLUE task 'qqp'"):
    T.recipe("qqp")


# ------------------------------------------------------------------------------------------------
# Encoding: the token ids bert4keras' Tokenizer.encode(a, b, maxlen) gives (one bert4keras process)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoding_case(clue_dir, tmp_path_factory):
  """Examples of every task plus real review pairs, long enough to be truncated at maxlen 48; a char vocab
  from a part of the texts (so some chars are [UNK]); bert4keras' ids for them, and for a truncation grid."""
  import bert4keras  # noqa: F401  (a test dependency: never skipped)
  import bert4keras_ref
  tmp = tmp_path_factory.mktemp("clue_encode")
  reviews = [x for _, x in zip(range(400), corpus.review_lines())]
  examples = {t: D.read_split(t, clue_dir / FOLDERS[t], "train").examples for t in T.TASKS}
  examples["reviews_pairs"] = [classify.Example(a, b, 0) for a, b in zip(reviews[::2], reviews[1::2])]
  examples["reviews_single"] = [classify.Example(a, None, 0) for a in reviews]
  texts = [t for exs in examples.values() for e in exs for t in (e.text_a, e.text_b) if t]
  vocab = tmp / "vocab.txt"
  tokenization.write_vocab(tokenization.build_char_vocab(texts[: len(texts) // 2] + ["_[]；"]), vocab)
  # Runs of one char: every (len_a, len_b) around the budget of 14 - 3 = 11 tokens (odd, as 128 - 3: a tie
  # leaves one token to cut).
  grid = [("甲" * la, "乙" * lb) for la in range(0, 12) for lb in range(0, 12)]
  jobs = [{"encode": {"vocab": str(vocab), "maxlen": 48, "pairs": [[e.text_a, e.text_b] for exs in examples.values()
                                                                   for e in exs]}},
          {"encode": {"vocab": str(vocab), "maxlen": 14, "pairs": grid}}]
  ref, ref_grid = bert4keras_ref.run(jobs, tmp)
  return tokenization.WordPieceTokenizer(vocab), examples, ref, grid, ref_grid


def test_encoding_matches_bert4keras(encoding_case):
  tok, examples, ref, _, _ = encoding_case
  i, truncated = 0, 0
  for name, exs in examples.items():
    arrays = classify.encode_examples(tok, exs, max_len=48, pad_to=48)
    assert arrays["input_ids"].shape == (len(exs), 48)
    assert not arrays["token_type_ids"].any()  # segment ids 0, also for pairs
    np.testing.assert_array_equal(arrays["labels"], [e.label for e in exs])
    for row in range(len(exs)):
      n = int(arrays["attention_mask"][row].sum())
      assert arrays["input_ids"][row, :n].tolist() == ref[i], (name, row)
      assert not arrays["input_ids"][row, n:].any()
      truncated += n == 48
      i += 1
  assert i == len(ref) and truncated > 100  # truncation is really compared
  assert sum(tok.unk_id in r for r in ref) > 5  # and [UNK]


def test_pair_truncation_ties_as_bert4keras(encoding_case):
  tok, _, _, grid, ref_grid = encoding_case
  got = tok.encode_batch([a for a, _ in grid], [b for _, b in grid], max_length=14, truncation="bert4keras")
  for row, r in enumerate(ref_grid):
    n = int(got["attention_mask"][row].sum())
    assert got["input_ids"][row, :n].tolist() == r, grid[row]
  # HF's longest_first cuts the second text on a tie instead: a real difference.
  hf = tok.encode_batch([a for a, _ in grid], [b for _, b in grid], max_length=14)
  assert not np.array_equal(hf["input_ids"], got["input_ids"])


def test_encode_examples_errors(encoding_case):
  tok = encoding_case[0]
  with pytest.raises(ValueError, match="mix single texts and text pairs"):
    classify.encode_examples(tok, [classify.Example("a"), classify.Example("a", "b")], 16)
  with pytest.raises(ValueError, match="no examples"):
    classify.encode_examples(tok, [], 16)
  out = classify.encode_examples(tok, [classify.Example("甲乙", label=None)], 16)
  assert out["labels"].tolist() == [classify.IGNORE_LABEL]
  with pytest.raises(ValueError, match="truncation='hf'"):
    tok.encode_batch(["a"], truncation="hf")
