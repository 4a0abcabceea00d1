"""Reports of Rush et al.'s album retrieval (`musemb.systems.rush`): one run, and Table 1's shape.

* `write_report(workdir, baseline_workdirs)`: `<workdir>/report.md` with review -> album and
  album -> review recall@1/5/10, MRR and median rank beside their chance levels (and beside any
  baseline runs' values, e.g. the `rush_baselines` CCA workdir), and the nearest test reviews of a
  few test albums as text, each marked whether it reviews that album.
* `compare_runs(workdirs, out_path)`: several runs (rush runs and `rush_baselines` runs) -> a
  table shaped like the paper's Table 1: one row per ablation that was run, its switches (BERT
  features, LSTM, non-linear, bi-directional, neighbourhood sampling, plus the neighbourhood
  constraints and the loss, which the paper varies without a column; a sentence-features run is
  labelled with what its file holds, which need not be BERT), review -> album R@1/5/10 in
  percent, MRR, and album -> review R@10; then CCA 50/100 and WSABIE (the issue's baseline; the
  paper reports CCA only); chance; and the paper's own rows (MARD, its dev set) for orientation
  only.

Values are percentages for recall, as the paper prints them; missing values print as "-".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from musemb import utils
from musemb.reports import runs as runs_lib
from musemb.reports import tables as tables_lib

PAPER = ("Rush, Yang, Hsu, Rybicki, Le & Lin, \"Learning to Rank with Text-Music Embeddings\" "
         "(the 003 paper)")
SYSTEM = "rush"
BASELINES = "rush_baselines"
DIRECTIONS = (("review_to_album", "Review -> album"), ("album_to_review", "Album -> review"))
METRICS = (("r@1", "R@1"), ("r@5", "R@5"), ("r@10", "R@10"), ("mrr", "MRR"),
           ("median_rank", "median rank"))
CCA_DIMS = (50, 100)
# Table 1 of the paper (MARD dev set, review -> audio R@1/5/10 in %): (BERT, LSTM, non-linear,
# bi-directional, neighbourhood sampling) -> values; and its CCA baselines (section 8).
PAPER_TABLE1 = (((False, False, True, False, False), (5.68, 10.97, 15.36)),
                ((False, False, False, True, False), (8.46, 15.37, 22.30)),
                ((True, False, True, True, False), (1.99, 4.22, 6.4)),
                ((False, False, True, True, False), (10.0, 16.74, 22.22)),
                ((False, True, True, True, False), (9.6, 17.34, 22.39)),
                ((False, False, True, True, True), (19.95, 31.3, 39.2)))
PAPER_CCA = {50: (1.77, 5.74, 8.87), 100: (2.54, 6.90, 9.74)}
WSABIE_NOTE = ("WSABIE: linear maps of the audio features and of the CCA's text view, trained "
               "with WARP to rank each item's and each review's album first among the training "
               "albums (albums as labels); test albums are met through their items' images.")


def _value(metrics: Mapping[str, Any], key: str, percent: bool) -> str:
  v = runs_lib.get_float(metrics, key)
  if v is None:
    return "-"
  return f"{100 * v:.2f}" if percent else (f"{v:.1f}" if key.endswith("median_rank")
                                           else f"{v:.3f}")


def _is_percent(name: str) -> bool:
  return name.startswith("r@")


def variant(config: Mapping[str, Any] | None) -> dict[str, Any]:
  """The Table 1 switches of a rush run's config."""
  weights = list(runs_lib.config_get(config, "loss.weights", (1.0, 1.5, 0.05, 0.05)))
  kind = runs_lib.config_get(config, "loss.kind", "bidirectional")
  text = runs_lib.config_get(config, "model.text", "mean")
  return {"bert": text == "features", "lstm": text == "lstm",
          "nonlinear": not runs_lib.config_get(config, "model.linear", False),
          "bidirectional": kind == "infonce" or (weights[0] > 0 and weights[1] > 0),
          "sampling": bool(runs_lib.config_get(config, "sampling.neighbourhood", True)),
          "constraints": kind != "infonce" and (weights[2] > 0 or weights[3] > 0),
          "loss": "InfoNCE" if kind == "infonce" else "ranking (6)-(9)"}


def _tick(flag: bool) -> str:
  return "yes" if flag else "-"


