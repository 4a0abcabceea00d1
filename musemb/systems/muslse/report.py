"""The MUSLSE report: a finished run's files turned into the paper's tables and a map of the space.

Follows the evaluation section (§6) of Weston, Bengio and Hamel, "Multi-Tasking with Joint Semantic
Spaces for Large-Scale Music Annotation and Retrieval" (JNMR 2011): Table 2 (tag prediction p@k,
MUSLSE against one-vs-rest), the per-query wins/losses/draws and significance test quoted beside it,
Table 4 (nearest tags by T_i . T_j), Table 6 (artist / song prediction and similar songs, p@1 and
p@6), Table 7 (model size, prediction time and the test-time complexity formulas), and, across
several runs, Table 3 (WARP vs AUC at several d), Table 5 (changing d) and Table 6 (single task vs
multi-task).

Inputs are the files a run leaves in its workdir (all but metrics.json optional):

* `metrics.json`: flat `{"<system>/<task>/<metric>": float}`; systems `muslse`, `one_vs_rest`,
  `cosine`; metrics `p@1` ... `p@15` and `num_queries`.
* `per_query.npz`: `"<system>/<task>/p@3"` float64 `[queries]` (NaN = query excluded) and
  `"<task>/query_ids"` str `[queries]`, the query order of that task's arrays.
* `embeddings.npz`: `tag_names` `[n_tags]`, `artist_names` `[n_artists]`, `T: [n_tags, D]`,
  `A: [n_artists, D]` (ensemble members concatenated along D, so T_i . T_j sums the members' dots).
* `model_stats.json`: per system `num_params`, `bytes`, `labels` (Y per task), `num_features` (|S|),
  `avg_nonzero_features` (|S|_nz), `embed_dim` (d or null), `seconds_per_song` (per task).
* `config.json`: the run's ml_collections config as JSON.

Baseline runs (e.g. one-vs-rest trained into its own workdir) are merged in: their keys for systems
other than the run's own are added, the run's own values always win, and the merged metrics are
written back to `<workdir>/metrics.json` so later tools see one picture. Every file is written
atomically (temp file + `os.replace`). Plotting uses matplotlib's Agg canvas directly, so no global
backend is changed, and PCA is a plain numpy SVD.

Formatting: precisions print with 3 decimals, or 4 below 0.1 as in the paper's Table 6; anything
missing prints as "-"; p-values print with 4 significant digits.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from musemb.reports import plots as plots_lib
from musemb.reports import runs as runs_lib
from musemb.reports import stats as stats_lib
from musemb.reports import tables as tables_lib
from musemb import utils

SYSTEMS = ("one_vs_rest", "cosine", "muslse")
SYSTEM_LABELS = {"one_vs_rest": "one-vs-rest", "cosine": "cosine similarity", "muslse": "MUSLSE"}
TASK_LABELS = {
    "artist_prediction": "Artist Prediction",
    "song_prediction": "Song Prediction",
    "similar_songs": "Similar Songs",
    "tag_prediction": "Tag Prediction",
    "similar_artists": "Similar Artists",
}
TAG_KS = (3, 6, 9, 12, 15)
TABLE6_TASKS = ("artist_prediction", "song_prediction", "similar_songs")
TABLE6_KS = (1, 6)
# Tasks on which the run's per-query p@3 is compared with one-vs-rest (§6.4 "wins, losses, draws").
SIGNIFICANCE_TASKS = ("tag_prediction", "artist_prediction")

NEIGHBOURS = 5
# Table 4 lists every tag of a small vocabulary, else the first few in vocabulary order.
ALL_TAGS_UP_TO = 20
TAG_ROWS_IF_MANY = 10
# Artists get name labels on the map only while the labels stay readable.
LABEL_ARTISTS_UP_TO = 60
# The map draws at most this many artists (the first in vocabulary order) to keep the PNG light.
MAX_ARTISTS_ON_MAP = 5000

PAPER = ("Weston, Bengio & Hamel, \"Multi-Tasking with Joint Semantic Spaces for Large-Scale Music "
         "Annotation and Retrieval\", JNMR 2011")
# The paper's Table 2 (TagATune test set), one-vs-rest and MUSLSE rows (d = 400): p@3 ... p@15.
PAPER_TABLE2 = (
    ("one-vs-rest", "MFCC", (0.349, 0.244, 0.193, 0.154, 0.136)),
    ("MUSLSE", "MFCC", (0.382, 0.275, 0.219, 0.182, 0.157)),
    ("one-vs-rest", "MFCC+SAI", (0.362, 0.261, 0.221, 0.167, 0.151)),
    ("MUSLSE", "MFCC+SAI", (0.473, 0.330, 0.256, 0.211, 0.179)),
)
# The paper's Table 6 (Big-data, MFCC, d = 100): artist, song, similar songs; (p@1, p@6) each.
PAPER_TABLE6 = (
    ("one-vs-rest (artist prediction)", ((0.0551, 0.0206), None, None)),
    ("cosine similarity", (None, None, (0.0427, 0.0159))),
    ("MUSLSE single task", ((0.0958, 0.0328), (0.0837, 0.0406), (0.0533, 0.0225))),
    ("MUSLSE all tasks", ((0.1110, 0.0352), (0.0940, 0.0433), (0.0557, 0.0226))),
)
# §6.4: MUSLSE vs one-vs-rest (MFCC, TagATune) at p@3 over the 6,499 test clips.
PAPER_WLD = (2341, 1940, 2117)

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Formatting helpers.


# ----------------------------------------------------------------------------------------------
# Reading a workdir.


def _task_names(config: Mapping[str, Any] | None) -> list[str]:
  names = runs_lib.config_get(config, "tasks.names", "")
  if isinstance(names, str):
    return [t.strip() for t in names.split(",") if t.strip()]
  return [str(t) for t in names or ()]


def _total_dim(config: Mapping[str, Any] | None) -> int | None:
  """d as the paper counts it: an ensemble of M models of dimension d0 is "d = M * d0" (§4.3)."""
  d = runs_lib.config_get(config, "model.embed_dim")
  if d is None:
    return None
  return int(d) * int(runs_lib.config_get(config, "model.ensemble", 1) or 1)


def _dim_label(config: Mapping[str, Any] | None) -> str:
  d = runs_lib.config_get(config, "model.embed_dim")
  if d is None:
    return "-"
  m = int(runs_lib.config_get(config, "model.ensemble", 1) or 1)
  return f"{int(d) * m} ({m}x{int(d)})" if m > 1 else str(int(d))


def _has_any(metrics: Mapping[str, Any], system: str, tasks: Sequence[str],
             ks: Sequence[int]) -> bool:
  return any(runs_lib.metric(metrics, system, t, f"p@{k}") is not None for t in tasks for k in ks)


# ----------------------------------------------------------------------------------------------
# Sections of the single-run report.


def _header(workdir: str, config: Mapping[str, Any] | None, baseline_workdirs: Sequence[str],
            added: Sequence[str], notes: Sequence[str]) -> str:
  lines = [f"# MUSLSE report: `{os.path.basename(os.path.abspath(workdir))}`", ""]
  if config is None:
    lines.append("No config.json in the workdir: data set and configuration unknown.")
  else:
    data_dir = runs_lib.config_get(config, "data_dir", "")
    if data_dir:
      data = f"prepared data set at `{data_dir}`"
    else:
      data = ("the built-in synthetic world (size "
              f"`{runs_lib.config_get(config, 'data.synthetic_size', '?')}`)")
    ensemble = int(runs_lib.config_get(config, "model.ensemble", 1) or 1)
    lines += [
        f"- **Data set:** {data}.",
        f"- **System:** `{runs_lib.config_get(config, 'system', '?')}`, d = {_dim_label(config)}"
        + (f" (an ensemble of {ensemble} models whose scores are summed)" if ensemble > 1 else "")
        + f"; loss `{runs_lib.config_get(config, 'loss.kind', '?')}` with alpha "
        f"`{runs_lib.config_get(config, 'loss.alpha', '?')}`.",
        f"- **Tasks:** {', '.join(_task_names(config)) or '?'} "
        f"(task sampling `{runs_lib.config_get(config, 'tasks.mode', '?')}`).",
    ]
  sources = f"`{os.path.join(workdir, 'metrics.json')}` (this run's test-split evaluation)"
  if baseline_workdirs:
    sources += ", with baseline systems merged from " + ", ".join(f"`{b}`" for b in
                                                                   baseline_workdirs)
    sources += f" ({len(added)} keys added to metrics.json)"
  lines += [
      f"- **Numbers:** {sources}; per-query values from `per_query.npz`, embeddings from "
      "`embeddings.npz`, sizes and timings from `model_stats.json`.",
      f"- **Paper rows** are quoted from {PAPER} for reference only: they were measured on "
      "TagATune and the proprietary Big-data set, not on this data.",
  ]
  training = runs_lib.training_line(workdir)
  if training:
    lines.append(f"- **Training:** {training}")
  for note in notes:
    lines.append(f"- **Note:** {note}")
  return "\n".join(lines)


def _queries_line(metrics: Mapping[str, Any], tasks: Sequence[str]) -> str:
  parts = []
  for task in tasks:
    counts = {SYSTEM_LABELS[s]: runs_lib.metric(metrics, s, task, "num_queries") for s in SYSTEMS}
    counts = {k: v for k, v in counts.items() if v is not None}
    if counts:
      values = set(counts.values())
      if len(values) == 1:
        parts.append(f"{task} {tables_lib.format_count(values.pop())}")
      else:
        parts.append(f"{task} " + ", ".join(f"{tables_lib.format_count(v)} ({k})" for k, v in counts.items()))
  return ("Test queries: " + "; ".join(parts) + ".") if parts else ""


def _table2(metrics: Mapping[str, Any], config: Mapping[str, Any] | None) -> str:
  out = ["## Table 2: tag prediction, precision at k", ""]
  rows = []
  for system in ("one_vs_rest", "muslse"):
    if not _has_any(metrics, system, ["tag_prediction"], TAG_KS):
      continue
    label = SYSTEM_LABELS[system]
    if system == "muslse" and config is not None:
      label += f" (d={_dim_label(config)})"
    rows.append([label, "this run"] +
                [tables_lib.format_value(runs_lib.metric(metrics, system, "tag_prediction", f"p@{k}"))
                 for k in TAG_KS])
  if not rows:
    out.append("No tag prediction metrics in metrics.json (the task was not run on this data set).")
    return "\n".join(out)
  for name, features, values in PAPER_TABLE2:
    rows.append([f"{name} ({features})", "paper, TagATune"] + [tables_lib.format_value(v) for v in values])
  out.append(tables_lib.markdown_table(["Algorithm", "Source"] + [f"p@{k}" for k in TAG_KS], rows,
                            [False, False] + [True] * len(TAG_KS)))
  queries = _queries_line(metrics, ["tag_prediction"])
  if queries:
    out += ["", queries]
  return "\n".join(out)


def _table6(metrics: Mapping[str, Any]) -> str:
  tasks = list(TABLE6_TASKS)
  if any(_has_any(metrics, s, ["similar_artists"], TABLE6_KS) for s in SYSTEMS):
    tasks.append("similar_artists")
  out = ["## Table 6: artist prediction, song prediction and similar songs", ""]
  rows = []
  for system in SYSTEMS:
    if not _has_any(metrics, system, tasks, TABLE6_KS):
      continue
    rows.append([SYSTEM_LABELS[system], "this run"] +
                [tables_lib.format_value(runs_lib.metric(metrics, system, t, f"p@{k}"))
                 for t in tasks for k in TABLE6_KS])
  if not rows:
    out.append("No artist prediction, song prediction, similar songs or similar artists metrics in "
               "metrics.json (these tasks were not run on this data set).")
    return "\n".join(out)
  for name, values in PAPER_TABLE6:
    cells = []
    for j in range(len(tasks)):
      pair = values[j] if j < len(values) else None
      cells += [tables_lib.format_value(v) for v in (pair or (None, None))]
    rows.append([name, "paper, Big-data"] + cells)
  header = ["Algorithm", "Source"] + [f"{TASK_LABELS[t]} p@{k}" for t in tasks for k in TABLE6_KS]
  out.append(tables_lib.markdown_table(header, rows, [False, False] + [True] * (len(header) - 2)))
  queries = _queries_line(metrics, tasks)
  if queries:
    out += ["", queries]
  return "\n".join(out)


def _significance(per_query: runs_lib.PerQuery) -> str:
  out = ["## MUSLSE vs one-vs-rest per test query (p@3)", ""]
  rows = []
  for task in SIGNIFICANCE_TASKS:
    pair = per_query.paired(task, "p@3", "muslse", "one_vs_rest")
    if pair is None:
      continue
    r = stats_lib.wins_losses_draws(*pair)
    rows.append([task, r["queries"], r["wins"], r["losses"], r["draws"],
                 tables_lib.format_pvalue(r["signed_rank_p"]), tables_lib.format_pvalue(r["rank_sum_p"])])
  if not rows:
    out.append("No per-query p@3 of both MUSLSE and one-vs-rest in per_query.npz: nothing to compare "
               "(run the one-vs-rest baseline and pass its workdir as a baseline).")
    return "\n".join(out)
  out.append(tables_lib.markdown_table(
      ["Task", "Queries", "Wins", "Losses", "Draws", "Wilcoxon signed-rank p", "Rank-sum p"], rows,
      [False] + [True] * 6))
  out += ["",
          "A win is a query where MUSLSE's p@3 is higher than one-vs-rest's; queries either system "
          "excludes (no relevant item) are left out. Both tests are two-sided; the signed-rank test "
          "pairs the queries and drops draws (`scipy.stats.wilcoxon(zero_method=\"wilcox\")`), the "
          "rank-sum test (`scipy.stats.ranksums`) is the one the paper reports. For reference the "
          f"paper has {PAPER_WLD[0]} wins, {PAPER_WLD[1]} losses and {PAPER_WLD[2]} draws on "
          "TagATune tag prediction (MFCC)."]
  return "\n".join(out)


def nearest_tags(T: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
  """Indices `[n_tags, min(k, n_tags - 1)]` of each tag's nearest tags by T_i . T_j, itself excluded.

  Ties are broken by the lower index, like the ranking metrics.
  """
  T = np.asarray(T, dtype=np.float64)
  sims = T @ T.T
  np.fill_diagonal(sims, -np.inf)
  k = min(k, T.shape[0] - 1)
  return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def _table4(embeddings: Mapping[str, np.ndarray] | None) -> str:
  out = ["## Table 4: related tags in the embedding space", ""]
  if embeddings is None or "T" not in embeddings or "tag_names" not in embeddings:
    out.append("No tag embeddings (embeddings.npz with `T` and `tag_names`) in the workdir.")
    return "\n".join(out)
  T, names = np.asarray(embeddings["T"]), np.asarray(embeddings["tag_names"]).astype(str)
  if T.ndim != 2 or T.shape[0] != names.shape[0]:
    raise ValueError(f"embeddings.npz: T has shape {T.shape} but tag_names has {names.shape[0]} "
                     "names; expected T: [n_tags, D] with one row per name.")
  if T.shape[0] < 2:
    out.append("Fewer than two tags: no neighbours to show.")
    return "\n".join(out)
  rows_shown = T.shape[0] if T.shape[0] <= ALL_TAGS_UP_TO else TAG_ROWS_IF_MANY
  nn = nearest_tags(T)
  rows = [[names[i], ", ".join(names[j] for j in nn[i])] for i in range(rows_shown)]
  out.append(tables_lib.markdown_table(["Tag", "Neighbouring tags"], rows))
  out += ["", f"The {nn.shape[1]} closest tags by T_i . T_j (the paper's similarity), closest first"
          + ("" if rows_shown == T.shape[0] else
             f"; the first {rows_shown} of {T.shape[0]} tags in vocabulary order")
          + "."]
  return "\n".join(out)


def _table7(model_stats: Mapping[str, Any] | None) -> str:
  out = ["## Table 7: test-time complexity, prediction time and model size", ""]
  if not model_stats or not any(s in model_stats for s in ("one_vs_rest", "muslse")):
    out.append("No model_stats.json for MUSLSE or one-vs-rest in the workdir.")
    return "\n".join(out)
  rows = []
  ops: dict[tuple[str, str], float] = {}
  times: dict[tuple[str, str], float] = {}
  for system in ("one_vs_rest", "muslse"):
    stats = model_stats.get(system)
    if not stats:
      continue
    labels = dict(stats.get("labels") or {})
    seconds = dict(stats.get("seconds_per_song") or {})
    # The paper's order: tags (TagATune) first, then artists (Big-data).
    tasks = [t for t in SIGNIFICANCE_TASKS if t in labels or t in seconds]
    tasks += sorted(t for t in set(labels) | set(seconds) if t not in tasks)
    S, nz, d = stats.get("num_features"), stats.get("avg_nonzero_features"), stats.get("embed_dim")
    size = "-" if stats.get("bytes") is None else f"{stats['bytes'] / 1e6:.3g} MB"
    params = "-" if stats.get("num_params") is None else tables_lib.format_count(stats["num_params"])
    for task in tasks:
      Y = labels.get(task)
      if system == "one_vs_rest":
        time_o, space_o = "O(Y·|S|_nz)", "O(Y·|S|)"
        time_n = (f"{tables_lib.format_count(Y)} × {tables_lib.format_number(nz)} = {tables_lib.format_count(Y * nz)}"
                  if Y is not None and nz is not None else "-")
        space_n = (f"{tables_lib.format_count(Y)} × {tables_lib.format_count(S)} = {tables_lib.format_count(Y * S)}"
                   if Y is not None and S is not None else "-")
        if Y is not None and nz is not None:
          ops[(system, task)] = Y * nz
      else:
        time_o, space_o = "O((Y + |S|_nz)·d)", "O((Y + |S|)·d)"
        time_n = (f"({tables_lib.format_count(Y)} + {tables_lib.format_number(nz)}) × {d} = "
                  f"{tables_lib.format_count((Y + nz) * d)}"
                  if None not in (Y, nz, d) else "-")
        space_n = (f"({tables_lib.format_count(Y)} + {tables_lib.format_count(S)}) × {d} = "
                   f"{tables_lib.format_count((Y + S) * d)}"
                   if None not in (Y, S, d) else "-")
        if None not in (Y, nz, d):
          ops[(system, task)] = (Y + nz) * d
      if seconds.get(task) is not None:
        times[(system, task)] = float(seconds[task])
      rows.append([SYSTEM_LABELS[system], task, time_o, time_n, space_o, space_n,
                   tables_lib.format_seconds(seconds.get(task)), params, size])
  out.append(tables_lib.markdown_table(
      ["Algorithm", "Task", "Time complexity", "Operations per song", "Space complexity",
       "Parameters (labels + features)", "Prediction time per song", "Parameters (model)",
       "Model size"],
      rows, [False, False, False, True, False, True, True, True, True]))
  out += ["",
          "Y is the number of labels of the task (tags or artists), |S| the number of input "
          "features, |S|_nz the average number of non-zero features per song and d the embedding "
          "dimension; times exclude feature extraction, as in the paper. Model size counts the "
          "whole saved model (all tasks), MB = 10^6 bytes."]
  for task in dict.fromkeys(SIGNIFICANCE_TASKS + tuple(TASK_LABELS)):
    if ("muslse", task) in ops and ("one_vs_rest", task) in ops:
      ratio = ops[("one_vs_rest", task)] / ops[("muslse", task)]
      line = f"{task}: one-vs-rest needs {ratio:.3g}x the multiply-adds per song of MUSLSE"
      if ("muslse", task) in times and ("one_vs_rest", task) in times and times[("muslse", task)]:
        t = times[("one_vs_rest", task)] / times[("muslse", task)]
        line += f" and measured {t:.3g}x its prediction time"
      out += ["", line + "."]
  return "\n".join(out)


def write_map(embeddings: Mapping[str, np.ndarray], path: str) -> str:
  """Scatters tags and artists on the 2-D PCA of their joint embeddings; writes a PNG atomically."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  groups = []
  for key, names_key in (("T", "tag_names"), ("A", "artist_names")):
    if key in embeddings:
      X = np.asarray(embeddings[key], dtype=np.float64)
      names = (np.asarray(embeddings[names_key]).astype(str) if names_key in embeddings
               else np.array([f"{key}{i}" for i in range(X.shape[0])]))
      if key == "A":
        X, names = X[:MAX_ARTISTS_ON_MAP], names[:MAX_ARTISTS_ON_MAP]
      groups.append((key, X, names))
  if not groups or sum(g[1].shape[0] for g in groups) == 0:
    raise ValueError(f"nothing to draw for {path}: embeddings.npz holds neither T nor A.")
  dims = {g[1].shape[1] for g in groups}
  if len(dims) != 1:
    raise ValueError(f"embeddings.npz: T and A have different widths {sorted(dims)}; both must be "
                     "[n, D] in the same space.")
  coords, explained = plots_lib.pca_2d(np.concatenate([g[1] for g in groups]))

  fig = Figure(figsize=(10, 8), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  start = 0
  for key, X, names in groups:
    xy = coords[start:start + X.shape[0]]
    start += X.shape[0]
    if key == "T":
      ax.scatter(xy[:, 0], xy[:, 1], marker="o", s=22, color="tab:blue", label=f"tags ({len(X)})")
      label_it = True
    else:
      ax.scatter(xy[:, 0], xy[:, 1], marker="^", s=18, color="tab:orange", alpha=0.7,
                 label=f"artists ({len(X)})")
      label_it = len(X) <= LABEL_ARTISTS_UP_TO
    if label_it:
      color = "tab:blue" if key == "T" else "tab:red"
      for (x, y), name in zip(xy, names):
        ax.annotate(name, (x, y), xytext=(3, 2), textcoords="offset points", fontsize=7,
                    color=color)
  ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of variance)")
  ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}% of variance)")
  ax.set_title("Tags and artists in the MUSLSE embedding space (2-D PCA)")
  ax.legend(loc="best")
  ax.grid(True, alpha=0.3)
  fig.tight_layout()

  return plots_lib.save_figure_atomic(fig, path)


