"""Reports and the text-query tool of the tag-based retrieval system (`musemb.systems.won`).

Follows Won, Oramas, Nieto, Gouyon & Serra, "Multimodal metric learning for tag-based music
retrieval" (ICASSP 2021), section 4: every model is judged by the mean over tags of the average
precision of the songs ranked for the tag (MAP) and by precision at 10 (P@10).

* `write_report(workdir, baseline_workdirs)`: one run -> `<workdir>/report.md` (+ `categories.png`):
  retrieval MAP / P@10, MAP per tag category (the shape of Fig. 2, with any baseline runs, e.g. the
  cultural run beside the acoustic one, as extra columns and bars), zero-shot retrieval of the tags
  held out of training next to the chance level, multi-tag queries, the best and worst tags by AP,
  and Table 3 (nearest words of a few query words under the run's word vectors, and under a
  general embedding when `config.words.general_path` names one).
* `compare_runs(workdirs, out_path)`: several runs -> Table 1 (sampling: random, balanced, and the
  paper's balanced-weighted row as two: the authors' code's (cos + 1) / 2 weighting, which produced
  the paper's numbers, and Wu et al.'s distance weighting, which its text cites; MAP and P@10 per
  song branch),
  Table 2 (branches: cultural, acoustic, concatenation hybrid, late fusion), MAP per category per
  run, and the zero-shot and multi-tag results per run.
* The query helpers behind `python -m launch.predict --workdir=W --query="dark ambient piano"`:
  `load_song_index`, `split_query` (out-of-vocabulary words are dropped and reported), `rank_songs`
  (cosine to the query; late-fusion indexes use `musemb.models.branches.late_fusion_scores`),
  `rank_tags` (audio -> nearest tags) and `answer_queries`.

The paper's numbers (MSD100 / MSD50, Tables 1 and 2) are printed beside ours for orientation only;
ours come from whatever data the run used. Fig. 2 is a bar chart without printed values, so it has
no numbers to copy. Missing values print as "-"; files are written atomically.

Inputs a run leaves in its workdir: `metrics.json` (keys `won/retrieval/map`, `won/retrieval/p@10`,
`won/category/<category>/map`, `won/zero_shot/...`, `won/multi_tag/...`, `won/words/oov_tags`),
`config.json`, `per_tag.npz` (`tag_names`, `ap`, `p10`, `seen`), `song_index.npz` (`track_ids`,
optional `titles` / `artists`, `embeddings` (or `song_embeddings`) [S, d] or, for late fusion,
[S, 2, d] (acoustic, cultural) with `has_factors` [S], `tag_names`, `tag_embeddings` [T, d]) and
`words.npz` (the tag branch's word vectors).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from musemb.reports import plots as plots_lib
from musemb.reports import runs as runs_lib
from musemb.reports import tables as tables_lib
from musemb import utils
from musemb.text import readers as text_readers
from musemb.text import tags as text_tags
from musemb.text import vectors as text_vectors

PAPER = ("Won, Oramas, Nieto, Gouyon & Serra, \"Multimodal metric learning for tag-based music "
         "retrieval\", ICASSP 2021")
SYSTEM = "won"
# The MSD500 taxonomy (section 3), in the order of Fig. 2.
CATEGORIES = ("genre", "mood", "location", "language", "instrument", "activity", "decade")
BRANCHES = ("cultural", "acoustic", "hybrid", "late_fusion")
BRANCH_LABELS = {"cultural": "Cultural", "acoustic": "Acoustic",
                 "hybrid": "Concatenation hybrid", "late_fusion": "Late fusion"}
# Table 1's rows from (config.sampling.anchors, config.sampling.negatives), named for what they
# draw (configs/won.py's sampling=authors and sampling=wu split the paper's balanced-weighted row).
SAMPLING = (("random", "Random"), ("song_uniform", "Random, song-uniform (authors' code)"),
            ("balanced", "Balanced"),
            ("authors", "Balanced-weighted, authors' (cos + 1) / 2"),
            ("wu", "Balanced, Wu et al. distance-weighted"),
            ("random_authors", "Random, authors' (cos + 1) / 2"),
            ("random_wu", "Random, Wu et al. distance-weighted"))
SAMPLING_LABELS = dict(SAMPLING)
_SAMPLING_KEYS = {("random", "random"): "random", ("song_uniform", "random"): "song_uniform",
                  ("balanced", "random"): "balanced",
                  ("balanced", "cosine"): "authors",
                  ("balanced", "distance_weighted"): "wu",
                  ("random", "cosine"): "random_authors",
                  ("random", "distance_weighted"): "random_wu"}
# The paper's Table 1 (acoustic branch, MSD100): sampling -> (MAP, P@10). Its balanced-weighted row
# came from the authors' code, whose negatives are drawn in proportion to (cos + 1) / 2.
PAPER_TABLE1 = {"random": (0.1658, 0.2990), "balanced": (0.1675, 0.3160),
                "authors": (0.1852, 0.3500)}
# The paper's Table 2 (balanced-weighted sampling): (branch, model as the paper names it, data, MAP,
# P@10). Cul-E: Echo Nest Taste Profile interactions; Cul-I: in-house explicit feedback.
PAPER_TABLE2 = (
    ("cultural", "Cul-E", "MSD100", 0.1155, 0.3200),
    ("acoustic", "Acoustic", "MSD100", 0.1852, 0.3500),
    ("hybrid", "Concat", "MSD100", 0.1775, 0.3120),
    ("cultural", "Cul-E", "MSD50", 0.2163, 0.4500),
    ("cultural", "Cul-I", "MSD50", 0.4719, 0.6380),
    ("acoustic", "Acoustic", "MSD50", 0.3062, 0.4680),
)
# Best and worst tags listed by AP; a vocabulary up to twice this is listed whole.
TAGS_LISTED = 10
ZERO_SHOT_LISTED = 20
# Table 3: words whose neighbours are shown (when the config names none) and neighbours per word.
TABLE3_WORDS = 5
TABLE3_NEIGHBOURS = 10
# The paper's Table 3 example (an unseen genre); added to the default words when in the vocabulary.
PAPER_TABLE3_WORD = "jungle"
# A general embedding in word2vec/GloVe format is read up to this many (most frequent) words.
GENERAL_WORDS_LIMIT = 200_000

fmt = tables_lib.format_value


def _paper(value: float) -> str:
  """A published value as the paper prints it (4 decimals)."""
  return f"{value:.4f}"


# ------------------------------------------------------------------------------------------------
# Reading a run.


def _get(metrics: Mapping[str, Any], key: str) -> float | None:
  value = metrics.get(f"{SYSTEM}/{key}")
  if value is None:
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def _count(value: float | None) -> str:
  if value is None or not math.isfinite(value):
    return "-"
  return f"{value:,.0f}"


def _read_config(workdir: str) -> dict[str, Any]:
  return runs_lib.read_json_if_exists(  # pylint: disable=protected-access
      os.path.join(workdir, "config.json")) or {}


def sampling_key(config: Mapping[str, Any] | None) -> str:
  """Table 1's row of a run: "random", "balanced", "authors", "wu", ... or "anchors/negatives"."""
  anchors = str(runs_lib.config_get(config, "sampling.anchors", "?"))
  negatives = str(runs_lib.config_get(config, "sampling.negatives", "?"))
  return _SAMPLING_KEYS.get((anchors, negatives), f"{anchors}/{negatives}")


