"""The train benchmark's protocol: interleaved rounds, and the JSON line it prints (tiny sizes; not a timing)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roformer_jax.bench import __main__ as bench_main, common, train as bench_train
from roformer_jax.config import PRESETS, known_attention


def test_rounds_interleave_and_rotate():
  calls = []
  runs = {n: (lambda n=n: calls.append(n)) for n in ("ours", "a", "b")}
  times = common.interleaved_times(runs, rounds=3, repeats=2, warmup=1)
  assert {n: [len(r) for r in ts] for n, ts in times.items()} == {n: [2, 2, 2] for n in runs}
  body = calls[3:]  # after one warm-up call each
  # each round: every implementation once untimed, then `repeats` timed calls, the order rotating
  assert body == ["ours"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["ours"] * 3 \
      + ["b"] * 3 + ["ours"] * 3 + ["a"] * 3


def test_medians_and_ratios_by_round():
  times = {"ours": [[1.0, 3.0, 2.0], [4.0, 4.0, 5.0]], "peer": [[2.0, 2.0, 2.0], [6.0, 7.0, 8.0]]}
  assert common.step_medians(times) == {"ours": 3.5, "peer": 4.0}  # over every step of every round
  assert common.ratio_by_round(times, "peer", "ours") == [1.0, 7.0 / 4.0]


def _spy_schedules(monkeypatch, module) -> list:
  """The (implementations, rounds, repeats) of each `interleaved_times` call `module` makes (the real one runs)."""
  calls = []
  real = common.interleaved_times
  monkeypatch.setattr(module, "interleaved_times", lambda runs, rounds, repeats, **kw: (
      calls.append((list(runs), rounds, repeats)), real(runs, rounds, repeats, **kw))[1])
  return calls


def test_forward_bench_interleaves_both_sides(capsys, monkeypatch):
  """`bench forward` times ours and the port in the same interleaved rounds at each length, not one after the
  other, and prints the ratio round by round."""
  from roformer_jax.bench import forward as bench_forward
  calls = _spy_schedules(monkeypatch, bench_forward)
  bench_forward.main(["--preset", "tiny", "--seq", "16,24", "--batch", "2", "--rounds", "3", "--repeats", "1"])
  assert calls == [(["ours", "port"], 3, 1)] * 2  # one schedule per length, both implementations in it
  lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines() if line.startswith("{")]
  assert [(x["impl"], x["seq"]) for x in lines] == [("roformer_jax", 16), ("roformer (PyTorch port)", 16),
                                                     ("roformer_jax", 24), ("roformer (PyTorch port)", 24)]
  for peer in lines[1::2]:
    assert len(peer["ours_over_peer_by_round"]) == 3 and peer["ours_over_peer"] > 0 and peer["rounds"] == 3
    import torch
    assert (peer["torch"], peer["torch_threads"]) == (torch.__version__, torch.get_num_threads())


def test_decode_bench_interleaves_its_two_paths(capsys, monkeypatch):
  """`bench decode` times the cached and recomputing paths in the same rounds (it ran all of one, then the other)."""
  from roformer_jax.bench import decode as bench_decode
  calls = _spy_schedules(monkeypatch, bench_decode)
  bench_decode.main(["--preset", "tiny", "--batch", "2", "--source", "8", "--new", "3", "--rounds", "2"])
  assert calls == [(["cached", "recomputed"], 2, 1)]
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert len(out["cache_speedup_by_round"]) == 2 and out["cache_speedup"] > 0 and out["rounds"] == 2


def test_teaforn_bench_interleaves_its_two_paths(capsys, monkeypatch):
  from roformer_jax.bench import teaforn as bench_teaforn
  calls = _spy_schedules(monkeypatch, bench_teaforn)
  bench_teaforn.main(["--preset", "tiny", "--batch", "2", "--seq", "16", "--source", "8", "--n", "1,2",
                      "--rounds", "2", "--repeats", "1"])
  assert calls == [(["recomputed"], 2, 1), (["reused", "recomputed"], 2, 1)]
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert len(out["n2"]["reuse_speedup_by_round"]) == 2 and out["n2"]["reuse_speedup"] > 0


def test_train_bench_prints_ratios_by_round(capsys):
  bench_train.main(["--preset", "tiny", "--seq", "32", "--batch", "2", "--rounds", "2", "--repeats", "1",
                    "--peers", "roformer"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["tokens_per_s"] > 0 and 0 < out["mfu"] < 1 and out["rounds"] == 2
  assert isinstance(out["peers_tokens_per_s"]["roformer PyTorch v2/v1 port"], float)
  assert len(out["ours_over_best_peer_by_round"]) == 2 and out["ours_over_best_peer"] > 0
  import torch
  assert out["torch_threads"] == torch.get_num_threads()  # the peer's thread count is printed, not assumed


def test_our_steps_wait_for_the_updated_state(monkeypatch):
  """Our timed step blocks on the new parameters and optimiser state, not only on the loss."""
  import jax
  import roformer_jax as rj
  from roformer_jax.bench import finetune as bench_finetune
  waited = []
  real = jax.block_until_ready
  monkeypatch.setattr(jax, "block_until_ready", lambda x: (waited.append(x), real(x))[1])
  cfg = rj.get_config("tiny", hidden_dropout=0.0, attention_dropout=0.0)
  b = bench_finetune.make_batch("classify", cfg.vocab_size, 2, 8, 2, 4)
  for run in (bench_finetune.setup_ours("classify", cfg, b, 2), bench_train.setup_ours(cfg, 2, 8, 2)):
    waited.clear()
    run()
    leaves = {id(x) for x in jax.tree_util.tree_leaves(waited)}
    state = [c.cell_contents for c in run.__closure__ if isinstance(c.cell_contents, list)][0][0]
    assert all(id(x) in leaves for x in jax.tree_util.tree_leaves((state.params, state.opt_state)))


def _finetune_bench(capsys, *args: str) -> dict:
  """The JSON line of `bench finetune` on the tiny preset, one timed step per round."""
  from roformer_jax.bench import finetune as bench_finetune
  bench_finetune.main(["--preset", "tiny", "--batch", "2", "--repeats", "1", *args])
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_finetune_bench_runs_both_sides_in_bfloat16(capsys):
  out = _finetune_bench(capsys, "--task", "classify", "--seq", "32", "--rounds", "2", "--dtype", "bfloat16")
  assert out["dtype"] == "bfloat16" and set(out["tokens_per_s"]) == {"ours", "roformer"}
  assert len(out["ours_over_roformer_by_round"]) == 2 and out["ours_over_roformer"] > 0
  import torch
  assert out["torch_threads"] == torch.get_num_threads()


def test_finetune_bench_ner_runs_against_bert4torch(capsys):
  """The NER step's PyTorch side is the port's encoder plus bert4torch's GlobalPointer and loss."""
  out = _finetune_bench(capsys, "--task", "ner", "--types", "2", "--seq", "16", "--rounds", "1")
  assert out["task"] == "ner" and set(out["tokens_per_s"]) == {"ours", "roformer"}
  assert out["ours_over_roformer"] > 0


