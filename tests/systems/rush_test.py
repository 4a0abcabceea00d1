"""Rush et al.'s album retrieval from reviews on the shared loop: data, loss variants, metrics,
report, Table 1, CCA baselines and the predictor (wav and text query)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from musemb import metrics as metrics_lib
from musemb import systems
from musemb import train
from musemb.data.sources import mard
from musemb.data.sources import records
from musemb.data.sources import synthetic
from musemb.systems import rush
from musemb.systems.rush import data as rush_data
from musemb.systems.rush import evaluation
from musemb.systems.rush import report as rush_report

DIRECTIONS = ("review_to_album", "album_to_review")
KEYS = ["r@1", "r@5", "r@10", "mrr", "median_rank", "num_queries"]


def _config(dataset_dir, arg=""):
  from configs import rush as rush_config
  config = rush_config.get_config("tiny" + ("," + arg if arg else ""))
  config.data_dir = dataset_dir
  return config


@pytest.fixture(scope="module")
def runs(tiny_dataset_dir, tmp_path_factory):
  """A tiny main run and the CCA baselines on the same split (seconds each)."""
  root = tmp_path_factory.mktemp("rush")
  main, cca = str(root / "main"), str(root / "cca")
  train.run(_config(tiny_dataset_dir), main)
  config = _config(tiny_dataset_dir, "cca")
  config.data.cache_dir = main          # the main run's descriptor vectors, not a second pass
  train.run(config, cca)
  return main, cca


@pytest.fixture(scope="module")
def features_run(runs, tiny_dataset_dir, tmp_path_factory):
  """A tiny run on precomputed sentence features (mean word2vec of the training reviews), on the
  main run's split and descriptor cache."""
  main, _ = runs
  root = tmp_path_factory.mktemp("rush_features")
  config = _config(tiny_dataset_dir, "text=features")
  config.data.cache_dir = main
  config.text.features_path = str(root / "sentence_features.npz")
  made = rush_data.word2vec_sentence_features(config, main, config.text.features_path)
  workdir = str(root / "features")
  train.run(config, workdir)
  return workdir, made


def test_metrics_keys_and_chance(runs):
  main, cca = runs
  with open(os.path.join(main, "metrics.json")) as f:
    m = json.load(f)
  num_albums, num_reviews = int(m["rush/num_albums"]), int(m["rush/num_reviews"])
  for d in DIRECTIONS:
    for k in KEYS:
      assert f"rush/{d}/{k}" in m
    for k in KEYS[:-1]:
      assert f"rush/{d}/chance/{k}" in m
    assert 0.0 <= m[f"rush/{d}/r@1"] <= m[f"rush/{d}/r@5"] <= m[f"rush/{d}/r@10"] <= 1.0
  # One relevant album among A: chance recall@1 is 1 / A, MRR H_A / A.
  assert m["rush/review_to_album/chance/r@1"] == pytest.approx(1.0 / num_albums)
  harmonic = sum(1.0 / r for r in range(1, num_albums + 1))
  assert m["rush/review_to_album/chance/mrr"] == pytest.approx(harmonic / num_albums)
  assert m["rush/review_to_album/num_queries"] == num_reviews
  with open(os.path.join(cca, "metrics.json")) as f:
    b = json.load(f)
  for name in ("cca_50", "cca_100", "wsabie"):
    assert 0.0 <= b[f"rush_baselines/{name}/review_to_album/r@10"] <= 1.0
    # The baselines are measured on exactly the run's test albums.
    assert b[f"rush_baselines/{name}/num_albums"] == num_albums
    assert b[f"rush_baselines/{name}/review_to_album/chance/r@1"] == pytest.approx(
        1.0 / num_albums)
  for name in ("index.npz", "info.json", "standardizer.json", "vocabulary.json", "nearest.json"):
    assert os.path.exists(os.path.join(main, name))


