r"""MUSLSE (Weston, Bengio, Hamel 2011): audio, artists and tags in one linear embedding space.

Every key is declared here with a default that runs on the built-in synthetic world. Variants pick a
data set / paper table row; `key=value` items override the most common knobs:

  python -m launch.train --config=configs/muslse.py --workdir=workdirs/muslse
  python -m launch.train --config=configs/muslse.py:tiny --workdir=/tmp/m          # seconds, for tests
  python -m launch.train --config=configs/muslse.py:tagatune,d=400 --workdir=W \
      --config.data_dir=data/mtat                                                  # Table 2 row
  python -m launch.train --config=configs/muslse.py:loss=auc,d=100 --workdir=W    # Table 3 row
  python -m launch.train --config=configs/muslse.py:tasks=artist_prediction --workdir=W  # Table 6 row

Variants: `tiny` (test size), `demo` (the world `make demo` uses), `tagatune` (MagnaTagATune: tag
prediction only, as in Tables 2-5), `bigdata` (artist/song/similar-song tasks of Table 6).
`key=value` items (applied after the named variants, parsed by `configs.common.parse_arg`):
`d=<total dim>` (d > 100 as an ensemble of d/100 members of 100, the paper's recipe;
`--config.model.embed_dim` sets a single model's d), `loss=warp|warp_exact|auc`,
`tasks=<name>+<name>...`, `ensemble=<members>`, `opt=sgd|adagrad`, `mode=random|sum`,
`steps=<N>`.

Expected on the demo world (`make demo`, ~5 min on 2 CPU cores): MUSLSE beats one-vs-rest on tag
prediction p@3 and cosine similarity on similar songs; README "Reproducing the tables" has the numbers.
"""

from __future__ import annotations

import ml_collections

from configs import common

ALL_TASKS = ("artist_prediction", "song_prediction", "similar_songs", "tag_prediction",
             "similar_artists")
