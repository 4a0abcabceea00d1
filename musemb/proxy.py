"""The proxy task of Platt's thesis (`004_*` paper, chapter 5): how much do latent factors know?

Listening-data factors (`musemb.wmf`) are judged without audio by how well a linear model reads
tags off them: a one-vs-rest logistic regression from each item's factor vector to its tags,
trained on a seeded part of the items and scored on the rest by the mean ROC AUC over tags
(Tables 5.1-5.5 of the thesis compare datasets, numbers of factors and ALS iterations this way).
The factors are l2-normalised first, as the thesis' factor-regression target is, so that the task
sees their directions, the part a dot-product recommender uses.

Departures from the thesis: one seeded random split of the items instead of Choi's MSD tagging
split, and full-batch Adam for a fixed number of steps instead of 20 epochs with early stopping
(a convex problem, so the fit is fully determined by the data, the split and these settings).
Next to the factors' AUC the same procedure runs on Gaussian random factors of the same shape: the
chance level (about 0.5) that says how much of the score the factors themselves earn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from musemb import metrics as metrics_lib
from musemb import utils


normalize_rows = utils.normalize_rows   # re-exported: the task's input scaling


def split_items(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) sorted item indices: a seeded permutation, round(test_fraction * n) tested.

  At least one item lands on each side, so n must be 2 or more.
  """
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 1).")
  if n < 2:
    raise ValueError(f"the proxy task needs at least 2 items (one to train, one to test); got {n}.")
  n_test = int(np.clip(round(test_fraction * n), 1, n - 1))
  order = np.random.default_rng(seed).permutation(n)
  return np.sort(order[n_test:]), np.sort(order[:n_test])


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit_logistic(x: jax.Array, y: jax.Array, l2: jax.Array, learning_rate: jax.Array,
                  steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Full-batch Adam on the mean binary cross-entropy + l2 * ||W||^2 (the bias is not penalised).

  Args:
    x: [n, f] float32 inputs.
    y: [n, T] float32 0/1 targets.
    l2: scalar weight decay.
    learning_rate: scalar Adam step size.
    steps: number of full-batch updates.

  Returns:
    (w [f, T], b [T], losses [steps]) the weights and the objective before each update.
  """
  params = {"w": jnp.zeros((x.shape[1], y.shape[1]), jnp.float32),
            "b": jnp.zeros((y.shape[1],), jnp.float32)}
  # Zero start: the problem is convex, so no random initialisation is needed and the fit is
  # deterministic.
  opt = optax.adam(learning_rate)

  def loss_fn(p):
    logits = x @ p["w"] + p["b"]
    return optax.sigmoid_binary_cross_entropy(logits, y).mean() + l2 * jnp.sum(p["w"] ** 2)

  def step(carry, _):
    p, s = carry
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = opt.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), loss

  (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
  return params["w"], params["b"], losses


def _check_inputs(item_factors: Any, item_tags: Any) -> tuple[np.ndarray, np.ndarray]:
  factors = np.asarray(item_factors)
  tags = np.asarray(item_tags)
  if factors.ndim != 2:
    raise ValueError(f"item_factors must be 2-D [items, factors]; got shape {factors.shape}.")
  if tags.ndim != 2:
    raise ValueError(f"item_tags must be 2-D [items, tags]; got shape {tags.shape}. Build it "
                     "with `tag_matrix` or `synthetic_item_tags`.")
  if factors.shape[0] != tags.shape[0]:
    raise ValueError(f"item_factors has {factors.shape[0]} items but item_tags has "
                     f"{tags.shape[0]}; both must have one row per item, in the same order "
                     "(factors.npz's item_ids).")
  if not np.issubdtype(factors.dtype, np.number) or not np.isfinite(factors).all():
    raise ValueError("item_factors must be finite numbers; found NaN/inf or a non-numeric dtype "
                     f"({factors.dtype}). Check the factor fit.")
  if tags.dtype != np.bool_:
    if not np.isin(tags, (0, 1)).all():
      raise ValueError(f"item_tags must be binary (bool or 0/1); got values "
                       f"{np.unique(tags)[:5]}.")
    tags = tags.astype(bool)
  return factors, tags


def fit_and_score(factors: np.ndarray, tags: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                  l2: float = 1e-4, steps: int = 500, learning_rate: float = 0.05
                  ) -> tuple[np.ndarray, np.ndarray, float]:
  """Fits the regression on the `train` rows and scores the `test` rows (no input checks).

  Args:
    factors: [items, f] factors (l2-normalised here).
    tags: [items, T] bool tags.
    train, test: item indices.
    l2, steps, learning_rate: as in `tag_prediction_from_factors`.

  Returns:
    (scores [test, T] float64 logits, per-tag ROC AUC [T] float64 with NaN where a tag lacks a
    positive or a negative test item, the final training objective).
  """
  x = normalize_rows(factors)
  w, b, losses = _fit_logistic(jnp.asarray(x[train]), jnp.asarray(tags[train], jnp.float32),
                               jnp.float32(l2), jnp.float32(learning_rate), steps)
  scores = np.asarray(jnp.asarray(x[test]) @ w + b, np.float64)
  per_tag = metrics_lib.per_label_roc_auc(scores, tags[test], reduce="none")
  return scores, per_tag, float(losses[-1])


def tag_prediction_from_factors(item_factors: Any, item_tags: Any, *, split_seed: int = 0,
                                test_fraction: float = 0.2, l2: float = 1e-4, steps: int = 500,
                                learning_rate: float = 0.05) -> dict[str, Any]:
  """Logistic regression from l2-normalised factors to tags, scored by mean ROC AUC on held-out items.

  The items are split by `split_seed`; one [f, T] weight matrix and [T] bias are fitted jointly
  (one-vs-rest: each tag its own sigmoid) on the training items, and the held-out items are ranked
  per tag. Tags without both a positive and a negative held-out item are left out of the mean.
  The same split and fit on Gaussian random factors of the same shape (seeded by `split_seed`)
  give the chance baseline.

  Args:
    item_factors: [items, f] latent factors (e.g. factors.npz's item_factors).
    item_tags: [items, T] bool (or 0/1) tags, rows in the same item order.
    split_seed: seed of the train/test split and of the random baseline's factors.
    test_fraction: share of items held out, in (0, 1).
    l2: weight decay on W (not on the bias), >= 0.
    steps: full-batch Adam updates, >= 1.
    learning_rate: Adam step size, > 0.

  Returns:
    A dict: "roc_auc" (mean over evaluated tags), "random_roc_auc" (the same on random factors),
    "num_tags" (tags evaluated), "num_train" and "num_test" (items), "train_loss" (the final
    training objective), and "per_tag_roc_auc" ([T] float64, NaN for tags not evaluated).
  """
  factors, tags = _check_inputs(item_factors, item_tags)
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
    raise ValueError(f"steps={steps!r} must be a positive integer.")
  if not l2 >= 0:
    raise ValueError(f"l2={l2!r} must be >= 0.")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate={learning_rate!r} must be > 0.")
  train, test = split_items(factors.shape[0], test_fraction, split_seed)
  evaluable = tags[test].any(axis=0) & ~tags[test].all(axis=0)
  if not evaluable.any():
    raise ValueError(
        f"no tag has both a positive and a negative item among the {len(test)} held-out items "
        f"({tags.shape[1]} tags, {int(tags.sum())} positives in all), so ROC AUC is undefined. "
        "Use more items, a larger test_fraction, or tags that occur more often.")
  _, per_tag, train_loss = fit_and_score(factors, tags, train, test, l2=l2, steps=int(steps),
                                         learning_rate=learning_rate)
  random_factors = np.random.default_rng([split_seed, 1]).standard_normal(
      factors.shape).astype(np.float32)
  _, random_per_tag, _ = fit_and_score(random_factors, tags, train, test, l2=l2,
                                      steps=int(steps), learning_rate=learning_rate)
  return {"roc_auc": float(per_tag[evaluable].mean()),
          "random_roc_auc": float(random_per_tag[evaluable].mean()),
          "num_tags": int(evaluable.sum()),
          "num_train": int(len(train)),
          "num_test": int(len(test)),
          "train_loss": train_loss,
          "per_tag_roc_auc": per_tag}


def tag_matrix(item_ids: Sequence[str], tags_by_item: Mapping[str, Sequence[str]],
               tag_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """The [items, T] bool tag matrix of `item_ids` in `tag_names`' column order.

  Args:
    item_ids: [items] ids, e.g. factors.npz's item_ids.
    tags_by_item: id -> its tags (e.g. the mapping `listening.msd_track_tags` returns); tags not
      in `tag_names` are ignored.
    tag_names: [T] the vocabulary, e.g. the top-50 tags.

  Returns:
    (tags [items, T] bool, labelled [items] bool): `labelled` says which ids `tags_by_item` knows.
    Unknown items have all-False rows; select `labelled` rows before the proxy task, since an
    untagged item is not a negative for every tag.
  """
  column = {t: j for j, t in enumerate(tag_names)}
  if len(column) != len(tag_names):
    raise ValueError(f"tag_names has duplicates ({len(tag_names)} names, {len(column)} distinct).")
  tags = np.zeros((len(item_ids), len(tag_names)), bool)
  labelled = np.zeros(len(item_ids), bool)
  for i, item in enumerate(item_ids):
    item_tags = tags_by_item.get(str(item))
    if item_tags is None:
      continue
    labelled[i] = True
    for t in item_tags:
      j = column.get(t)
      if j is not None:
        tags[i, j] = True
  return tags, labelled


def synthetic_item_tags(item_ids: Sequence[str], size: str = "demo",
                        seed: int = 0) -> tuple[np.ndarray, list[str]]:
  """The built-in world's tags for its track ids (the item ids of its plays).

  Args:
    item_ids: [items] synthetic track ids ("syn000123"), e.g. factors.npz's item_ids.
    size, seed: the `SyntheticWorld` that generated the plays (config.data.synthetic_size/_seed).

  Returns:
    (tags [items, T] bool, tag_names [T]) with the world's noisy tags, most frequent tag first.
  """
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  world = synthetic.SyntheticWorld(size, seed=seed)
  tags_by_item = {world.track_id(i): t for i, t in enumerate(world.track_tags)}
  tags, labelled = tag_matrix(item_ids, tags_by_item, world.tag_names)
  if not labelled.all():
    unknown = [str(item_ids[i]) for i in np.flatnonzero(~labelled)[:3]]
    raise ValueError(f"{int((~labelled).sum())} item ids are not tracks of the synthetic world "
                     f"(size {size!r}, seed {seed}), e.g. {unknown}; pass the size and seed the "
                     "plays were generated with.")
  return tags, list(world.tag_names)