def test_report_and_table1(runs, tmp_path):
  main, cca = runs
  path = systems.get("rush").report(main, baseline_workdirs=[cca])
  text = open(path).read()
  assert "Review -> album" in text and "Album -> review" in text and "chance" in text
  assert "CCA 50" in text and "WSABIE" in text
  assert "## Nearest test reviews of a few test albums" in text
  assert "**own**" in text or " of " in text
  out = systems.get("rush").compare([main, cca], str(tmp_path / "table1.md"))
  table = open(out).read()
  lines = [line for line in table.splitlines() if line.startswith("| main ")]
  assert len(lines) == 1 and "ranking (6)-(9)" in lines[0]
  assert "| CCA 100" in table and "| WSABIE" in table and "| chance" in table
  assert "19.95" in table                                  # the paper's best row, for orientation
  # The baselines system shares the comparison (launch.report --workdirs requires one).
  assert systems.get("rush_baselines").compare is systems.get("rush").compare


def test_sentence_features_run_reads_the_file_and_says_what_it_holds(runs, features_run,
                                                                     tmp_path):
  main, cca = runs
  workdir, made = features_run
  info_main = json.load(open(os.path.join(main, "info.json")))
  # word2vec saw the training reviews only; every review of every split got a row.
  assert made["train_reviews"] == info_main["split_sizes"]["train"][2]
  assert made["reviews"] == sum(s[2] for s in info_main["split_sizes"].values())
  assert made["texts_without_vectors"] == 0
  m = json.load(open(os.path.join(workdir, "metrics.json")))
  assert m["rush/num_albums"] == json.load(open(os.path.join(main, "metrics.json")))[
      "rush/num_albums"]
  assert 0.0 <= m["rush/review_to_album/mrr"] <= 1.0
  info = json.load(open(os.path.join(workdir, "info.json")))
  assert info["text_features"].endswith(
      f"mean of 100-d word2vec vectors trained on the {made['train_reviews']} training reviews")
  assert not os.path.exists(os.path.join(workdir, "vocabulary.json"))
  table = open(systems.get("rush").compare([main, workdir, cca], str(tmp_path / "t.md"))).read()
  row = [line for line in table.splitlines() if line.startswith(
      "| features: sentence features (precomputed file; here: mean of 100-d word2vec")]
  assert len(row) == 1 and row[0].split("|")[2].strip() == "yes"     # the BERT features column
  assert "Text: sentence features (precomputed file" in open(
      systems.get("rush").report(workdir)).read()
  predictor = train.load_predictor(workdir)
  assert not predictor.searches_text
  with pytest.raises(ValueError, match="precomputed sentence features"):
    predictor.search("warm", top=1)
  assert len(predictor.analyze(synthetic.SyntheticWorld("tiny", seed=0).audio(0), top=2)[
      "reviews"]) == 2


def test_variant_switches():
  from configs import rush as rush_config
  v = rush_report.variant(rush_config.get_config("unidirectional,no_sampling,linear").to_dict())
  assert (v["bidirectional"], v["sampling"], v["nonlinear"], v["constraints"]) == (
      False, False, False, True)
  assert rush_config.get_config("unidirectional").loss.weights[1] == 0.0
  assert rush_config.get_config("no_constraints").loss.weights[2:] == (0.0, 0.0)
  assert rush_report.variant(rush_config.get_config("infonce").to_dict())["loss"] == "InfoNCE"


def test_batches_are_pure_and_have_partners(tiny_dataset_dir, tmp_path):
  data = rush.load_data(_config(tiny_dataset_dir), str(tmp_path))
  a, b = data.train_batch(4), data.train_batch(4)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  _, counts = np.unique(a["album"], return_counts=True)
  assert counts.min() >= 2                                 # neighbourhood sampling
  train_split = data.splits["train"].albums
  # Every pair is a review and an item of one album.
  np.testing.assert_array_equal(train_split.review_album[a["review"]], a["album"])
  np.testing.assert_array_equal(train_split.track_album[a["item"]], a["album"])
  # Whole albums: no album id sits in two splits.
  ids = [set(s.albums.album_ids) for s in data.splits.values()]
  assert sum(len(i) for i in ids) == len(set().union(*ids))
  # z-scored on the training items only.
  np.testing.assert_allclose(data.splits["train"].audio.mean(axis=0), 0.0, atol=1e-4)


