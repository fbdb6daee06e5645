"""Test-wide environment, set before any test module imports JAX or transformers; shared fixtures."""

import os

import pytest

# Plain CPU JAX (see the Makefile's test target for why), and transformers without TensorFlow.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("USE_TF", "0")
# Tests check results, not speed, and much of their time is XLA compiling tiny programs: LLVM without its
# expensive passes compiles them faster. Values agree to float32 rounding, not bitwise (a tiny model's
# gradients: 1.8e-7 relative at most), well inside the tests' tolerances. The
# suite: 1,131 -> 946 s of test time on 2 cores (docs/BENCHMARKS.md). Tests that set their own XLA_FLAGS for a
# device count, and `make pretrain`/`make finetune`, keep XLA's full optimisation.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
# The CLI tests start many short processes that compile the same tiny steps: share compilations.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                "roformer_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
  """make(name, num_lines): the first `num_lines` People's Daily lines as <root>/corpus/news.txt, their
  char vocab as <root>/vocab.txt; returns <root> (a fresh folder per call, `cache` left for prepared data)."""
  from roformer_jax import corpus, tokenization

  def make(name: str, num_lines: int):
    root = tmp_path_factory.mktemp(name)
    lines = [line for _, line in zip(range(num_lines), corpus.people_daily_lines())]
    (root / "corpus").mkdir()
    (root / "corpus" / "news.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenization.write_vocab(tokenization.build_char_vocab(lines), root / "vocab.txt")
    return root
  return make


@pytest.fixture(scope="module")
def tiny_pretrained(text_corpus):
  """make(name): a tiny pretraining workdir (2 steps of tiny_cpu over 200 People's Daily lines, seq 32), trained
  in this process with pretrain.train.run: what fine-tuning tests start from (`--config.init`)."""
  def make(name: str):
    from pretrain.configs import tiny_cpu
    from pretrain.train import run
    data = text_corpus(name, 200)
    cfg = tiny_cpu.get_config()
    cfg.update(dict(steps=2, batch_size=8, seq_len=32, log_every=1, eval_every=1000, eval_batches=1,
                    checkpoint_every=2))
    cfg.optimizer.warmup_steps = 1
    cfg.data.update(dict(corpus=str(data / "corpus"), vocab=str(data / "vocab.txt"),
                         data_dir=str(data / "cache"), num_workers=1))
    run(cfg, data / "init")
    return data / "init"
  return make
