"""Rush et al.: joint text-music embeddings from album reviews, on the shared loop.

Follows Rush, Yang, Hsu, Rybicki, Le & Lin, *Learning to Rank with Text-Music Embeddings* (the
`003_*` paper), after Wang, Li & Lazebnik's two-branch image-text network (CVPR 2016):

* **Data** (`data.py`): MARD from disk or the built-in world's album reviews, split by whole
  albums; AcousticBrainz-layout descriptor vectors (read, or computed in JAX from the audio),
  z-scored on the training items; reviews tokenised with the training vocabulary; true pairs
  (review, audio item of its album); batches of B pairs by neighbourhood sampling (section 6.2) or
  at random, a pure function of the step.
* **Model** (`model.py`, `musemb.models.two_branch`): an audio branch and a text branch, each
  Dense(256) -> ReLU -> Dense(128) -> BatchNorm -> l2 (or one Dense, `model.linear`), the text
  read by the mean of learned word embeddings (eq. 11), a BiLSTM (eqs. 12-14) or precomputed
  sentence vectors (the BERT row).
* **Loss** (`musemb.objectives.bidirectional`): `loss.kind=bidirectional` is eqs. (6)-(9), margin
  0.05, K = 10 in-batch negatives per true pair with same-album items masked out, weights
  `loss.weights` = lambda_1..lambda_4 (Table 1's uni-directional row sets lambda_2 = 0, the
  paper's "lambda_1 = 1, lambda_2 = 0"; no neighbourhood constraints sets lambda_3 = lambda_4 = 0);
  `loss.kind=infonce` is the symmetric contrastive loss with a learned temperature (beyond the
  paper), on the same branches and batches. Adam 1e-3, batches of 128 (section 6.2).
* **Evaluation** (`evaluation.py`): review -> album over all albums of the split, album -> review
  the other way, recall@1/5/10, MRR, median rank and exact chance levels; validation on the valid
  albums with `train.eval_metric` (review -> album MRR by default).
* **Baselines** (the `rush_baselines` system, `musemb/systems/rush_baselines/`): CCA with latent
  sizes 50 and 100 between the same audio features and a fixed text representation, on the same
  split.
* **Report** (`report.py`): per run metrics with chance and the nearest reviews of a few test
  albums; `compare` writes Table 1's shape over several runs and the baselines.
* **Query** (`predictor`): an audio clip's nearest reviews and a text's nearest albums.

Known departures of the authors' code (noah-rush/Joint-Music-Text-Embeddings), not reproduced:
it feeds only the 169 MFCC covariance values, counts one negative unless neighbourhood sampling is
on, splits by descriptor file (albums leak across splits) and never masks same-album negatives;
this system does what the paper describes.

`write_outputs` writes `index.npz` (every album, item and review of the dataset, embedded),
`test_ranks.npz`, `nearest.json` (the report's examples) and `info.json` (what `init` needs).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import features as features_lib
from musemb import utils
from musemb.objectives import bidirectional
from musemb.systems import System
from musemb.systems.rush import data as rush_data
from musemb.systems.rush import evaluation
from musemb.systems.rush import model as rush_model
from musemb.systems.rush import report
from musemb.text import tokenize as tokenize_lib
from musemb.text import vocabulary as vocabulary_lib

LOSSES = ("bidirectional", "infonce")
load_data = rush_data.load_data


def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> dict:
  """{"params": {"net"[, "log_scale"]}, "batch_stats": ...} from silent inputs."""
  if config.loss.kind not in LOSSES:
    raise ValueError(f"config.loss.kind={config.loss.kind!r}; expected one of {LOSSES}.")
  net = rush_model.make_model(config, info)
  v = net.init({"params": rng}, *rush_model.dummy_inputs(config, info), train=False)
  params = {"net": v["params"]}
  if config.loss.kind == "infonce":
    params["log_scale"] = jnp.asarray(bidirectional.INIT_LOG_SCALE, jnp.float32)
  return {"params": params, "batch_stats": v.get("batch_stats", {})}


def _batch_inputs(batch: dict, tables: dict):
  """The batch's audio rows and text inputs, from the device tables or the batch itself."""
  if "audio" in batch:
    return batch["audio"], batch["text"], batch.get("text_lengths")
  lengths = tables["text_lengths"][batch["review"]] if "text_lengths" in tables else None
  return tables["audio"][batch["item"]], tables["text"][batch["review"]], lengths