def _init_and_loss(config, data):
  """(variables, loss value, aux) of step 0, jitted: a third of the CPU time of eager flax."""
  variables = jax.jit(lambda k: rush.init(config, data.info, k))(jax.random.key(0))
  value, aux = jax.jit(lambda v, b, t, k: rush.loss(v, b, t, k, config))(
      variables, data.train_batch(0), data.tables, jax.random.key(1))
  return variables, value, aux


def test_loss_variants_run(tiny_dataset_dir, tmp_path):
  for arg in ("infonce", "linear,no_sampling", "text=lstm"):
    config = _config(tiny_dataset_dir, arg)
    if arg.startswith("linear"):
      config.data.max_table_gb = 0.0     # tables too big for the device: rows ride in the batch
    data = rush.load_data(config, str(tmp_path))   # one workdir: the descriptors are cached
    assert data.resident == (not arg.startswith("linear"))
    variables, value, aux = _init_and_loss(config, data)
    assert ("log_scale" in variables["params"]) == (arg == "infonce")
    assert np.isfinite(float(value)) and "model_state" in aux
    batch = data.train_batch(0)
    if arg == "text=lstm":            # eqs. 12-14 through the system: [h_bwd ; h_fwd], 512 wide
      encoder = variables["params"]["net"]["text_encoder"]
      assert {"forward_cell", "backward_cell"} <= set(encoder)
      assert variables["params"]["net"]["text_branch"]["hidden"]["kernel"].shape[0] == 512
    if arg.startswith("linear"):
      assert "hidden" not in variables["params"]["net"]["audio_branch"]
      assert not data.tables and batch["audio"].shape == (config.train.batch_size,
                                                          data.info["audio_dim"])


def test_word_vectors_start_the_embedding_table(runs, tiny_dataset_dir, tmp_path):
  main, _ = runs
  rows = {"record": [0.5] * 8, "the": [-1.0, 2.0] * 4, "zzzunseen": [3.0] * 8}
  path = tmp_path / "glove.txt"            # GloVe's text layout: no header line
  path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in rows.items()))
  config = _config(tiny_dataset_dir)
  config.data.cache_dir = main
  config.text.word_vectors = str(path)
  data = rush.load_data(config, str(tmp_path / "w"))
  assert data.info["embed_dim"] == 8 and data.info["embedding_init_found"] == 2
  variables, value, _ = _init_and_loss(config, data)
  table = np.asarray(variables["params"]["net"]["text_encoder"]["embed"]["embedding"])
  assert table.shape == (len(data.vocab), 8)
  for word in ("record", "the"):
    np.testing.assert_array_equal(table[data.vocab.index[word]], rows[word])
  assert np.isfinite(float(value))
  config.text.word_vectors = str(tmp_path / "missing.txt")
  with pytest.raises((FileNotFoundError, ValueError)):
    rush.load_data(config, str(tmp_path / "w2"))


def test_album_distances_take_the_nearest_item():
  reviews = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  items = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], np.float32)
  item_album = np.array([0, 0, 1])
  d = evaluation.album_distances(reviews, items, item_album, 2)
  np.testing.assert_allclose(d, [[0.0, np.hypot(0.4, 0.8)], [0.0, np.hypot(0.6, 0.2)]],
                             atol=1e-6)
  metrics, ranks = evaluation.retrieval_metrics(d, np.array([1, 0]))
  np.testing.assert_array_equal(ranks["review_to_album"], [2.0, 1.0])
  assert metrics["review_to_album/mrr"] == pytest.approx(0.75)
  assert metrics["review_to_album/chance/r@1"] == pytest.approx(0.5)


def test_hold_out_valid_moves_whole_training_albums():
  reviews = [records.Review(id=f"r{i}", track_ids=(f"t{i // 2}",), text="some words here",
                            album=f"a{i // 2}") for i in range(40)]
  data = mard.from_reviews([f"t{i}" for i in range(20)], np.zeros((20, 3), np.float32),
                           ("x", "y", "z"), reviews, test_fraction=0.1, seed=0)
  out = rush_data.hold_out_valid(data, 0.25, seed=0)
  sizes = out.split_sizes()
  assert sizes["test"] == data.split_sizes()["test"]
  assert sizes["valid"][2] >= 0.25 * data.split_sizes()["train"][2]
  assert sizes["valid"][2] + sizes["train"][2] == data.split_sizes()["train"][2]
  assert rush_data.hold_out_valid(out, 0.5, seed=0) is out       # a valid split is kept


