"""Test-wide environment, set before any test module imports JAX or transformers; shared fixtures."""

import os

import pytest

# Plain CPU JAX (see the Makefile's test target for why), and transformers without TensorFlow.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("USE_TF", "0")
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
