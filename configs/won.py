r"""Multimodal metric learning for tag-based music retrieval (Won et al., ICASSP 2021).

A tag branch over word vectors and a song branch over audio (short-chunk CNN), listening data
(WMF item factors) or both, trained with the cosine triplet loss and the paper's samplers; see
`musemb/systems/won.py`. Every key is declared here; variants pick a scale, `key=value` items the
paper's rows:

  python -m launch.wmf --config=configs/wmf.py:demo --workdir=workdirs/wmf       # factors first
  python -m launch.train --config=configs/won.py:demo,sampling=weighted \
      --workdir=workdirs/won_weighted                                           # Table 1, row 3
  python -m launch.train --config=configs/won.py:demo,branch=cultural \
      --workdir=workdirs/won_cul --config.data.factors=workdirs/wmf              # Table 2, Cul
  python -m launch.train --config=configs/won.py:msd,words=data/GoogleNews.bin \
      --workdir=W --config.data_dir=data/msd_prepared --config.data.factors=workdirs/wmf_msd

Variants: `tiny` (tests: the tiny world, four narrow conv layers over 0.37 s crops, small dims),
`demo` (the built-in demo world; narrow (16-channel) seven-layer short-chunk CNN over the paper's
88,064-sample (4 s) chunks, 4 epochs of 10,000 triplets = 1,250 steps of 32; 1.3-2.7 steps/s on
2 shared CPU cores, i.e. 8-13 minutes for the acoustic branch (epochs=2 halves it) and under a
minute for the cultural one, plus about a minute to prepare the world at 22,050 Hz; learning rate
1e-3 instead of the paper's 1e-4 so that the few epochs move), `msd` (the paper's setting: the
full model, batch 128, 200 epochs of 10,000 triplets, on MSD tags prepared at 22,050 Hz with the
source's artist-level split). The MSD data, top-50 (MSD50) or top-100 (MSD100) tags:

  python -m launch.prepare --source=msd --source_dir=<folder with unique_tracks.txt, lastfm_tags.db
      and the previews> --data_dir=data/msd_won --sample_rate=22050 --max_seconds=30 \
      --top_n_tags=50 --tagged_only             # --top_n_tags=100 for MSD100

The training audio is kept on the device (`config.data.max_audio_gb`, 60 here): 80k training
clips of 30 s are about 106 GB of int16, so prepare shorter clips (--max_seconds=10: 35 GB) or
use a device with the memory.
`key=value` items:

  sampling=random|balanced|weighted|cosine   Table 1's rows (+ the authors' code's weighting)
  branch=cultural|acoustic|hybrid|late_fusion   Table 2's columns (+ late fusion, ours)
  words=domain|<path>   word2vec on the dataset's reviews, or a word2vec/GloVe/.npz file
  steps=N, batch=N, epochs=N
"""

from __future__ import annotations

import ml_collections

from musemb.models import shortchunk

