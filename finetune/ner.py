"""NER with a GlobalPointer (or Efficient GlobalPointer) head on the encoder of `config.init` (issue 14 §2).

As bojone/GlobalPointer (finetune-spec §b): texts are `[CLS] text [SEP]`, truncated and padded to
`config.seq_len`; a gold span is a training label iff its first and last characters start and end tokens
(otherwise, or past the truncation, it is dropped, as `tokenizer.rematch` does); the loss is the dense
multilabel categorical cross-entropy over the L*L cells of each (example, type), mean over those rows.
Each batch carries its entities as a short padded list (`spans` [B, E, 3] = type, start token, end token),
and the dense [B, types, L, L] labels are built on the device inside the step: the host never holds a
[N, types, L, L] array.

Evaluation as the reference's: the scores go to the host (`runner.predict`), every cell > 0 between two
text tokens is an entity (`roformer_jax.extraction.decode`, numpy, outside jit), mapped back to characters,
and micro P/R/F1 over exact (start, end, type) against the gold entities of the file, in characters (a gold
entity the truncation cut off counts as missed). `config.from_scratch` trains the same model from random
weights with the checkpoint's architecture and vocabulary (the baseline that shows what pretraining buys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from finetune.pointer_task import PointerTask, Split, check_limits, padded_rows, set_rows
from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log, fixed_seq_len

SOURCES = ("people_daily", "cluener", "cmeee")
HEADS = ("gp", "egp")


def read_source(cfg, log: Log = print) -> tuple[tuple[str, ...], dict[str, Any]]:
  """(entity types, {split: (examples, labelled)}) of `config.data.source`."""
  data = cfg.data
  if data.source == "people_daily":
    from roformer_jax.extraction import people_daily
    splits = people_daily.load_people_daily(people_daily.prepare_people_daily(Path(cfg.data_dir).expanduser()))
    return people_daily.TYPES, {k: (v, True) for k, v in splits.items()}
  if data.source in ("cluener", "cmeee"):
    from roformer_jax.extraction import readers
    if not data.dir:
      raise ConfigError(f"config.data.dir is empty: give the folder of the official {data.source} files")
    load, types = ((readers.load_cluener, readers.CLUENER_TYPES) if data.source == "cluener"
                   else (readers.load_cmeee, readers.CMEEE_TYPES))
    corpora = load(data.dir, strict=data.strict)
    skipped = [line for c in corpora.values() for line in c.skipped]
    if skipped:  # data.strict=False (or CMeEE's start > end, which the reference drops too)
      log(f"{len(skipped)} entities dropped from the files, the first: {skipped[0]}")
    return types, {k: (c.examples, c.labelled) for k, c in corpora.items()}
  raise ConfigError(f"config.data.source: unknown source {data.source!r}; expected one of {SOURCES}")


def encode_split(tokenizer, examples: Sequence[Any], labelled: bool, types: Sequence[str], seq_len: int,
                 max_entities: int | None = None) -> Split:
  """Token ids, masks and the padded training spans (type, start token, end token; -1 = none) of `examples`."""
  from roformer_jax.extraction import spans
  texts = [e.text for e in examples]
  enc = tokenizer.encode_batch(texts, max_length=seq_len, pad_to=seq_len)
  cmaps = spans.char_maps(enc["offsets"], enc["attention_mask"])
  index = {t: i for i, t in enumerate(types)}
  rows, dropped = [], 0
  for e, cmap in zip(examples, cmaps):
    sets, lost = spans.entity_label_sets(e.entities, cmap, index)
    dropped += lost
    rows.append(set_rows(sets))
  arrays = {k: enc[k].astype(np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}
  arrays["spans"] = padded_rows(rows, max_entities)
  return Split(texts, [tuple(e.entities) for e in examples], labelled, arrays, cmaps, dropped,
               [getattr(e, "id", None) for e in examples])


def dense_labels(spans, heads: int, length: int):
  """[B, heads, L, L] float32 from padded spans [B, E, 3] (type, i, j; -1 rows are padding), on the device:
  a product of one-hots (no scatter, so it shards over the batch like any matmul)."""
  import jax
  import jax.numpy as jnp
  kind, i, j = spans[..., 0], spans[..., 1], spans[..., 2]
  onehot = lambda x, n: jax.nn.one_hot(x, n, dtype=jnp.float32)  # -1 -> all zeros
  counts = jnp.einsum("beh,bei,bej->bhij", onehot(kind, heads), onehot(i, length), onehot(j, length))
  return jnp.minimum(counts, 1.0)


class NerTask(PointerTask):
  """Entities of People's Daily, CLUENER2020 or CMeEE -> a fine-tuned GlobalPointer, best dev F1 kept."""

  name = "ner"

  def __init__(self, cfg):
    self.cfg = cfg
    self.seq_len = fixed_seq_len(cfg)
    if cfg.head not in HEADS:
      raise ConfigError(f"config.head: unknown head {cfg.head!r}; expected one of {HEADS}")
    if cfg.data.source not in SOURCES:
      raise ConfigError(f"config.data.source: unknown source {cfg.data.source!r}; expected one of {SOURCES}")
    if cfg.head_size <= 0 or cfg.head_size % 2:
      raise ConfigError(f"config.head_size must be a positive even number (RoPE pairs), got {cfg.head_size}")
    check_limits(cfg)

  def prepare(self, local_dir: Path, log: Log) -> None:
    cfg = self.cfg
    tokenizer = self.load_encoder(log)
    self.types, raw = read_source(cfg, log)
    self.splits: dict[str, Split] = {}
    for key, (examples, labelled) in raw.items():
      examples = self.take(key, examples, labelled)
      if examples:
        self.splits[key] = encode_split(tokenizer, examples, labelled, self.types, self.seq_len)
    self.require_splits()
    from roformer_jax.heads import EncoderPointer
    self.model = EncoderPointer(self.model_config, len(self.types), cfg.head_size, efficient=cfg.head == "egp",
                                rope=cfg.rope, tril_mask=cfg.tril_mask, use_bias=cfg.head_bias)

  def describe(self) -> str:
    sizes = ", ".join(f"{k} {len(s)} ({s.dropped} entities off token boundaries)" for k, s in self.splits.items())
    init = f"scratch ({self.pretrained.folder}'s architecture)" if self.cfg.from_scratch else self.pretrained.folder
    return (f"{self.cfg.data.source}, types {list(self.types)}; {sizes}; seq_len {self.seq_len}; head {self.cfg.head} "
            f"(rope {self.cfg.rope}); init {init}")

  # -- the model's loss, on the device -------------------------------------------------------------
  def _row_losses(self, params, batch, **kw):
    """(scores [B, H, L, L], loss per example [B]: the mean over types of the per-(example, type) loss)."""
    import jax.numpy as jnp

    from roformer_jax import losses
    scores = self.apply(params, batch, **kw)
    b, h, length = scores.shape[:3]
    labels = dense_labels(batch["spans"], h, length)
    rows = losses.multilabel_categorical_crossentropy(labels.reshape(b, h, -1), scores.reshape(b, h, -1))
    return scores, jnp.mean(rows, axis=1)

  def loss_fn(self):
    import jax.numpy as jnp

    def loss_fn(params, batch, rng, step):
      del step
      _, loss = self._row_losses(params, batch, deterministic=False, rngs={"dropout": rng})
      weights = batch["weights"].astype(jnp.float32)
      # Sums over examples: the loop divides by the weight, i.e. the reference's mean over B x types rows.
      return jnp.sum(loss * weights), {"weight": jnp.sum(weights)}
    return loss_fn

  # -- evaluation: scores to the host, decoded there ----------------------------------------------
  def _outputs(self, params, batch):
    scores, loss = self._row_losses(params, batch)
    return {"scores": scores, "loss": loss}

  def predict(self, params: Any, runner, split: str) -> tuple[list[list[tuple[int, int, str]]], float]:
    """(entities per text in characters, mean loss) of `split`, decoded on the host batch by batch."""
    from roformer_jax.extraction import decode
    data = self.splits[split]
    predicted: list[list[tuple[int, int, str]]] = []
    loss_sum = 0.0
    for n, out in self.rows_to_host(params, runner, split, self._outputs):
      predicted.append(decode.decode_entities(out["scores"], data.cmaps[n], self.types))
      loss_sum += float(out["loss"])
    return predicted, loss_sum / max(len(data), 1)

  def evaluate(self, params: Any, runner) -> dict[str, float]:
    return self.split_metrics(params, runner, "dev", "eval_")

  def split_metrics(self, params: Any, runner, split: str, prefix: str) -> dict[str, float]:
    from roformer_jax.extraction import metrics
    predicted, loss = self.predict(params, runner, split)
    scores = metrics.entity_scores(predicted, self.splits[split].gold)
    out = {f"{prefix}{k}": float(scores[k]) for k in ("f1", "precision", "recall")}
    out[f"{prefix}loss"] = loss
    return out

  def step_flops(self, metrics: dict[str, float]) -> float:
    from roformer_jax.train import flops
    mc, b, length, d, h = self.model_config, self.cfg.batch_size, self.seq_len, self.cfg.head_size, len(self.types)
    if self.cfg.head == "gp":
      head = 2 * b * length * mc.hidden_size * h * 2 * d + 2 * b * h * length * length * d
    else:  # p: D -> 2d; shared q k^T; the type bias 2d -> 2H
      head = 2 * b * length * mc.hidden_size * 2 * d + 2 * b * length * length * d + 2 * b * length * 2 * d * 2 * h
    return 3.0 * (flops.encoder_flops(mc, b, length) + head)

  def write_assets(self, workdir: Any) -> None:
    super().write_assets(workdir)
    self.write_json_asset(workdir, "entity_types.json", list(self.types))

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Dev (and, where labelled, test) P/R/F1 of the final params; test predictions as JSON lines."""
    import jax

    from roformer_jax.data.jsonl import write_jsonl
    out: dict[str, Any] = self.split_metrics(params, runner, "dev", "dev_")
    if "test" not in self.splits:
      return out
    test = self.splits["test"]
    predicted, loss = self.predict(params, runner, "test")
    if test.labelled:
      from roformer_jax.extraction import metrics
      scores = metrics.entity_scores(predicted, test.gold)
      out.update({f"test_{k}": float(scores[k]) for k in ("f1", "precision", "recall")})
    if jax.process_index() == 0:
      rows = ({"id": test.row_id(i), "text": text, "entities": [list(e) for e in sorted(p)]}
              for i, (text, p) in enumerate(zip(test.texts, predicted)))
      out["predictions"] = str(write_jsonl(out_dir / "predictions" / "test.jsonl", rows))  # atomic
    return out

