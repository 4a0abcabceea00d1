r"""Playlist-based tag propagation for a SampleCNN auto-tagger (Lin, Chung and Chen, `002_*` paper).

The baseline is Lee et al.'s 3^9 SampleCNN trained with eq. (1) (binary cross-entropy on each
song's own tags); the proposed model adds eq. (3)'s supportive cross-entropy on the tags of a
playlist neighbour drawn by the paper's walk, weighted by eq. (4). Every key is declared here;
variants pick a setup, `key=value` items the knobs:

  python -m launch.prepare --source=msd --source_dir=<MSD> --data_dir=data/msd_tagprop \
      --sample_rate=22050 --max_seconds=30 --top_n_tags=1000 --tagged_only \
      --playlists=<aotm2011_playlists.json.gz>                       # once, both setups
  python -m launch.train --config=configs/tagprop.py:top50,baseline --workdir=W/top50_baseline \
      --config.data_dir=data/msd_tagprop
  python -m launch.train --config=configs/tagprop.py:top50 --workdir=W/top50 \
      --config.data_dir=data/msd_tagprop                             # proposed, r = 0.4
  python -m launch.train --config=configs/tagprop.py:top1000 --workdir=W/top1000 \
      --config.data_dir=data/msd_tagprop                             # proposed, r = 0.2
  python -m launch.train --config=configs/tagprop.py:top1000,baseline \
      --workdir=W/top1000_baseline --config.data_dir=data/msd_tagprop
  python -m launch.report --workdir=W/top50 --baselines=W/top50_baseline    # Table I, Figs. 2, 5
  python -m launch.report --workdirs=W/top50_baseline,W/top50,W/top1000_baseline,W/top1000 \
      --out=W/table1.md                                              # both setups in one Table I

Figs. 3-4, the search-range sweep: one proposed run per r in `SEARCH_RANGES` (per setup), then one
comparison with the baseline, which draws each r's difference to the baseline with its interval:

  for r in 0.0 0.2 0.4 0.6 0.8; do                                   # SEARCH_RANGES
    python -m launch.train --config=configs/tagprop.py:top50,r=$r --workdir=W/top50_r$r \
        --config.data_dir=data/msd_tagprop
  done
  python -m launch.report --workdirs=W/top50_baseline,W/top50_r0.0,W/top50_r0.2,W/top50_r0.4,\
W/top50_r0.6,W/top50_r0.8 --out=W/search_range.md                    # + figs3_4_search_range.png

Fig. 6 and Table II (per tag category) come with every report that has a baseline, from the
paper's Table II (`musemb/systems/tagprop/table2_taxonomy.json`), the built-in world's
(`builtin`, the demo's) or a JSON {category: [tags]} of your own, set when training
(`--config.eval.taxonomy=path/to/taxonomy.json`) or when reporting (`launch.report --taxonomy=`).

  make demo-playlists     # the built-in world: baseline, proposed (both heads), r = 0.2 / 0.4 /
                          # 0.8, a search range per category, report

Table I of the paper, for orientation (MSD + AotM-2011; ours depend on the data the run used):
top-50 baseline 0.296 / 0.172 / 0.701 (annotation MAP / retrieval MAP / retrieval AUC), proposed
0.323 / 0.193 / 0.721; top-1000 baseline 0.0948 / 0.0115 / 0.559, proposed 0.119 / 0.0179 / 0.648.

The recipe (§IV.A-B) and where it departs:

* audio at 22,050 Hz (`data.sample_rate`; prepare at that rate, the built-in world included) and
  random training crops of `data.crop_samples` = 3^10 = 59,049 samples (2.68 s). The paper says
  50,000 samples (2.27 s), but the released model it names (tae-jun/sample-cnn, the 3^9 model)
  takes 3^10 samples: each of its ten stride-3 stages divides the length by 3, and 59,049 is what
  reaches exactly one frame, so the crop is what the model needs;
* SGD, learning rate 0.01, momentum 0.9 (Nesterov, as in Lee et al.'s released code);
* "the learning rate was decayed by five once an increase of the validation loss was found" and
  "training was terminated when the validation loss kept increasing for 12 epochs": validation
  every epoch on eq. (1)'s BCE of the validation songs (`train.eval_metric = "-bce"`, smaller is
  better; the same criterion for the baseline and the proposed model), the rate divided by 5
  (`optimizer.plateau_factor`) at every validation that does not improve on the best
  (`train.patience = 1`), the 12th such validation stopping the run (`optimizer.plateau_drops =
  11`). The loop's patience counter restarts after each drop, so the 12 are counted over the
  run, not in a row; after a few drops the rate is too small for the difference to matter.
  `train.epochs` is only a cap;
* the top-50 or top-1000 Last.fm tags (`data.top_n_tags`, applied when the data load: the tags
  carried by the most training songs, ties in the vocabulary's order). Prepare once with
  `--top_n_tags=1000` and both setups read the same dataset;
* the search range r (`objective.r`): 0.4 for 50 tags, 0.2 for 1000 (§V.A);
* per-tag cross-entropies averaged over the tags (`objective.reduction = "mean"`, Keras'
  binary_crossentropy in Lee et al.'s code, with which lr = 0.01 was tuned); eqs. (1) and (3)
  print sums, `"sum"` gives those;
* the paper's single output head (`model.head = "single"`), or a separate supportive head on the
  same features (`"separate"`, the usual multi-task form; evaluated on its own-tag head);
* the batch size is not given in the paper: 32 here.

Variants (`configs.common.parse_arg`): `top50`, `top1000` (the two setups), `baseline` (eq. (1)
alone), `tiny` (tests: six blocks over 2,187 samples on the tiny world, seconds), `demo` (the
built-in demo world: nine blocks at an eighth of Lee et al.'s widths, as configs/samplecnn.py:demo,
a few minutes per run on 2 CPU cores, and the world's own taxonomy), `shortchunk` (Won et al.'s
short-chunk CNN instead of the SampleCNN, beyond the paper; with `tiny` or `demo` a small one);
knobs `head=single|separate`, `r=`, `top_n=`, `lr=`, `batch=`, `epochs=`.

Beyond the paper (its future work, §V.D and §VI):

* a search range per tag category, `--config.objective.category_r=genre=0.8,instrument=0.2` (the
  categories of `eval.taxonomy`; every other tag keeps `objective.r`). One walk per distinct r in
  the step; with no category named the objective is eq. (3) exactly;
* propagation for another network: `configs/tagprop.py:top50,shortchunk` (and `...,baseline,
  shortchunk` for its baseline) trains Won et al.'s short-chunk CNN with the same objective, crops
  of 88,064 samples at 22,050 Hz, and the same SGD recipe (the SMC 2020 code trains it with Adam
  and a hand-made schedule; the point here is the objective, so the optimizer stays the paper's).
"""