# The accepted items of the variant string (configs.common.parse_arg); one_vs_rest shares them.
VARIANTS = dict(tiny=False, demo=False, tagatune=False, bigdata=False, d=0, loss="", tasks="",
                ensemble=0, opt="", mode="", steps=0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base("muslse")
  apply_variants(c, common.parse_arg(arg, **VARIANTS))
  return c


def base(system: str) -> ml_collections.ConfigDict:
  """Every key of a bag-of-frames system (MUSLSE and its one-vs-rest baseline), MUSLSE's defaults."""
  c = common.base(system)
  c.data.sample_rate = 16000
  c.data.max_seconds = 30.0        # crop long tracks when preparing the built-in world
  c.data.split_seed = 0            # similar-artist edge split, per-artist song samples

  # Bag-of-frames (§6.2): 13 MFCC + deltas every 10 ms over 25 ms Hamming windows, k-means codebook.
  c.features = ml_collections.ConfigDict()
  c.features.n_codewords = 2000
  c.features.kmeans_frames = 200_000
  c.features.kmeans_steps = 300
  c.features.n_mels = 40
  c.features.standardize = True
  c.features.normalize = "l2"      # song vector s: l2 | l1 | none (scale of counts; see muslse)
  c.features.seed = 0              # k-means; apart from `seed` so a seed sweep reuses the features

  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 100          # d
  c.model.max_norm = 1.0           # C of constraints (1)-(3)
  c.model.ensemble = 1             # M members trained together (vmap); scores summed at test time

  c.loss = ml_collections.ConfigDict()
  c.loss.kind = "warp"             # warp (sampled rank) | warp_exact | auc (eq. 9)
  c.loss.alpha = "harmonic"        # L(r) weights: harmonic (1/i) | ones | top_k
  c.loss.top_k = 10                # for alpha=top_k
  c.loss.margin = 1.0
  c.loss.budget = 256              # WARP: candidates drawn per block (capped at 2Y); AUC: per step
  c.loss.max_draws = 0             # WARP: 0 = Algorithm 1 (blocks until a violator or Y-1
                                   # negatives); N > 0 truncates after N draws (faster, under-weights
                                   # the top of the ranking when Y >> N; samplers/warp.py)

  c.tasks = ml_collections.ConfigDict()
  c.tasks.names = ",".join(ALL_TASKS)   # tasks a source lacks data for are skipped with a log line
  c.tasks.mode = "random"          # random: one task per step (§4.1) | sum: all tasks every step
  c.tasks.weights = ml_collections.ConfigDict({t: 1.0 for t in ALL_TASKS})

  c.optimizer.name = "sgd"         # sgd (fixed rate, as in the paper) | adagrad
  c.optimizer.learning_rate = 0.01

  c.train.batch_size = 64          # examples per step; the loss is summed, so each acts as an SGD step
  common.set_steps(c, 6000)
  c.train.log_every = 200
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.patience = 4             # evaluations without improvement before stopping (Algorithm 1)
  c.train.eval_metric = "mean_p@3" # validation metric: mean p@3 over tasks, or "<task>/p@k"

  c.eval.ks = (1, 3, 6, 9, 12, 15)
  c.eval.query_chunk = 1024
  c.eval.item_chunk = 0            # 0 = rank all items of a query chunk at once
  return c


def set_dim(c: ml_collections.ConfigDict, d: int) -> None:
  """The paper's recipe (§4.2): d > 100 is an ensemble of d/100 members of dimension 100."""
  if d > 100 and d % 100 == 0:
    c.model.embed_dim, c.model.ensemble = 100, d // 100
  else:
    c.model.embed_dim, c.model.ensemble = d, 1


def apply_variants(c: ml_collections.ConfigDict, v: ml_collections.ConfigDict, *,
                   tune_optimizer: bool = True) -> None:
  """Named variants (in the order tiny, demo, tagatune, bigdata), then the key=value knobs.

  `tune_optimizer=False` (one-vs-rest) keeps the caller's optimizer under the `demo` variant,
  whose Adagrad setting was tuned for MUSLSE."""
  if v.tiny:
    c.data.synthetic_size = "tiny"
    c.features.n_codewords = 32
    c.features.kmeans_frames = 20_000
    c.features.kmeans_steps = 50
    c.model.embed_dim = 16
    c.loss.budget = 32
    c.train.batch_size = 16
    common.set_steps(c, 40)
    c.train.log_every = 10
    c.train.eval_every = 20
    c.train.checkpoint_every = 20
    c.eval.query_chunk = 64
  if v.demo:
    c.data.synthetic_size = "demo"
    if tune_optimizer:
      # Tuned on the demo world's validation split (README, "Reproducing the tables"): Adagrad
      # reached higher validation p@3 than SGD at any fixed rate tried (0.005-0.2).
      c.optimizer.name = "adagrad"
      c.optimizer.learning_rate = 0.1
  if v.tagatune:
    # MagnaTagATune (Tables 2-5): tag prediction only, d = 400 as 4 x 100 (Table 2's MUSLSE row);
    # point --config.data_dir at the prepared set.
    c.tasks.names = "tag_prediction"
    set_dim(c, 400)
    c.train.eval_metric = "tag_prediction/p@3"
    common.set_steps(c, 200_000)
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 10_000
  if v.bigdata:
    c.tasks.names = "artist_prediction,song_prediction,similar_songs"
    c.train.eval_metric = "mean_p@3"
  if v.d:
    set_dim(c, v.d)
  if v.loss:
    c.loss.kind = v.loss
  if v.tasks:
    c.tasks.names = v.tasks.replace("+", ",")
  if v.ensemble:
    c.model.ensemble = v.ensemble
  if v.opt:
    c.optimizer.name = v.opt
  if v.mode:
    c.tasks.mode = v.mode
  if v.steps:
    common.set_steps(c, v.steps)
