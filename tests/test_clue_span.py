"""CMRC2018 and CLUENER on the train loop, and in the suite runner: small files in the official formats written
here, a tiny pretraining workdir as the checkpoint. The window encoding as the reference's (an answer across a
window boundary is "no answer" in the window that cuts it), the span loss, the answer per question, the
submission files."""

import json
import os
import zipfile

import numpy as np
import pytest

from finetune.clue import mrc
from finetune.clue import mrc_data as M
from finetune.clue import mrc_metrics
from finetune.clue import ner as N

CONTEXT = "ABCDEFGHIJ这是第一段上下文内容"  # 20 characters
TRAIN = [("T1", "问什么", "第一段", 12), ("T2", "是哪个", "上下文", 15), ("T3", "谁", "ABC", 0)]
DEV = [("D1", "问什么", "J这是", 9), ("D2", "谁", "内容", 18)]
TEST = ["X1", "X2", "X3"]


def _cmrc_file(path, qas):
  """One paragraph of CONTEXT; qas: (id, question, answer, start), or ids (test: no answers)."""
  rows = [{"id": q, "question": "问什么", "answers": []} if isinstance(q, str) else
          {"id": q[0], "question": q[1], "answers": [{"text": q[2], "answer_start": q[3]}]} for q in qas]
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"version": "v1.0", "data": [{"id": "P", "title": "t", "paragraphs": [
      {"id": "P", "context": CONTEXT, "qas": rows}]}]}, ensure_ascii=False), encoding="utf-8")


CLUENER = {
    "train": [{"text": "张三在北京大学读书",
               "label": {"name": {"张三": [[0, 1]]}, "organization": {"北京大学": [[3, 6]]}}},
              {"text": "李四去上海", "label": {"name": {"李四": [[0, 1]]}, "address": {"上海": [[3, 4]]}}}],
    "dev": [{"text": "王五在上海", "label": {"name": {"王五": [[0, 1]]}, "address": {"上海": [[3, 4]]}}}],
    "test": [{"id": 7, "text": "赵六在北京"}, {"id": 8, "text": "上海大学"}],
}


def write_files(root):
  for split, qas in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
    _cmrc_file(root / mrc.FOLDER / f"{split}.json", qas)
  (root / N.FOLDER).mkdir(parents=True, exist_ok=True)
  for split, lines in CLUENER.items():
    (root / N.FOLDER / f"{split}.json").write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
  return root


@pytest.fixture(scope="module")
def setup(tiny_pretrained, tmp_path_factory):
  return tiny_pretrained("span_init"), write_files(tmp_path_factory.mktemp("clue_span"))


def _tokenizer(tmp_path):
  from roformer_jax import load_tokenizer, tokenization
  tokenization.write_vocab(tokenization.build_char_vocab([CONTEXT.lower() + "问什么谁"]), tmp_path / "vocab.txt")
  return load_tokenizer(tmp_path / "vocab.txt")


def test_windows_encode_as_the_reference(tmp_path):
  """seq_len 16, question 3 characters: windows of 10 characters every 4. "J这是" (9..12) is cut by window [0, 10):
  label (0, 0) there, as in [12, 20); windows [4, 14) and [8, 18) hold it at tokens that map back to it."""
  tok = _tokenizer(tmp_path)
  _cmrc_file(tmp_path / "dev.json", DEV[:1])
  questions, windows = M.read_cmrc(tmp_path / "dev.json", maxlen=16, stride=4)
  data = mrc.encode_windows(tok, questions, windows, 16)
  assert [w.offset for w in windows] == [0, 4, 8, 12]
  labels = data.arrays["labels"]
  assert labels[0].tolist() == [0, 0] and labels[3].tolist() == [0, 0]
  for r in (1, 2):
    i, j = labels[r]
    assert windows[r].context[data.starts[r, i]:data.ends[r, j]] == "j这是"
  # [CLS] question [SEP] context [SEP]: spans only at [CLS] and the context, the encoder sees all of it.
  # The pieces are tokenised apart, as the reference: "efghij" of window 1 is two [UNK]s, "efghi" and "j".
  ids, span = data.arrays["input_ids"][1], data.arrays["span_mask"][1]
  q, n = len(tok.tokenize("问什么")) + 2, int((data.starts[1] >= 0).sum())
  assert n == 6 and ids[q:q + 2].tolist() == [tok.unk_id] * 2
  assert ids[0] == tok.cls_id and ids[q - 1] == tok.sep_id and ids[q + n] == tok.sep_id and not ids[q + n + 1:].any()
  assert span.tolist() == [1] + [0] * (q - 1) + [1] * n + [0] * (16 - q - n)
  assert data.arrays["attention_mask"][1].tolist() == [1] * (q + n + 1) + [0] * (16 - q - n - 1)
  # The answer: the best cell of the best window, in the file's characters (case kept).
  cells, scores = np.zeros((4, 2), int), np.array([0.0, 1.0, 3.0, 5.0])
  cells[3], cells[2] = (q + 1, q + 2), labels[2]  # window 3's best is a wrong span ("一段") but scores higher ...
  assert mrc.answers(data, cells, scores) == {"D1": "一段"}
  assert mrc_metrics.cmrc_strict([w.qid for w in windows], cells, scores, labels) == 0.0
  scores[3] = 2.0  # ... otherwise window 2 wins, its label cell
  assert mrc.answers(data, cells, scores) == {"D1": "J这是"}
  assert mrc_metrics.cmrc_strict([w.qid for w in windows], cells, scores, labels) == 1.0