def _sampling_label(key: str) -> str:
  return SAMPLING_LABELS.get(key, f"anchors/negatives {key}")


def _words_label(config: Mapping[str, Any] | None) -> str:
  source = str(runs_lib.config_get(config, "words.source", "-"))
  if source == "domain":
    return "domain-specific (trained)"
  if source == "file":
    source = str(runs_lib.config_get(config, "words.path", "") or "file")
  return os.path.basename(os.path.normpath(source)) or source


def _order(keys: Sequence[str], known: Sequence[str]) -> list[str]:
  """`keys` in the order of `known`, unknown ones after (sorted)."""
  present = set(keys)
  return [k for k in known if k in present] + sorted(present - set(known))


def _run_info(workdir: str) -> dict[str, Any]:
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} does not exist: the comparison needs each run's config "
                            "to place its row; point --workdirs at finished won workdirs.")
  config = _read_config(workdir)
  metrics = runs_lib.read_metrics(workdir)  # pylint: disable=protected-access
  return {"workdir": workdir, "name": os.path.basename(os.path.abspath(workdir)),
          "config": config, "metrics": metrics,
          "sampling": sampling_key(config),
          "branch": str(runs_lib.config_get(config, "model.branch", "?")),
          "words": _words_label(config)}


def _name_runs(runs: list[dict[str, Any]]) -> None:
  names = [r["name"] for r in runs]
  for r in runs:
    if names.count(r["name"]) > 1:
      # Same folder name in different places (a/run, b/run): the path tells the rows apart.
      r["name"] = os.path.normpath(r["workdir"])


