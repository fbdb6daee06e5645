"""CMRC2018, C3 and CHID: readers of small files in the official formats (written here), the official CMRC2018
EM/F1 on hand-worked cases, the reference's strict metric, C3's joint choice, CHID's Hungarian assignment and the
submission files."""

import json
import random

import numpy as np
import pytest

from finetune.clue import mrc_data as M
from finetune.clue import mrc_metrics as S
from roformer_jax.data.jsonl import DataError


# ------------------------------------------------------------------------------------------------ CMRC2018
def _cmrc_file(path, qas, context="ABCDEFGHIJ这是第一段上下文内容"):
  path.write_text(json.dumps({"version": "v1.0", "data": [{"id": "DEV_0", "title": "t", "paragraphs": [
      {"id": "DEV_0", "context": context, "qas": qas}]}]}, ensure_ascii=False), encoding="utf-8")
  return path


def test_cmrc_windows_as_the_reference(tmp_path):
  # context 20 chars, question 3, maxlen 12: windows of 12 - 3 - 3 = 6 chars every 4: [0,6) [4,10) ... [16,22)
  ctx = "ABCDEFGHIJ这是第一段上下文内容"
  qas = [{"id": "Q1", "question": "问什么", "answers": [{"text": "J这", "answer_start": 9},
                                                        {"text": "段上", "answer_start": 14}]}]
  questions, windows = M.read_cmrc(_cmrc_file(tmp_path / "dev.json", qas, ctx), maxlen=12, stride=4)
  assert questions == [M.Question("Q1", "问什么", ctx, ("J这", "段上"))]
  offsets = [0, 4, 8, 12, 16]
  # One set of windows per answer; texts lower-cased (bert4keras lowercase_and_normalize).
  assert [w.offset for w in windows] == offsets * 2
  assert windows[0].context == "abcdef" and windows[4].context == "下文内容"
  with_answer = [(w.offset, w.start, w.end, w.context[w.start:w.end]) for w in windows if w.start >= 0]
  assert with_answer == [(8, 1, 3, "j这"), (12, 2, 4, "段上")]
  assert all(w.answer == "" and w.end == -1 for w in windows if w.start < 0)


def test_cmrc_windows_answer_start_in_normalised_text():
  # Normalising expands the Hangul before the answer (서울: 2 -> 5 characters) and drops the accent of "é":
  # answer_start (the file's) is moved into the normalised context, where the label must sit.
  ctx = "首尔（서울）是韩国首都，Café Paris位于此。"
  (w,) = M.cmrc_windows("Q", "问", ctx, "Café Paris", ctx.index("Café Paris"), maxlen=64)
  assert len(w.context) == len(ctx) + 3 and w.context[w.start:w.end] == "cafe paris" == w.answer


def test_cmrc_test_file_and_errors(tmp_path):
  qas = [{"id": "T1", "question": "问", "answers": []}, {"id": "T2", "question": "问"}]
  questions, windows = M.read_cmrc(_cmrc_file(tmp_path / "test.json", qas), maxlen=12, stride=4)
  assert [q.answers for q in questions] == [(), ()] and {w.qid for w in windows} == {"T1", "T2"}
  assert len(windows) == 2 * len(M.cmrc_windows("T1", "问", "ABCDEFGHIJ这是第一段上下文内容", "", -1, 12, 4))
  for start in (18, -2):  # "XYZ" from 18 runs past the 20 characters
    bad = _cmrc_file(tmp_path / "bad.json", [{"id": "Q", "question": "问", "answers": [{"text": "XYZ",
                                                                                         "answer_start": start}]}])
    with pytest.raises(DataError, match=rf"bad.json: data\[0\].paragraphs\[0\].qas\[0\].answers\[0\]: "
                                        rf"answer_start {start} \(\+ 3 characters of 'XYZ'\) is outside the context"):
      M.read_cmrc(bad)
  bad = _cmrc_file(tmp_path / "bad2.json", [{"id": "Q", "answers": []}])
  with pytest.raises(DataError, match=r"qas\[0\]: missing field 'question'"):
    M.read_cmrc(bad)
  with pytest.raises(DataError, match="maxlen 3 leaves no room for context"):
    M.read_cmrc(_cmrc_file(tmp_path / "q.json", [{"id": "Q", "question": "问", "answers": []}]), maxlen=3)