from __future__ import annotations

import ml_collections

from configs import common

# Lee et al.'s nine block widths (configs/samplecnn.py keeps them equal to the model's).
LEE_WIDTHS = (128, 128, 256, 256, 256, 256, 256, 256, 512)
# Won et al.'s short-chunk CNN: won_widths(128) of musemb/models/shortchunk.py.
SHORTCHUNK_WIDTHS = (128, 128, 256, 256, 256, 256, 512)
SHORTCHUNK_SAMPLES = 172 * 512   # 173 centred frames at hop 512 (shortchunk.NUM_SAMPLES)
HEADS = ("single", "separate")
MODELS = ("samplecnn", "shortchunk")
# Figs. 3-4: the search ranges of the sweep. The paper's text gives no grid (only the best: 0.4 for
# 50 tags, 0.2 for 1000); steps of 0.2 hold both. r = 0 is the control: the walk never leaves s,
# so the supportive term repeats the own-tag term and no tag is propagated.
SEARCH_RANGES = (0.0, 0.2, 0.4, 0.6, 0.8)
OBJECTIVES = ("supportive", "baseline")
SAMPLE_RATE = 22050


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base("tagprop")
  c.data.sample_rate = SAMPLE_RATE  # "All audio signals were resampled to 22,050 Hz"
  c.data.max_seconds = 0.0         # keep what was prepared (MSD previews: about 30 s)
  c.data.crop_samples = 3 ** 10    # 59,049 samples, the 3^9 model's input (the paper: 50,000)
  c.data.top_n_tags = 0            # keep the N tags carried by the most training songs (0 = all)

  c.model = ml_collections.ConfigDict()
  c.model.name = "samplecnn"       # samplecnn (the paper's) | shortchunk (Won et al.'s, beyond it)
  c.model.head = "single"          # single (the paper) | separate (a second output layer)
  c.model.widths = LEE_WIDTHS
  c.model.stem_width = 128
  c.model.final_width = 512        # 0 = no final 1x1 convolution
  c.model.dropout = 0.5
  c.model.bn_momentum = 0.99
  # model.name = "shortchunk": Won et al.'s short-chunk CNN (musemb/models/shortchunk.py), the
  # SMC 2020 tagging model: log-mel (1024-point FFT, hop 512, 128 bands) inside the network, seven
  # 3x3 conv + 2x2 max-pool layers, dense 512 + BN + ReLU + dropout (model.dropout), dense T.
  # `shortchunk` (the variant) also sets data.crop_samples to its 88,064 samples (173 frames).
  c.model.shortchunk = ml_collections.ConfigDict()
  c.model.shortchunk.widths = SHORTCHUNK_WIDTHS
  c.model.shortchunk.dense_width = 512
  c.model.shortchunk.n_mels = 128
  c.model.shortchunk.n_fft = 1024
  c.model.shortchunk.hop_length = 512
  c.model.shortchunk.bn_momentum = 0.9  # PyTorch's momentum 0.1 in Flax's convention

  c.objective = ml_collections.ConfigDict()
  c.objective.name = "supportive"  # supportive (eq. (3), the proposed) | baseline (eq. (1))
  c.objective.r = 0.4              # the search range: 0.4 for 50 tags, 0.2 for 1000 (§V.A)
  c.objective.reduction = "mean"   # over tags: mean (Lee et al.'s Keras BCE) | sum (as printed)
  # A search range per tag category (beyond the paper, its §V.D future work): comma-separated
  # category=r items over the categories of eval.taxonomy, e.g. "genre=0.8,instrument=0.2"; the
  # tags of a named category are propagated by a walk with its r, all others with objective.r.
  c.objective.category_r = ""

  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True      # Lee et al.'s released code
  c.optimizer.plateau_factor = 0.2  # "decayed by five"
  c.optimizer.plateau_drops = 11   # at each of the first 11 validations that do not improve ...
  c.train.patience = 1             # ... and the 12th stops the run

  c.train.batch_size = 32
  common.set_epochs(c, 200)        # a cap: the validation loss stops the run
  c.train.eval_every = 0
  c.train.eval_every_epochs = 1.0
  c.train.eval_metric = "-bce"     # eq. (1) on the validation songs (smaller is better)
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 2

  c.eval.windows = 10              # average the first 10 adjacent crops (26.8 s of a 30 s clip)
  c.eval.batch_size = 8            # tracks per prediction batch (x windows crops)
  c.eval.popularity_bin = 100      # Fig. 5: tags per popularity bin ("averaged per 100 tags")
  c.eval.max_distance = 10         # Fig. 2: playlist distances up to this
  c.eval.bootstrap_resamples = 2000  # the report's paired bootstrap intervals
  c.eval.bootstrap_seed = 0
  # Table II / Fig. 6 and objective.category_r's categories: a JSON {category: [tags]} file, ""
  # = the paper's Table II, "builtin" = the built-in world's categories (launch.report
  # --taxonomy= overrides it for the report).
  c.eval.taxonomy = ""

  _apply_variants(c, common.parse_arg(arg, tiny=False, demo=False, top50=False, top1000=False,
                                      baseline=False, shortchunk=False, head="", r=-1.0,
                                      top_n=-1, lr=0.0, batch=0, epochs=0.0))
  return c


