r"""Weighted matrix factorisation (Hu, Koren & Volinsky 2008) of listening data: the latent factors
of Platt's thesis (`004_*` paper, chapter 5), fitted by `musemb.systems.wmf` through `launch.wmf` (or `launch.train`).

Every key is declared here with a default that runs on the built-in synthetic world's listeners:

  python -m launch.wmf --config=configs/wmf.py --workdir=workdirs/wmf             # demo world
  python -m launch.wmf --config=configs/wmf.py:tiny --workdir=/tmp/w              # seconds, for tests
  python -m launch.wmf --config=configs/wmf.py:taste_profile --workdir=W \
      --config.data.path=data/msd/train_triplets.txt                              # Taste Profile
  python -m launch.wmf --config=configs/wmf.py:lfm1b --workdir=W \
      --config.data.path=data/LFM-1b                                              # LFM-1b folder
  python -m launch.wmf --config=configs/wmf.py:lfm1b_msd --workdir=W --config.data.path=data/LFM-1b \
      --config.data.msd_catalogue=data/msd/unique_tracks.txt \
      --config.proxy.lastfm_tags=data/msd/lastfm_tags.db                          # the thesis' factors

Variants: `tiny` (test size), `demo` (the world `make demo` uses), `taste_profile` (the Echo Nest
Taste Profile triplets), `lfm1b` (LFM-1b listening events counted per (user, track) on its 2M
most-played tracks, with the 40 factors and 40 iterations of the thesis' Tables 5.1-5.4),
`lfm1b_msd` (the thesis' final factors, chapter 5.7: LFM-1b matched to MSD track ids, duplicates
merged, plus the 2M most-played LFM-1b tracks, 80 factors, 80 iterations: the factors the
SampleCNN regresses from MSD audio, with the chapter-5 proxy task on Last.fm tags;
`--config.data.top_n_tracks=0` keeps the matched tracks only, Table 5.2's first row). `key=value`
items (`configs.common.parse_arg`) override the common knobs: `factors=`, `iterations=`, `alpha=`,
`reg=`, `solver=cg|exact`, `confidence=linear|log`, `top_n=` (data.top_n_tracks). WMF is fitted by
alternating least squares, not the gradient loop (`musemb.systems.wmf`), so it reads none of the
loop's keys.

The factors other systems read (`<workdir>/factors.npz`) are fitted on all plays, as the thesis'
are (§6.2.1). The held-out metrics (recall@50, mAP@500 of 20% of each user's pairs) need factors
that never saw those pairs: `eval.heldout_fit=True` fits a second model on the other 80%
(`<workdir>/heldout_factors.npz`), at the cost of a second fit. It is on for the built-in world and
the Taste Profile (the MSD challenge's data and metric), off for the LFM-1b variants, whose tables
(5.1-5.5) report the proxy-task AUC only; there the report says the held-out metrics were omitted.

A rerun with the same workdir resumes each fit from its last saved iteration.
"""

from __future__ import annotations

import ml_collections

from configs import common

