r"""Joint text-music embeddings from album reviews (Rush et al., the `003_*` paper).

An audio branch over AcousticBrainz-layout descriptor vectors and a text branch over the reviews,
trained with the bi-directional ranking loss, neighbourhood constraints and neighbourhood
sampling, evaluated by retrieving albums from reviews; see `musemb/systems/rush/`. Every key is
declared here; variants pick a scale, items Table 1's rows:

  python -m launch.train --config=configs/rush.py:demo --workdir=W/main
  python -m launch.train --config=configs/rush.py:demo,no_sampling --workdir=W/no_sampling
  python -m launch.train --config=configs/rush.py:demo,cca --workdir=W/baselines  # CCA, WSABIE
  python -m launch.report --workdirs=W/main,W/no_sampling,W/baselines --out=W/table1.md
  python -m launch.predict --workdir=W/main song.wav
  python -m launch.predict --workdir=W/main --query="warm acoustic guitar"

MARD (the folder of mard_metadata.json, mard_reviews.json and acousticbrainz_descriptors/):

  python -m launch.train --config=configs/rush.py:mard --config.data.path=<MARD> --workdir=W

Variants: `tiny` (tests: the tiny world, short texts, a few steps), `demo` (the built-in world at
size `small`: 480 albums of 4 tracks, 960 reviews; 20% of the reviews held out by album for
testing, 96 albums, and 20% of the rest for validation, 77 albums; the `demo` size's 120 albums
leave 24 test albums, too few to tell variants apart; batches of 64 rather than the paper's 128,
so that the 2,456 training pairs make 38 steps an epoch; 30 epochs with early stopping on
validation MRR; expect review -> album R@10 about 0.86 and MRR about 0.40 against chance 0.10 and
0.05, `make demo-reviews`; with `text=lstm` reviews are padded to 64 tokens and training stops
after 15 epochs, to keep the demo within its budget), `mard` (the paper's setting: 10% of the album-review matches held out,
vocabulary 60,000, reviews cut at 400 tokens, batches of 128).
`cca` makes the run the `rush_baselines` system (CCA 50 and 100 and WSABIE on the same split;
fitted outside the loop). Items (Table 1's switches and the loss variants):

  text=mean|lstm|features   eq. (11), eqs. (12)-(14), or precomputed sentence vectors (the BERT
                            row; needs --config.text.features_path: an .npz of review ids and
                            vectors, `musemb.text.sentence_features`; `make demo-reviews` writes
                            one from word2vec trained on the training reviews, nothing downloaded)
  linear                    one Dense layer per branch (the "non-linear" column off)
  unidirectional            lambda_2 = 0 (the paper's "lambda_1 = 1, lambda_2 = 0")
  no_constraints            lambda_3 = lambda_4 = 0 (no neighbourhood constraints)
  no_sampling               random pairs instead of neighbourhood sampling
  infonce                   the symmetric contrastive loss with a learned temperature
  size=tiny|demo|small|large   the built-in world's size (demo-reviews uses small)
  epochs=N, batch=N, steps=N
"""

from __future__ import annotations

import ml_collections

from configs import common

