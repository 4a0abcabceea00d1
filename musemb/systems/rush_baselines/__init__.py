"""Rush et al.'s baselines on the same split: CCA with latent sizes 50 and 100 (section 8).

The system `rush_baselines` (beside `musemb.systems.rush`, as one_vs_rest is beside muslse; a
`fit` verb: nothing is trained by the loop) loads the same data as a rush run of the same `data`
config (same albums, split, z-scored descriptor vectors), then:

* **Text view**: a fixed representation of each review, since CCA cannot train a text encoder.
  The paper used the mean of GloVe vectors; nothing is downloaded here, so the default is LSA:
  TF-IDF over the `baselines.tfidf_words` most frequent training words (the rush vocabulary's
  first ids; idf from the training reviews, rows l2-normalised), projected onto the
  `baselines.text_dim` leading right singular vectors of the training reviews' matrix (truncated
  SVD, `scipy.sparse.linalg.svds` with a seeded start). With `model.text=features` the sentence
  vectors of `text.features_path` are the text view instead (e.g. mean GloVe vectors written with
  `musemb.text.sentence_features.save_sentence_features`, the paper's setting).
* **CCA** (`musemb.models.cca.fit_cca`, regularised by `baselines.cca_reg`) on the training pairs
  (audio item, review of its album), for each of `LATENT_DIMS` (50, 100; capped at the views'
  sizes).
* **Retrieval**: items and reviews projected, l2-normalised, and ranked by Euclidean distance
  exactly as the network's embeddings are (`musemb.systems.rush.evaluation`), on the test albums.
  The paper fitted and measured CCA on the same data ("we tested recall on the same dataset that
  [was] used for generating the projection weights"); here it is measured on held-out albums.

* **WSABIE** (Weston, Bengio & Usunier, IJCAI 2011, in MUSLSE's joint form: Weston, Bengio &
  Hamel 2011), with albums as labels: linear maps of the audio features (`V_a`) and of the same
  text view (`V_t`) into a `baselines.wsabie_dim`-d space in which every training album has a
  label vector; an audio item and a review each score the albums by dot product and are trained
  to rank their own album first with WARP (`musemb.objectives.ranking.exact_warp_loss`: the exact
  margin rank, since the training albums fit on the device, harmonic L(r), margin 1), their sum
  per step, Adagrad (`baselines.wsabie_learning_rate`) and MUSLSE's max-norm C = 1 on every row of
  the three tables. The test albums have no label vector (they are held out), so retrieval meets
  a test review's `V_t` image and the test items' `V_a` images directly: both were pulled towards
  their album's label, which is what aligns them; cosine, through the same distances as above.

Metrics (metrics.json, prefix `rush_baselines/`): `cca_<k>/review_to_album/...`,
`cca_<k>/album_to_review/...` (with `chance/`), `cca_<k>/mean_correlation`, and the same
directions under `wsabie/`.
"""

from __future__ import annotations

import json
import os

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.sparse
import scipy.sparse.linalg

from musemb import utils
from musemb.models import cca as cca_lib
from musemb.models import linear as linear_lib
from musemb.objectives import ranking
from musemb.systems import System
from musemb.systems.rush import data as rush_data
from musemb.systems.rush import evaluation
from musemb.systems.rush import report
from musemb.text import vocabulary as vocabulary_lib

NAME = "rush_baselines"


