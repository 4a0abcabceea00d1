"""The supportive binary cross-entropy of playlist-based tag propagation: eqs. (1) and (3).

Follows Lin, Chung & Chen, "Playlist-Based Tag Propagation for Improving Music Auto-Tagging",
section III.A (eq. (1), the auto-tagger's binary cross-entropy) and III.C (eq. (3), the same plus a
supportive cross-entropy on the tags propagated from a playlist neighbour s', weighted by eq. (4)'s
P(s'|s)). The partner and its weight come from `musemb.samplers.propagation`.

Per example (song s with logits x_t, own tags y_{s,t}, partner s' with tags y_{s',t'}):

    loss = sum_t BCE(x_t, y_{s,t}) + P(s'|s) * sum_t' BCE(x'_t', y_{s',t'}),
    BCE(x, y) = -(y log sigmoid(x) + (1 - y) log sigmoid(-x)),

where x' = x with the paper's single output head, or the logits of a separate supportive head.

* Sign: eqs. (1) and (3) are printed as log-likelihoods that the text says are "minimized"; these
  are the negatives (cross-entropies >= 0), to be minimised.
* Targets: eq. (3) as printed reuses y_{s,t} in its second sum, which would make the supportive
  term a copy of the first; the text says it reproduces "the additional song-tag link created by
  our algorithm", i.e. the propagated tags y_{s',t'}. These are what is used here.
* Heads: the paper feeds one output layer both terms (the same f(x_s, t', theta)) and calls the
  result multi-task learning; a separate supportive head (shared trunk, its own output layer, used
  only in training) is the usual multi-task form and keeps the propagated tags out of the logits
  that are evaluated. `support_logits=None` is the paper's variant.
* Reduction: the tags are summed (`reduction="sum"`, as eqs. (1) and (3)) or averaged
  (`"mean"`, which makes the loss's scale independent of the vocabulary, 50 or 1000 tags in the
  paper); the batch is left to the caller.
* Numerics: log sigmoid is `jax.nn.log_sigmoid`, stable for logits of any size; the gradient with
  respect to a logit is sigmoid(x) - y (times P(s'|s) in the supportive term).

Tag-dependent weights (beyond the paper; its §V.D and §VI name them as future work). `weight` and
`has_partner` may also be [batch, tags]: each tag's supportive BCE then has its own weight and
mask,

    loss = sum_t BCE(x_t, y_{s,t}) + sum_t' W_{s,t'} BCE(x'_t', Y_{s,t'}),

with the same reduction over tags for both sums (for "mean", both divide by the vocabulary size
T). A [batch] weight is the paper's W_{s,t'} = P(s'|s) for every t'. The tag-propagation system
uses this for a search range per tag category (`musemb.samplers.propagation.grouped_targets`):
the tags of category c come from a walk with its own r_c, so W_{s,t'} = P_{r_c}(s'_c|s) and
Y_{s,t'} = y_{s'_c,t'} for t' in c, which is eq. (3) again when every tag has the same r.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

REDUCTIONS = ("sum", "mean")


def tag_bce(logits: jax.Array, targets: jax.Array, reduction: str = "sum") -> jax.Array:
  """Eq. (1) for each example, as a cross-entropy: the BCE of every tag, summed or averaged.

  Args:
    logits: [batch, tags] pre-sigmoid scores.
    targets: [batch, tags] targets in [0, 1] (multi-hot).
    reduction: "sum" over tags (the paper) or "mean".

  Returns:
    [batch] per-example losses.
  """
  _check_reduction("tag_bce", reduction)
  if logits.ndim != 2 or logits.shape != targets.shape:
    raise ValueError(
        "musemb/objectives/supportive.py tag_bce: expected logits and targets of one shape "
        f"[batch, tags]; got {logits.shape} and {targets.shape}.")
  y = targets.astype(logits.dtype)
  per_tag = -(y * jax.nn.log_sigmoid(logits) + (1.0 - y) * jax.nn.log_sigmoid(-logits))
  return jnp.sum(per_tag, axis=1) if reduction == "sum" else jnp.mean(per_tag, axis=1)


def supportive_bce(
    logits: jax.Array,
    tags: jax.Array,
    propagated_tags: jax.Array,
    weight: jax.Array,
    support_logits: jax.Array | None = None,
    has_partner: jax.Array | None = None,
    reduction: str = "sum",
) -> jax.Array:
  """Eq. (3) per example: own-tag BCE plus P(s'|s) times the BCE on the partner's tags.

  Args:
    logits: [batch, tags] logits of the auto-tagging head f(x_s, t).
    tags: [batch, tags] the song's own tags y_{s,t}.
    propagated_tags: [batch, tags] the partner's tags y_{s',t'} (e.g. from
      `musemb.samplers.propagation.propagated_tags`).
    weight: [batch] eq. (4)'s P(s'|s) (`PropagationSample.weight`), or [batch, tags] one weight
      per propagated tag (module docstring); treated as a constant.
    support_logits: [batch, tags] logits of a separate supportive head, or None for the paper's
      single head (the supportive term then uses `logits`).
    has_partner: [batch] bool, False where the walk found no partner (its supportive term is
      exactly zero, whatever `propagated_tags` and `weight` hold), or [batch, tags] per tag (with
      a per-tag weight); None: every row has one.
    reduction: "sum" over tags (the paper) or "mean"; applied to both terms alike.

  Returns:
    [batch] per-example losses (average or sum over the batch in the caller).
  """
  _check_reduction("supportive_bce", reduction)
  head = logits if support_logits is None else support_logits
  if head.shape != logits.shape or propagated_tags.shape != logits.shape:
    raise ValueError(
        "musemb/objectives/supportive.py supportive_bce: logits, support_logits and "
        f"propagated_tags must share the shape [batch, tags]; got {logits.shape}, {head.shape} "
        f"and {propagated_tags.shape}.")
  batch = logits.shape[:1]
  shapes = (batch, logits.shape)
  if weight.shape not in shapes or (has_partner is not None and has_partner.shape not in shapes):
    raise ValueError(
        "musemb/objectives/supportive.py supportive_bce: weight and has_partner must be [batch] = "
        f"{batch} or [batch, tags] = {logits.shape}; got {weight.shape} and "
        f"{None if has_partner is None else has_partner.shape}.")
  own = tag_bce(logits, tags, reduction)
  weight = jax.lax.stop_gradient(weight).astype(own.dtype)
  per_tag = weight.ndim == 2 or (has_partner is not None and has_partner.ndim == 2)
  if not per_tag:
    support = tag_bce(head, propagated_tags, reduction)
    if has_partner is None:
      return own + weight * support
    # Mask the weight as well as the product: a NaN weight times the zero cotangent of a masked
    # row would still put NaN into the supportive head's gradient.
    has_partner = has_partner.astype(bool)
    weight = jnp.where(has_partner, weight, 0.0)
    return own + jnp.where(has_partner, weight * support, 0.0)
  # One weight per (example, tag): the weighted BCE of every tag, reduced over tags as eq. (1).
  weight = jnp.broadcast_to(weight if weight.ndim == 2 else weight[:, None], logits.shape)
  y = propagated_tags.astype(head.dtype)
  bce = -(y * jax.nn.log_sigmoid(head) + (1.0 - y) * jax.nn.log_sigmoid(-head))
  if has_partner is not None:
    mask = jnp.broadcast_to(has_partner.astype(bool) if has_partner.ndim == 2
                            else has_partner.astype(bool)[:, None], logits.shape)
    weight = jnp.where(mask, weight, 0.0)
    bce = jnp.where(mask, weight * bce, 0.0)
  else:
    bce = weight * bce
  support = jnp.sum(bce, axis=1) if reduction == "sum" else jnp.mean(bce, axis=1)
  return own + support


def _check_reduction(name: str, reduction: str) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(
        f"musemb/objectives/supportive.py {name}: unknown reduction {reduction!r}; expected one of "
        f"{REDUCTIONS} (over tags; the batch is reduced by the caller).")
