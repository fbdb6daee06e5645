"""argparse types for the command-line tools' sizes and counts: a bad value is argparse's one-line error."""

from __future__ import annotations

import argparse


def _int_at_least(text: str, low: int) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
  if value < low:
    raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
  return value


def positive_int(text: str) -> int:
  """argparse type for sizes and counts: a batch, length or repeat count of 0 would time nothing."""
  return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
  """argparse type for options where 0 means 'the default' (e.g. --predictions)."""
  return _int_at_least(text, 0)


def positive_ints(text: str) -> list[int]:
  """argparse type for a comma list of positive integers ('128,512'); an empty list is refused too."""
  values = [_int_at_least(x.strip(), 1) for x in text.split(",") if x.strip()]
  if not values:
    raise argparse.ArgumentTypeError(f"give a comma list of positive integers, got {text!r}")
  return values