# sampling=<name> -> (anchors, negatives): the rows of Table 1 and the authors' code's variant.
SAMPLING = {
    "random": ("random", "random"),
    "balanced": ("balanced", "random"),
    "weighted": ("balanced", "distance_weighted"),
    "cosine": ("balanced", "cosine"),
}
BRANCHES = ("cultural", "acoustic", "hybrid", "late_fusion")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.system = "won"
  c.seed = 0
  # A prepared TFDS dataset (or a folder holding exactly one); "" = the built-in synthetic world,
  # generated and prepared under <workdir>/data on first use.
  c.data_dir = ""

  c.data = ml_collections.ConfigDict()
  c.data.synthetic_size = "demo"   # built-in world size when data_dir is empty
  c.data.synthetic_seed = 0
  c.data.sample_rate = shortchunk.SAMPLE_RATE   # 22,050 Hz, the short-chunk CNN's front end
  c.data.max_seconds = 0.0         # prepare crops clips to this (0 = keep whole clips)
  c.data.crop_samples = shortchunk.NUM_SAMPLES  # 88,064 samples = 173 frames, about 4 s
  # The training split's int16 audio is kept on the device; refuse (with the estimate) above this.
  c.data.max_audio_gb = 8.0
  # WMF item factors (a launch.wmf workdir or its factors.npz), joined by track id: needed by the
  # cultural, hybrid and late_fusion branches.
  c.data.factors = ""

  c.words = ml_collections.ConfigDict()
  c.words.source = "domain"        # domain (word2vec on the dataset's reviews) | file
  c.words.path = ""                # source=file: word2vec .bin/.txt, GloVe .txt, or our .npz
  c.words.oov = "random"           # OOV tags' input vector: random (seeded) | zeros | error
  c.words.dim = 300                # domain word2vec: vector size (the paper's 300)
  c.words.window = 10              # domain word2vec: context window (the paper's 10)
  c.words.min_count = 2            # domain word2vec: rarer words (and phrases) get no vector
  c.words.epochs = 20              # domain word2vec: passes over the (small) corpus
  c.words.phrase_min_count = 3     # domain word2vec: bigrams/trigrams rarer than this stay apart
  # Report only (musemb.report_won, Table 3): a general embedding (e.g. Google News word2vec) shown
  # beside the run's, and the words whose neighbours are listed ("" = zero-shot and best tags).
  c.words.general_path = ""
  c.words.query_words = ""

  c.zero_shot = ml_collections.ConfigDict()
  # Comma-separated tags removed from training and evaluated through their word vectors only.
  # "default": on the built-in world, the rarer word of each synonym pair (synthetic.SYNONYMS) that
  # is a tag of the dataset; elsewhere none. "" = none.
  c.zero_shot.tags = "default"

  c.model = ml_collections.ConfigDict()
  c.model.branch = "acoustic"      # cultural | acoustic | hybrid | late_fusion
  c.model.widths = shortchunk.WON_WIDTHS   # short-chunk CNN conv widths
  c.model.hidden_dim = 512         # every branch's hidden layer (section 2.2)
  c.model.embed_dim = 256          # the shared embedding space
  c.model.dropout = 0.5
  c.model.bn_momentum = shortchunk.TORCH_BN_MOMENTUM
  c.model.late_fusion_weight = 0.5  # late_fusion: acoustic weight of the fused retrieval score

  c.sampling = ml_collections.ConfigDict()
  c.sampling.anchors = "balanced"  # random | balanced | song_uniform (samplers/triplet.py)
  c.sampling.negatives = "distance_weighted"   # random | distance_weighted | cosine
  c.sampling.margin = 0.4          # triplet margin delta (the authors' code)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"        # section 2.2.3: Adam, 1e-4, weight decay 1e-4
  c.optimizer.learning_rate = 1e-4
  c.optimizer.weight_decay = 1e-4

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64          # triplets per step (the paper does not state it)
  c.train.epochs = 200             # section 2.2.3: 200 epochs ...
  c.train.triplets_per_epoch = 10_000   # ... of 10,000 triplets
  c.train.num_steps = _steps(200, 10_000, 64)   # epochs * triplets_per_epoch / batch_size
  c.train.log_every = 50
  c.train.eval_every = 0           # validation every N steps (0 = only at the end)
  c.train.eval_metric = "retrieval/map"
  c.train.patience = 1000          # evaluations without improvement before stopping early
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 2
  c.train.num_devices = 0          # 0 = all visible devices

  c.eval = ml_collections.ConfigDict()
  c.eval.split = "test"
  c.eval.chunks = 8                # a song's embedding: mean over this many evenly spaced chunks
  c.eval.batch_size = 16           # tracks per embedding batch (x chunks crops)
  c.eval.k = 10                    # P@k
  c.eval.taxonomy = ""             # JSON {tag: category} or TSV tag<TAB>category; "" = built-in
  c.eval.multi_tag_max_queries = 300   # tag pairs co-occurring on test songs (most frequent first)
  c.eval.multi_tag_min_songs = 1   # a pair needs this many test songs carrying both tags

  if arg:
    _apply_variants(c, arg)
  return c