def _run_sort_key(run: Mapping[str, Any]) -> tuple:
  def pos(value, known):
    return (known.index(value), "") if value in known else (len(known), value)
  return (pos(run["sampling"], [k for k, _ in SAMPLING]), pos(run["branch"], list(BRANCHES)),
          run["name"])


def read_per_tag(workdir: str) -> dict[str, np.ndarray] | None:
  """`per_tag.npz` of a run, checked: tag_names [T] str, ap / p10 [T] float, seen [T] bool."""
  path = os.path.join(workdir, "per_tag.npz")
  arrays = runs_lib.read_npz(path)  # pylint: disable=protected-access
  if arrays is None:
    return None
  missing = {"tag_names", "ap"} - set(arrays)
  if missing:
    raise ValueError(f"{path} lacks {sorted(missing)}; it must hold tag_names, ap (and p10, seen) "
                     "as written by the won system's evaluation.")
  names = np.asarray(arrays["tag_names"]).astype(str)
  out = {"tag_names": names}
  for key, dtype in (("ap", np.float64), ("p10", np.float64), ("seen", bool)):
    if key in arrays:
      value = np.asarray(arrays[key]).astype(dtype).reshape(-1)
      if value.shape != names.shape:
        raise ValueError(f"{path}: {key} has {value.size} entries but tag_names has {names.size}; "
                         "both must follow the same tag order.")
      out[key] = value
  return out


# ------------------------------------------------------------------------------------------------
# Sections of the single-run report.


def _header(workdir: str, config: Mapping[str, Any], metrics: Mapping[str, Any],
            baselines: Sequence[Mapping[str, Any]]) -> str:
  get = runs_lib.config_get
  if get(config, "data_dir", ""):
    data = f"prepared data set at `{get(config, 'data_dir')}`"
  elif get(config, "data.synthetic_size", ""):
    data = f"the built-in synthetic world (size `{get(config, 'data.synthetic_size')}`)"
  else:
    data = "-"
  key = sampling_key(config)
  lines = [f"# Tag-based music retrieval report: `{os.path.basename(os.path.abspath(workdir))}`",
           "", f"Following {PAPER}.", ""]
  if not config:
    lines.append("- No config.json in the workdir: data set and configuration unknown.")
  else:
    lines += [
        f"- **Data set:** {data}.",
        f"- **Song branch:** {BRANCH_LABELS.get(str(get(config, 'model.branch', '?')), '?')} "
        f"(`model.branch={get(config, 'model.branch', '?')}`).",
        f"- **Sampling:** {_sampling_label(key)} (anchors `{get(config, 'sampling.anchors', '?')}`,"
        f" negatives `{get(config, 'sampling.negatives', '?')}`).",
        f"- **Word vectors:** {_words_label(config)}"
        + (f"; {_count(_get(metrics, 'words/oov_tags'))} tags out of their vocabulary"
           if _get(metrics, "words/oov_tags") is not None else "") + "."]
  if baselines:
    lines.append("- **Compared with:** " + ", ".join(
        f"`{b['name']}` ({BRANCH_LABELS.get(b['branch'], b['branch'])}, "
        f"{_sampling_label(b['sampling'])})" for b in baselines) + ".")
  lines.append(f"- **Source:** `{os.path.join(workdir, 'metrics.json')}` (the run's evaluation).")
  return "\n".join(lines)


def _retrieval_section(name: str, metrics: Mapping[str, Any],
                       baselines: Sequence[Mapping[str, Any]]) -> str:
  rows = [[f"{name} (this run)", _count(_get(metrics, "retrieval/num_tags")),
           fmt(_get(metrics, "retrieval/map")), fmt(_get(metrics, "retrieval/p@10"))]]
  for b in baselines:
    m = b["metrics"]
    rows.append([b["name"], _count(_get(m, "retrieval/num_tags")), fmt(_get(m, "retrieval/map")),
                 fmt(_get(m, "retrieval/p@10"))])
  return "\n".join([
      "## Tag-based retrieval (test split)", "",
      "Each tag ranks the test songs by cosine similarity; MAP averages the tags' average "
      "precisions, P@10 their precisions at 10 (section 4).", "",
      tables_lib.markdown_table(["Run", "Tags", "MAP", "P@10"], rows,
                                [False, True, True, True])])