def test_long_question_is_cut_to_fit(tmp_path):
  """A question leaving no room for context within seq_len is cut (`M.window_question`): its windows encode
  within seq_len with the answer labelled; the reference's would hold no context and run past maxlen."""
  tok = _tokenizer(tmp_path)
  _cmrc_file(tmp_path / "dev.json", [("L", "问什么谁" * 4, "J这是", 9)])
  questions, windows = M.read_cmrc(tmp_path / "dev.json", maxlen=16, stride=4)
  data = mrc.encode_windows(tok, questions, windows, 16)
  assert {w.question for w in windows} == {"问什么谁问什"} and data.truncated == 0
  q = 6 + 2  # [CLS] question [SEP]
  assert (data.arrays["input_ids"][:, 1:q - 1] == [tok.token_to_id(c) for c in "问什么谁问什"]).all()
  (r,) = np.flatnonzero(data.arrays["labels"][:, 0])
  i, j = data.arrays["labels"][r]
  assert windows[r].context[data.starts[r, i]:data.ends[r, j]] == "j这是"


def test_answer_text_maps_normalised_spans_to_the_file_characters():
  """Spans are found in the normalised window (lower case, NFD, marks dropped); the answer is the file's text."""
  for ctx, answer in [("首尔（서울）是韩国首都，Café Paris位于此。", "Café Paris"),  # Hangul expands, é keeps its length
                      ("他去了Cafe\u0301吧", "Cafe\u0301"),                      # a combining mark is dropped
                      ("İstanbul和서울", "İstanbul"), ("ＡＢＣ公司", "ＡＢＣ公司")]:
    q = M.Question("Q", "问", ctx, (answer,))
    (w,) = M.cmrc_windows("Q", "问", ctx, "", -1, maxlen=64)
    first = w.context.index(M.normalize(answer))
    assert mrc.answer_text(q, w, first, first + len(M.normalize(answer))) == answer
    assert mrc.answer_text(q, w, first, first) == ""


def test_span_loss_is_softmax_ce_over_the_open_cells():
  import jax

  from roformer_jax.config import ModelConfig
  from roformer_jax.heads import EncoderPointer
  cfg = ModelConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, version="v2")
  task = mrc.MrcTask.__new__(mrc.MrcTask)  # only the model: no files needed for the loss
  task.model = EncoderPointer(cfg, 1, 8, use_bias=False)
  ids = np.array([[2, 5, 3, 7, 8, 9, 3, 0], [2, 6, 3, 7, 8, 3, 0, 0]], np.int32)
  span = np.array([[1, 0, 0, 1, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0, 0, 0]], np.int32)
  batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": (ids > 0).astype(np.int32),
           "span_mask": span, "labels": np.array([[3, 5], [0, 0]], np.int32)}
  params = task.model.init(jax.random.PRNGKey(0), ids)["params"]
  flat, loss = task._forward(params, batch)
  for b in range(2):
    s = np.asarray(flat[b], np.float64).reshape(8, 8)
    open_ = np.outer(span[b], span[b]).astype(bool) & np.triu(np.ones((8, 8), bool))  # tril mask: end >= start
    assert (s[~open_] < -1e11).all()
    i, j = batch["labels"][b]
    ce = np.log(np.exp(s[open_]).sum()) - s[i, j]
    assert float(loss[b]) == pytest.approx(ce, rel=1e-5)


