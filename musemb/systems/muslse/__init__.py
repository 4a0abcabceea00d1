"""MUSLSE: Multi-tasking with joint semantic spaces (Weston, Bengio, Hamel, ISMIR 2011 / JNMR).

The paper's recipe on one screen:

* Parameters (§3): V [|S|, d] maps a song's bag-of-frames vector s to V^T s (the rows of its
  non-zero codewords weighted by their counts, summed; a step computes it for its batch as a
  gather and segment sum or, where bags are dense enough, `model.bag_form`, as one GEMM of the
  batch's bags densified);
  A [|A|, d] artists; T [|T|, d] tags. Initialised N(0, 1/sqrt(d)) (Algorithm 1), every row kept
  within the ball ||.|| <= C after each update (constraints 1-3, `project`).
* Five scoring functions (eqs. 4-8), all dot products in the one space: artist prediction A_i . Vs,
  song prediction Vs' . A_i, similar artists A_j . A_i, similar songs Vs' . Vs'', tag prediction
  T_i . Vs.
* Loss (§4.2, `tasks.py`): WARP with the sampled rank estimate floor((Y-1)/N) and
  L(r) = sum_{i<=r} alpha_i (`musemb.samplers.warp`, vectorised: blocks of negatives drawn at
  once until the first violator, which gives N; `musemb.objectives.ranking`),
  an exact-rank WARP when all Y labels can be scored each step, or the AUC margin ranking loss (eq. 9)
  estimated from the same sampled negatives.
* Multi-task (§4.1): each step picks a random task (probabilities proportional to
  `config.tasks.weights`), or `tasks.mode=sum` adds all tasks every step.
* Ensembles (§4.2, "Training Ensembles"): M members with a leading parameter axis trained together
  with `jax.vmap`; at test time their scores are summed, which equals ranking with the members'
  embeddings concatenated (sum_m <q_m, l_m> = <[q_1..q_M], [l_1..l_M]>), so evaluation is unchanged.

The package: this file is the recipe (the contract's verbs, `musemb.systems`); `data.py` the
bag-of-frames tables, `tasks.py` the five ranking problems and their loss, `evaluation.py`
precision@k, the cosine baseline and Table 7, `report.py` the paper's tables.

Departures, all documented where they happen: a step processes a batch of examples and sums their
losses (each example still contributes its own Algorithm-1 update); song vectors s are normalised
(`config.features.normalize`, l2 by default) because raw frame counts scale with clip length; for
multi-artist songs the first listed artist is the positive of artist-based tasks; similar-artist
edges are split 60/20/20 into train/valid/test edges per artist (the paper had no such data).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import utils
from musemb.models import linear
from musemb.systems import System
from musemb.systems.muslse import data as bof_data
from musemb.systems.muslse import evaluation
from musemb.systems.muslse import report
from musemb.systems.muslse import tasks as tasks_lib

TASKS = bof_data.TASKS
load_data = bof_data.load_data


def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> dict:
  """{"params": {"V": [M, |S|, d], "A": [M, |A|, d], "T": [M, |T|, d]}}: N(0, 1/sqrt(d)),
  then projected; with `model.label_bias` also "T_bias" [M, |T|], zeros (a departure: see
  `tasks.label_bias`)."""
  params = linear.normal_tables(
      rng, {"V": info["num_features"], "A": info["num_artists"], "T": info["num_tags"]},
      config.model.embed_dim, members=config.model.ensemble)
  if config.model.get("label_bias", False):
    params["T_bias"] = jnp.zeros((config.model.ensemble, info["num_tags"]), jnp.float32)
  return {"params": project(params, config)}


def project(params: dict, config: ml_collections.ConfigDict) -> dict:
  """Constraints (1)-(3): rows with ||row|| > C are rescaled to norm C, with a C per table when
  `model.max_norms` sets one (configs/muslse.py says why). A tag bias is not constrained (the
  paper has none; LightFM's is free too)."""
  return {k: linear.max_norm(x, table_max_norm(config, k)) if k in _TABLE_NAMES else x
          for k, x in params.items()}


_TABLE_NAMES = {"V": "audio", "A": "artists", "T": "tags"}


def table_max_norm(config: ml_collections.ConfigDict, table: str) -> float:
  """C for the rows of one table: `model.max_norms.<audio|artists|tags>`, 0 = `model.max_norm`."""
  per_table = config.model.get("max_norms")
  c = float(per_table.get(_TABLE_NAMES[table], 0.0)) if per_table else 0.0
  return c or float(config.model.max_norm)


def loss(variables: dict, batch: dict, tables: bof_data.BofTables, rng: jax.Array,
         config: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
  """Multi-task MUSLSE loss, summed over the batch and the ensemble members.

  The tasks are the configured ones the data supports (`tables.task_names`, static).
  """
  params = variables["params"]
  tasks = tables.task_names
  weights = jnp.asarray([config.tasks.weights[t] for t in tasks], jnp.float32)
  members = params["V"].shape[0]
  r_task, r_members = jax.random.split(rng)
  member_rngs = jax.random.split(r_members, members)

  def all_members(task: str) -> Callable:
    """Sum over ensemble members of one task's loss (members vmapped, each with its own rng)."""
    def run(p, rngs):
      return jax.vmap(lambda pm, rm: tasks_lib.task_loss(task, pm, batch, tables, rm, config))(
          p, rngs).sum()
    return run

  if config.tasks.mode == "random":
    # The task is drawn outside the member vmap: under vmap a batched switch index would turn
    # lax.switch into a select that computes every task; drawn here it stays one conditional, so a
    # step costs one task (all members train the same task that step).
    t = jax.random.choice(r_task, len(tasks), p=weights / weights.sum())
    total = jax.lax.switch(t, [all_members(task) for task in tasks], params, member_rngs)
    per_task = jnp.where(jnp.arange(len(tasks)) == t, total, jnp.nan)
  elif config.tasks.mode == "sum":
    rngs = jax.random.split(r_members, (len(tasks), members))
    per_task = jnp.stack([all_members(task)(params, rngs[i]) for i, task in enumerate(tasks)])
    total = jnp.sum(weights * per_task)
  else:
    raise ValueError(f"tasks.mode={config.tasks.mode!r}; expected random or sum.")
  return total, {"task_losses": {task: per_task[i] for i, task in enumerate(tasks)}}


def evaluate(variables: dict, data: bof_data.BofData, config: ml_collections.ConfigDict,
             split: str) -> dict[str, float]:
  """p@k (and r@k) of every task on `split`: keys `<task>/p@<k>`."""
  return evaluation.evaluate_tasks(variables["params"], data, config, split)[0]


def write_outputs(variables: dict, data: bof_data.BofData, config: ml_collections.ConfigDict,
                  workdir: str) -> dict[str, float]:
  """Evaluates on `config.eval.split`; writes per-query p@3 (`per_query.npz`), the label
  embeddings (`embeddings.npz`), model stats (Table 7) and the cosine baseline's metrics
  (`cosine/similar_songs/...`) on process 0; returns MUSLSE's metrics."""
  params = variables["params"]
  split = config.eval.split
  metrics, per_query = evaluation.evaluate_tasks(params, data, config, split)
  if jax.process_index() != 0:
    return metrics
  arrays = {k: v for k, v in per_query.items() if k.endswith("/query_ids")}
  arrays.update({f"muslse/{k}": v for k, v in per_query.items() if k.endswith("/p@3")})
  if "similar_songs" in data.task_names or "song_prediction" in data.task_names:
    cos_means, cos_per_query = evaluation.cosine_similar_songs(data, config, split)
    utils.update_metrics_json(workdir, {f"cosine/similar_songs/{k}": v
                                        for k, v in cos_means.items()})
    arrays["cosine/similar_songs/p@3"] = cos_per_query["p@3"]
    arrays.setdefault("similar_songs/query_ids", data.splits[split].track_ids)
  utils.save_npz_atomic(os.path.join(workdir, "per_query.npz"), arrays)
  utils.save_npz_atomic(os.path.join(workdir, "embeddings.npz"), {
      "tag_names": np.asarray(data.info["tag_names"]),
      "artist_names": np.asarray(data.info["artist_names"]),
      "T": evaluation.label_embeddings(params, "T"), "A": evaluation.label_embeddings(params, "A")})
  utils.update_model_stats(workdir, "muslse",
                           evaluation.model_stats(params, data, data.task_names))
  return metrics


class MuslsePredictor:
  """Tags, likely artists and similar training songs for audio (`evaluation.predict`).

  The run's data (the cached codebook, the training songs' bags) and parameters load on first
  use (`load()`), so asking it for text fails fast.
  """

  searches_text = False

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               restore: Callable[[dict], Any]):
    self.workdir, self.config, self._restore = workdir, config, restore
    self._loaded = None

  def load(self) -> tuple[dict, bof_data.BofData, np.ndarray]:
    """(params, data, training songs' embeddings), loaded once."""
    if self._loaded is None:
      data = load_data(self.config, self.workdir)
      params = self._restore(data.info)["params"]
      train = data.splits["train"]
      self._loaded = params, data, evaluation.song_embeddings(params, train.idx, train.val)
    return self._loaded

  @property
  def sample_rate(self) -> int:
    return int(self.load()[1].prepared.sample_rate)

  def analyze(self, waveform: np.ndarray, top: int) -> dict[str, Any]:
    params, data, train_embeddings = self.load()
    return evaluation.predict(params, data, waveform, self.config, top=top,
                              train_embeddings=train_embeddings)

  def search(self, text: str, top: int) -> dict[str, Any]:
    raise ValueError("a MUSLSE run answers audio, not text: it has no word space.")


def predictor(workdir: str, config: ml_collections.ConfigDict, restore: Callable[[dict], Any],
              **options) -> MuslsePredictor:
  if options:
    raise ValueError(f"a MUSLSE run takes no predictor options; got {sorted(options)}.")
  return MuslsePredictor(workdir, config, restore)


SYSTEM = System(
    name="muslse", load_data=load_data, init=init, loss=loss, project=project, evaluate=evaluate,
    write_outputs=write_outputs, report=report.write_report, compare=report.compare_runs,
    predictor=predictor)