def _apply_variants(c: ml_collections.ConfigDict, v: ml_collections.ConfigDict) -> None:
  if v.top50 and v.top1000:
    raise ValueError("top50 and top1000 are two setups; pick one.")
  if v.top50:
    c.data.top_n_tags, c.objective.r = 50, 0.4
  if v.top1000:
    c.data.top_n_tags, c.objective.r = 1000, 0.2
  if v.tiny:
    c.data.synthetic_size = "tiny"
    c.data.crop_samples = 3 ** 7
    c.model.widths = (8, 8, 16, 16, 16, 32)
    c.model.stem_width = 8
    c.model.final_width = 32
    c.train.batch_size = 8
    common.set_steps(c, 12)
    c.train.eval_every, c.train.eval_every_epochs = 6, 0.0
    c.train.log_every = 6
    c.train.checkpoint_every = 6
    c.eval.windows = 2
    c.eval.popularity_bin = 5
    c.eval.bootstrap_resamples = 200
  if v.demo:
    # The demo world's clips are 8 s: two whole 59,049-sample windows at 22,050 Hz; 47 tags.
    c.data.synthetic_size = "demo"
    c.model.widths = tuple(w // 8 for w in LEE_WIDTHS)
    c.model.stem_width = 16
    c.model.final_width = 64
    c.optimizer.learning_rate = 0.05   # as configs/samplecnn.py:demo, to train in minutes
    c.train.batch_size = 16
    common.set_epochs(c, 20)         # 450 steps; three runs fit `make demo-playlists`'s 20 min
    c.train.log_every = 50
    c.train.checkpoint_every = 200
    c.eval.windows = 2
    c.eval.batch_size = 16
    c.eval.popularity_bin = 10
    c.eval.taxonomy = "builtin"      # Table II / Fig. 6 over the world's own categories
  if v.shortchunk:
    c.model.name = "shortchunk"
    c.data.crop_samples = SHORTCHUNK_SAMPLES
    if v.tiny:
      # The tiny world's 2.5 s clips at 16 kHz: 4,096 samples are 9 frames; two 4 x 4 layers
      # over 16 mel bands.
      c.data.crop_samples = 8 * 512
      c.model.shortchunk.widths = (4, 4)
      c.model.shortchunk.dense_width = 8
      c.model.shortchunk.n_mels = 16
    if v.demo:
      # An eighth of Won et al.'s widths, as the demo's SampleCNN; 8 s clips hold two crops.
      c.model.shortchunk.widths = tuple(w // 8 for w in SHORTCHUNK_WIDTHS)
      c.model.shortchunk.dense_width = 64
  if v.baseline:
    c.objective.name = "baseline"
  if v.head:
    if v.head not in HEADS:
      raise ValueError(f"head={v.head!r}; expected one of {HEADS}.")
    c.model.head = v.head
  if v.r >= 0:
    c.objective.r = v.r
  if v.top_n >= 0:
    c.data.top_n_tags = v.top_n
  if v.lr:
    c.optimizer.learning_rate = v.lr
  if v.batch:
    c.train.batch_size = v.batch
  if v.epochs:
    common.set_epochs(c, v.epochs)
  if c.objective.name == "baseline" and c.model.head == "separate":
    raise ValueError("baseline,head=separate: the baseline (eq. (1)) trains no supportive head; "
                     "drop head=separate or baseline.")
