"""The tag-propagation runs' report, shaped like Lin et al.'s Table I, with Figs. 2 and 5.

`write_report(workdir, baseline_workdirs, taxonomy=None)`: one run (`configs/tagprop.py`) and the
runs it is compared with (the baseline; other heads, networks or search ranges) ->
`<workdir>/report.md`; their metrics are merged into the run's metrics.json first (other runs'
keys, `tagprop_baseline/...`, never the run's own), so one metrics.json holds every row.
`compare(workdirs, out_path, taxonomy=None)`: the same document for any set of runs, written to
`out_path`.

What the document holds:

* Table I: per vocabulary size (the paper's 50 and 1000 tags), the baseline and each proposed
  run: annotation MAP, retrieval MAP, retrieval ROC-AUC, and the relative improvement over the
  baseline in %, the paper's rows beside them for orientation (MSD + AotM-2011; ours come from
  whatever data the run used);
* each difference with a 95% paired bootstrap interval (`musemb.reports.stats.paired_bootstrap`),
  over the test songs for annotation and over the tags for retrieval, the queries matched by id,
  for the difference of means and for the relative improvement. It covers which songs and tags
  were drawn, not another training seed;
* Figs. 3-4, the search-range sweep, when proposed runs of one vocabulary and head differ in r
  (`configs/tagprop.py: SEARCH_RANGES`): annotation MAP, retrieval MAP and AUC against r, the
  baseline as the r-free reference, each r's difference to the baseline with its paired
  bootstrap interval, as a table and `figs3_4_search_range.png`;
* Fig. 5: the relative improvement of retrieval MAP and AUC per bin of `eval.popularity_bin`
  tags (100 in the paper; the demo's 47 tags use 10) in order of popularity (training songs per
  tag), as a table and `fig5_popularity.png`;
* Table II and Fig. 6: per tag category of a taxonomy (`eval.taxonomy`, or `taxonomy=` here and
  `launch.report --taxonomy=` at report time: a JSON {category: [tags]}; by default the paper's
  Table II, shipped as `table2_taxonomy.json`; "builtin" the built-in world's; see
  `taxonomy.load_taxonomy`), the category's tags found in the run's vocabulary, their mean
  popularity (training songs per tag, and as % of the training songs as Fig. 6 plots it) and the
  relative improvement of retrieval MAP and AUC with a paired bootstrap interval over the
  category's tags, as a table and `fig6_categories.png`;
* Fig. 2: the mean cosine similarity of two playlist songs' tag vectors against their distance,
  computed from the data alone (`tag_similarity.npz`), as a table and `fig2_tag_similarity.png`;
* how much the playlists covered: playlists, gaps, training songs in a playlist.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from musemb import utils
from musemb.reports import plots as plots_lib
from musemb.reports import runs as runs_lib
from musemb.reports import stats as stats_lib
from musemb.reports import tables as tables_lib
from musemb.systems.tagprop import evaluation
from musemb.systems.tagprop import taxonomy as taxonomy_lib

PAPER = ('Lin, Chung and Chen, "Playlist-Based Tag Propagation for Improving Music '
         'Auto-Tagging"')
# Table I of the paper (MSD + AotM-2011): tags -> row -> (annotation MAP, retrieval MAP, AUC).
PAPER_TABLE1 = {50: (("Baseline", 0.296, 0.172, 0.701), ("Proposed, r = 0.4", 0.323, 0.193, 0.721)),
                1000: (("Baseline", 0.0948, 0.0115, 0.559),
                       ("Proposed, r = 0.2", 0.119, 0.0179, 0.648))}
TABLE2_TAXONOMY = taxonomy_lib.TABLE2_TAXONOMY
load_taxonomy = taxonomy_lib.load_taxonomy
MODEL_NAMES = {"samplecnn": "SampleCNN", "shortchunk": "short-chunk CNN"}
# (task, per-query metric, metrics.json name, column title, bootstrapped over)
METRICS = (("annotation", "ap", "annotation/map", "Annotation MAP", "songs"),
           ("retrieval", "ap", "retrieval/map", "Retrieval MAP", "tags"),
           ("retrieval", "roc_auc", "retrieval/roc_auc", "Retrieval AUC", "tags"))


@dataclasses.dataclass
class Run:
  """One finished run, read from its workdir."""

  workdir: str
  config: dict
  key: str
  metrics: dict[str, Any]
  per_query: dict[str, np.ndarray] | None
  similarity: dict[str, np.ndarray] | None
  label: str = ""

  @property
  def baseline(self) -> bool:
    return self.config["objective"]["name"] == "baseline"

  @property
  def num_tags(self) -> int | None:
    n = runs_lib.get_float(self.metrics, f"{self.key}/num_tags")
    return None if n is None else int(n)

  @property
  def r(self) -> float:
    return float(self.config["objective"]["r"])

  @property
  def category_r(self) -> str:
    """`objective.category_r` ("" without a search range per category)."""
    return str(self.config["objective"].get("category_r", "") or "").strip()

  @property
  def model(self) -> str:
    return str(self.config["model"].get("name", "samplecnn") or "samplecnn")

  def value(self, name: str) -> float | None:
    return runs_lib.get_float(self.metrics, f"{self.key}/{name}")

  def queries(self, task: str, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(query ids, values) of this run's per-query `task/metric`, or None."""
    if self.per_query is None or f"{self.key}/{task}/{metric}" not in self.per_query:
      return None
    return (self.per_query[f"{task}/query_ids"].astype(str),
            np.asarray(self.per_query[f"{self.key}/{task}/{metric}"], np.float64))