def _categories(metrics_list: Sequence[Mapping[str, Any]]) -> list[str]:
  found = set()
  for m in metrics_list:
    for key in m:
      parts = key.split("/")
      if len(parts) == 4 and parts[0] == SYSTEM and parts[1] == "category" and parts[3] == "map":
        found.add(parts[2])
  return _order(sorted(found), CATEGORIES)


def _category_table(series: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[str, list[str]]:
  """(markdown table category x run, the categories) for [(run label, metrics)]."""
  categories = _categories([m for _, m in series])
  rows = []
  for c in categories:
    row = [c, _count(_get(series[0][1], f"category/{c}/num_tags"))]
    row += [fmt(_get(m, f"category/{c}/map")) for _, m in series]
    rows.append(row)
  header = ["Category", "Tags"] + [f"{label} MAP" for label, _ in series]
  return tables_lib.markdown_table(header, rows, [False] + [True] * (len(header) - 1)), categories


def write_category_chart(series: Sequence[tuple[str, Mapping[str, Any]]],
                         categories: Sequence[str], path: str) -> str:
  """Grouped bars of MAP per category, one colour per run (the shape of Fig. 2); writes a PNG."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  if not categories or not series:
    raise ValueError(f"nothing to draw for {path}: no won/category/<category>/map metrics.")
  fig = Figure(figsize=(max(6.0, 1.2 * len(categories) * max(1, len(series)) ** 0.5), 4.5),
               dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  x = np.arange(len(categories), dtype=np.float64)
  width = 0.8 / len(series)
  for i, (label, m) in enumerate(series):
    values = [_get(m, f"category/{c}/map") for c in categories]
    heights = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
    ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=label)
  ax.set_xticks(x)
  ax.set_xticklabels(categories)
  ax.set_ylabel("MAP")
  ax.set_title("Category-wise MAP (cf. Fig. 2 of Won et al. 2021)")
  ax.legend(loc="best", fontsize=8)
  ax.grid(True, axis="y", alpha=0.3)
  fig.tight_layout()
  return plots_lib.save_figure_atomic(fig, path)


def _category_section(workdir: str, name: str, metrics: Mapping[str, Any],
                      baselines: Sequence[Mapping[str, Any]]) -> str:
  series = [(f"{name} (this run)", metrics)] + [(b["name"], b["metrics"]) for b in baselines]
  out = ["## MAP per tag category (Fig. 2)", ""]
  table, categories = _category_table(series)
  if not categories:
    out.append("No per-category metrics (the data set has no tag taxonomy).")
    return "\n".join(out)
  out += ["MAP over the tags of each category of the taxonomy; the paper finds the cultural "
          "model stronger on *location* and *language* tags, the acoustic one elsewhere "
          "(MSD100).", "", table]
  write_category_chart(series, categories, os.path.join(workdir, "categories.png"))
  out += ["", "![MAP per category](categories.png)"]
  return "\n".join(out)


def _zero_shot_section(metrics: Mapping[str, Any], per_tag: Mapping[str, np.ndarray] | None) -> str:
  out = ["## Zero-shot retrieval (tags held out of training)", ""]
  zs_map = _get(metrics, "zero_shot/map")
  n = _get(metrics, "zero_shot/num_tags")
  if n == 0 or (n is None and (zs_map is None or math.isnan(zs_map))):
    out.append("No zero-shot evaluation in this run (no tags were held out of training).")
    return "\n".join(out)
  chance = _get(metrics, "zero_shot/random_map")
  rows = [["tags", _count(_get(metrics, "zero_shot/num_tags")), "-"],
          ["MAP", fmt(zs_map), fmt(chance)],
          ["P@10", fmt(_get(metrics, "zero_shot/p@10")), "-"]]
  out += ["The held-out tags reach the space only through their word vectors; chance is the MAP "
          "of a random ranking of the same songs (`won/zero_shot/random_map`).", "",
          tables_lib.markdown_table(["", "this run", "chance"], rows, [False, True, True])]
  if zs_map is not None and chance is not None and chance > 0:
    out += ["", f"MAP is {zs_map / chance:.2f}x chance."]
  if per_tag is not None and "seen" in per_tag:
    unseen = np.flatnonzero(~per_tag["seen"])
    if unseen.size:
      ap = per_tag["ap"][unseen]
      order = unseen[np.lexsort((per_tag["tag_names"][unseen], -np.nan_to_num(ap, nan=-1.0)))]
      shown = order[:ZERO_SHOT_LISTED]
      rows = [[str(per_tag["tag_names"][i]), fmt(per_tag["ap"][i]),
               fmt(per_tag["p10"][i]) if "p10" in per_tag else "-"] for i in shown]
      out += ["", tables_lib.markdown_table(["Zero-shot tag", "AP", "P@10"], rows,
                                            [False, True, True])]
      if not np.all(np.isfinite(per_tag["ap"][unseen])):
        out.append("\n\"-\": the tag was left out of the evaluation (its AP in per_tag.npz is "
                   "NaN).")
      if unseen.size > shown.size:
        out.append(f"\n({unseen.size - shown.size} more zero-shot tags not listed.)")
  return "\n".join(out)


def _multi_tag_section(metrics: Mapping[str, Any]) -> str:
  out = ["## Multi-tag queries", ""]
  n = _get(metrics, "multi_tag/num_queries")
  if n == 0:
    out.append("No multi-tag queries in this run (no tag pair shares a test song).")
    return "\n".join(out)
  if n is None and _get(metrics, "multi_tag/map") is None:
    out.append("No multi-tag evaluation in this run.")
    return "\n".join(out)
  rows = [["queries", _count(_get(metrics, "multi_tag/num_queries"))],
          ["MAP", fmt(_get(metrics, "multi_tag/map"))],
          ["P@10", fmt(_get(metrics, "multi_tag/p@10"))]]
  out += ["Queries made of several tags (the paper's future work), each embedded as one text "
          "(`musemb.text.tags.query_vector`: phrase token, else the mean of its pieces' vectors).",
          "",
          tables_lib.markdown_table(["", "value"], rows, [False, True])]
  return "\n".join(out)


def best_and_worst_tags(per_tag: Mapping[str, np.ndarray], n: int = TAGS_LISTED
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Indices of the `n` tags of highest AP (best first) and the `n` lowest (worst first).

  Tags with a NaN AP (excluded from evaluation) are left out; ties go to the tag name's order. When
  at most 2n tags have an AP, the first array holds all of them and the second is empty.
  """
  best = tags_by_ap(per_tag)
  if best.size <= 2 * n:
    return best, np.array([], np.int64)
  ap = np.asarray(per_tag["ap"], np.float64)
  names = np.asarray(per_tag["tag_names"]).astype(str)
  worst = best[np.lexsort((names[best], ap[best]))]
  return best[:n], worst[:n]


def tags_by_ap(per_tag: Mapping[str, np.ndarray]) -> np.ndarray:
  """Indices of the tags with a finite AP, highest AP first (ties by name)."""
  ap = np.asarray(per_tag["ap"], np.float64)
  names = np.asarray(per_tag["tag_names"]).astype(str)
  valid = np.flatnonzero(np.isfinite(ap))
  return valid[np.lexsort((names[valid], -ap[valid]))]


def _tags_section(per_tag: Mapping[str, np.ndarray] | None) -> str:
  out = ["## Best and worst tags by average precision", ""]
  if per_tag is None:
    out.append("No per_tag.npz in the workdir.")
    return "\n".join(out)
  best, worst = best_and_worst_tags(per_tag)
  if best.size == 0:
    out.append("No tag has an average precision (every AP in per_tag.npz is NaN).")
    return "\n".join(out)

  def rows(indices):
    return [[str(per_tag["tag_names"][i]), fmt(per_tag["ap"][i]),
             fmt(per_tag["p10"][i]) if "p10" in per_tag else "-",
             ("seen" if per_tag["seen"][i] else "zero-shot") if "seen" in per_tag else "-"]
            for i in indices]

  header = ["Tag", "AP", "P@10", "Training"]
  numeric = [False, True, True, False]
  if worst.size == 0:
    out.append(tables_lib.markdown_table(header, rows(best), numeric))
  else:
    out += ["### Best", "", tables_lib.markdown_table(header, rows(best), numeric), "",
            "### Worst", "", tables_lib.markdown_table(header, rows(worst), numeric)]
  return "\n".join(out)


def table3_words(config: Mapping[str, Any], per_tag: Mapping[str, np.ndarray] | None,
                 wv: text_vectors.WordVectors | None) -> list[str]:
  """Words of Table 3: `config.words.query_words` (list or comma-separated) when given, else the
  zero-shot tags, then the best tags by AP (those with a vector in `wv`), and the paper's *jungle*
  when the vocabulary has it."""
  given = runs_lib.config_get(config, "words.query_words")
  if isinstance(given, str):
    given = [w.strip() for w in given.split(",") if w.strip()]
  if given:
    return [str(w) for w in given]
  words: list[str] = []
  if per_tag is not None:
    names = per_tag["tag_names"]

    def known(tag: str) -> bool:
      return wv is None or text_tags.resolve_tag(wv, tag).how != "oov"

    if "seen" in per_tag:
      words += [t for t in map(str, names[~per_tag["seen"]]) if known(t)][:TABLE3_WORDS // 2 + 1]
    words += [t for t in map(str, names[tags_by_ap(per_tag)]) if t not in words and known(t)]
  words = words[:TABLE3_WORDS]
  if wv is not None and PAPER_TABLE3_WORD in wv and PAPER_TABLE3_WORD not in words:
    words.append(PAPER_TABLE3_WORD)
  return words


def _load_general(path: str) -> text_vectors.WordVectors:
  if path.lower().endswith(".npz"):
    return text_readers.load_word_vectors(path)
  return text_readers.load_word_vectors(path, limit=GENERAL_WORDS_LIMIT)


def _table3_section(workdir: str, config: Mapping[str, Any],
                    per_tag: Mapping[str, np.ndarray] | None) -> str:
  out = ["## Table 3: nearest words", ""]
  path = os.path.join(workdir, "words.npz")
  if not os.path.exists(path):
    out.append("No words.npz in the workdir: the run's word vectors are unknown.")
    return "\n".join(out)
  wv = text_readers.load_word_vectors(path)
  embeddings = {f"this run: {_words_label(config)}": wv}
  general = runs_lib.config_get(config, "words.general_path")
  note = ""
  if general:
    if os.path.exists(str(general)):
      gv = _load_general(str(general))
      limited = (not str(general).lower().endswith(".npz")) and len(gv) == GENERAL_WORDS_LIMIT
      label = f"general: {os.path.basename(str(general))}"
      embeddings[label + (f" (first {GENERAL_WORDS_LIMIT:,} words)" if limited else "")] = gv
    else:
      note = (f"`config.words.general_path` names {general}, which does not exist here: no "
              "general-embedding column.")
  words = table3_words(config, per_tag, wv)
  if not words:
    out.append("No words to show: set `config.words.query_words` or write per_tag.npz.")
    return "\n".join(out)
  out += [f"The {TABLE3_NEIGHBOURS} nearest vocabulary entries (cosine) of each word; multi-word "
          "tags are embedded as `musemb.text.tags.tag_vector` does (phrase token first, else the "
          "mean of their pieces). The paper contrasts Google News word2vec with word2vec trained "
          "on a music corpus (*jungle*: jungles, rainforest ... vs breakbeat, dub, drum_n_bass).",
          "", text_tags.neighbours_table(embeddings, words, k=TABLE3_NEIGHBOURS)]
  if note:
    out += ["", note]
  return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# Public entry points: reports.


def write_report(workdir: str, *, baseline_workdirs: Sequence[str] = ()) -> str:
  """Writes `<workdir>/report.md` (+ `categories.png`) for one won run; returns the report's path.

  `baseline_workdirs` are other won runs (e.g. the cultural run beside an acoustic one) shown as
  extra rows and columns; nothing is merged into this run's metrics.json.
  """
  config = _read_config(workdir)
  metrics = runs_lib.read_metrics(workdir)  # pylint: disable=protected-access
  name = os.path.basename(os.path.abspath(workdir))
  baselines = [_run_info(b) for b in baseline_workdirs]
  per_tag = read_per_tag(workdir)
  sections = [_header(workdir, config, metrics, baselines),
              _retrieval_section(name, metrics, baselines),
              _category_section(workdir, name, metrics, baselines),
              _zero_shot_section(metrics, per_tag), _multi_tag_section(metrics),
              _tags_section(per_tag), _table3_section(workdir, config, per_tag)]
  if os.path.exists(os.path.join(workdir, "song_index.npz")):
    sections.append("\n".join([
        "## Querying the run", "",
        f"`python -m launch.predict --workdir={workdir} --query=\"dark ambient piano\"` ranks the "
        "indexed songs for free text; audio files in place of `--query` get their nearest tags."]))
  path = os.path.join(workdir, "report.md")
  utils.write_text_atomic(path, "\n\n".join(sections) + "\n")
  return path


def _table1(runs: Sequence[Mapping[str, Any]]) -> str:
  branches = _order([r["branch"] for r in runs] + ["acoustic"], BRANCHES)
  rows = []
  for key in _order([r["sampling"] for r in runs], [k for k, _ in SAMPLING]):
    group = [r for r in runs if r["sampling"] == key]
    by_branch = {b: sorted((r for r in group if r["branch"] == b), key=lambda r: r["name"])
                 for b in branches}
    # Several runs with the same sampling and branch (e.g. seeds) get a row each.
    for i in range(max(len(v) for v in by_branch.values())):
      picked = [by_branch[b][i] if i < len(by_branch[b]) else None for b in branches]
      row = [_sampling_label(key), ", ".join(r["name"] for r in picked if r is not None)]
      for r in picked:
        m = r["metrics"] if r is not None else {}
        row += [fmt(_get(m, "retrieval/map")), fmt(_get(m, "retrieval/p@10"))]
      rows.append(row)
  for key, (map_, p10) in PAPER_TABLE1.items():
    row = [_sampling_label(key), "paper, MSD100"]
    for b in branches:
      row += [_paper(map_), _paper(p10)] if b == "acoustic" else ["-", "-"]
    rows.append(row)
  header = ["Sampling", "Runs"] + [f"{BRANCH_LABELS.get(b, b)} {m}" for b in branches
                                   for m in ("MAP", "P@10")]
  return "\n".join([
      "## Table 1: sampling methods", "",
      "Random: anchor-positive pairs from random annotations, random negatives; balanced: a "
      "uniform anchor tag first, random negatives from the batch of positives; balanced-weighted, "
      "authors' (cos + 1) / 2 (`sampling=authors`): balanced anchors, negatives drawn in "
      "proportion to (cos + 1) / 2, the weighting of the authors' code "
      "(minzwon/tag-based-music-retrieval); balanced, Wu et al. distance-weighted "
      "(`sampling=wu`): balanced anchors, negatives weighted by Wu et al.'s inverse sphere "
      "density q(d)^-1, those whose triplet hinge is already zero left out. The paper's rows used "
      "the acoustic branch.", "",
      tables_lib.markdown_table(header, rows, [False, False] + [True] * (len(header) - 2)), "",
      "Which row is the paper's: its balanced-weighted numbers (0.1852 / 0.3500) were produced by "
      "the authors' code, i.e. the `authors` row; the paper's text cites Wu et al. for that row, "
      "but the code does not implement Wu et al.'s weighting, so the `wu` row is ours and has no "
      "published number. What `wu` does at the embedding size (256): Wu et al.'s weights grow "
      "like exp(n cos^2 / 2), so even at initialisation about 33 of a batch's 167 negatives carry "
      "the draw, and once the cosines spread (standard deviation 0.1-0.2) the nearest negative "
      "takes 85% to all of it: for most of training the `wu` row is close to hardest-negative "
      "mining, while the authors' weighting stays near uniform (the nearest negative under 1%). "
      "Runs of the `wu` row from before its zero-loss cut was derived from this loss used Wu et "
      "al.'s fixed 1.4 (from their margin loss), which dropped about two thirds of the negatives "
      "at initialisation; config.json does not tell the two apart."])


def _table2(runs: Sequence[Mapping[str, Any]]) -> str:
  ordered = sorted(runs, key=lambda r: (_run_sort_key(r)[1], _run_sort_key(r)[0], r["name"]))
  rows = [[BRANCH_LABELS.get(r["branch"], r["branch"]), r["name"], _sampling_label(r["sampling"]),
           r["words"], fmt(_get(r["metrics"], "retrieval/map")),
           fmt(_get(r["metrics"], "retrieval/p@10"))] for r in ordered]
  for branch, model, data, map_, p10 in PAPER_TABLE2:
    label = BRANCH_LABELS[branch] + ("" if model == BRANCH_LABELS[branch] else f" ({model})")
    rows.append([label, f"paper, {data}",
                 _sampling_label("authors"), "Google News word2vec", _paper(map_),
                 _paper(p10)])
  header = ["Branch", "Run", "Sampling", "Word vectors", "MAP", "P@10"]
  return "\n".join([
      "## Table 2: cultural and acoustic song branches", "",
      "Cultural: WMF song factors through an MLP; acoustic: the short-chunk CNN on mel "
      "spectrograms; concatenation hybrid: both inputs concatenated; late fusion (ours, the "
      "paper's future work): a weighted sum of the two branches' cosine scores.", "",
      tables_lib.markdown_table(header, rows, [False] * 4 + [True, True])])


def _per_run_sections(runs: Sequence[Mapping[str, Any]]) -> list[str]:
  out = []
  table, categories = _category_table([(r["name"], r["metrics"]) for r in runs])
  out.append("\n".join(["## MAP per tag category (Fig. 2)", "",
                        table if categories else "No run has per-category metrics."]))
  rows = [[r["name"], _count(_get(r["metrics"], "zero_shot/num_tags")),
           fmt(_get(r["metrics"], "zero_shot/map")),
           fmt(_get(r["metrics"], "zero_shot/random_map")),
           fmt(_get(r["metrics"], "zero_shot/p@10"))] for r in runs]
  out.append("\n".join(["## Zero-shot retrieval per run", "",
                        tables_lib.markdown_table(["Run", "Zero-shot tags", "MAP", "Chance MAP",
                                                   "P@10"], rows,
                                                  [False, True, True, True, True])]))
  rows = [[r["name"], _count(_get(r["metrics"], "multi_tag/num_queries")),
           fmt(_get(r["metrics"], "multi_tag/map")), fmt(_get(r["metrics"], "multi_tag/p@10"))]
          for r in runs]
  out.append("\n".join(["## Multi-tag queries per run", "",
                        tables_lib.markdown_table(["Run", "Queries", "MAP", "P@10"], rows,
                                                  [False, True, True, True])]))
  return out


def compare_runs(workdirs: Sequence[str], out_path: str) -> str:
  """Writes Tables 1 and 2 of the paper (plus per-category, zero-shot and multi-tag results) for
  several won runs, one row per run; the paper's published rows follow ours. Returns `out_path`."""
  if not workdirs:
    raise ValueError("compare_runs needs at least one workdir.")
  runs = [_run_info(w) for w in workdirs]
  others = [r["name"] for r in runs if runs_lib.config_get(r["config"], "system") != SYSTEM]
  if others:
    raise ValueError(f"won report compare_runs: {others} are not won runs (config.system); compare "
                     "won runs only.")
  _name_runs(runs)
  runs.sort(key=_run_sort_key)
  rows = [[r["name"], BRANCH_LABELS.get(r["branch"], r["branch"]), _sampling_label(r["sampling"]),
           r["words"], _count(_get(r["metrics"], "retrieval/num_tags")),
           fmt(_get(r["metrics"], "retrieval/map")), fmt(_get(r["metrics"], "retrieval/p@10"))]
          for r in runs]
  sections = [
      "\n".join([f"# Tag-based retrieval runs compared ({len(runs)} runs)", "",
                 f"Shaped like Tables 1 and 2 of {PAPER}. The paper's rows (MSD100 / MSD50, the "
                 "Million Song Dataset) are there for orientation, not as the same experiment."]),
      "\n".join(["## Runs", "", tables_lib.markdown_table(
          ["Run", "Branch", "Sampling", "Word vectors", "Tags", "MAP", "P@10"], rows,
          [False] * 4 + [True] * 3)]),
      _table1(runs), _table2(runs)] + _per_run_sections(runs)
  utils.write_text_atomic(out_path, "\n\n".join(sections) + "\n")
  return out_path


# ------------------------------------------------------------------------------------------------
# The query tool (launch/predict.py): text -> songs, audio -> tags.