def test_cmrc_misaligned_answer_start_labelled_as_the_reference(tmp_path):
  # "XYZ" is not at answer_start 3: the reference labels len("XYZ") characters from there ("def"), as here;
  # the question counts it, its gold answers (for EM/F1) stay the file's texts.
  qas = [{"id": "Q", "question": "问", "answers": [{"text": "XYZ", "answer_start": 3},
                                                  {"text": "这是", "answer_start": 10}]}]
  questions, windows = M.read_cmrc(_cmrc_file(tmp_path / "dev.json", qas), maxlen=12, stride=4)
  assert questions == [M.Question("Q", "问", "ABCDEFGHIJ这是第一段上下文内容", ("XYZ", "这是"), misaligned=1)]
  labelled = [(w.offset, w.context[w.start:w.end]) for w in windows if w.start >= 0]
  assert labelled == [(0, "def"), (4, "这是"), (8, "这是")]


def test_cmrc_long_question_is_cut(tmp_path):
  # maxlen 12 leaves 9 characters for question + context: a 9+ character question is cut to its first 4 (the
  # reference's windows would hold no context), the context windows 12 - 4 - 3 = 5 wide; the other question's
  # windows as the reference's.
  qas = [{"id": "L", "question": "长问题ABCDEFGH", "answers": [{"text": "段上", "answer_start": 14}]},
         {"id": "S", "question": "问什么", "answers": [{"text": "段上", "answer_start": 14}]}]
  questions, windows = M.read_cmrc(_cmrc_file(tmp_path / "dev.json", qas), maxlen=12, stride=4)
  assert [q.question for q in questions] == ["长问题ABCDEFGH", "问什么"]  # as in the file
  long = [w for w in windows if w.qid == "L"]
  assert {w.question for w in long} == {"长问题a"} and [w.offset for w in long] == [0, 4, 8, 12, 16]
  assert {len(w.context) for w in long[:-1]} == {5} and long[-1].context == "下文内容"
  assert [(w.offset, w.context[w.start:w.end]) for w in long if w.start >= 0] == [(12, "段上")]
  assert [w.offset for w in windows if w.qid == "S"] == [0, 4, 8, 12, 16]
  assert M.window_question("问" * 8, 12) == "问" * 8 and M.window_question("问" * 9, 12) == "问" * 4


@pytest.mark.parametrize("answers,prediction,em,f1", [
    (["1990年"], "1990年。", 1, 1.0),                 # punctuation stripped for EM and F1
    (["1-2"], "12", 1, 1.0),                            # "-" dropped before segmenting: "12" both
    (["北京大学"], "北京", 0, 2 / 3),                  # per character: P 1, R 1/2
    (["约3.5亿美元"], "3.5亿", 0, 2 * 0.4 / 1.4),        # "3.5" one segment: gold 约|3.5|亿|美|元
    (["甲乙丙丁"], "甲丙丁", 0, 4 / 7),                 # longest common *contiguous* run: 丙丁
    (["Hello World"], "hello", 0, 2 / 3),              # lower-cased; Latin runs split into words
    (["北京", "北京大学"], "北京大学", 1, 1.0),          # the best answer counts
    (["天安门"], "故宫", 0, 0.0),
    # nltk keeps symbols it has no rule for inside the word: "—1945" and "30°c" are one segment each
    (["1943年—1945年"], "1945年", 0, 1 / 3),           # gold 1943|年|—1945|年: only 年 in common
    (["零下30°C"], "30", 0, 0.0),
    (["hello..."], "hello", 0, 2 / 3),                  # "..." one segment
    (["……"], "…", 0, 0.0),                              # one segment each, different
])
def test_cmrc_official_em_f1_hand_cases(answers, prediction, em, f1):
  assert S.cmrc_em(answers, prediction) == em
  assert S.cmrc_f1(answers, prediction) == pytest.approx(f1)


