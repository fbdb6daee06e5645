"""CLUENER2020 as a CLUE task: `finetune.ner.NerTask` on the official files with the reference's recipe
(ZhuiyiTechnology/roformer-v2 `clue/cluener.py`; finetune-spec §d.2): [CLS] text [SEP] up to 256 tokens, an
Efficient GlobalPointer (RoFormerV2's script; bojone/CLUE-bert4keras uses the plain one: `head=gp`) with one head
per type, head size 64, RoPE, no bias, the dense multilabel categorical cross-entropy; AdaFactor 5e-4, batch 32,
10 epochs; the best dev F1 kept.

Dev F1 is entity level in characters (`NerTask`), where the reference's printout is a cell-level F1 on its
label tensors: the two differ only by gold entities off token boundaries or past the truncation (counted as
missed here). Test predictions: <workdir>/predictions/cluener_predict.json, one JSON line per test line,
{"id": ..., "label": {type: {entity text: [[start, end], ...]}}} with `end` inclusive (the CLUENER layout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from finetune.ner import NerTask
from roformer_jax.config import ConfigError

RECIPES: dict[str, dict] = {"cluener": {"max_len": 256, "batch_size": 32, "accum_steps": 1, "epochs": 10}}
FOLDER = "cluener_public"
SUBMISSION = "cluener_predict.json"


def find_folder(clue_dir: str) -> Path:
  """config.clue.dir, or its cluener_public/ or cluener/: the folder with train.json (named, not searched:
  a CLUE folder holds other tasks' train.json one level down)."""
  root = Path(clue_dir).expanduser()
  for folder in (root, root / FOLDER, root / "cluener"):
    if (folder / "train.json").is_file() and (folder / "dev.json").is_file():
      return folder
  raise ConfigError(f"config.clue.dir={root}: no cluener files (train.json and dev.json in it, {FOLDER}/ or "
                    f"cluener/)")


def submission_rows(ids: Sequence[Any], texts: Sequence[str], predicted: Sequence[Sequence[tuple[int, int, str]]]):
  """{"id", "label": {type: {entity: [[start, end]]}}} per text, entities in (start, end) order."""
  for i, text, entities in zip(ids, texts, predicted):
    label: dict[str, dict[str, list[list[int]]]] = {}
    for start, end, kind in sorted(entities):
      label.setdefault(kind, {}).setdefault(text[start:end + 1], []).append([start, end])
    yield {"id": i, "label": label}


class ClueNerTask(NerTask):
  """CLUENER2020 from `config.clue.dir` (config: finetune/configs/clue.py:cluener)."""

  name = "clue"

  def __init__(self, cfg):
    from finetune.configs.clue import resolve
    resolve(cfg)
    if not cfg.clue.dir or not Path(cfg.clue.dir).expanduser().is_dir():
      raise ConfigError(f"config.clue.dir={cfg.clue.dir!r}: no such folder (the official cluener files)")
    cfg.data.dir = str(find_folder(cfg.clue.dir))
    super().__init__(cfg)

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Dev P/R/F1 of the final (best) params; the test entities as cluener_predict.json."""
    import jax

    from roformer_jax.data.jsonl import write_jsonl
    out: dict[str, Any] = {"clue_task": "cluener", **self.split_metrics(params, runner, "dev", "dev_")}
    if "test" in self.splits and self.cfg.clue.predict:
      test = self.splits["test"]
      predicted, _ = self.predict(params, runner, "test")
      if jax.process_index() == 0:
        path = write_jsonl(out_dir / "predictions" / SUBMISSION,
                           submission_rows([test.row_id(n) for n in range(len(test))], test.texts,
                                           predicted))  # atomic; ids as the file gives them
        out["predictions"] = {"test": str(path)}
    return out