def _bench_error(capsys, *argv: str) -> str:
  """The error line of `python -m roformer_jax.bench ARGV` (run in-process: no re-exec), which must exit 2."""
  with pytest.raises(SystemExit) as e:
    bench_main.main(list(argv))
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert all(line.startswith(("usage:", " ")) for line in err[:-1]), err  # argparse's usage, then one line
  return err[-1]


def test_help_lists_the_commands(capsys):
  """`python -m roformer_jax.bench --help` says what the commands are and exits 0 (it was the usage line, exit 1)."""
  with pytest.raises(SystemExit) as stop:
    bench_main.main(["--help"])
  assert stop.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: python -m roformer_jax.bench") and "<command> --help` lists its options" in out


def test_a_command_run_as_its_module_starts_as_through_the_cli():
  """`python -m roformer_jax.bench.matmul`, JAX_PLATFORMS unset as a user runs it: the CLI's start-up, so with
  libtpu installed and no TPU, no libtpu lines (its module's own main printed 'could not determine TPU ...')."""
  from roformer_jax import startup
  if startup.quiet_tpu_probe(environ={}) is None:
    pytest.skip("libtpu is not installed, or a TPU is attached: JAX's own start-up applies")
  root = Path(__file__).resolve().parents[1]
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  out = subprocess.run([sys.executable, "-m", "roformer_jax.bench.matmul", "--shape", "8,8,8", "--dtypes", "float32",
                        "--rounds", "1", "--repeats", "1"], cwd=root, env=dict(env, PYTHONPATH=str(root)),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and json.loads(out.stdout)["shape"] == [8, 8, 8], out.stderr[-2000:]
  assert not out.stderr.strip(), out.stderr


def test_unknown_preset_is_one_line(capsys):
  """The dispatcher turns a ConfigError into its message (before forward imports torch or builds a model)."""
  for argv in (("forward", "--no-peer"), ("train",)):
    assert _bench_error(capsys, *argv, "--preset", "nope", "--seq", "16") \
        == f"roformer-bench {argv[0]}: error: unknown preset 'nope'; known presets: {sorted(PRESETS)}"


def test_integer_options_are_checked_by_argparse(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # attention would create ./bench_out before running
  assert _bench_error(capsys, "forward", "--preset", "tiny", "--seq", "abc", "--no-peer") \
      == "roformer-bench forward: error: argument --seq: not an integer: 'abc'"
  assert _bench_error(capsys, "forward", "--preset", "tiny", "--seq", "16", "--batch", "0", "--no-peer") \
      == "roformer-bench forward: error: argument --batch: must be at least 1, got 0"
  for argv, flag in [(("forward", "--seq", "16,0"), "--seq"), (("forward", "--repeats", "-1"), "--repeats"),
                     (("train", "--rounds", "0"), "--rounds"), (("train", "--predictions", "-1"), "--predictions"),
                     (("finetune", "--types", "0"), "--types"), (("decode", "--beam", "0"), "--beam"),
                     (("teaforn", "--n", "1,0"), "--n"), (("attention", "--lengths", "128,x"), "--lengths"),
                     (("attention", "--batch", "0"), "--batch"), (("aot", "--topology", "v5e:2x2", "--batch", "0"),
                                                                  "--batch"),
                     (("tokenizer", "--repeats", "0"), "--repeats"), (("matmul", "--shape", "4,0,4"), "--shape")]:
    assert f"error: argument {flag}: " in _bench_error(capsys, *argv), argv
  assert not (tmp_path / "bench_out").exists()


def test_attention_rejects_unknown_variants_up_front(capsys, tmp_path, monkeypatch):
  from roformer_jax.bench import attention as bench_attention
  monkeypatch.chdir(tmp_path)
  line = _bench_error(capsys, "attention", "--variants", "softmax,nope")
  assert line.endswith("error: --variants: unknown 'nope' (known: blockwise, dot_product, linear, pallas, "
                       "softmax, splash)")
  line = _bench_error(capsys, "attention", "--layer-variants", "rest,bogus")
  assert line.endswith(f"error: --layer-variants: unknown 'bogus' (known: rest, {', '.join(known_attention())})")
  assert _bench_error(capsys, "attention", "--modes", "bwd").endswith("error: --modes: unknown 'bwd' (known: fwd, "
                                                                      "fwd_bwd)")
  assert "--variants: unknown 'nope'" in _bench_error(capsys, "attention", "--train-step", "--variants", "nope")
  assert not (tmp_path / "bench_out").exists()
  # A known variant is accepted even where it cannot run (splash off TPU): that stays an "unsupported" row.
  args = bench_attention.parse_args(["--variants", "splash", "--layer-variants", "gau", "--lengths", "16"])
  assert (args.variants, args.lengths) == ("splash", [16])


def test_attention_train_step_sides_take_the_same_steps():
  """`attention --train-step --torch`: ours and the port both time the step after the same untimed warm-up
  (counted by each side's own Adam state), on the same masked positions."""
  from roformer_jax.bench import attention as bench_attention
  spec = dict(preset="tiny", n=24, remat="full", scan_layers=True, cap=2**40, options={}, warmup=2)
  ours = bench_attention._train_step_child(dict(spec, variant="softmax"))
  port = bench_attention._torch_step_child(dict(spec, variant="torch"))
  assert (ours["status"], ours["steps"], port["status"], port["steps"]) == ("ok", 3, "ok", 3)
  assert list(bench_attention._masked_positions(24)) == [0, 8, 16]  # int(0.15 * 24) = 3, every 8th


@pytest.mark.parametrize("preset", ["tiny", "roformer_v1_char_small"])
def test_attention_port_takes_the_preset_shapes(preset):
  """The port in `attention --train-step --torch` is built from --preset (it was RoFormerV2-base whatever the
  preset)."""
  from roformer_jax.bench import attention as bench_attention
  from roformer_jax.config import get_config
  cfg, port = get_config(preset), bench_attention._port_config(preset, 8192)
  assert (port.vocab_size, port.hidden_size, port.num_hidden_layers, port.num_attention_heads,
          port.intermediate_size) == (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                                      cfg.intermediate_size)
  assert (port.hidden_dropout_prob, port.attention_probs_dropout_prob) == (cfg.hidden_dropout, cfg.attention_dropout)
  assert port.max_position_embeddings >= 8192
  assert (port.norm_type == "rms_norm") == (cfg.version == "v2")


def test_attention_train_step_header_says_what_is_timed(capsys, tmp_path):
  from roformer_jax.bench import attention as bench_attention
  args = bench_attention.parse_args(["--train-step", "--torch", "--preset", "tiny", "--warmup", "2",
                                     "--out", str(tmp_path)])
  line = bench_attention.train_probe_header(args)
  assert line.startswith("training-step probe: tiny (v2, 2 x 128, 4 heads, FFN 384, vocab 12000), batch 1")
  assert "one step after 2 untimed step(s) on every side" in line and common.machine() in line
  import torch
  assert f"torch {torch.__version__} ({torch.get_num_threads()} threads)" in line
  args.compile_only = True  # ours is only sized then; the port still runs its step
  assert "ours compiled and sized, not run; the port's step_s: one step after 2 untimed step(s)" \
      in bench_attention.train_probe_header(args)
  assert "--torch: the PyTorch port has no --remat dots" in _bench_error(
      capsys, "attention", "--train-step", "--torch", "--remat", "dots", "--out", str(tmp_path))


def test_every_bench_line_says_machine_and_versions(capsys, tmp_path):
  """Figures come with the machine and the versions that produced them: the attention sweep's header, each
  exactness row and each tokenizer row (they had none, or no versions)."""
  import jax
  from roformer_jax.bench import attention as bench_attention, exactness, tokenizer_speed
  assert common.versions("jax", "no-such-distribution") == {"jax": jax.__version__,
                                                              "no-such-distribution": "not installed"}
  bench_attention.main(["--variants", "softmax", "--layer-variants", "", "--lengths", "16", "--modes", "fwd",
                        "--no-plots", "--out", str(tmp_path)])
  header = capsys.readouterr().out.splitlines()[0]
  assert header.endswith(f"; {common.machine()}, {common.today()}, jax {jax.__version__}"), header
  exactness.main(["--cases", "padding:1x8x2x8", "--variants", "softmax", "--dtypes", "float32"])
  row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert (row["device"], row["jax"]) == (common.machine(), jax.__version__) and row["out"] < 1e-5
  tokenizer_speed.main(["--lines", "8", "--repeats", "1"])
  rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
  import transformers
  assert rows and all(r["versions"]["transformers"] == transformers.__version__ and r["machine"] == common.machine()
                      for r in rows)