def test_cmrc_official_totals_and_segmentation():
  gold = {"q1": ["北京大学"], "q2": ["1990年"], "q3": ["x"]}
  out = S.cmrc_official(gold, {"q1": "北京", "q2": "1990年。"})
  assert out["total"] == 3 and out["skipped"] == 1  # an unanswered question counts, as 0
  assert out["em"] == pytest.approx(100 / 3) and out["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)
  assert out["average"] == pytest.approx((out["em"] + out["f1"]) / 2)
  assert S.mixed_segmentation("iPhone 12于2020年发布，售价5,499元") == \
      ["iphone", "12", "于", "2020", "年", "发", "布", "，", "售", "价", "5,499", "元"]
  assert S.mixed_segmentation("《三体》", remove_punctuation=True) == ["三", "体"]
  assert S.word_tokenize('he said "hi" (30°c, 3×4) 1,000... can\'t $5 a.b.') == [
      "he", "said", "``", "hi", "''", "(", "30°c", ",", "3×4", ")", "1,000", "...", "ca", "n't", "$", "5", "a.b", "."]


def test_word_tokenize_equals_nltk():
  """`word_tokenize` against nltk's own NLTKWordTokenizer (what nltk.word_tokenize runs on each sentence; the
  sentence split needs punkt data, which nothing here downloads) on random runs of the characters CMRC answers'
  non-CJK runs hold: Latin, digits, quotes, brackets and symbols."""
  from nltk.tokenize.destructive import NLTKWordTokenizer
  nltk_tokenize = NLTKWordTokenizer().tokenize
  rng = np.random.default_rng(0)
  alphabet = list("abcXYZ0159 .,:;'\"`-_()[]{}<>!?$%&@#*/…—°×«»“”‘’") + ["n't", "can", "...", "--", "''", "``"]
  for _ in range(3000):
    text = "".join(rng.choice(alphabet, size=int(rng.integers(1, 16))))
    assert S.word_tokenize(text) == nltk_tokenize(text), repr(text)


def test_cmrc_strict_metric():
  scores = np.full((3, 4, 4), -1e12)
  scores[0, 0, 0], scores[0, 1, 2] = 9.0, 0.1   # [CLS] cell excluded even if it is the largest
  scores[1, 2, 3] = 0.9
  scores[2, 1, 1] = 0.5
  spans, best = S.best_cells(scores)
  assert spans.tolist() == [[1, 2], [2, 3], [1, 1]] and best.tolist() == [0.1, 0.9, 0.5]
  labels = np.array([[1, 2], [2, 3], [0, 0]])
  assert S.pick_windows(["a", "a", "b"], best) == {"a": 1, "b": 2}
  assert S.cmrc_strict(["a", "a", "b"], spans, best, labels) == 0.5


# ------------------------------------------------------------------------------------------------ C3
C3_DOC = [["男：你今天去哪儿了？", "女：我去图书馆了。"],
          [{"question": "女的去哪儿了？", "choice": ["图书馆", "商店", "学校"], "answer": "图书馆"},
           {"question": "谁问的？", "choice": ["男的", "女的", "老师", "学生"], "answer": "男的"}], "m1-1"]


def test_c3_reader_and_submission(tmp_path):
  (tmp_path / "m-train.json").write_text(json.dumps([C3_DOC], ensure_ascii=False, indent=1), encoding="utf-8")
  (tmp_path / "d-train.json").write_text(json.dumps([C3_DOC[:1] + [C3_DOC[1][1:]] + ["d1"]], ensure_ascii=False),
                                         encoding="utf-8")
  got = M.read_c3([tmp_path / "m-train.json", tmp_path / "d-train.json"])
  assert [(e.question, e.choices, e.label) for e in got] == [
      ("女的去哪儿了？", ("图书馆", "商店", "学校", "无效答案"), 0),
      ("谁问的？", ("男的", "女的", "老师", "学生"), 0), ("谁问的？", ("男的", "女的", "老师", "学生"), 0)]
  assert got[0].passage == "男：你今天去哪儿了？||女：我去图书馆了。"
  test = [[C3_DOC[0], [{"id": 5, "question": "q", "choice": ["a", "b"]}], "t"]]
  (tmp_path / "test1.1.json").write_text(json.dumps(test, ensure_ascii=False), encoding="utf-8")
  tests = M.read_c3([tmp_path / "test1.1.json"], labelled=False)
  assert tests[0].label is None and tests[0].id == 5
  path = M.write_c3_predictions(tests, [1], "test", tmp_path / "out")
  assert path.name == "c311_predict.json" and path.read_text() == '{"id": "5", "label": "1"}\n'
  choice, probs = S.choose(np.array([0.1, 2.0, -1.0, 0.0, 3.0, 0.0, 0.0, 0.0]), 4)
  assert choice.tolist() == [1, 0] and np.allclose(probs.sum(1), 1.0) and probs[0].argmax() == 1


def test_c3_errors(tmp_path):
  bad = [C3_DOC[0], [{"question": "q", "choice": ["a", "b"], "answer": "c"}], "x"]
  (tmp_path / "m-dev.json").write_text("[\n" + json.dumps(C3_DOC, ensure_ascii=False) + ",\n" +
                                       json.dumps(bad, ensure_ascii=False) + "\n]", encoding="utf-8")
  with pytest.raises(DataError, match=r"m-dev.json:3: question 0: answer 'c' is not one of the choices"):
    M.read_c3([tmp_path / "m-dev.json"])
  (tmp_path / "d-dev.json").write_text('[{"question": "q"}]', encoding="utf-8")
  with pytest.raises(DataError, match=r"d-dev.json:1: expected a JSON list, got dict"):
    M.read_c3([tmp_path / "d-dev.json"])


# ------------------------------------------------------------------------------------------------ CHID
CANDS = ["一帆风顺", "二龙戏珠", "三阳开泰", "四平八稳", "五湖四海", "六六大顺", "七上八下", "八仙过海", "九牛一毛",
         "十全十美"]


def _reference_trim(left, right, maxlen):
  while len(left) + len(right) > maxlen - 8:  # the reference's loop, character by character
    if len(left) >= len(right):
      left = left[1:]
    else:
      right = right[:-1]
  return left, right


def test_chid_contexts_trim_as_the_reference():
  rng = random.Random(0)
  for _ in range(200):
    text = "".join(rng.choice("甲乙丙") for _ in range(rng.randint(0, 80)))
    cut = rng.randint(0, len(text))
    paragraph = text[:cut] + "#idiom000001#" + text[cut:]
    maxlen = rng.choice([16, 24, 64])
    (key, left, right), = M.chid_contexts(paragraph, maxlen)
    assert key == "#idiom000001#" and (left, right) == _reference_trim(text[:cut], text[cut:], maxlen)


def test_chid_reader_assignment_and_submission(tmp_path):
  lines = [{"candidates": CANDS, "content": ["他做事#idiom000000#，从不#idiom000001#。", "结果#idiom000002#。"]},
           {"candidates": CANDS[::-1], "content": ["真是#idiom000003#"]}]
  (tmp_path / "dev.json").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines),
                                     encoding="utf-8")
  (tmp_path / "dev_answer.json").write_text(json.dumps({"#idiom000000#": 3, "#idiom000001#": 6, "#idiom000002#": 9,
                                                        "#idiom000003#": 0}))
  got = M.read_chid(tmp_path / "dev.json", tmp_path / "dev_answer.json")
  assert [(e.passage, e.key, e.left, e.right, e.label) for e in got] == [
      (0, "#idiom000000#", "他做事", "，从不_____。", 3), (0, "#idiom000001#", "他做事_____，从不", "。", 6),
      (0, "#idiom000002#", "结果", "。", 9), (1, "#idiom000003#", "真是", "", 0)]
  assert got[3].candidates == tuple(CANDS[::-1])
  # Blanks 0 and 1 of passage 0 both prefer candidate 0; the assignment gives each its own (max total score).
  logits = np.zeros((4, 10))
  logits[0, :2] = [5, 4]
  logits[1, :2] = [5, 1]
  logits[2, 0] = 3  # passage 0's third blank also wants 0 most: it gets the best free candidate
  logits[2, 7] = 2
  logits[3, 0] = 1  # passage 1 is assigned on its own: candidate 0 again
  assert S.assign_idioms([e.passage for e in got], logits).tolist() == [1, 0, 7, 0]
  assert logits.argmax(1).tolist() == [0, 0, 0, 0]
  path = M.write_chid_predictions(got, [1, 0, 7, 0], "test1.0", tmp_path / "out")
  assert path.name == "chid10_predict.json"
  assert json.loads(path.read_text()) == {"#idiom000000#": 1, "#idiom000001#": 0, "#idiom000002#": 7,
                                          "#idiom000003#": 0}
  assert [e.label for e in M.read_chid(tmp_path / "dev.json")] == [None] * 4  # a test file has no answers