def read_run(workdir: str) -> Run:
  config = runs_lib.read_json(os.path.join(workdir, "config.json"))
  if config.get("system") != "tagprop":
    raise ValueError(f"{workdir} holds a {config.get('system')!r} run, not a tagprop run.")
  key = evaluation.metrics_key(config)
  run = Run(workdir=workdir, config=config, key=key, metrics=runs_lib.read_metrics(workdir),
            per_query=runs_lib.read_npz(os.path.join(workdir, "per_query.npz")),
            similarity=runs_lib.read_npz(os.path.join(workdir, "tag_similarity.npz")))
  model = "" if run.model == "samplecnn" else f", {MODEL_NAMES.get(run.model, run.model)}"
  if run.baseline:
    run.label = f"Baseline (eq. 1{model})"
  else:
    head = "separate head" if config["model"]["head"] == "separate" else "single head"
    run.label = f"Proposed (eq. 3, {head}{model}), r = {run.r:g}"
    if run.category_r:
      run.label += ", " + ", ".join(f"{c} {r:g}" for c, r in
                                    taxonomy_lib.parse_category_r(run.category_r).items())
  return run


def _paired(a: Run, b: Run, task: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(ids, values of a, values of b) on the queries both runs score, matched by id."""
  qa, qb = a.queries(task, metric), b.queries(task, metric)
  if qa is None or qb is None:
    return np.zeros(0, str), np.zeros(0), np.zeros(0)
  where_b = {q: i for i, q in enumerate(qb[0].tolist())}
  ia = np.array([i for i, q in enumerate(qa[0].tolist()) if q in where_b], np.int64)
  ib = np.array([where_b[q] for q in qa[0][ia].tolist()], np.int64)
  va, vb = qa[1][ia], qb[1][ib]
  keep = np.isfinite(va) & np.isfinite(vb)
  return qa[0][ia][keep], va[keep], vb[keep]


def _relative(value: float | None, base: float | None) -> float | None:
  if value is None or base is None or not base or not math.isfinite(value):
    return None
  return value / base - 1.0


def _percent(x: float | None) -> str:
  return "-" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}%"


def _groups(runs: Sequence[Run]) -> list[tuple[int | None, Run | None, list[Run]]]:
  """(tags, baseline or None, proposed runs) per vocabulary size and network, in order of size
  (the SampleCNN first): each proposed run is compared with the baseline of its own network."""
  order = {m: i for i, m in enumerate(MODEL_NAMES)}
  keys = sorted({(r.num_tags, r.model) for r in runs},
                key=lambda k: (k[0] is None, k[0], order.get(k[1], len(order)), k[1]))
  out = []
  for n, model in keys:
    members = [r for r in runs if r.num_tags == n and r.model == model]
    baselines = [r for r in members if r.baseline]
    out.append((n, baselines[0] if baselines else None, [r for r in members if not r.baseline]))
  return out


def _paired_runs(runs: Sequence[Run]) -> list[tuple[Run, Run]]:
  """(baseline, proposed) pairs of one vocabulary size where both saved per-tag arrays."""
  return [(base, run) for _, base, proposed in _groups(runs)
          if base is not None and base.per_query is not None
          for run in proposed if run.per_query is not None]


def _table1(runs: Sequence[Run]) -> str:
  rows = []
  for n, base, proposed in _groups(runs):
    tags = "-" if n is None else str(n)
    for run in ([base] if base else []) + proposed:
      row = [run.label, tags]
      for _, _, name, _, _ in METRICS:
        value = run.value(name)
        cell = tables_lib.format_value(value)
        if base is not None and run is not base:
          cell += f" ({_percent(_relative(value, base.value(name)))})"
        row.append(cell)
      rows.append(row)
    if (base or proposed[0]).model != "samplecnn":
      continue                       # the paper's rows are the SampleCNN's
    for label, *values in PAPER_TABLE1.get(n, ()):
      rows.append([f"*{label} (paper, MSD)*", tags] + [tables_lib.format_value(v) for v in values])
  header = ["Model", "# training tags"] + [title for _, _, _, title, _ in METRICS]
  out = ["## Table I: baseline vs proposed (test split)", "",
         tables_lib.markdown_table(header, rows, [False, True, True, True, True]), "",
         "In parentheses: the relative improvement over the baseline of the same vocabulary. "
         "Annotation MAP: each test song ranks the tags (songs with a tag). Retrieval MAP and "
         "AUC: each tag ranks the test songs, means over the tags with at least one positive and "
         "one negative test song."]
  counts = [(r.label, r.value("annotation/num_songs"), r.value("retrieval/num_tags"))
            for r in runs]
  out += ["", "Queries: " + "; ".join(
      f"{label}: {tables_lib.format_count(songs)} songs, {tables_lib.format_count(tags)} tags"
      for label, songs, tags in counts) + "."]
  return "\n".join(out)


def _bootstrap_settings(run: Run) -> dict[str, int]:
  return {"resamples": int(runs_lib.config_get(run.config, "eval.bootstrap_resamples", 2000)),
          "seed": int(runs_lib.config_get(run.config, "eval.bootstrap_seed", 0))}


def _bootstrap(run: Run, base: Run, task: str, metric: str) -> dict[str, Any]:
  """`stats.paired_bootstrap` of run against base on the queries both score (run's settings)."""
  _, a, b = _paired(run, base, task, metric)
  return stats_lib.paired_bootstrap(a, b, **_bootstrap_settings(run))


def _difference_cell(s: dict[str, Any]) -> str:
  if s["difference"] is None:
    return "-"
  return f"{s['difference']:+.4f} [{s['difference_low']:+.4f}, {s['difference_high']:+.4f}]"


def _relative_cell(s: dict[str, Any]) -> str:
  if s["relative"] is None:
    return "-"
  return (f"{_percent(s['relative'])} [{_percent(s['relative_low'])}, "
          f"{_percent(s['relative_high'])}]")


def _intervals(runs: Sequence[Run]) -> str:
  rows = []
  for _, base, proposed in _groups(runs):
    if base is None:
      continue
    for run in proposed:
      for task, metric, _, title, over in METRICS:
        s = _bootstrap(run, base, task, metric)
        if not s["queries"]:
          rows.append([run.label, title, over, "0", "-", "-"])
          continue
        rows.append([run.label, title, over, str(s["queries"]), _difference_cell(s),
                     _relative_cell(s)])
  out = ["## Differences from the baseline, with 95% paired bootstrap intervals", ""]
  if not rows:
    out.append("No baseline run to compare with: pass the baseline's workdir (`--baselines=` to "
               "`launch.report`).")
    return "\n".join(out)
  out += [tables_lib.markdown_table(
              ["Run", "Metric", "Over", "n", "Difference [95% CI]", "Relative [95% CI]"], rows,
              [False, False, False, True, True, True]), "",
          "Means over the queries both runs score (matched by track id or tag name), so they can "
          "differ slightly from Table I's; percentile intervals of the resampled mean "
          "differences. An interval that excludes 0 says the difference is not the luck of which "
          "songs or tags were drawn; a second training seed would vary more."]
  return "\n".join(out)


def search_range_sweeps(runs: Sequence[Run]) -> list[dict[str, Any]]:
  """Figs. 3-4: per vocabulary size and head whose proposed runs differ in r, the sweep.

  Returns:
    [{"tags", "head", "baseline" (a Run or None), "points": [{"r", "run", "values": {metrics.json
      name: value}, "differences": {metrics.json name: paired_bootstrap of the run against the
      baseline (None without a baseline)}}] in order of r}].
  """
  out = []
  for n, base, proposed in _groups(runs):
    by_head: dict[str, list[Run]] = {}
    for run in proposed:
      if not run.category_r:         # a run with a search range per category is not a point of r
        by_head.setdefault(run.config["model"]["head"], []).append(run)
    for head, members in by_head.items():
      if len({r.r for r in members}) < 2:
        continue
      points = []
      for run in sorted(members, key=lambda r: r.r):
        points.append({
            "r": run.r, "run": run,
            "values": {name: run.value(name) for _, _, name, _, _ in METRICS},
            "differences": {name: (_bootstrap(run, base, task, metric) if base else None)
                            for task, metric, name, _, _ in METRICS}})
      out.append({"tags": n, "head": head, "model": members[0].model, "baseline": base,
                  "points": points})
  return out


def _sweep_name(sweep: dict[str, Any]) -> str:
  """The sweep's name in the table and plot: "single head", "separate head, short-chunk CNN"."""
  model = sweep.get("model", "samplecnn")
  return f"{sweep['head']} head" + ("" if model == "samplecnn" else
                                    f", {MODEL_NAMES.get(model, model)}")


def _search_range(runs: Sequence[Run], folder: str) -> str | None:
  sweeps = search_range_sweeps(runs)
  if not sweeps:
    return None
  rows = []
  for sweep in sweeps:
    tags, base = "-" if sweep["tags"] is None else str(sweep["tags"]), sweep["baseline"]
    if base is not None:
      rows.append([tags, "baseline (no r)", "-"]
                  + [tables_lib.format_value(base.value(name)) for _, _, name, _, _ in METRICS])
    for point in sweep["points"]:
      row = [tags, _sweep_name(sweep), f"{point['r']:g}"]
      for _, _, name, _, _ in METRICS:
        cell = tables_lib.format_value(point["values"][name])
        s = point["differences"][name]
        if s is not None and s["queries"]:
          cell += f" ({_difference_cell(s)})"
        row.append(cell)
      rows.append(row)
  path = write_search_range_plot(sweeps, os.path.join(folder, "figs3_4_search_range.png"))
  return "\n".join([
      "## Search range (Figs. 3 and 4)", "", tables_lib.markdown_table(
          ["# training tags", "head", "r"] + [title for _, _, _, title, _ in METRICS], rows,
          [True, False, True, True, True, True]), "",
      "In parentheses: the difference to the baseline of the same vocabulary [95% paired "
      "bootstrap interval], over the test songs (annotation) or the tags (retrieval) both runs "
      "score. At r = 0 the walk never leaves the song, so nothing is propagated: the control. "
      "The paper finds r = 0.4 best for 50 tags and 0.2 for 1000.", "",
      f"![Figs. 3-4]({os.path.basename(path)})"])


def write_search_range_plot(sweeps: Sequence[dict[str, Any]], path: str) -> str:
  """Figs. 3-4: a row per vocabulary size, a panel per metric; each head's values against r, the
  baseline dashed, error bars the 95% interval of the difference to the baseline put around the
  point (a bar that crosses the dashed line is a difference the bootstrap cannot tell from 0)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  sizes = sorted({s["tags"] for s in sweeps}, key=lambda n: (n is None, n))
  fig = Figure(figsize=(13, 3.6 * len(sizes)), dpi=110)
  FigureCanvasAgg(fig)
  for i, n in enumerate(sizes):
    members = [s for s in sweeps if s["tags"] == n]
    for k, (_, _, name, title, _) in enumerate(METRICS):
      ax = fig.add_subplot(len(sizes), len(METRICS), i * len(METRICS) + k + 1)
      for sweep in members:
        x = np.array([p["r"] for p in sweep["points"]])
        y = np.array([np.nan if p["values"][name] is None else p["values"][name]
                      for p in sweep["points"]])
        low, high = np.zeros_like(y), np.zeros_like(y)
        for j, p in enumerate(sweep["points"]):
          d = p["differences"][name]
          if d is not None and d["queries"]:
            low[j] = max(d["difference"] - d["difference_low"], 0.0)
            high[j] = max(d["difference_high"] - d["difference"], 0.0)
        ax.errorbar(x, y, yerr=np.stack([low, high]), marker="o", capsize=3,
                    label=f"proposed, {_sweep_name(sweep)}")
      base = members[0]["baseline"]
      if base is not None and base.value(name) is not None:
        ax.axhline(base.value(name), color="grey", ls="--", label="baseline")
      ax.set_xlabel("search range r")
      ax.set_ylabel(title)
      ax.set_title(f"{title}, {'-' if n is None else n} tags (cf. Figs. 3-4)")
      ax.grid(True, alpha=0.3)
      ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  return plots_lib.save_figure_atomic(fig, path)


def category_improvements(taxonomy: dict[str, list[str]], names: np.ndarray, counts: np.ndarray,
                          proposed: dict[str, np.ndarray], baseline: dict[str, np.ndarray], *,
                          train_songs: float | None = None, resamples: int = 2000, seed: int = 0
                          ) -> list[dict[str, Any]]:
  """Table II / Fig. 6: per category, popularity and the improvement of the per-tag metrics.

  Args:
    taxonomy: {category: [tags]}; a tag may sit in several categories.
    names: [tags] the run's vocabulary; counts: [tags] training songs per tag.
    proposed, baseline: {metric: [tags] per-tag values aligned with `names`}, NaN where a tag is
      not scored.
    train_songs: training songs, to give popularity as Fig. 6's percentage (None: not given).
    resamples, seed: of the paired bootstrap over the category's tags.

  Returns:
    [{"category", "listed" (tags in the taxonomy), "found" (of them in the vocabulary),
      "missing" [names], "popularity" (mean training songs per found tag, None without one),
      "popularity_percent", metric: paired_bootstrap over the category's tags scored by both}]
    in the taxonomy's order.
  """
  where = {t: i for i, t in enumerate(np.asarray(names).astype(str).tolist())}
  counts = np.asarray(counts, np.float64)
  out = []
  for category, tags in taxonomy.items():
    found = np.array([where[t] for t in dict.fromkeys(tags) if t in where], np.int64)
    popularity = float(counts[found].mean()) if found.size else None
    row = {"category": category, "listed": len(dict.fromkeys(tags)), "found": int(found.size),
           "missing": [t for t in dict.fromkeys(tags) if t not in where],
           "popularity": popularity,
           "popularity_percent": (100 * popularity / train_songs
                                  if popularity is not None and train_songs else None)}
    for metric in proposed:
      a, b = np.asarray(proposed[metric])[found], np.asarray(baseline[metric])[found]
      keep = np.isfinite(a) & np.isfinite(b)
      row[metric] = stats_lib.paired_bootstrap(a[keep], b[keep], resamples=resamples, seed=seed)
    out.append(row)
  return out


def _categories(runs: Sequence[Run], folder: str, taxonomy_name: str | None = None
                ) -> str | None:
  """Table II / Fig. 6 per (baseline, proposed) pair, over `taxonomy_name` (None: each run's own
  `eval.taxonomy`)."""
  series = []
  for base, run in _paired_runs(runs):
    path = (str(runs_lib.config_get(run.config, "eval.taxonomy", "") or "")
            if taxonomy_name is None else taxonomy_name)
    taxonomy = load_taxonomy(path)
    names = run.per_query["retrieval/query_ids"].astype(str)
    aligned = {m: _aligned_tags(run, base, m) for m in ("ap", "roc_auc")}
    rows = category_improvements(
        taxonomy, names, aligned["ap"][0], {m: v[1] for m, v in aligned.items()},
        {m: v[2] for m, v in aligned.items()}, train_songs=run.value("playlists/train_songs"),
        **_bootstrap_settings(run))
    series.append((run, taxonomy_lib.describe(path), len(names), rows))
  if not series:
    return None
  out = ["## Table II and Fig. 6: improvement and popularity per tag category", ""]
  for run, source, vocabulary, rows in series:
    table = [[r["category"], f"{r['found']} / {r['listed']}",
              tables_lib.format_count(r["popularity"]) if r["popularity"] is not None else "-",
              "-" if r["popularity_percent"] is None else f"{r['popularity_percent']:.1f}%",
              str(r["ap"]["queries"]), _relative_cell(r["ap"]), _relative_cell(r["roc_auc"])]
             for r in rows]
    missing = sorted({t for r in rows for t in r["missing"]})
    out += [f"{run.label}, {vocabulary} tags, taxonomy: {source}:", "",
            tables_lib.markdown_table(
                ["Category", "Tags found / listed", "Mean training songs per tag",
                 "Popularity (% of training songs)", "Tags scored", "Retrieval MAP [95% CI]",
                 "Retrieval AUC [95% CI]"], table,
                [False, True, True, True, True, True, True]), ""]
    found = sum(r["found"] for r in rows)
    out += [f"{found} taxonomy entries found in the vocabulary; {len(missing)} listed tags not in "
            "it" + (": " + ", ".join(missing) if 0 < len(missing) <= 20 else "") + ".", ""]
  path = write_category_plot(series, os.path.join(folder, "fig6_categories.png"))
  out += [f"![Fig. 6]({os.path.basename(path)})", "",
          "Relative improvement of the category's mean over its tags scored by both runs (the "
          "proposed over the baseline), the interval resampling those tags in pairs; popularity "
          "over the category's tags in the vocabulary. The paper finds the improvement depends "
          "more on the category than on popularity (era above mood at a similar popularity)."]
  return "\n".join(out)


def write_category_plot(series, path: str) -> str:
  """Fig. 6: per category, the relative improvement of retrieval MAP and AUC (bars, 95% interval)
  and the mean popularity (markers, right axis), one panel per proposed run."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(9, 3.8 * len(series)), dpi=110)
  FigureCanvasAgg(fig)
  for i, (run, _, _, rows) in enumerate(series):
    ax = fig.add_subplot(len(series), 1, i + 1)
    x = np.arange(len(rows))
    for k, (metric, title) in enumerate((("ap", "retrieval MAP"), ("roc_auc", "retrieval AUC"))):
      y, low, high = [], [], []
      for r in rows:
        s = r[metric]
        rel = s["relative"]
        y.append(np.nan if rel is None else 100 * rel)
        low.append(0.0 if rel is None else 100 * max(rel - s["relative_low"], 0.0))
        high.append(0.0 if rel is None else 100 * max(s["relative_high"] - rel, 0.0))
      ax.bar(x + (k - 0.5) * 0.38, y, width=0.38, yerr=[low, high], capsize=3, label=title)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlim(-0.6, len(rows) - 0.4)           # categories without a scored tag keep a slot
    ax.set_xticks(x)
    ax.set_xticklabels([r["category"] for r in rows])
    ax.set_ylabel("relative improvement (%)")
    ax.set_title(f"{run.label} (cf. Fig. 6 of Lin et al.)")
    twin = ax.twinx()
    percent = all(r["popularity_percent"] is not None or not r["found"] for r in rows)
    key = "popularity_percent" if percent else "popularity"
    twin.plot(x, [np.nan if r[key] is None else r[key] for r in rows], "kD", label="popularity")
    twin.set_ylabel("popularity (% of training songs)" if percent else "training songs per tag")
    handles = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="best")
  fig.tight_layout()
  return plots_lib.save_figure_atomic(fig, path)


def popularity_bins(counts: np.ndarray, proposed: np.ndarray, baseline: np.ndarray, bin_size: int
                    ) -> list[dict[str, Any]]:
  """Fig. 5: per bin of `bin_size` tags in popularity order, the relative improvement of the mean.

  Args:
    counts: [tags] training songs per tag (the popularity; ties keep the given order).
    proposed, baseline: [tags] per-tag values (NaN where a tag is not scored).
    bin_size: tags per bin, >= 1.

  Returns:
    [{"first_rank", "last_rank" (1-based, inclusive), "tags" (scored in both), "proposed",
      "baseline", "relative"}] per bin; means None without scored tags.
  """
  if bin_size < 1:
    raise ValueError(f"eval.popularity_bin={bin_size}: expected >= 1 tags per bin.")
  order = np.argsort(-np.asarray(counts), kind="stable")
  out = []
  for start in range(0, len(order), bin_size):
    members = order[start:start + bin_size]
    a, b = proposed[members], baseline[members]
    keep = np.isfinite(a) & np.isfinite(b)
    mean_a = float(a[keep].mean()) if keep.any() else None
    mean_b = float(b[keep].mean()) if keep.any() else None
    out.append({"first_rank": start + 1, "last_rank": start + len(members),
                "tags": int(keep.sum()), "proposed": mean_a, "baseline": mean_b,
                "relative": _relative(mean_a, mean_b)})
  return out


def _aligned_tags(run: Run, base: Run, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(training counts, run's values, baseline's values) over the run's tags, by tag name."""
  names = run.per_query["retrieval/query_ids"].astype(str)
  counts = np.asarray(run.per_query["retrieval/train_counts"])
  _, values = run.queries("retrieval", metric)
  q = base.queries("retrieval", metric)
  where = {t: i for i, t in enumerate(q[0].tolist())}
  other = np.array([q[1][where[t]] if t in where else np.nan for t in names.tolist()])
  return counts, values, other


def _figure5(runs: Sequence[Run], folder: str) -> str | None:
  series = []
  for base, run in _paired_runs(runs):
    bin_size = int(runs_lib.config_get(run.config, "eval.popularity_bin", 100))
    bins = {metric: popularity_bins(*_aligned_tags(run, base, metric), bin_size)
            for metric in ("ap", "roc_auc")}
    series.append((run, bin_size, bins))
  if not series:
    return None
  out = ["## Fig. 5: relative improvement against tag popularity", ""]
  for run, bin_size, bins in series:
    rows = [[f"{ap['first_rank']}-{ap['last_rank']}", str(ap["tags"]), _percent(ap["relative"]),
             _percent(auc["relative"])] for ap, auc in zip(bins["ap"], bins["roc_auc"])]
    out += [f"{run.label}, {run.num_tags} tags in bins of {bin_size} by training songs per tag "
            "(rank 1 = the most popular):", "",
            tables_lib.markdown_table(["Popularity rank", "Tags", "Retrieval MAP", "Retrieval AUC"],
                                      rows, [False, True, True, True]), ""]
  path = write_popularity_plot(series, os.path.join(folder, "fig5_popularity.png"))
  out += [f"![Fig. 5]({os.path.basename(path)})", "",
          "The paper finds the improvement growing toward the rare tags (1000 tags, bins of 100)."]
  return "\n".join(out)


def write_popularity_plot(series, path: str) -> str:
  """Fig. 5's two panels (retrieval MAP, AUC): relative improvement per popularity bin."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(10, 4), dpi=110)
  FigureCanvasAgg(fig)
  for k, (metric, title) in enumerate((("ap", "Retrieval MAP"), ("roc_auc", "Retrieval AUC"))):
    ax = fig.add_subplot(1, 2, k + 1)
    for run, _, bins in series:
      x = [b["last_rank"] for b in bins[metric]]
      y = [100 * b["relative"] if b["relative"] is not None else np.nan for b in bins[metric]]
      ax.plot(x, y, marker="o", label=run.label)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("tag popularity rank (end of bin)")
    ax.set_ylabel("relative improvement (%)")
    ax.set_title(f"{title} (cf. Fig. 5 of Lin et al.)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  return plots_lib.save_figure_atomic(fig, path)


def _figure2(runs: Sequence[Run], folder: str) -> str | None:
  run = next((r for r in runs if r.similarity is not None), None)
  if run is None or not np.asarray(run.similarity["pairs"]).sum():
    return None
  s = run.similarity
  rows = [[str(int(d)), tables_lib.format_count(float(n)), tables_lib.format_value(float(c))]
          for d, n, c in zip(s["distance"], s["pairs"], s["mean_cosine"]) if n]
  level = float(s["random_mean_cosine"])
  path = write_similarity_plot(s, os.path.join(folder, "fig2_tag_similarity.png"))
  return "\n".join([
      "## Fig. 2: tag similarity against distance in a playlist (from the data)", "",
      f"Pairs of tagged songs d positions apart in one playlist of `{run.workdir}`'s data (gaps "
      f"counted in d), {run.num_tags} tags; random pairs of playlist songs: "
      f"{tables_lib.format_value(level)}.", "",
      tables_lib.markdown_table(["Distance", "Pairs", "Mean cosine"], rows, [True, True, True]),
      "", f"![Fig. 2]({os.path.basename(path)})"])


def write_similarity_plot(similarity: dict[str, np.ndarray], path: str) -> str:
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(5.5, 4), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  keep = np.asarray(similarity["pairs"]) > 0
  ax.plot(np.asarray(similarity["distance"])[keep], np.asarray(similarity["mean_cosine"])[keep],
          marker="o", label="songs d apart")
  level = float(similarity["random_mean_cosine"])
  if math.isfinite(level):
    ax.axhline(level, color="grey", ls="--", label="random playlist songs")
  ax.set_xlabel("distance between two songs in a playlist")
  ax.set_ylabel("mean cosine similarity of tag vectors")
  ax.set_title("cf. Fig. 2 of Lin et al.")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return plots_lib.save_figure_atomic(fig, path)


def _coverage(runs: Sequence[Run]) -> str:
  run = next((r for r in runs if r.value("playlists/playlists") is not None), None)
  if run is None:
    return "## Playlists\n\nNo playlist statistics in these runs."
  v = lambda name: tables_lib.format_count(run.value(f"playlists/{name}"))
  return "\n".join([
      "## Playlists", "",
      f"{v('playlists')} playlists, {v('entries')} entries ({v('gaps')} gaps, {v('not_prepared')} "
      f"tracks missing from the prepared splits, also gaps); {v('train_songs_in_playlists')} of "
      f"{v('train_songs')} training songs are in a playlist and {v('source_songs')} songs can "
      "pass tags on (training songs with a tag). Validation and test songs stay in the "
      "playlists but never pass their tags on."])


def document(runs: Sequence[Run], folder: str, taxonomy: str | None = None) -> str:
  """The report's markdown for `runs`; its plots are written into `folder`. `taxonomy` (a
  `taxonomy.load_taxonomy` name: "", "builtin" or a path) replaces the runs' `eval.taxonomy` in
  Table II / Fig. 6; None keeps theirs."""
  if not runs:
    raise ValueError("no tagprop runs to report.")
  seen: dict[str, int] = {}
  for run in runs:
    seen[run.label] = seen.get(run.label, 0) + 1
  for run in runs:
    if seen[run.label] > 1:
      run.label += f" [{os.path.basename(os.path.normpath(run.workdir))}]"
  data = runs_lib.config_get(runs[0].config, "data_dir", "") or "built-in world"
  head = ["# Playlist-based tag propagation for a SampleCNN auto-tagger", "",
          f"Following {PAPER}. Dataset `{data}`; runs: " + ", ".join(
              f"`{r.workdir}` ({r.label})" for r in runs) + "."]
  for run in runs:
    line = runs_lib.training_line(run.workdir)
    if line:
      head += ["", f"{run.label}: {line}"]
  sections = ["\n".join(head), _table1(runs), _intervals(runs)]
  for section in (_search_range(runs, folder), _figure5(runs, folder),
                  _categories(runs, folder, taxonomy),
                  _figure2(runs, folder)):
    if section:
      sections.append(section)
  sections.append(_coverage(runs))
  return "\n\n".join(sections) + "\n"


def write_report(workdir: str, *, baseline_workdirs: Sequence[str] = (),
                 taxonomy: str | None = None) -> str:
  """`<workdir>/report.md` of a run and those it is compared with; returns its path. `taxonomy`:
  see `document` (`launch.report --taxonomy=`)."""
  run = read_run(workdir)
  others = [read_run(w) for w in baseline_workdirs]
  notes: list[str] = []
  added = runs_lib.merge_baselines(run.key, run.metrics, {}, runs_lib.PerQuery(),
                                   list(baseline_workdirs), notes)
  if added:
    utils.write_json_atomic(os.path.join(workdir, "metrics.json"), run.metrics)
  text = document([run] + others, workdir, taxonomy)
  if notes:
    text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
  path = os.path.join(workdir, "report.md")
  utils.write_text_atomic(path, text)
  return path


def compare(workdirs: Sequence[str], out_path: str, *, taxonomy: str | None = None) -> str:
  """The same document for several runs, at `out_path` (plots beside it); `taxonomy`: see
  `document`."""
  text = document([read_run(w) for w in workdirs], os.path.dirname(os.path.abspath(out_path)),
                  taxonomy)
  utils.write_text_atomic(out_path, text)
  return out_path
