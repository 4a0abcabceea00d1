"""Tag taxonomies {category: [tags]}: the report's Table II / Fig. 6 and the categories of
`objective.category_r` (a search range per tag category).

`eval.taxonomy` (or `launch.report --taxonomy=` at report time) names one:

* "" (the default): the paper's Table II, shipped as `table2_taxonomy.json` (see `load_taxonomy`);
* "builtin": the built-in world's vocabulary (`synthetic.TAG_VOCABULARY`) in four categories,
  shipped as `builtin_taxonomy.json`: genre, mood (tempo, loudness, register and texture words
  too), instrument (voices included) and activity ("dance"). It is the grouping Won et al.'s
  system uses for the same world (`musemb.systems.won.data`), in this file's {category: [tags]}
  form; a test keeps the two equal;
* any other value: a path to a JSON {category: [tags]} file of your own.
"""

from __future__ import annotations

import json
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
# Table II of the paper, as its text lists it (see `load_taxonomy`).
TABLE2_TAXONOMY = os.path.join(_HERE, "table2_taxonomy.json")
BUILTIN_TAXONOMY = os.path.join(_HERE, "builtin_taxonomy.json")


def taxonomy_path(name: str = "") -> str:
  """The file `eval.taxonomy = name` names: "" the paper's, "builtin" the world's, or a path."""
  name = str(name or "")
  return {"": TABLE2_TAXONOMY, "builtin": BUILTIN_TAXONOMY}.get(name, name)


def describe(name: str = "") -> str:
  """How a report names the taxonomy."""
  name = str(name or "")
  return {"": "the paper's Table II", "builtin": "the built-in world's categories"}.get(name, name)


def load_taxonomy(name: str = "") -> dict[str, list[str]]:
  """A tag taxonomy {category: [tags]} from a JSON file; "" is the paper's Table II, "builtin"
  the built-in world's.

  The shipped `table2_taxonomy.json` holds exactly the tags the paper's Table II text lists, in
  its six categories and spelling (case included, as in the Last.fm tags of the MSD: "Hip-Hop",
  "Mellow"; its placements too: "singer-songwriter" under personal, "oldies" under mood). Those are
  50 tags, as many as the top-50 setup's vocabulary, so the table reads as that vocabulary
  categorised; the paper does not list the categories of the other 950 tags of its 1000-tag
  setup, and none are guessed here: a run's tags outside the taxonomy are counted, not
  categorised. Tags match the run's vocabulary exactly.
  """
  path = taxonomy_path(name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"eval.taxonomy={path!r} does not exist where it is read; pass a JSON "
                            "{category: [tags]} file, \"\" for the paper's Table II or \"builtin\" "
                            "for the built-in world's categories.")
  with open(path) as f:
    try:
      taxonomy = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f"eval.taxonomy={path!r} is not valid JSON ({error}).") from None
  if not isinstance(taxonomy, dict) or not taxonomy or not all(
      isinstance(k, str) and isinstance(v, list) and v and all(isinstance(t, str) for t in v)
      for k, v in taxonomy.items()):
    raise ValueError(f"eval.taxonomy={path!r}: expected a JSON object of categories, each a "
                     "non-empty list of tag names, e.g. {\"genre\": [\"rock\", \"jazz\"]}.")
  return {k: list(v) for k, v in taxonomy.items()}


def parse_category_r(spec: str) -> dict[str, float]:
  """`objective.category_r` ("genre=0.8,instrument=0.2"; "" = none) as {category: r}."""
  out: dict[str, float] = {}
  for item in str(spec or "").split(","):
    if not item.strip():
      continue
    name, sep, value = item.partition("=")
    try:
      r = float(value)
    except ValueError:
      r = float("nan")
    if not sep or not name.strip() or not 0.0 <= r <= 1.0:
      raise ValueError(f"objective.category_r={spec!r}: expected comma-separated category=r items "
                       f"with r in [0, 1], e.g. 'genre=0.8,instrument=0.2'; got {item!r}.")
    if name.strip() in out:
      raise ValueError(f"objective.category_r={spec!r} names {name.strip()!r} twice.")
    out[name.strip()] = r
  return out