def test_chid_errors(tmp_path):
  (tmp_path / "train.json").write_text(json.dumps({"candidates": CANDS, "content": ["#idiom000000#"]}) + "\n" +
                                       json.dumps({"candidates": CANDS[:9], "content": ["#idiom000001#"]}) + "\n")
  with pytest.raises(DataError, match=r"train.json:2: 'candidates' must be 10 strings"):
    M.read_chid(tmp_path / "train.json")
  (tmp_path / "one.json").write_text(json.dumps({"candidates": CANDS, "content": ["#idiom000000#"]}) + "\n")
  (tmp_path / "ans.json").write_text(json.dumps({"#idiom000009#": 1}))
  with pytest.raises(DataError, match=r"ans.json: no answer for #idiom000000# \(blank of .*one.json:1\)"):
    M.read_chid(tmp_path / "one.json", tmp_path / "ans.json")
  (tmp_path / "ans.json").write_text(json.dumps({"#idiom000000#": 10}))
  with pytest.raises(DataError, match=r"answer of #idiom000000# is 10"):
    M.read_chid(tmp_path / "one.json", tmp_path / "ans.json")


def test_cmrc_submission(tmp_path):
  path = M.write_cmrc_predictions({"TEST_0_QUERY_0": "北京", "TEST_0_QUERY_1": ""}, tmp_path)
  assert path.name == "cmrc2018_predict.json"
  assert json.loads(path.read_text(encoding="utf-8")) == {"TEST_0_QUERY_0": "北京", "TEST_0_QUERY_1": ""}
  assert "北京" in path.read_text(encoding="utf-8")  # not ASCII-escaped


