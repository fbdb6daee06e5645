"""The train benchmark's protocol: interleaved rounds, and the JSON line it prints (tiny sizes; not a timing)."""

import json

from roformer_jax.bench import common, train as bench_train


def test_rounds_interleave_and_rotate():
  calls = []
  runs = {n: (lambda n=n: calls.append(n)) for n in ("ours", "a", "b")}
  times = common.interleaved_times(runs, rounds=3, repeats=2, warmup=1)
  assert {n: [len(r) for r in ts] for n, ts in times.items()} == {n: [2, 2, 2] for n in runs}
  body = calls[3:]  # after one warm-up call each
  # each round: every implementation once untimed, then `repeats` timed calls, the order rotating
  assert body == ["ours"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["ours"] * 3 \
      + ["b"] * 3 + ["ours"] * 3 + ["a"] * 3


def test_train_bench_prints_ratios_by_round(capsys):
  bench_train.main(["--preset", "tiny", "--seq", "32", "--batch", "2", "--rounds", "2", "--repeats", "1",
                    "--peers", "roformer"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["tokens_per_s"] > 0 and 0 < out["mfu"] < 1 and out["rounds"] == 2
  assert isinstance(out["peers_tokens_per_s"]["roformer PyTorch v2/v1 port"], float)
  assert len(out["ours_over_best_peer_by_round"]) == 2 and out["ours_over_best_peer"] > 0


def _finetune_bench(capsys, *args: str) -> dict:
  """The JSON line of `bench finetune` on the tiny preset, one timed step per round."""
  from roformer_jax.bench import finetune as bench_finetune
  bench_finetune.main(["--preset", "tiny", "--batch", "2", "--repeats", "1", *args])
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_finetune_bench_runs_both_sides_in_bfloat16(capsys):
  out = _finetune_bench(capsys, "--task", "classify", "--seq", "32", "--rounds", "2", "--dtype", "bfloat16")
  assert out["dtype"] == "bfloat16" and set(out["tokens_per_s"]) == {"ours", "roformer"}
  assert len(out["ours_over_roformer_by_round"]) == 2 and out["ours_over_roformer"] > 0


def test_finetune_bench_ner_runs_against_bert4torch(capsys):
  """The NER step's PyTorch side is the port's encoder plus bert4torch's GlobalPointer and loss."""
  out = _finetune_bench(capsys, "--task", "ner", "--types", "2", "--seq", "16", "--rounds", "1")
  assert out["task"] == "ner" and set(out["tokens_per_s"]) == {"ours", "roformer"}
  assert out["ours_over_roformer"] > 0