# ----------------------------------------------------------------------------------------------
# Public entry points.


def write_report(workdir: str, *, baseline_workdirs: Sequence[str] = ()) -> str:
  """Writes `<workdir>/report.md` (+ `map.png`) for one finished run; returns the report's path.

  Keys of the baselines' metrics.json (systems other than the run's own, and only those the run
  lacks) are added to `<workdir>/metrics.json`; nothing else in the workdir is modified.
  """
  config = runs_lib.read_json_if_exists(os.path.join(workdir, "config.json"))
  # A one-vs-rest run's report is this one too, with MUSLSE's rows as the merged baseline.
  own_system = str(runs_lib.config_get(config, "system", "muslse"))
  metrics = runs_lib.read_metrics(workdir)
  model_stats = runs_lib.read_json_if_exists(os.path.join(workdir, "model_stats.json")) or {}
  per_query = runs_lib.PerQuery()
  npz = runs_lib.read_npz(os.path.join(workdir, "per_query.npz"))
  if npz is not None:
    per_query.add(npz, os.path.join(workdir, "per_query.npz"))
  notes: list[str] = []
  added = runs_lib.merge_baselines(own_system, metrics, model_stats, per_query,
                           list(baseline_workdirs), notes)
  if added:
    utils.write_json_atomic(os.path.join(workdir, "metrics.json"), metrics)
    _log.info("Merged %d baseline keys into %s", len(added), os.path.join(workdir, "metrics.json"))

  embeddings = runs_lib.read_npz(os.path.join(workdir, "embeddings.npz"))
  sections = [_header(workdir, config, baseline_workdirs, added, notes),
              _table2(metrics, config), _table6(metrics), _significance(per_query),
              _table4(embeddings), _table7(model_stats)]
  map_section = ["## Map of the embedding space", ""]
  if embeddings is not None and ("T" in embeddings or "A" in embeddings):
    write_map(embeddings, os.path.join(workdir, "map.png"))
    n_artists = len(embeddings["A"]) if "A" in embeddings else 0
    map_section += ["![Tags and artists, 2-D PCA of the embeddings](map.png)", "",
                    "Tags (circles) and artists (triangles) projected together on the two leading "
                    "principal axes of their embeddings; "
                    + ("tags and artists are named" if 0 < n_artists <= LABEL_ARTISTS_UP_TO
                       else "tags are named")
                    + (f"; the first {MAX_ARTISTS_ON_MAP} of {n_artists} artists are drawn"
                       if n_artists > MAX_ARTISTS_ON_MAP else "") + "."]
  else:
    map_section.append("No embeddings.npz in the workdir: no map.")
  sections.append("\n".join(map_section))
  path = os.path.join(workdir, "report.md")
  utils.write_text_atomic(path, "\n\n".join(sections) + "\n")
  return path