# ------------------------------------------------------------------------------------------------ on the loop
def test_truncate_sequences_as_bert4keras():
  from finetune.clue.choice import truncate_sequences
  a, q, p = [1, 2, 9], [3, 4, 5, 9], [0, 6, 7, 8, 9]
  truncate_sequences(8, -2, a, q, p)  # lengths 3,4,5 -> 3,4,4 -> 3,3,4 (a tie: the first) -> 3,3,3 -> 2,3,3
  assert (a, q, p) == ([1, 9], [3, 4, 9], [0, 6, 9])


def _choice_dir(root):
  c3 = root / "c3_public"
  c3.mkdir(parents=True)
  for name in ("m-train.json", "d-train.json", "m-dev.json", "d-dev.json"):
    (c3 / name).write_text(json.dumps([C3_DOC], ensure_ascii=False), encoding="utf-8")
  test = [[C3_DOC[0], [{"id": 7, "question": "女的去哪儿了？", "choice": ["图书馆", "商店"]}], "t"]]
  (c3 / "test1.1.json").write_text(json.dumps(test, ensure_ascii=False), encoding="utf-8")
  chid = root / "chid_public"
  chid.mkdir()
  line = {"candidates": CANDS, "content": ["他做事#idiom000000#，从不#idiom000001#。"]}
  for split in ("train", "dev", "test1.0"):
    (chid / f"{split}.json").write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
  for split in ("train", "dev"):
    (chid / f"{split}_answer.json").write_text(json.dumps({"#idiom000000#": 3, "#idiom000001#": 6}))
  return root


def test_chid_eval_accuracy_is_the_assignment():
  """CHID's eval_accuracy (which picks the best checkpoint) is the per-passage assignment, not the argmax: two
  blanks of one passage that both prefer candidate 0 are assigned 0 and 1."""
  import types
  from finetune.clue.choice import ChoiceTask
  task = ChoiceTask.__new__(ChoiceTask)
  task.task = "chid"
  task.data = {"dev": [types.SimpleNamespace(passage=0), types.SimpleNamespace(passage=0)]}
  task.splits = {"dev": {"labels": np.array([0, 1], np.int32)}}
  logits = np.array([[5.0, 1.0], [3.0, 0.0]])
  task._logits = lambda params, runner, name: logits
  got = task.evaluate(None, None)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  assert got["eval_accuracy"] == 1.0 and got["eval_argmax_accuracy"] == 0.5 and got["eval_examples"] == 2
  np.testing.assert_allclose(got["eval_loss"], -(logp[0, 0] + logp[1, 1]) / 2, rtol=1e-12)


@pytest.mark.parametrize("task,seq_len", [("c3", 48), ("chid", 32)])
def test_choice_tasks_end_to_end(tiny_pretrained, tmp_path_factory, task, seq_len, capsys):
  from finetune import run
  from finetune.configs import clue
  init = tiny_pretrained("choice_init")
  root = tmp_path_factory.mktemp(f"{task}_files")
  _choice_dir(root)
  cfg = clue.get_config()
  cfg.clue.task, cfg.clue.dir, cfg.init = task, str(root), str(init)
  cfg.update(dict(epochs=2, batch_size=2, accum_steps=2, seq_len=seq_len, log_every=1))
  workdir = tmp_path_factory.mktemp(task)
  summary = run.run(cfg, workdir)
  assert summary["clue_task"] == task and 0 <= summary["dev_accuracy"] <= 1 and summary["best_step"] in (1, 2)
  if task == "c3":
    path = workdir / "predictions" / "c311_predict.json"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["id"] == "7" and rows[0]["label"] in "0123"
  else:
    path = workdir / "predictions" / "chid10_predict.json"
    got = json.loads(path.read_text())
    assert set(got) == {"#idiom000000#", "#idiom000001#"} and got["#idiom000000#"] != got["#idiom000001#"]
    # The evals that chose the best checkpoint score the per-passage assignment, as the reference's evaluator.
    evals = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if "eval_accuracy" in l]
    assert evals and all("eval_argmax_accuracy" in e and 0 <= e["eval_loss"] for e in evals)
  assert summary["predictions"] == {("test" if task == "c3" else "test1.0"): str(path)}