def loss(variables: dict, batch: dict, tables: dict, rng: jax.Array,
         config: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
  """Eqs. (6)-(9) (or InfoNCE) over the batch's (audio item, review) pairs."""
  audio, text, lengths = _batch_inputs(batch, tables)
  net = rush_model.make_model(config, rush_model.shapes_info(variables, audio, text))
  variables_in = {"params": variables["params"]["net"]}
  if variables.get("batch_stats"):
    variables_in["batch_stats"] = variables["batch_stats"]
  (audio_emb, text_emb), updates = net.apply(variables_in, audio, text, lengths, train=True,
                                             mutable=["batch_stats"])
  album = batch["album"]
  if config.loss.kind == "infonce":
    value, terms = bidirectional.infonce_loss(audio_emb, text_emb, album,
                                              variables["params"]["log_scale"])
  else:
    value, terms = bidirectional.bidirectional_loss(
        audio_emb, text_emb, album, rng, weights=tuple(config.loss.weights),
        margin=float(config.loss.margin), num_negatives=int(config.loss.num_negatives),
        mining=config.loss.mining, positives=config.loss.positives)
  aux = {f"loss/{k}": v for k, v in terms.items() if "/" not in k}
  aux["model_state"] = {"batch_stats": updates.get("batch_stats", {})}
  return value, aux


def embed_split(variables: Any, data: rush_data.ReviewData, config: ml_collections.ConfigDict,
                split: str) -> tuple[np.ndarray, np.ndarray]:
  """(item embeddings [T, 128], review embeddings [R, 128]) of a split."""
  s = data.splits[split]
  items = rush_model.embed_audio(variables, config, data.info, s.audio)
  text, lengths = s.text_inputs()
  return items, rush_model.embed_text(variables, config, data.info, text, lengths)


def _split_metrics(variables, data, config, split):
  s = data.splits[split]
  items, reviews = embed_split(variables, data, config, split)
  dist = evaluation.album_distances(reviews, items, s.albums.track_album, s.num_albums)
  metrics, ranks = evaluation.retrieval_metrics(dist, s.albums.review_album)
  return metrics, ranks, dist, items, reviews


def evaluate(variables: Any, data: rush_data.ReviewData, config: ml_collections.ConfigDict,
             split: str) -> dict[str, float]:
  """Validation: both retrieval directions on the split's albums."""
  return _split_metrics(variables, data, config, split)[0]


def _nearest_examples(dist, split: rush_data.SplitData, count: int, top: int) -> list[dict]:
  """The `top` reviews nearest `count` test albums spread over the album order."""
  albums = split.albums
  picks = np.unique(np.linspace(0, split.num_albums - 1, min(count, split.num_albums)).astype(int))
  out = []
  for a in picks:
    album = albums.albums[a]
    out.append({"album": album.id, "title": album.title, "artist": album.artist,
                "own_reviews": int(np.sum(albums.review_album == a)),
                "nearest": [{"review_id": albums.reviews[r].id, "distance": d,
                             "album": albums.albums[albums.review_album[r]].id,
                             "own": bool(albums.review_album[r] == a),
                             "text": albums.reviews[r].text}
                            for r, d in evaluation.nearest_reviews(dist, int(a), top)]})
  return out


def write_outputs(variables: Any, data: rush_data.ReviewData, config: ml_collections.ConfigDict,
                  workdir: str) -> dict[str, float]:
  """Final evaluation on `config.eval.split` (see the module docstring for the files).

  Metrics: `review_to_album/{r@1,r@5,r@10,mrr,median_rank,num_queries}`, the same for
  `album_to_review/`, each direction's `chance/{r@1,r@5,r@10,mrr,median_rank}`, `num_albums`,
  `num_reviews`.
  """
  split = config.eval.split
  if split not in data.splits:
    raise ValueError(f"config.eval.split={split!r} has no albums (splits: {sorted(data.splits)}).")
  metrics, ranks, dist, _, _ = _split_metrics(variables, data, config, split)
  if jax.process_index() == 0:
    index: dict[str, list] = {k: [] for k in (
        "album_ids", "album_titles", "album_artists", "album_splits", "item_ids", "item_album",
        "item_embeddings", "review_ids", "review_texts", "review_album", "review_embeddings")}
    for name, s in data.splits.items():
      items, reviews = embed_split(variables, data, config, name)
      base = len(index["album_ids"])
      index["album_ids"] += [a.id for a in s.albums.albums]
      index["album_titles"] += [a.title or "" for a in s.albums.albums]
      index["album_artists"] += [a.artist or "" for a in s.albums.albums]
      index["album_splits"] += [name] * s.num_albums
      index["item_ids"] += list(s.albums.track_ids)
      index["item_album"].append(s.albums.track_album + base)
      index["item_embeddings"].append(items)
      index["review_ids"] += [r.id for r in s.albums.reviews]
      index["review_texts"] += [r.text for r in s.albums.reviews]
      index["review_album"].append(s.albums.review_album + base)
      index["review_embeddings"].append(reviews)
    arrays = {k: (np.concatenate(v) if k in ("item_album", "item_embeddings", "review_album",
                                             "review_embeddings") else np.array(v, str))
              for k, v in index.items()}
    utils.save_npz_atomic(os.path.join(workdir, "index.npz"), arrays)
    utils.save_npz_atomic(os.path.join(workdir, "test_ranks.npz"), ranks)
    utils.write_json_atomic(os.path.join(workdir, "nearest.json"), _nearest_examples(
        dist, data.splits[split], int(config.eval.num_examples), 3))
    utils.write_json_atomic(os.path.join(workdir, "info.json"), {
        k: v for k, v in data.info.items() if k != "feature_names"})
  logging.info("rush %s metrics:\n%s", split, "\n".join(f"  {k}: {v:.4f}"
                                                       for k, v in sorted(metrics.items())))
  return metrics


class RushPredictor:
  """A finished run's index (every album and review, embedded) and its two branches.

  `analyze(waveform)` computes the clip's descriptor vector as the run's data were (the saved
  `DescriptorConfig` and training statistics) and lists the nearest reviews with their albums and
  distances; `search(text)` embeds free text with the run's vocabulary and text branch and lists
  the nearest albums (by their nearest item). Runs on precomputed sentence features cannot embed
  new text (`searches_text` False).
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               restore: Callable[[dict], Any]):
    for name in ("index.npz", "info.json", "standardizer.json"):
      if not os.path.exists(os.path.join(workdir, name)):
        raise FileNotFoundError(f"{workdir} lacks {name}: not a finished rush run (train it with "
                                "python -m launch.train --config=configs/rush.py:... first).")
    self.workdir, self.config, self._restore = workdir, config, restore
    with open(os.path.join(workdir, "info.json")) as f:
      self.info = json.load(f)
    with np.load(os.path.join(workdir, "index.npz")) as z:
      self.index = {k: z[k] for k in z.files}
    self.standardizer = features_lib.Standardizer.load(os.path.join(workdir, "standardizer.json"))
    self.descriptors = features_lib.DescriptorConfig.from_dict(self.info["descriptor_config"])
    self.sample_rate = int(self.descriptors.sample_rate)
    self.searches_text = config.model.text != "features"
    self.vocab = (vocabulary_lib.Vocabulary.load(os.path.join(workdir, "vocabulary.json"))
                  if self.searches_text else None)
    self._variables = None

  def load(self) -> Any:
    if self._variables is None:
      self._variables = self._restore(self.info)
    return self._variables

  def _album(self, a: int) -> dict[str, Any]:
    return {"album": str(self.index["album_ids"][a]), "title": str(self.index["album_titles"][a]),
            "artist": str(self.index["album_artists"][a]),
            "split": str(self.index["album_splits"][a])}

  def analyze(self, waveform: np.ndarray, top: int) -> dict[str, Any]:
    wave = np.asarray(waveform, np.float32).reshape(-1)
    if self.descriptors.n_frames(len(wave)) < 3:
      raise ValueError(f"the clip has {len(wave)} samples at {self.sample_rate} Hz: too short for "
                       "a descriptor vector (3 frames).")
    vector = np.asarray(features_lib.audio_descriptors(wave[None], self.descriptors))
    emb = rush_model.embed_audio(self.load(), self.config, self.info, self.standardizer(vector))
    d = np.linalg.norm(self.index["review_embeddings"] - emb, axis=1)
    rows = np.argsort(d, kind="stable")[:top]
    return {"reviews": [{**self._album(int(self.index["review_album"][r])),
                         "review_id": str(self.index["review_ids"][r]), "distance": float(d[r]),
                         "text": str(self.index["review_texts"][r])} for r in rows]}

  def search(self, text: str, top: int) -> dict[str, Any]:
    if not self.searches_text:
      raise ValueError("this run reads precomputed sentence features and cannot embed new text.")
    encoded = self.vocab.encode([text], int(self.info["max_length"]))
    known = [w for w in self.vocab.decode(encoded.ids[0], int(encoded.lengths[0]))
             if w != vocabulary_lib.UNK]
    if int(encoded.lengths[0]) == 0 or not known:
      raise ValueError(f"no word of {text!r} is in the run's vocabulary.")
    emb = rush_model.embed_text(self.load(), self.config, self.info, encoded.ids, encoded.lengths)
    dist = evaluation.album_distances(emb, self.index["item_embeddings"],
                                      self.index["item_album"], len(self.index["album_ids"]))[0]
    rows = np.argsort(dist, kind="stable")[:top]
    out = {"words": known, "albums": [{**self._album(int(a)), "distance": float(dist[a])}
                                      for a in rows]}
    # Words the vocabulary lacks read as <unk> (as in training); launch.predict names them.
    oov = [w for w in tokenize_lib.tokenize(text) if w not in self.vocab.index]
    if oov:
      out["oov"] = oov
    return out


def predictor(workdir: str, config: ml_collections.ConfigDict, restore: Callable[[dict], Any]
              ) -> RushPredictor:
  """The run from its workdir alone (`index.npz`, `info.json`, statistics, vocabulary, best
  checkpoint): no dataset needed."""
  return RushPredictor(workdir, config, restore)


SYSTEM = System(
    name="rush", load_data=load_data, init=init, loss=loss, evaluate=evaluate,
    write_outputs=write_outputs, report=report.write_report, compare=report.compare_runs,
    predictor=predictor)