def test_predictor_wav_and_text_query(runs, tmp_path, repo_env):
  main, _ = runs
  predictor = train.load_predictor(main)
  wave = synthetic.SyntheticWorld("tiny", seed=0).audio(3)
  out = predictor.analyze(wave, top=3)
  assert len(out["reviews"]) == 3
  distances = [r["distance"] for r in out["reviews"]]
  assert distances == sorted(distances)
  assert all(r["album"] and r["text"] and r["artist"] for r in out["reviews"])
  found = predictor.search("warm acoustic guitar", top=2)
  assert len(found["albums"]) == 2 and "guitar" in found["words"]
  # Words the vocabulary lacks are named (launch.predict prints them on stderr).
  assert set(found["words"]) | set(found.get("oov", [])) == {"warm", "acoustic", "guitar"}
  assert "guitar" not in found.get("oov", [])
  with pytest.raises(ValueError, match="vocabulary"):
    predictor.search("zzzqqq", top=2)
  path = str(tmp_path / "song.wav")
  sf.write(path, wave, 16000)
  proc = subprocess.run([sys.executable, "-m", "launch.predict", f"--workdir={main}", path,
                         "--top=2"], capture_output=True, text=True, env=repo_env(), timeout=120,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  reviews = json.loads(proc.stdout)[path]["reviews"]
  assert len(reviews) == 2 and {"album", "distance", "text"} <= set(reviews[0])
  # The CLI and the library agree on the nearest review.
  assert reviews[0]["review_id"] == out["reviews"][0]["review_id"]


def test_first_rank_metrics_match_hand_values_on_a_run_shape():
  # Guards the keys the report reads: median rank and MRR from ranks [1, 3, 2].
  m = metrics_lib.first_rank_metrics(np.array([1.0, 3.0, 2.0]), evaluation.KS)
  assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3) and m["median_rank"] == 2.0


def _write_mard(root, num_albums=24, reviews_per_album=3) -> str:
  """A MARD folder in the published layout: metadata, reviews (both key spellings), descriptors
  whose MFCC means carry the album's 'genre', so that text and audio share a signal."""
  from musemb import features as features_lib
  rng = np.random.default_rng(0)
  genres = ("jazz", "metal", "folk", "techno")
  os.makedirs(os.path.join(root, mard.DESCRIPTORS_DIR))
  meta, revs = [], []
  for a in range(num_albums):
    amazon_id = f"B{a:05d}"
    genre = genres[a % len(genres)]
    meta.append(json.dumps({"amazon-id": amazon_id, "title": f"Album {a}", "artist": f"A{a}",
                            "root-genre": genre}))
    for k in range(reviews_per_album):
      key = "amazon-id" if k % 2 == 0 else "product-id"
      revs.append(json.dumps({key: amazon_id, "reviewText": f"a {genre} record, take {k}.",
                              "reviewerID": f"u{a}{k}"}))
    vector = rng.standard_normal(features_lib.descriptor_dim()).astype(np.float32)
    vector[a % len(genres)] += 4.0
    with open(os.path.join(root, mard.DESCRIPTORS_DIR, f"{amazon_id}_mbid{a}.json"), "w") as f:
      json.dump(features_lib.descriptors_to_acousticbrainz(vector), f)
  with open(os.path.join(root, mard.METADATA_FILE), "w") as f:
    f.write("\n".join(meta) + "\n")
  with open(os.path.join(root, mard.REVIEWS_FILE), "w") as f:
    f.write("\n".join(revs) + "\n")
  return str(root)