def test_cmrc_through_the_loop(setup, tmp_path):
  from finetune import run
  from finetune.configs import clue
  init, root = setup
  cfg = clue.get_config("cmrc2018")
  cfg.init, cfg.clue.dir, cfg.clue.stride = str(init), str(root), 8
  cfg.update(dict(epochs=2, batch_size=4, seq_len=24, log_every=1))
  assert cfg.accum_steps == 2 and cfg.best_metric == "eval_strict"  # the recipe: bert4keras optimizer2
  summary = run.run(cfg, tmp_path)
  assert summary["clue_task"] == "cmrc2018" and summary["dev_questions"] == 2
  for key in ("dev_strict", "dev_em", "dev_f1"):
    assert 0.0 <= summary[key] <= 1.0
  assert summary["best_step"] >= 1 and np.isfinite(summary["dev_loss"])
  path = tmp_path / "predictions" / "cmrc2018_predict.json"
  assert summary["predictions"] == {"test": str(path)}
  answers = json.loads(path.read_text(encoding="utf-8"))
  assert list(answers) == TEST and all(isinstance(a, str) and a in CONTEXT for a in answers.values())
  assert os.listdir(tmp_path / "predictions") == ["cmrc2018_predict.json"]


def test_cluener_submission_rows():
  rows = list(N.submission_rows([7, 8], ["赵六在北京", "上海大学"],
                                [[(3, 4, "address"), (0, 1, "name")], [(0, 3, "organization"), (0, 1, "address")]]))
  assert rows == [{"id": 7, "label": {"name": {"赵六": [[0, 1]]}, "address": {"北京": [[3, 4]]}}},
                  {"id": 8, "label": {"address": {"上海": [[0, 1]]}, "organization": {"上海大学": [[0, 3]]}}}]


def test_suite_runs_cmrc2018_and_cluener(setup, tmp_path):
  from finetune.clue import suite
  from roformer_jax.config import ConfigError
  from roformer_jax.extraction.readers import CLUENER_TYPES
  init, root = setup
  overrides = ["epochs=1", "batch_size=2", "seq_len=24", "log_every=1", "cmrc2018:clue.stride=8"]
  with pytest.raises(ConfigError, match="unknown CLUE task 'cmrc' before ':'"):
    suite.task_config("cluener", str(root), str(init), ["cmrc:clue.stride=8"])
  rows = suite.run_suite(str(root), str(init), tmp_path, ["cmrc2018", "cluener"], overrides, log=lambda s: None)
  assert rows["cmrc2018"]["metric"] == "strict" and set(rows["cmrc2018"]["also"]) == {"em", "f1"}
  assert rows["cluener"]["metric"] == "f1" and 0.0 <= rows["cluener"]["dev"] <= 1.0
  md = (tmp_path / "results.md").read_text().splitlines()
  assert md[2].startswith("| cmrc2018 | strict |") and "| em " in md[2] and md[3].startswith("| cluener | f1 |")
  with zipfile.ZipFile(tmp_path / "clue_submission.zip") as z:
    assert sorted(z.namelist()) == ["cluener_predict.json", "cmrc2018_predict.json"]
    lines = [json.loads(x) for x in z.read("cluener_predict.json").decode().splitlines()]
  assert [x["id"] for x in lines] == [7, 8] and all(list(x) == ["id", "label"] for x in lines)
  for x, test in zip(lines, CLUENER["test"]):
    for kind, found in x["label"].items():
      assert kind in CLUENER_TYPES
      assert all(test["text"][s:e + 1] == entity for entity, spans in found.items() for s, e in spans)


def test_bad_inputs_name_the_config_key(tmp_path):
  from finetune.clue.task import make_task
  from finetune.configs import clue
  from roformer_jax.config import ConfigError
  c = clue.get_config()
  c.clue.task, c.clue.dir = "cmrc2018", str(tmp_path)
  with pytest.raises(ConfigError, match=r"config.clue.task=cmrc2018 needs .* finetune/configs/clue.py:cmrc2018"):
    make_task(c)
  c = clue.get_config("cmrc2018")
  c.clue.dir, c.clue.stride = str(tmp_path), 0
  with pytest.raises(ConfigError, match="config.clue.stride must be > 0"):
    make_task(c)
  with pytest.raises(ConfigError, match=f"config.clue.dir={tmp_path}: no cmrc2018 files"):
    mrc.find_folder(str(tmp_path))
  c = clue.get_config("cluener")
  c.clue.dir = str(tmp_path)
  with pytest.raises(ConfigError, match=f"config.clue.dir={tmp_path}: no cluener files"):
    make_task(c)
  write_files(tmp_path)
  assert mrc.find_folder(str(tmp_path)) == tmp_path / mrc.FOLDER
  assert type(make_task(c)).__name__ == "ClueNerTask" and c.data.dir == str(tmp_path / N.FOLDER)
