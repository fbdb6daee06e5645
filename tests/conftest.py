"""Test-wide environment, set before any test module imports JAX or transformers."""

import os

# Plain CPU JAX (see the Makefile's test target for why), and transformers without TensorFlow.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("USE_TF", "0")
