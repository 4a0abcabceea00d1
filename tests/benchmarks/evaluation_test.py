"""Tests for the evaluation suite's bookkeeping (the measurement itself runs in `launch.benchmark`)."""

from __future__ import annotations

import math

from launch.benchmarks import evaluation


def _round(first, warm, work, peak=300.0, base=250.0):
  return {"first_s": first, "warm_s": warm, "first_cpu_s": 2 * first, "warm_cpu_s": 2 * warm,
          "base_mb": base, "peak_mb": peak, "work_mb": work}


def test_rounds_combine_to_the_best_call_and_the_largest_memory():
  rows = [_round(3.0, 2.9, 41.0, peak=320.0, base=279.0), _round(2.8, 2.6, 38.0, peak=288.0),
          _round(3.1, 3.3, 44.0, peak=296.0, base=252.0)]
  combined = evaluation._combine(rows)  # pylint: disable=protected-access
  # Times come from one round (the one with the best call), never mixed across rounds.
  assert (combined["first_s"], combined["warm_s"], combined["warm_cpu_s"]) == (2.8, 2.6, 5.2)
  # Memory from the round with the largest working memory, all three columns from it (the
  # largest peak, 320, is another round's), so working = peak - before still holds.
  assert (combined["work_mb"], combined["peak_mb"], combined["base_mb"]) == (44.0, 296.0, 252.0)
  assert combined["rounds"] == 3


def test_a_round_without_a_warm_call_counts_its_first():
  rows = [_round(2.0, math.nan, 10.0), _round(2.5, 2.4, 12.0)]
  combined = evaluation._combine(rows)  # pylint: disable=protected-access
  assert combined["first_s"] == 2.0 and combined["work_mb"] == 12.0
