"""Markdown tables and the number formats the papers print (3 decimals, 4 below 0.1, "-" missing)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def format_value(value: float | None) -> str:
  """A metric as the paper prints it: 3 decimals, 4 below 0.1, "-" when missing or not finite."""
  if value is None:
    return "-"
  value = float(value)
  if not math.isfinite(value):
    return "-"
  return f"{value:.4f}" if abs(value) < 0.1 else f"{value:.3f}"


def format_pvalue(p: float | None) -> str:
  if p is None or not math.isfinite(float(p)):
    return "-"
  return f"{float(p):.4g}"


def format_count(x: float | None) -> str:
  """A count with thousands separators; "-" when missing or not finite."""
  if x is None or not math.isfinite(float(x)):
    return "-"
  return f"{float(x):,.0f}"


def format_small(value: float | None) -> str:
  """`format_value`, but 2 significant digits below 0.01 (a thesis' random mAP@500 is 0.000004)."""
  if value is None or value != value:
    return "-"
  if 0 < abs(value) < 0.01:
    return f"{value:.2g}"
  return format_value(value)


def format_number(x: float) -> str:
  """An integer-valued count without decimals, a fractional one (an average) with one."""
  return format_count(x) if float(x).is_integer() else f"{x:,.1f}"


def format_seconds(s: float | None) -> str:
  if s is None or not math.isfinite(float(s)):
    return "-"
  return f"{float(s):.3g} s"


def _cell(text: Any) -> str:
  # A "|" inside a cell would split it; tag names such as "rock|pop" exist in the wild.
  return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                   numeric: Sequence[bool] | None = None) -> str:
  """A GitHub-flavoured markdown table, columns padded to one width; numeric columns right-aligned."""
  header = [_cell(h) for h in header]
  rows = [[_cell(c) for c in row] for row in rows]
  for row in rows:
    if len(row) != len(header):
      raise ValueError(f"table row {row} has {len(row)} cells, the header {header} has {len(header)}.")
  numeric = list(numeric) if numeric is not None else [False] * len(header)
  widths = [max([len(header[j])] + [len(r[j]) for r in rows] + [3]) for j in range(len(header))]

  def line(cells):
    out = []
    for j, c in enumerate(cells):
      out.append(c.rjust(widths[j]) if numeric[j] else c.ljust(widths[j]))
    return "| " + " | ".join(out) + " |"

  rule = "| " + " | ".join(("-" * (w - 1) + ":") if n else "-" * w
                           for w, n in zip(widths, numeric)) + " |"
  return "\n".join([line(header), rule] + [line(r) for r in rows])