def test_mard_end_to_end(tmp_path):
  from configs import rush as rush_config
  config = rush_config.get_config("tiny,mard")
  config.data.path = _write_mard(tmp_path / "mard")
  config.data.test_fraction = config.data.valid_fraction = 0.25
  workdir = str(tmp_path / "run")
  m = train.run(config, workdir)
  assert m["rush/num_albums"] >= 6 and 0.0 <= m["rush/review_to_album/mrr"] <= 1.0
  with open(os.path.join(workdir, "info.json")) as f:
    info = json.load(f)
  # MARD's vectors are AcousticBrainz's, computed at 44.1 kHz: an upload is analysed at that rate.
  assert info["descriptor_config"]["sample_rate"] == 44100 and info["source"] == "mard"
  predictor = train.load_predictor(workdir)
  assert predictor.sample_rate == 44100
  found = predictor.search("jazz record", top=3)
  assert [a["album"] for a in found["albums"]] and found["albums"][0]["title"].startswith("Album")


def test_wsabie_aligns_held_out_albums_through_their_labels():
  """Albums with a shared latent seen through two noisy linear views: WARP training on 40 albums
  as labels must retrieve 20 unseen albums from their reviews far above chance."""
  from configs import rush as rush_config
  from musemb.systems import rush_baselines
  rng = np.random.default_rng(0)
  mix_a, mix_t = rng.standard_normal((8, 20)), rng.standard_normal((8, 16))

  def views(num_albums):
    z = rng.standard_normal((num_albums, 8))
    item_album, review_album = np.repeat(np.arange(num_albums), 2), np.repeat(
        np.arange(num_albums), 3)
    audio = z[item_album] @ mix_a + 0.3 * rng.standard_normal((len(item_album), 20))
    text = z[review_album] @ mix_t + 0.3 * rng.standard_normal((len(review_album), 16))
    return audio.astype(np.float32), text.astype(np.float32), item_album, review_album

  config = rush_config.get_config("tiny")
  config.baselines.wsabie_steps, config.train.batch_size = 300, 32
  audio, text, item_album, review_album = views(40)
  v_a, v_t = rush_baselines.fit_wsabie(audio, text, item_album, review_album, 40, config)
  audio, text, item_album, review_album = views(20)
  dist = evaluation.album_distances(text @ v_t, audio @ v_a, item_album, 20)
  metrics, _ = evaluation.retrieval_metrics(dist, review_album)
  assert metrics["review_to_album/r@1"] > 5 * metrics["review_to_album/chance/r@1"]


_STEP_SCRIPT = r"""
import json, sys
import jax, numpy as np
from configs import rush as rush_config
from musemb import sharding
from musemb.systems import rush
config = rush_config.get_config("tiny")
config.data_dir = sys.argv[1]
data = rush.load_data(config, sys.argv[2])
variables = rush.init(config, data.info, jax.random.key(0))
mesh = sharding.make_mesh()
batch = sharding.shard_batch(data.train_batch(0), mesh)
tables = sharding.put_replicated(data.tables, mesh)
fn = jax.jit(jax.value_and_grad(lambda p: rush.loss(
    {"params": p, "batch_stats": variables["batch_stats"]}, batch, tables, jax.random.key(1),
    config)[0]))
value, grads = fn(variables["params"])
print(json.dumps({"devices": jax.device_count(), "loss": float(value),
                  "grads": [float(np.abs(np.asarray(g)).sum()) for g in jax.tree.leaves(grads)]}))
"""


@pytest.mark.slow
def test_one_step_is_the_same_on_eight_devices(tiny_dataset_dir, tmp_path, repo_env):
  """The global batch's loss and gradients (K negatives drawn from the whole batch, batch norm over
  it) do not depend on how many devices share the batch."""
  # Both processes at once (each is mostly single-threaded imports and compiles), each with its own
  # workdir so that neither reads the other's half-written descriptor cache.
  procs = [subprocess.Popen(
      [sys.executable, "-c", _STEP_SCRIPT, tiny_dataset_dir, str(tmp_path / f"w{devices}")],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=repo_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"))
           for devices in (1, 8)]
  try:
    results = [proc.communicate(timeout=300) for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  out = []
  for proc, (stdout, stderr) in zip(procs, results):
    assert proc.returncode == 0, stderr[-2000:]
    out.append(json.loads(stdout.strip().splitlines()[-1]))
  assert [o["devices"] for o in out] == [1, 8]
  assert out[1]["loss"] == pytest.approx(out[0]["loss"], rel=1e-5)
  np.testing.assert_allclose(out[1]["grads"], out[0]["grads"], rtol=1e-4)
