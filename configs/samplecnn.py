r"""SampleCNN from raw audio (Lee et al. 2017): latent-factor regression as in Platt's thesis
(`004_*` paper, chapter 6), or direct auto-tagging (its Table 6.2 baseline).

Every key is declared here; variants pick a scale, `key=value` items the common knobs:

  python -m launch.wmf --config=configs/wmf.py:demo --workdir=workdirs/wmf        # factors first
  python -m launch.train --config=configs/samplecnn.py:demo --workdir=workdirs/samplecnn \
      --config.data.factors=workdirs/wmf --config.data_dir=data                   # regression
  python -m launch.train --config=configs/samplecnn.py:demo,head=tags \
      --workdir=workdirs/samplecnn_tags --config.data_dir=data                    # direct tagging
  python -m launch.train --config=configs/samplecnn.py:msd --workdir=W \
      --config.data_dir=data/msd_prepared --config.data.factors=workdirs/wmf_lfm1b  # the thesis

Variants: `tiny` (tests: six blocks over 2,187 samples, narrow), `demo` (the built-in demo world:
Lee et al.'s nine blocks over 59,049 samples at an eighth of the width, so it trains on 2 CPU
cores in minutes), `msd` (the thesis: full widths, batch 32, SGD with momentum from 0.5 and four
drops by 5 on validation plateaus). `key=value` (`configs.common.parse_arg`): `head=factors|tags`,
`opt=sgd|adam`, `lr=`, `batch=`, `steps=`.
"""

from __future__ import annotations

import ml_collections

from configs import common

# Lee et al.'s nine block widths (musemb.models.samplecnn.LEE_WIDTHS; a test keeps them equal).
LEE_WIDTHS = (128, 128, 256, 256, 256, 256, 256, 256, 512)
HEADS = ("tags", "factors")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base("samplecnn")
  c.data.sample_rate = 16000       # the thesis downsampled to 16 kHz
  c.data.max_seconds = 20.0        # and stored 20 s per track (prepare crops to this)
  c.data.crop_samples = 3 ** 10    # 59,049 samples = 3.7 s, the 3^9 model's input
  # The latent factors to regress: a launch.wmf workdir (or its factors.npz). Needed by the
  # factors head; optional for the tags head.
  c.data.factors = ""

  c.model = ml_collections.ConfigDict()
  c.model.head = "factors"         # factors (MSE to l2-normalised WMF factors) | tags (BCE)
  c.model.widths = LEE_WIDTHS
  c.model.stem_width = 128
  c.model.final_width = 512        # 0 = no final 1x1 convolution
  c.model.dropout = 0.5
  c.model.bn_momentum = 0.99
  c.model.dtype = "float32"        # computation dtype, one of common.MODEL_DTYPES (bfloat16: GPU/TPU)

  c.optimizer.name = "sgd"         # sgd (momentum, Lee et al. / Platt) | adam | adagrad
  c.optimizer.learning_rate = 0.01  # Lee et al.'s start; the thesis started at 0.5 (msd variant)
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True      # as in Lee et al.'s implementation
  c.optimizer.weight_decay = 0.0
  c.optimizer.plateau_drops = 4    # divide the rate by 5 on a validation plateau, 4 times (§6.1)
  c.optimizer.plateau_factor = 0.2

  c.train.batch_size = 32          # the thesis' batch (Lee et al. used 50)
  common.set_steps(c, 200_000)
  c.train.log_every = 100
  c.train.eval_every = 2000
  c.train.eval_metric = "-factors/mse"   # validation loss of the head ("-" = smaller is better)
  c.train.patience = 3             # evaluations without improvement before a drop / the stop
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3

  c.eval.windows = 5               # average the first 5 adjacent crops (18.5 s of 20 s)
  c.eval.batch_size = 8            # tracks per prediction batch (x windows crops)
  c.eval.recommendation = True     # Table 6.1 (factors head)
  c.eval.map_n = 500
  c.eval.user_chunk = 2048
  c.eval.seed = 0                  # random-ranking row
  c.eval.transfer = ml_collections.ConfigDict()   # Table 6.2 (factors head)
  c.eval.transfer.enabled = True
  c.eval.transfer.l2 = 1e-4
  c.eval.transfer.steps = 500
  c.eval.transfer.learning_rate = 0.05

  _apply_variants(c, common.parse_arg(arg, tiny=False, demo=False, msd=False, head="", opt="",
                                      lr=0.0, batch=0, steps=0))
  return c


def _set_head(c: ml_collections.ConfigDict, head: str) -> None:
  if head not in HEADS:
    raise ValueError(f"head={head!r}; expected one of {HEADS}.")
  c.model.head = head
  c.train.eval_metric = "-factors/mse" if head == "factors" else "tags/roc_auc"


def _apply_variants(c: ml_collections.ConfigDict, v: ml_collections.ConfigDict) -> None:
  if v.tiny:
    c.data.synthetic_size = "tiny"
    c.data.max_seconds = 0.0
    c.data.crop_samples = 3 ** 7
    c.model.widths = (8, 8, 16, 16, 16, 32)
    c.model.stem_width = 8
    c.model.final_width = 32
    c.train.batch_size = 8
    common.set_steps(c, 20)
    c.train.log_every = 5
    c.train.eval_every = 10
    c.train.checkpoint_every = 10
    c.eval.windows = 5
    c.eval.batch_size = 8
    c.eval.transfer.steps = 100
  if v.demo:
    # The demo world's clips are 8 s: two whole 59,049-sample windows each.
    c.data.synthetic_size = "demo"
    c.model.widths = tuple(w // 8 for w in LEE_WIDTHS)
    c.model.stem_width = 16
    c.model.final_width = 64
    c.optimizer.learning_rate = 0.05
    c.train.batch_size = 16
    common.set_steps(c, 1500)
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
    c.eval.windows = 2
    c.eval.batch_size = 16
  if v.msd:
    c.data.synthetic_size = ""
    c.optimizer.learning_rate = 0.5   # "We started with a higher learning rate (0.5)"
    c.train.batch_size = 32
  if v.head:
    _set_head(c, v.head)
  if v.opt:
    c.optimizer.name = v.opt
    if v.opt == "adam":
      c.optimizer.learning_rate = 1e-3
  if v.lr:
    c.optimizer.learning_rate = v.lr
  if v.batch:
    c.train.batch_size = v.batch
  if v.steps:
    common.set_steps(c, v.steps)