SOURCES = ("synthetic", "taste_profile", "lfm1b", "lfm1b_msd")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.system = "wmf"
  c.seed = 0                       # factor initialisation

  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"      # synthetic | taste_profile | lfm1b | lfm1b_msd
  # taste_profile: the train_triplets.txt file; lfm1b: the folder holding LFM-1b_LEs.txt and
  # LFM-1b_tracks.txt. Unused for synthetic.
  c.data.path = ""
  # The MSD's unique_tracks.txt: needed by lfm1b_msd (matching), optional for taste_profile (song
  # ids -> track ids, so the factors join MSD audio prepared by `launch.prepare --source=msd`).
  c.data.msd_catalogue = ""
  # Keep the N most-played tracks (0 = all). lfm1b_msd keeps them on top of the matched ones: the
  # thesis' final factors, "the matched tracks plus the top 2 million" (chapter 5.3).
  c.data.top_n_tracks = 0
  c.data.synthetic_size = "demo"   # tiny | demo | small | large
  c.data.synthetic_seed = 0

  c.wmf = ml_collections.ConfigDict()
  c.wmf.factors = 64               # f
  c.wmf.regularization = 0.01      # lambda
  c.wmf.alpha = 40.0               # Hu et al.'s confidence scale
  c.wmf.confidence = "linear"      # linear: 1 + alpha*count | log: 1 + alpha*log(1 + count/eps)
  c.wmf.eps = 1.0                  # count scale of the log confidence
  c.wmf.iterations = 15
  c.wmf.solver = "cg"              # cg (warm-started, Takacs et al. 2011) | exact (Cholesky)
  c.wmf.cg_steps = 3
  # [rows, width] cells per fixed-shape chunk: 2^13 keeps the gathered [rows, width, f] block (2 MiB
  # at f=64) in a CPU's cache; 2^14 and 2^15 measured slower on 2 cores. Raise it on accelerators.
  c.wmf.chunk_cells = 1 << 13
  c.wmf.num_devices = 0            # 0 = all visible devices
  # Hosts without an accelerator: the WMF launchers give JAX this many CPU devices (one thread
  # each) and the fit shards its rows over them (0 = one per core, at most 8). On 2 cores, 2
  # devices ran an iteration of launch.benchmarks.als 15-20% sooner than 1 (stop 25).
  c.wmf.cpu_devices = 0

  c.eval = ml_collections.ConfigDict()
  # A second fit, on the plays minus the held-out pairs, for recall@k / mAP@n (the factors.npz fit
  # sees every play, so it cannot be judged on held-out ones). False: no held-out metrics.
  c.eval.heldout_fit = True
  c.eval.holdout_fraction = 0.2    # of each user's (user, item) pairs, held out for evaluation
  c.eval.split_seed = 0
  c.eval.recall_k = 50
  c.eval.map_n = 500               # the MSD challenge's mAP@500 (capped at the number of items)
  c.eval.max_users = 0             # evaluate a seeded sample of this many users; 0 = all
  c.eval.user_chunk = 1024         # users ranked at once

  # Chapter 5's proxy task: logistic regression from item factors to tags. The built-in world knows
  # its tags; MSD-keyed items read them from the Last.fm tag database (top-N with score > 50).
  c.proxy = ml_collections.ConfigDict()
  c.proxy.enabled = True
  c.proxy.lastfm_tags = ""         # lastfm_tags.db (tables tids, tags, tid_tag)
  c.proxy.top_n_tags = 50
  c.proxy.min_tag_score = 50.0
  c.proxy.split_seed = 0
  c.proxy.test_fraction = 0.2
  c.proxy.l2 = 1e-4
  c.proxy.steps = 500
  c.proxy.learning_rate = 0.05

  _apply_variants(c, common.parse_arg(
      arg, tiny=False, demo=False, taste_profile=False, lfm1b=False, lfm1b_msd=False, factors=0,
      iterations=0, alpha=0.0, reg=0.0, solver="", confidence="", top_n=0))
  return c


def _apply_variants(c: ml_collections.ConfigDict, v: ml_collections.ConfigDict) -> None:
  if v.tiny:
    c.data.source = "synthetic"
    c.data.synthetic_size = "tiny"
    c.wmf.factors = 8
    c.wmf.iterations = 4
    c.eval.user_chunk = 64
  if v.demo:
    c.data.source = "synthetic"
    c.data.synthetic_size = "demo"
    c.wmf.factors = 32
    c.wmf.iterations = 10
  if v.taste_profile:
    c.data.source = "taste_profile"
    c.wmf.factors = 50
    c.eval.max_users = 20_000
  if v.lfm1b_msd:
    # The thesis' final factors (chapter 5.7): the MSD-matched LFM-1b tracks plus the 2M most
    # played (about 2.3M columns), 80 factors, 80 iterations.
    c.data.source = "lfm1b_msd"
    c.data.top_n_tracks = 2_000_000
    c.wmf.factors = 80
    c.wmf.iterations = 80
    c.eval.heldout_fit = False
    c.eval.max_users = 20_000      # when heldout_fit is turned on: ranking 2.3M items per user
  if v.lfm1b:
    # Tables 5.1-5.4's setting, 40 factors and 40 iterations, on LFM-1b's 2M most-played tracks
    # (its 30M are "too many to practically compute WMF on", chapter 5.3).
    c.data.source = "lfm1b"
    c.data.top_n_tracks = 2_000_000
    c.wmf.factors = 40
    c.wmf.iterations = 40
    c.eval.heldout_fit = False
    c.eval.max_users = 20_000      # when heldout_fit is turned on: ranking 2M items per user
  if v.factors:
    c.wmf.factors = v.factors
  if v.iterations:
    c.wmf.iterations = v.iterations
  if v.alpha:
    c.wmf.alpha = v.alpha
  if v.reg:
    c.wmf.regularization = v.reg
  if v.solver:
    c.wmf.solver = v.solver
  if v.confidence:
    c.wmf.confidence = v.confidence
  if v.top_n:
    c.data.top_n_tracks = v.top_n