class LSA:
  """TF-IDF over the first `num_words` vocabulary words, projected by a truncated SVD."""

  def __init__(self, ids: np.ndarray, lengths: np.ndarray, num_words: int, dim: int, seed: int):
    self.num_words = int(num_words)
    counts = self._counts(ids, lengths)
    df = np.asarray((counts > 0).sum(axis=0)).reshape(-1)
    self.idf = np.log((1.0 + counts.shape[0]) / (1.0 + df)) + 1.0   # scikit-learn's smooth idf
    x = self._tfidf(counts)
    k = int(min(dim, min(x.shape) - 1))
    if k < 1:
      raise ValueError(f"LSA: a {x.shape} TF-IDF matrix has no room for a projection.")
    v0 = np.random.default_rng(seed).standard_normal(min(x.shape))
    _, s, vt = scipy.sparse.linalg.svds(x, k=k, v0=v0)
    order = np.argsort(-s)
    self.components = vt[order].T                                  # [words, k]

  def _counts(self, ids: np.ndarray, lengths: np.ndarray) -> scipy.sparse.csr_matrix:
    real = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    keep = real & (ids >= vocabulary_lib.NUM_SPECIAL) & (
        ids < vocabulary_lib.NUM_SPECIAL + self.num_words)
    rows = np.nonzero(keep)[0]
    cols = ids[keep] - vocabulary_lib.NUM_SPECIAL
    m = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)),
                                shape=(ids.shape[0], self.num_words))
    m.sum_duplicates()
    return m

  def _tfidf(self, counts: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    x = counts.multiply(self.idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).reshape(-1))
    return scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ x

  def __call__(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.asarray(self._tfidf(self._counts(ids, lengths)) @ self.components)


def _normalise(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_wsabie(audio: np.ndarray, text: np.ndarray, audio_album: np.ndarray,
               text_album: np.ndarray, num_albums: int, config: ml_collections.ConfigDict
               ) -> tuple[np.ndarray, np.ndarray]:
  """(V_a [Da, d], V_t [Dt, d]) trained with WARP, albums as labels (see the module docstring).

  The steps run in one `lax.scan`; each draws `train.batch_size` items and as many reviews
  uniformly from the training rows with the step's key.
  """
  b = config.baselines
  dim, steps, batch = int(b.wsabie_dim), int(b.wsabie_steps), int(config.train.batch_size)
  key = jax.random.key(int(config.seed))
  k_a, k_t, k_l, k_steps = jax.random.split(key, 4)
  params = {"audio": jax.random.normal(k_a, (audio.shape[1], dim)) / np.sqrt(audio.shape[1]),
            "text": jax.random.normal(k_t, (text.shape[1], dim)) / np.sqrt(text.shape[1]),
            "albums": jax.random.normal(k_l, (num_albums, dim)) / np.sqrt(dim)}
  params = jax.tree.map(lambda x: linear_lib.max_norm(x, 1.0), params)
  tx = optax.adagrad(float(b.wsabie_learning_rate))
  data = {"audio": jnp.asarray(audio, jnp.float32), "text": jnp.asarray(text, jnp.float32),
          "audio_album": jnp.asarray(audio_album), "text_album": jnp.asarray(text_album)}

  def warp(x, album, labels):
    scores = x @ labels.T
    positive = jax.nn.one_hot(album, num_albums, dtype=bool)
    return jnp.mean(ranking.exact_warp_loss(scores, positive, album))

  def loss_fn(p, rng):
    k1, k2 = jax.random.split(rng)
    i = jax.random.randint(k1, (batch,), 0, data["audio"].shape[0])
    j = jax.random.randint(k2, (batch,), 0, data["text"].shape[0])
    return (warp(data["audio"][i] @ p["audio"], data["audio_album"][i], p["albums"])
            + warp(data["text"][j] @ p["text"], data["text_album"][j], p["albums"]))

  def step(carry, rng):
    p, opt = carry
    value, grads = jax.value_and_grad(loss_fn)(p, rng)
    updates, opt = tx.update(grads, opt, p)
    p = jax.tree.map(lambda x: linear_lib.max_norm(x, 1.0), optax.apply_updates(p, updates))
    return (p, opt), value

  (params, _), losses = jax.jit(lambda p, o, ks: jax.lax.scan(step, (p, o), ks))(
      params, tx.init(params), jax.random.split(k_steps, steps))
  losses = np.asarray(losses)
  logging.info("WSABIE: %d steps, WARP loss %.3f (first 100) -> %.3f (last 100).", steps,
               losses[:100].mean(), losses[-100:].mean())
  return np.asarray(params["audio"]), np.asarray(params["text"])


def fit(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """CCA 50/100 on the training pairs, evaluated on `config.eval.split` (module docstring)."""
  os.makedirs(workdir, exist_ok=True)
  utils.write_json_atomic(os.path.join(workdir, "config.json"),
                          json.loads(config.to_json_best_effort()))
  data = rush_data.load_data(config, workdir)
  train, test = data.splits["train"], data.splits[config.eval.split]
  if config.model.text == "features":
    text_train, text_test = train.text_features, test.text_features
    text_view = f"sentence features {config.text.features_path}"
  else:
    num_words = min(int(config.baselines.tfidf_words), len(data.vocab) - vocabulary_lib.NUM_SPECIAL)
    lsa = LSA(train.text_ids, train.text_lengths, num_words, int(config.baselines.text_dim),
              int(config.seed))
    text_train = lsa(train.text_ids, train.text_lengths)
    text_test = lsa(test.text_ids, test.text_lengths)
    text_view = f"LSA: TF-IDF of {num_words} words -> {lsa.components.shape[1]} dims"
  x = train.audio[data.pair_item]
  y = text_train[data.pair_review]
  out: dict[str, float] = {}
  for dim in cca_lib.LATENT_DIMS:
    k = min(dim, x.shape[1], y.shape[1])
    model = cca_lib.fit_cca(x, y, k, reg=float(config.baselines.cca_reg))
    items = _normalise(model.transform_x(test.audio))
    reviews = _normalise(model.transform_y(text_test))
    dist = evaluation.album_distances(reviews, items, test.albums.track_album, test.num_albums)
    metrics, _ = evaluation.retrieval_metrics(dist, test.albums.review_album)
    for key, value in metrics.items():
      out[f"{NAME}/cca_{dim}/{key}"] = float(value)
    out[f"{NAME}/cca_{dim}/latent_dim"] = float(k)
    out[f"{NAME}/cca_{dim}/mean_correlation"] = float(model.correlations.mean())
    logging.info("CCA %d (%s): review->album R@10 %.3f, MRR %.3f (chance R@10 %.3f).", k,
                 text_view, metrics["review_to_album/r@10"], metrics["review_to_album/mrr"],
                 metrics["review_to_album/chance/r@10"])
  if int(config.baselines.wsabie_steps) > 0:
    train_albums = train.albums
    v_a, v_t = fit_wsabie(train.audio, text_train, train_albums.track_album,
                          train_albums.review_album, train.num_albums, config)
    dist = evaluation.album_distances(_normalise(text_test @ v_t), _normalise(test.audio @ v_a),
                                      test.albums.track_album, test.num_albums)
    metrics, _ = evaluation.retrieval_metrics(dist, test.albums.review_album)
    out.update({f"{NAME}/wsabie/{k}": float(v) for k, v in metrics.items()})
    logging.info("WSABIE: review->album R@10 %.3f, MRR %.3f.", metrics["review_to_album/r@10"],
                 metrics["review_to_album/mrr"])
  utils.update_metrics_json(workdir, out)
  utils.write_json_atomic(os.path.join(workdir, "info.json"),
                          {**{k: v for k, v in data.info.items() if k != "feature_names"},
                           "text_view": text_view})
  return out


SYSTEM = System(name=NAME, fit=fit, report=report.write_report, compare=report.compare_runs)