def _steps(epochs: int, triplets: int, batch: int) -> int:
  return max(1, int(round(epochs * triplets / batch)))


def _update_steps(c: ml_collections.ConfigDict) -> None:
  c.train.num_steps = _steps(c.train.epochs, c.train.triplets_per_epoch, c.train.batch_size)


def _apply_variants(c: ml_collections.ConfigDict, arg: str) -> None:
  items = [item.strip() for item in arg.split(",") if item.strip()]
  explicit_steps = None
  for item in sorted(items, key=lambda x: "=" in x):
    if "=" in item:
      key, value = item.split("=", 1)
      if key == "sampling":
        if value not in SAMPLING:
          raise ValueError(f"sampling={value!r}; expected one of {sorted(SAMPLING)}.")
        c.sampling.anchors, c.sampling.negatives = SAMPLING[value]
      elif key == "branch":
        if value not in BRANCHES:
          raise ValueError(f"branch={value!r}; expected one of {BRANCHES}.")
        c.model.branch = value
      elif key == "words":
        if value == "domain":
          c.words.source, c.words.path = "domain", ""
        else:
          c.words.source, c.words.path = "file", value
      elif key == "steps":
        explicit_steps = int(value)
      elif key == "batch":
        c.train.batch_size = int(value)
        _update_steps(c)
      elif key == "epochs":
        c.train.epochs = int(value)
        _update_steps(c)
      else:
        raise ValueError(f"unknown config item {key!r} in {arg!r}; use sampling=, branch=, words=, "
                         "steps=, batch= or epochs=, or override any key with "
                         "--config.<key>=<value>.")
    elif item == "tiny":
      c.data.synthetic_size = "tiny"
      c.data.crop_samples = 16 * 512    # 8,192 samples (0.37 s): 17 frames for 4 layers
      c.data.max_audio_gb = 1.0
      c.words.dim = 32
      c.words.min_count = 1
      c.words.epochs = 10
      c.words.phrase_min_count = 2
      c.model.widths = shortchunk.won_widths(8)[:4]
      c.model.hidden_dim = 32
      c.model.embed_dim = 16
      c.optimizer.learning_rate = 1e-3
      c.train.batch_size = 16
      c.train.epochs = 1
      c.train.triplets_per_epoch = 160
      _update_steps(c)
      c.train.log_every = 5
      c.train.eval_every = 5
      c.train.checkpoint_every = 5
      c.eval.chunks = 4
      c.eval.batch_size = 16
      c.eval.multi_tag_max_queries = 50
    elif item == "demo":
      c.data.synthetic_size = "demo"
      c.data.max_audio_gb = 2.0
      c.words.dim = 100
      c.model.widths = shortchunk.won_widths(16)
      c.model.hidden_dim = 256
      c.model.embed_dim = 128
      c.optimizer.learning_rate = 1e-3
      c.train.batch_size = 32
      c.train.epochs = 4
      c.train.triplets_per_epoch = 10_000
      _update_steps(c)
      c.train.log_every = 50
      c.train.eval_every = 250
      c.train.checkpoint_every = 250
      c.eval.batch_size = 8
    elif item == "msd":
      # Top-50 MSD tags (launch.prepare --source=msd) with its artist-level split; full model.
      c.data.synthetic_size = ""
      c.data.max_audio_gb = 60.0
      c.zero_shot.tags = ""
      c.train.batch_size = 128
      c.train.epochs = 200
      _update_steps(c)
      c.train.eval_every = 2000
      c.train.checkpoint_every = 2000
    else:
      raise ValueError(f"unknown variant {item!r} of configs/won.py; expected tiny, demo, msd or "
                       "key=value.")
  if explicit_steps is not None:
    c.train.num_steps = explicit_steps
