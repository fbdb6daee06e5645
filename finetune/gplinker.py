"""GPLinker relation and event extraction on the encoder of `config.init` (issue 14 §3, finetune-spec §c).

`RelationTask` (DuIE v1 format): entity heads (subject, object), head and tail heads per predicate;
`EventTask` (DuEE 1.0 format): argument heads per (event type, role) with the trigger as a role, one head-link
and one tail-link head. Efficient GlobalPointers (`head=egp`, the final scripts) or standard ones (`gp`).

Labels stay sparse: each batch carries, per head group, a short padded list of rows (head, i, j) ([B, E, 3],
-1 = padding, built on the host from the reference's label sets, `extraction.spans`), turned on the device into
the [B, heads, E, 2] index pairs of the sparse loss (a row of another head is the (0, 0) padding the loss
ignores). The loss is `losses.gplinker_rows`: the reference's summed sparse multilabel CE of the three heads,
mean over examples.

Evaluation as the reference scripts: the three score arrays go to the host (`runner.predict`) and are decoded
there, outside jit (`extraction.decode`: pairs for relations; links plus clique search for events), with the
candidate caps of `config.decode` so that an untrained model's early evaluations stay fast. Metrics:
relation triple micro P/R/F1 (`metrics.triple_scores`); event-level and argument-level micro P/R/F1
(`metrics.event_scores`). Sources: the official files in `config.data.dir` (`duie`, `duee`) or
`people_daily`, synthetic labels over real People's Daily text (`roformer_jax.extraction.synthetic`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from finetune.pointer_task import PointerTask, Split, check_limits, padded_rows, set_rows
from roformer_jax.config import ConfigError
from roformer_jax.train.task import Log, fixed_seq_len

HEADS = ("gp", "egp")
GROUPS = ("entity", "head", "tail")  # relation label arrays; events use ARGUMENT_GROUPS
ARGUMENT_GROUPS = ("argument", "head", "tail")


def pair_labels(rows, heads: int):
  """[B, heads, E, 2] int32 index pairs from padded rows [B, E, 3] (head, i, j), on the device: row e of
  head h is (i, j) if its head is h, else the (0, 0) padding the sparse loss ignores."""
  import jax.numpy as jnp
  hit = rows[:, None, :, 0] == jnp.arange(heads)[None, :, None]  # [B, heads, E]
  return jnp.where(hit[..., None], rows[:, None, :, 1:], 0)


def read_source(cfg, kind: str, log: Log = print) -> tuple[list, dict[str, Any]]:
  """(predicates or (event type, role) labels, {split: (examples, labelled)}) of `config.data.source`."""
  from roformer_jax.extraction import readers, synthetic
  data = cfg.data
  official = "duie" if kind == "relation" else "duee"
  if data.source == "people_daily":
    prepare = synthetic.prepare_relations if kind == "relation" else synthetic.prepare_events
    folder = prepare(Path(cfg.data_dir).expanduser())
  elif data.source == official:
    if not data.dir:
      raise ConfigError(f"config.data.dir is empty: give the folder of the official {official} files")
    folder = data.dir
  else:
    raise ConfigError(f"config.data.source: unknown source {data.source!r}; expected people_daily or {official}")
  load = readers.load_duie if kind == "relation" else readers.load_duee
  labels, corpora = load(folder, strict=data.strict)
  skipped = [line for c in corpora.values() for line in c.skipped]
  if skipped:
    what = "triples" if kind == "relation" else "arguments"
    log(f"{len(skipped)} {what} dropped from the files, the first: {skipped[0]}")
  return labels, {k: (c.examples, c.labelled) for k, c in corpora.items()}


def encode_split(tokenizer, examples: Sequence[Any], labelled: bool, kind: str, labels: Sequence[Any],
                 seq_len: int) -> Split:
  """Token ids, masks and the three padded label row arrays of `examples` (relations or events)."""
  from roformer_jax.extraction import spans
  texts = [e.text for e in examples]
  enc = tokenizer.encode_batch(texts, max_length=seq_len, pad_to=seq_len)
  cmaps = spans.char_maps(enc["offsets"], enc["attention_mask"])
  index = {t: i for i, t in enumerate(labels)}
  rows: tuple[list, list, list] = ([], [], [])
  dropped = 0
  for e, cmap in zip(examples, cmaps):
    if kind == "relation":
      groups, lost = spans.relation_label_sets(e.text, e.triples, cmap, index)
    else:
      groups, lost = spans.event_label_sets(e.events, cmap, index)
    dropped += lost
    for out, sets in zip(rows, groups):
      out.append(set_rows(sets))
  arrays = {k: enc[k].astype(np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}
  names = GROUPS if kind == "relation" else ARGUMENT_GROUPS
  arrays.update({name: padded_rows(r) for name, r in zip(names, rows)})
  gold = [e.triples for e in examples] if kind == "relation" else [e.events for e in examples]
  return Split(texts, gold, labelled, arrays, cmaps, dropped, [getattr(e, "id", None) for e in examples])


class _GPLinkerTask(PointerTask):
  """What the two tasks share: config checks, data, the three-head model, the loss, host decoding."""

  kind = ""
  names: tuple[str, ...] = ()
  metric_keys: tuple[str, ...] = ()

  def __init__(self, cfg):
    self.cfg = cfg
    self.seq_len = fixed_seq_len(cfg)
    if cfg.head not in HEADS:
      raise ConfigError(f"config.head: unknown head {cfg.head!r}; expected one of {HEADS}")
    if cfg.head_size <= 0 or cfg.head_size % 2:
      raise ConfigError(f"config.head_size must be a positive even number (RoPE pairs), got {cfg.head_size}")
    for key, value in cfg.decode.items():
      if value < 1:
        raise ConfigError(f"config.decode.{key} must be >= 1 (a cap on decoding candidates), got {value}")
    check_limits(cfg)

  def prepare(self, local_dir: Path, log: Log) -> None:
    cfg = self.cfg
    tokenizer = self.load_encoder(log)
    self.labels, raw = read_source(cfg, self.kind, log)
    self.splits: dict[str, Split] = {}
    for key, (examples, labelled) in raw.items():
      examples = self.take(key, examples, labelled)
      if examples:
        self.splits[key] = encode_split(tokenizer, examples, labelled, self.kind, self.labels, self.seq_len)
    self.require_splits()
    from roformer_jax.heads import EncoderGPLinker
    self.model = EncoderGPLinker(self.model_config, self.kind, len(self.labels), cfg.head_size,
                                 efficient=cfg.head == "egp", use_bias=cfg.head_bias)

  def describe(self) -> str:
    what = "triples" if self.kind == "relation" else "arguments"
    sizes = ", ".join(f"{k} {len(s)} ({s.dropped} {what} off token boundaries)" for k, s in self.splits.items())
    init = f"scratch ({self.pretrained.folder}'s architecture)" if self.cfg.from_scratch else self.pretrained.folder
    return (f"{self.cfg.data.source}, {len(self.labels)} labels; {sizes}; seq_len {self.seq_len}; head "
            f"{self.cfg.head}; init {init}")

  # -- the loss, on the device -----------------------------------------------------------------------
  def _row_losses(self, params, batch, **kw):
    """(the three score arrays, loss per example [B])."""
    from roformer_jax import losses
    scores = self.apply(params, batch, **kw)
    labels = tuple(pair_labels(batch[name], s.shape[1]) for name, s in zip(self.names, scores))
    return scores, losses.gplinker_rows(labels, scores)

  def loss_fn(self):
    import jax.numpy as jnp

    def loss_fn(params, batch, rng, step):
      del step
      _, loss = self._row_losses(params, batch, deterministic=False, rngs={"dropout": rng})
      weights = batch["weights"].astype(jnp.float32)
      # A sum over examples; the loop divides by the weight: the reference's mean over the batch.
      return jnp.sum(loss * weights), {"weight": jnp.sum(weights)}
    return loss_fn

  # -- evaluation: scores to the host, decoded there ------------------------------------------------
  def _outputs(self, params, batch):
    scores, loss = self._row_losses(params, batch)
    return {**dict(zip(self.names, scores)), "loss": loss}

  def decode_row(self, out: dict[str, np.ndarray], text: str, cmap) -> list:
    raise NotImplementedError

  def score(self, predicted: list, gold: list) -> dict[str, float]:
    raise NotImplementedError

  def predict(self, params: Any, runner, split: str) -> tuple[list, float]:
    """(predictions per text, mean loss) of `split`, decoded on the host."""
    data = self.splits[split]
    predicted, loss_sum = [], 0.0
    for n, out in self.rows_to_host(params, runner, split, self._outputs):
      predicted.append(self.decode_row(out, data.texts[n], data.cmaps[n]))
      loss_sum += float(out["loss"])
    return predicted, loss_sum / max(len(data), 1)

  def evaluate(self, params: Any, runner) -> dict[str, float]:
    return self.split_metrics(params, runner, "dev", "eval_")

  def split_metrics(self, params: Any, runner, split: str, prefix: str) -> dict[str, float]:
    predicted, loss = self.predict(params, runner, split)
    out = {f"{prefix}{k}": float(v) for k, v in self.score(predicted, self.splits[split].gold).items()}
    out[f"{prefix}loss"] = loss
    return out

  def step_flops(self, metrics: dict[str, float]) -> float:
    from roformer_jax.train import flops
    mc, b, length, d = self.model_config, self.cfg.batch_size, self.seq_len, self.cfg.head_size
    heads = (2, len(self.labels), len(self.labels)) if self.kind == "relation" else (len(self.labels), 1, 1)
    total = 0
    for h in heads:
      if self.cfg.head == "gp":
        total += 2 * b * length * mc.hidden_size * h * 2 * d + 2 * b * h * length * length * d
      else:
        total += (2 * b * length * mc.hidden_size * 2 * d + 2 * b * length * length * d
                  + 2 * b * length * 2 * d * 2 * h)
    return 3.0 * (flops.encoder_flops(mc, b, length) + total)

  def write_assets(self, workdir: Any) -> None:
    super().write_assets(workdir)
    self.write_json_asset(workdir, f"{self.kind}_labels.json", [l if isinstance(l, str) else list(l)
                                                                for l in self.labels])

  def prediction_row(self, row_id: Any, text: str, predicted: Any) -> dict:
    raise NotImplementedError

  def finish(self, params: Any, runner, out_dir: Path) -> dict[str, Any]:
    """Dev (and, where labelled, test) metrics of the final params; test predictions as JSON lines."""
    import jax

    from roformer_jax.data.jsonl import write_jsonl
    out: dict[str, Any] = self.split_metrics(params, runner, "dev", "dev_")
    if "test" not in self.splits:
      return out
    test = self.splits["test"]
    predicted, _ = self.predict(params, runner, "test")
    if test.labelled:
      out.update({f"test_{k}": float(v) for k, v in self.score(predicted, test.gold).items()})
    if jax.process_index() == 0:
      rows = (self.prediction_row(test.row_id(i), text, p) for i, (text, p) in enumerate(zip(test.texts,
                                                                                            predicted)))
      out["predictions"] = str(write_jsonl(out_dir / "predictions" / "test.jsonl", rows))  # atomic
    return out


class RelationTask(_GPLinkerTask):
  """(subject, predicate, object) triples of DuIE v1 (or the synthetic People's Daily ones); best dev F1 kept."""

  name = "relation"
  kind = "relation"
  names = GROUPS

  def decode_row(self, out, text, cmap) -> list[tuple[str, str, str]]:
    from roformer_jax.extraction import decode
    found = decode.decode_relations(out["entity"], out["head"], out["tail"], cmap, self.labels,
                                    max_entities=self.cfg.decode.max_entities)
    return sorted({(text[s[0]:s[1] + 1], p, text[o[0]:o[1] + 1]) for s, p, o in found})

  def score(self, predicted, gold) -> dict[str, float]:
    from roformer_jax.extraction import metrics
    return metrics.triple_scores(predicted, gold)

  def prediction_row(self, row_id, text, predicted) -> dict:
    return {"id": row_id, "text": text, "spo_list": [{"subject": s, "predicate": p, "object": o} for s, p, o in predicted]}


class EventTask(_GPLinkerTask):
  """Events of DuEE 1.0 (or the synthetic People's Daily ones); best dev `config.best_metric` kept."""

  name = "event"
  kind = "event"
  names = ARGUMENT_GROUPS

  def decode_row(self, out, text, cmap) -> list[tuple[tuple[str, str, str, int], ...]]:
    from roformer_jax.extraction import decode
    # trigger=None: the reference's evaluation keeps every clique, and metrics.event_scores filters.
    events = decode.decode_events(out["argument"], out["head"], out["tail"], cmap, [tuple(l) for l in self.labels],
                                  trigger=None, max_arguments=self.cfg.decode.max_arguments,
                                  max_group=self.cfg.decode.max_group)
    return decode.event_texts(text, events)

  def score(self, predicted, gold) -> dict[str, float]:
    from roformer_jax.extraction import metrics
    return metrics.event_scores(predicted, gold)

  def prediction_row(self, row_id, text, predicted) -> dict:
    """DuEE's submission form (the test file's own id); as the reference's predict_to_file, events without a trigger and events whose
    arguments are a subset of another event of the same type are left out: its `isin` compares the event type
    and the (role, argument text) pairs other than the trigger, an event replacing the earlier ones it covers."""
    from roformer_jax.extraction.decode import TRIGGER

    def covers(f, e):  # the reference's isin(e, f): same type, e's arguments among f's
      return f[0][0] == e[0][0] and {a[1:3] for a in e if a[1] != TRIGGER} <= {a[1:3] for a in f if a[1] != TRIGGER}

    kept: list = []
    for e in (e for e in predicted if any(a[1] == TRIGGER for a in e)):
      kept = [f for f in kept if not covers(e, f)]
      if not any(covers(f, e) for f in kept):
        kept.append(e)
    rows = []
    for e in sorted(map(sorted, kept)):
      trigger = next(a for a in e if a[1] == TRIGGER)
      rows.append({"event_type": trigger[0], "trigger": trigger[2], "trigger_start_index": trigger[3],
                   "arguments": [{"role": r, "argument": t, "argument_start_index": s} for _, r, t, s in e
                                 if r != TRIGGER]})
    return {"id": row_id, "text": text, "event_list": rows}