# lambda_1..lambda_4 (musemb.objectives.bidirectional.DEFAULT_WEIGHTS: Wang et al.'s code's).
WEIGHTS = (1.0, 1.5, 0.05, 0.05)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, tiny=False, demo=False, mard=False, cca=False, text="mean",
                       linear=False, unidirectional=False, no_constraints=False,
                       no_sampling=False, infonce=False, size="", epochs=0.0, batch=0, steps=0)
  c = common.base("rush")
  c.data.source = "synthetic"      # synthetic (the built-in world, or config.data_dir) | mard
  c.data.path = ""                 # mard: the folder of the MARD release
  c.data.split_file = ""           # mard: a split of albums (musemb.data.sources.mard)
  c.data.test_fraction = 0.1       # the paper's 10% of the album-review matches
  c.data.valid_fraction = 0.1      # of the training reviews, whole albums, for early stopping
  c.data.split_seed = 0
  c.data.max_table_gb = 2.0        # training tables above this ride in the batches instead
  c.data.cache_dir = ""            # built-in world: where descriptor vectors are cached ("" = the
                                   # workdir; make demo-reviews shares one folder across its runs)

  c.features = ml_collections.ConfigDict()
  c.features.n_mfcc = 13           # AcousticBrainz's MFCC count (140-value descriptor vectors)

  c.text = ml_collections.ConfigDict()
  c.text.vocab_size = 60000        # section 6.2
  c.text.max_length = 400          # the authors' code's cut
  c.text.features_path = ""        # model.text=features: precomputed sentence vectors
  c.text.word_vectors = ""         # mean/lstm: word2vec/GloVe/.npz vectors (musemb.text.readers)
                                   # that start the word-embedding table (their dim replaces 256)

  c.model = ml_collections.ConfigDict()
  c.model.text = "mean"            # mean | lstm | features
  c.model.linear = False
  c.model.bn_last = True           # batch norm after the last linear layer (the paper's text)
  c.model.bn_hidden = False        # Wang et al.'s code's placement instead

  c.loss = ml_collections.ConfigDict()
  c.loss.kind = "bidirectional"    # bidirectional (eqs. 6-9) | infonce
  c.loss.weights = WEIGHTS
  c.loss.margin = 0.05
  c.loss.num_negatives = 10
  c.loss.mining = "random"         # random | hardest (Wang et al.'s code)
  c.loss.positives = "album"       # album (every item of the album) | pair

  c.sampling = ml_collections.ConfigDict()
  c.sampling.neighbourhood = True  # section 6.2
  c.sampling.group_size = 2

  c.baselines = ml_collections.ConfigDict()
  c.baselines.tfidf_words = 5000   # CCA's text view: TF-IDF of the most frequent words ...
  c.baselines.text_dim = 256       # ... projected to this many LSA dimensions
  c.baselines.cca_reg = 1e-3
  c.baselines.wsabie_dim = 128     # WSABIE's space (the network's 128)
  c.baselines.wsabie_steps = 3000  # WARP steps of train.batch_size items and reviews (0 = skip)
  c.baselines.wsabie_learning_rate = 0.05

  c.optimizer.name = "adam"        # section 6.2
  c.optimizer.learning_rate = 1e-3
  c.train.batch_size = 128
  common.set_epochs(c, 20)         # epochs of training pairs
  c.train.eval_every, c.train.eval_every_epochs = 0, 1.0
  c.train.checkpoint_every = 1000
  c.train.patience = 5
  c.train.eval_metric = "review_to_album/mrr"

  c.eval.num_examples = 5          # test albums whose nearest reviews the report shows

  if a.tiny:
    c.data.synthetic_size = "tiny"
    c.data.test_fraction = c.data.valid_fraction = 0.25
    c.text.max_length = 48
    c.train.batch_size = 16
    common.set_steps(c, 6)
    c.baselines.wsabie_steps = 50
    c.train.eval_every, c.train.eval_every_epochs = 3, 0.0
    c.train.log_every = c.train.checkpoint_every = 3
  if a.demo:
    c.data.synthetic_size = "small"
    c.data.test_fraction = c.data.valid_fraction = 0.2
    c.text.max_length = 96
    c.train.batch_size = 64
    common.set_epochs(c, 30)
    c.train.log_every = 50
  if a.size:
    c.data.synthetic_size = a.size
  if a.mard:
    c.data.source = "mard"
  if a.cca:
    c.system = "rush_baselines"
  if a.text not in ("mean", "lstm", "features"):
    raise ValueError(f"text={a.text!r} in {arg!r}: expected mean, lstm or features.")
  c.model.text = a.text
  if a.demo and a.text == "lstm":
    # The LSTM scans every padded position: 64 covers the built-in world's longest review (60
    # tokens at size small, so nothing is cut), and 15 epochs keep make demo-reviews within its
    # budget on 2 cores (the mean-embedding runs stop early at 15-20 epochs anyway).
    c.text.max_length = 64
    common.set_epochs(c, 15)
  c.model.linear = a.linear
  w = list(WEIGHTS)
  if a.unidirectional:
    w[1] = 0.0
  if a.no_constraints:
    w[2] = w[3] = 0.0
  c.loss.weights = tuple(w)
  c.sampling.neighbourhood = not a.no_sampling
  if a.infonce:
    c.loss.kind = "infonce"
  if a.batch:
    c.train.batch_size = a.batch
  if a.epochs:
    common.set_epochs(c, a.epochs)
  if a.steps:
    common.set_steps(c, a.steps)
  return c