def _run_row_info(workdir: str) -> dict[str, Any]:
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} does not exist: compare_runs needs each run's config "
                            "to label its row; point --workdirs at finished training workdirs.")
  config = runs_lib.read_json(config_path)
  tasks = _task_names(config)
  return {"workdir": workdir, "name": os.path.basename(os.path.abspath(workdir)),
          "config": config, "metrics": runs_lib.read_metrics(workdir),
          "loss": str(runs_lib.config_get(config, "loss.kind", "-")), "d": _total_dim(config),
          "d_label": _dim_label(config), "tasks": tasks}


def _sort_key(run: Mapping[str, Any]) -> tuple:
  return (run["d"] if run["d"] is not None else math.inf, run["loss"], run["name"])


def compare_runs(workdirs: Sequence[str], out_path: str) -> str:
  """Writes a markdown report comparing several runs, shaped like the paper's Tables 3, 5 and 6.

  Each workdir needs config.json and metrics.json. Table 3: MUSLSE tag prediction p@3..p@15 per
  (loss, d); Table 5: the same for the WARP runs by d; Table 6: artist / song / similar-songs p@1 and
  p@6 of single-task and multi-task MUSLSE runs, with any baseline rows the runs' metrics hold.
  Returns `out_path`.
  """
  if not workdirs:
    raise ValueError("compare_runs needs at least one workdir.")
  runs = [_run_row_info(w) for w in workdirs]
  names = [r["name"] for r in runs]
  for r in runs:
    if names.count(r["name"]) > 1:
      # Same folder name in different places (a/run, b/run): the path tells the rows apart.
      r["name"] = os.path.normpath(r["workdir"])
  runs.sort(key=_sort_key)
  sections = ["# MUSLSE runs compared", "",
              "Numbers from each run's `metrics.json` (test split), labelled by its `config.json`; "
              "d counts all ensemble members (the paper's d = 300 is three d = 100 models). "
              "Missing metrics print as \"-\".", "",
              tables_lib.markdown_table(["Run", "Workdir", "Tasks"],
                             [[r["name"], f"`{r['workdir']}`", ", ".join(r["tasks"]) or "-"]
                              for r in runs])]

  ks_header = [f"p@{k}" for k in TAG_KS]
  tag_runs = [r for r in runs if _has_any(r["metrics"], "muslse", ["tag_prediction"], TAG_KS)]
  sections += ["", "## Table 3: WARP vs AUC, tag prediction precision at k", ""]
  if tag_runs:
    rows = [[r["name"], r["loss"], r["d_label"]] +
            [tables_lib.format_value(runs_lib.metric(r["metrics"], "muslse", "tag_prediction", f"p@{k}"))
             for k in TAG_KS] for r in tag_runs]
    sections.append(tables_lib.markdown_table(["Run", "Loss", "d"] + ks_header, rows,
                                   [False, False, True] + [True] * len(TAG_KS)))
  else:
    sections.append("No run reports MUSLSE tag prediction.")

  sections += ["", "## Table 5: changing the embedding size d (WARP loss), tag prediction", ""]
  warp_runs = [r for r in tag_runs if r["loss"].startswith("warp")]
  if warp_runs:
    kinds = {r["loss"] for r in warp_runs}
    rows = [[r["name"], r["d_label"] + ("" if len(kinds) == 1 else f" ({r['loss']})")] +
            [tables_lib.format_value(runs_lib.metric(r["metrics"], "muslse", "tag_prediction", f"p@{k}"))
             for k in TAG_KS] for r in warp_runs]
    sections.append(tables_lib.markdown_table(["Run", "d"] + ks_header, rows,
                                   [False, True] + [True] * len(TAG_KS)))
  else:
    sections.append("No WARP run reports MUSLSE tag prediction.")

  tasks = list(TABLE6_TASKS)
  if any(_has_any(r["metrics"], s, ["similar_artists"], TABLE6_KS) for r in runs for s in SYSTEMS):
    tasks.append("similar_artists")
  sections += ["", "## Table 6: single task vs multi-task", ""]
  rows, seen = [], set()
  for system in ("one_vs_rest", "cosine"):
    for r in runs:
      if not _has_any(r["metrics"], system, tasks, TABLE6_KS):
        continue
      cells = [tables_lib.format_value(runs_lib.metric(r["metrics"], system, t, f"p@{k}"))
               for t in tasks for k in TABLE6_KS]
      # Each MUSLSE run usually carries the same merged baseline: print it once.
      if (system, tuple(cells)) in seen:
        continue
      seen.add((system, tuple(cells)))
      rows.append([SYSTEM_LABELS[system], r["name"], "-", "-", "-"] + cells)
  muslse_runs = [r for r in runs if _has_any(r["metrics"], "muslse", tasks, TABLE6_KS)]
  muslse_runs.sort(key=lambda r: (len(r["tasks"]) > 1,) + _sort_key(r))
  for r in muslse_runs:
    if len(r["tasks"]) == 1:
      label = "MUSLSE single task"
    elif set(TABLE6_TASKS) <= set(r["tasks"]):
      label = "MUSLSE all tasks"
    else:
      label = "MUSLSE multi-task"
    rows.append([label, r["name"], "+".join(r["tasks"]) or "-", r["loss"], r["d_label"]] +
                [tables_lib.format_value(runs_lib.metric(r["metrics"], "muslse", t, f"p@{k}"))
                 for t in tasks for k in TABLE6_KS])
  if rows:
    header = (["Algorithm", "Run", "Trained on", "Loss", "d"] +
              [f"{TASK_LABELS[t]} p@{k}" for t in tasks for k in TABLE6_KS])
    sections.append(tables_lib.markdown_table(header, rows,
                                   [False, False, False, False, True] + [True] * (len(header) - 5)))
  else:
    sections.append("No run reports artist prediction, song prediction or similar songs.")
  utils.write_text_atomic(out_path, "\n".join(sections) + "\n")
  return out_path