def _results_table(columns: Sequence[tuple[str, str, Mapping[str, Any]]]) -> str:
  """Rows: metrics of each direction; columns: (label, key prefix, metrics) + chance."""
  header = ["direction", "metric"] + [c[0] for c in columns] + ["chance"]
  rows = []
  for direction, label in DIRECTIONS:
    for name, shown in METRICS:
      pct = _is_percent(name)
      row = [label, shown + (" (%)" if pct else "")]
      row += [_value(m, f"{prefix}/{direction}/{name}", pct) for _, prefix, m in columns]
      own = columns[0]
      row.append(_value(own[2], f"{own[1]}/{direction}/chance/{name}", pct))
      rows.append(row)
  return tables_lib.markdown_table(header, rows, [False, False] + [True] * (len(columns) + 1))


def _baseline_columns(metrics: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
  out = []
  for d in CCA_DIMS:
    if runs_lib.get_float(metrics, f"{BASELINES}/cca_{d}/review_to_album/r@1") is None:
      continue
    k = runs_lib.get_float(metrics, f"{BASELINES}/cca_{d}/latent_dim")
    # Small data caps the latent size at the views' dimensions: say so rather than mislabel.
    label = f"CCA {d}" if k is None or int(k) == d else f"CCA {d} (k={int(k)})"
    out.append((label, f"{BASELINES}/cca_{d}", metrics))
  if runs_lib.get_float(metrics, f"{BASELINES}/wsabie/review_to_album/r@1") is not None:
    out.append(("WSABIE", f"{BASELINES}/wsabie", metrics))
  return out


def _examples(workdir: str) -> str:
  examples = runs_lib.read_json_if_exists(os.path.join(workdir, "nearest.json"))
  if not examples:
    return ""
  lines = ["## Nearest test reviews of a few test albums", "",
           "Each album's three nearest reviews among all test reviews (distance in the joint "
           "space; **own** marks a review of that album).", ""]
  for ex in examples:
    name = ex.get("title") or ex["album"]
    by = f" by {ex['artist']}" if ex.get("artist") else ""
    lines.append(f"**{name}**{by} ({ex['own_reviews']} review(s) of its own):")
    lines.append("")
    for n in ex["nearest"]:
      text = " ".join(str(n["text"]).split())
      text = text if len(text) <= 300 else text[:297] + "..."
      mark = "**own**" if n["own"] else f"of {n['album']}"
      lines.append(f"- {n['distance']:.3f} ({mark}): {text}")
    lines.append("")
  return "\n".join(lines)


def write_report(workdir: str, *, baseline_workdirs: Sequence[str] = ()) -> str:
  """`<workdir>/report.md` of one rush or rush_baselines run (see the module docstring)."""
  metrics = dict(runs_lib.read_metrics(workdir))
  for b in baseline_workdirs:
    metrics.update({k: v for k, v in runs_lib.read_metrics(b).items() if k.startswith(BASELINES)})
  config = runs_lib.read_json_if_exists(os.path.join(workdir, "config.json")) or {}
  info = runs_lib.read_json_if_exists(os.path.join(workdir, "info.json")) or {}
  own = runs_lib.get_float(metrics, f"{SYSTEM}/review_to_album/r@1") is not None
  columns = ([("this run", SYSTEM, metrics)] if own else []) + _baseline_columns(metrics)
  lines = [f"# Album retrieval from reviews: {os.path.basename(os.path.abspath(workdir))}", "",
           f"After {PAPER}.", ""]
  if info:
    lines += [f"Data: {info.get('dataset', '?')}; {info.get('split_rule', '')}.", ""]
  if own:
    v = variant(config)
    lines += ["Variant: " + ", ".join(
        f"{k} {'yes' if val is True else 'no' if val is False else val}"
        for k, val in v.items()) + ".", ""]
    if v["bert"]:
      where = str(info.get("text_features", "?")).rsplit(": ", 1)[0]
      lines += [f"Text: {_features_label(workdir)}, read from {where}.", ""]
  line = runs_lib.training_line(workdir)
  if line:
    lines += [line, ""]
  if columns:
    lines += ["## Retrieval on the test albums", "",
              "Review -> album: each test review ranks all test albums (an album is as near as its "
              "nearest audio item). Album -> review: each test album ranks all test reviews and is "
              "found at its first own review. Chance levels are exact.", "",
              _results_table(columns), ""]
  lines.append(_examples(workdir))
  path = os.path.join(workdir, "report.md")
  utils.write_text_atomic(path, "\n".join(lines).rstrip() + "\n")
  return path


def _row_cells(metrics: Mapping[str, Any], prefix: str) -> list[str]:
  cells = [_value(metrics, f"{prefix}/review_to_album/{k}", True) for k in ("r@1", "r@5", "r@10")]
  cells.append(_value(metrics, f"{prefix}/review_to_album/mrr", False))
  cells.append(_value(metrics, f"{prefix}/album_to_review/r@10", True))
  return cells


def _features_label(workdir: str) -> str:
  """What a `model.text=features` run read, in words: the paper's column says BERT, the file may
  hold anything (the demo's holds mean word2vec vectors)."""
  info = runs_lib.read_json_if_exists(os.path.join(workdir, "info.json")) or {}
  what = str(info.get("text_features", "")).rsplit(": ", 1)[-1] or "not described"
  return f"sentence features (precomputed file; here: {what})"


def compare_runs(workdirs: Sequence[str], out_path: str) -> str:
  """Table 1's shape over rush and rush_baselines runs (see the module docstring)."""
  header = ["run", "BERT features", "LSTM", "non-linear", "bi-directional", "neighb. sampling",
            "neighb. constraints", "loss", "R@1", "R@5", "R@10", "MRR", "album->review R@10"]
  rows, chance, baselines = [], None, []
  for w in workdirs:
    metrics = runs_lib.read_metrics(w)
    config = runs_lib.read_json_if_exists(os.path.join(w, "config.json")) or {}
    name = os.path.basename(os.path.abspath(w))
    if runs_lib.get_float(metrics, f"{SYSTEM}/review_to_album/r@1") is not None:
      v = variant(config)
      if v["bert"]:
        name = f"{name}: {_features_label(w)}"
      rows.append([name, _tick(v["bert"]), _tick(v["lstm"]), _tick(v["nonlinear"]),
                   _tick(v["bidirectional"]), _tick(v["sampling"]), _tick(v["constraints"]),
                   v["loss"]] + _row_cells(metrics, SYSTEM))
      chance = chance or (metrics, f"{SYSTEM}/review_to_album/chance",
                          f"{SYSTEM}/album_to_review/chance")
    for label, prefix, m in _baseline_columns(metrics):
      kind = "WARP" if label == "WSABIE" else "CCA"
      baselines.append([f"{label} ({name})"] + ["-"] * 6 + [kind] + _row_cells(m, prefix))
      chance = chance or (m, f"{prefix}/review_to_album/chance", f"{prefix}/album_to_review/chance")
  rows += baselines
  if chance:
    m, r2a, a2r = chance
    rows.append(["chance"] + [""] * 7 + [_value(m, f"{r2a}/{k}", True)
                                         for k in ("r@1", "r@5", "r@10")]
                + [_value(m, f"{r2a}/mrr", False), _value(m, f"{a2r}/r@10", True)])
  paper_rows = []
  for (bert, lstm, nonlinear, bidir, sampling), values in PAPER_TABLE1:
    paper_rows.append(["paper"] + [_tick(x) for x in (bert, lstm, nonlinear, bidir, sampling)]
                      + ["?", "ranking"] + [f"{x:.2f}" for x in values] + ["-", "-"])
  for d, values in PAPER_CCA.items():
    paper_rows.append([f"paper CCA {d}"] + ["-"] * 6 + ["CCA"] + [f"{x:.2f}" for x in values]
                      + ["-", "-"])
  numeric = [False] * 8 + [True] * 5
  lines = ["# Table 1: review -> album retrieval, ablations and baselines", "",
           f"After {PAPER}. Our rows: test albums of each run's data (recall in %). "
           "The paper's rows are on MARD's development split, for orientation only.", "",
           tables_lib.markdown_table(header, rows, numeric), "", WSABIE_NOTE, "",
           "## The paper's Table 1 and section 8", "",
           tables_lib.markdown_table(header, paper_rows, numeric), ""]
  utils.write_text_atomic(out_path, "\n".join(lines))
  return out_path
