"""Tests of musemb/models/shortchunk.py and branches.py: Won et al.'s short-chunk CNN, branches."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musemb import features
from musemb.models import branches
from musemb.models import shortchunk

# A 256-point, 32-mel front end: 44 * 128 samples -> 45 frames. Three layers (4, 4, 8) pool that
# to 5 x 4; most tests use one layer, since each conv layer adds about a second of compilation.
_MEL = shortchunk.MelConfig(n_fft=256, hop_length=128, n_mels=32)
_N = 44 * 128
_SMALL_CNN = dict(widths=(4, 4, 8), mel=_MEL, num_samples=_N)
_TINY_CNN = dict(widths=(4,), mel=_MEL, num_samples=_N)


def _small(num_outputs: int | None = 5, **kw) -> shortchunk.ShortChunkCNN:
  return shortchunk.ShortChunkCNN(num_outputs=num_outputs, **{**_SMALL_CNN, "dense_width": 8, **kw})


def _init(model, *args):
  return jax.jit(model.init)(jax.random.key(0), *args)


def _init_with_output(model, *args):
  """Init and the eval-mode forward pass in one compilation: (output, variables, intermediates).

  Sown values are tuples in Flax; they are unwrapped here (`inter["cnn"]["hidden"]` is an array).
  """
  init = functools.partial(model.init_with_output, mutable=True)  # init skips intermediates
  out, variables = jax.jit(init)(jax.random.key(0), *args)
  variables = dict(variables)

  def unwrap(tree):
    return {k: v[0] if isinstance(v, tuple) else unwrap(v) for k, v in tree.items()}
  return out, variables, unwrap(variables.pop("intermediates", {}))


def _audio(batch: int, n: int = _N, seed: int = 1) -> jax.Array:
  return 0.3 * jax.random.normal(jax.random.key(seed), (batch, n))


def test_front_end_is_features_log_mel_with_won_settings(librosa):
  # Default front end (22,050 Hz, 1024-point FFT, hop 512, 128 mels) before a 1-layer CNN.
  model = shortchunk.ShortChunkCNN(num_outputs=3, widths=(2,), dense_width=4, num_samples=None)
  n = 8192 + 300
  audio = _audio(2, n)
  _, _, inter = _init_with_output(model, audio)
  got = inter["log_mel"]
  frames = 1 + n // 512  # centred STFT: n + 2 * 512 padded samples, hop 512
  assert got.shape == (2, frames, 128) == (2, 17, 128)
  assert shortchunk.MelConfig().n_frames(n) == features.n_stft_frames(n, 1024, 512) == frames
  ref = features.log_mel(audio, 22050, n_fft=1024, hop_length=512, n_mels=128, top_db=None)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)
  # And the dB spectrogram librosa computes from the same samples (torchaudio-style: no top_db).
  lib = librosa.power_to_db(
      librosa.feature.melspectrogram(y=np.asarray(audio[0], np.float64), sr=22050, n_fft=1024,
                                     hop_length=512, n_mels=128), top_db=None).T
  np.testing.assert_allclose(got[0], lib, atol=2e-3)


def test_mel_config_top_db_floor():
  mel = shortchunk.MelConfig(n_fft=256, hop_length=128, n_mels=32, top_db=80.0)
  audio = _audio(2).at[:, _N // 2:].set(0.0)  # silence: -100 dB without a floor
  got = np.asarray(mel.compute(audio))
  ref = features.log_mel(audio, 22050, n_fft=256, hop_length=128, n_mels=32, top_db=80.0)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)
  assert got.shape == (2, mel.n_frames(_N), 32) == (2, 45, 32)
  np.testing.assert_allclose(got.min(axis=(1, 2)), got.max(axis=(1, 2)) - 80.0, atol=1e-3)


def test_full_model_pools_173_frames_to_one_cell():
  model = shortchunk.ShortChunkCNN(num_outputs=50)
  audio = jax.ShapeDtypeStruct((2, 88064), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), audio)
  assert set(variables) == {"params", "batch_stats"}
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, audio)
  assert out.shape == (2, 50)
  shapes = {k: v[0].shape for k, v in state["intermediates"].items()}
  # 173 frames x 128 mels, each 2x2 pool halving (floor) both axes; widths c,c,2c,2c,2c,2c,4c.
  expected = {"log_mel": (2, 173, 128),
              "layer1": (2, 86, 64, 128), "layer2": (2, 43, 32, 128), "layer3": (2, 21, 16, 256),
              "layer4": (2, 10, 8, 256), "layer5": (2, 5, 4, 256), "layer6": (2, 2, 2, 256),
              "layer7": (2, 1, 1, 512), "pooled": (2, 512), "hidden": (2, 512)}
  assert shapes == expected
  assert shortchunk.pooled_shapes(173, 128, 7) == [s[1:3] for k, s in sorted(shapes.items())
                                                   if k.startswith("layer")]
  params = variables["params"]
  assert params["layer1_conv"]["kernel"].shape == (3, 3, 1, 128)
  assert params["layer7_conv"]["kernel"].shape == (3, 3, 256, 512)
  assert params["dense1"]["kernel"].shape == (512, 512)
  assert params["dense2"]["kernel"].shape == (512, 50)
  # Input BN, seven layer BNs and the dense BN.
  assert sorted(variables["batch_stats"]) == sorted(
      ["spec_bn", "dense1_bn"] + [f"layer{i}_bn" for i in range(1, 8)])
  assert variables["batch_stats"]["spec_bn"]["mean"].shape == (1,)
  assert shortchunk.won_widths(128) == shortchunk.WON_WIDTHS


def test_81920_samples_give_161_frames_and_one_cell():
  model = shortchunk.ShortChunkCNN(num_outputs=None, num_samples=81920, input_bn=False)
  audio = jax.ShapeDtypeStruct((2, 81920), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), audio)
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, audio)
  assert out.shape == (2, 512)  # num_outputs=None: the dense1 hidden layer
  inter = state["intermediates"]
  assert inter["log_mel"][0].shape == (2, 161, 128)
  assert [inter[f"layer{i}"][0].shape[1:3] for i in range(1, 8)] == [
      (80, 64), (40, 32), (20, 16), (10, 8), (5, 4), (2, 2), (1, 1)]
  assert "spec_bn" not in variables["batch_stats"]


def test_small_model_shapes_and_global_max_pool():
  model = _small(num_outputs=None, dense_width=None)
  audio = _audio(3)
  out, variables, inter = _init_with_output(model, audio)
  assert inter["log_mel"].shape == (3, 45, 32)
  assert inter["layer1"].shape == (3, 22, 16, 4)
  assert inter["layer2"].shape == (3, 11, 8, 4)
  assert inter["layer3"].shape == (3, 5, 4, 8)  # a 5 x 4 map is left: pooled over both axes
  np.testing.assert_array_equal(out, np.max(np.asarray(inter["layer3"]), axis=(1, 2)))
  assert out.shape == (3, 8)
  assert "hidden" not in inter and "dense1" not in variables["params"]
  # ReLU before each pool: every stage is non-negative.
  assert all(np.all(np.asarray(inter[f"layer{i}"]) >= 0) for i in (1, 2, 3))


def test_train_mode_updates_batch_stats_and_eval_is_deterministic():
  model = _small(dropout_rate=0.5, widths=(4,))
  audio = _audio(4)
  variables = _init(model, audio)
  train = jax.jit(lambda v, x, rng: model.apply(v, x, train=True, rngs={"dropout": rng},
                                                mutable=["batch_stats"]))
  stats = variables["batch_stats"]
  for i in range(3):
    _, upd = train({**variables, "batch_stats": stats}, audio, jax.random.key(i))
    stats = upd["batch_stats"]
  for name in ("spec_bn", "layer1_bn", "dense1_bn"):
    init = variables["batch_stats"][name]
    assert not np.allclose(stats[name]["mean"], init["mean"]), name
    assert not np.allclose(stats[name]["var"], init["var"]), name
  # The input BN tracks the spectrogram's dB level: 3 updates of momentum 0.9 from 0.
  db_mean = float(jnp.mean(_MEL.compute(audio)))
  np.testing.assert_allclose(stats["spec_bn"]["mean"], (1 - 0.9 ** 3) * db_mean, rtol=1e-4)

  trained = {**variables, "batch_stats": stats}
  evaluate = jax.jit(model.apply)
  a = evaluate(trained, audio)
  np.testing.assert_array_equal(a, evaluate(trained, audio))
  # Running averages: an example's output does not depend on the rest of its batch.
  other = audio.at[2:].set(_audio(2, seed=7))
  np.testing.assert_allclose(evaluate(trained, other)[:2], a[:2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(evaluate(trained, audio[::-1]), a[::-1], rtol=1e-5, atol=1e-6)
  # Train mode normalises by the batch's statistics, so it does depend on the batch.
  t_full, _ = train(trained, audio, jax.random.key(0))
  t_other, _ = train(trained, other, jax.random.key(0))
  assert not np.allclose(t_full[:2], t_other[:2])
  # Dropout only in train mode, and only with an rng.
  t1, _ = train(trained, audio, jax.random.key(1))
  assert not np.allclose(t_full, t1)
  with pytest.raises(Exception, match="dropout"):
    model.apply(trained, audio, train=True, mutable=["batch_stats"])


def _mlp_reference(variables, x):
  """Eval-mode Won et al. MLP in numpy: dense, batch norm (running stats), ReLU, dense."""
  p, s = variables["params"], variables["batch_stats"]
  h = np.asarray(x, np.float64) @ np.asarray(p["hidden"]["kernel"])
  assert "bias" not in p["hidden"]          # batch norm follows: a bias would be redundant
  bn_p, bn_s = p["hidden_bn"], s["hidden_bn"]
  h = (h - np.asarray(bn_s["mean"])) / np.sqrt(np.asarray(bn_s["var"]) + 1e-5)
  h = np.maximum(h * np.asarray(bn_p["scale"]) + np.asarray(bn_p["bias"]), 0.0)
  return h @ np.asarray(p["out"]["kernel"]) + np.asarray(p["out"]["bias"])


@pytest.mark.parametrize("cls,in_dim", [(branches.TagBranch, 300), (branches.CulturalBranch, 200)])
def test_mlp_branches_map_paper_dims_and_match_numpy(cls, in_dim):
  x = jax.random.normal(jax.random.key(2), (5, in_dim))
  model = cls(input_dim=in_dim)
  variables = model.init(jax.random.key(0), x)
  p = variables["params"]
  assert p["hidden"]["kernel"].shape == (in_dim, 512)
  assert p["out"]["kernel"].shape == (512, 256)
  # Perturb the BN so the reference checks scale/offset/statistics, not just the identity.
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda a: a + 0.1 * rng.random(a.shape).astype(np.float32), variables)
  raw = cls(input_dim=in_dim, normalize=False).apply(variables, x)
  ref = _mlp_reference(variables, x)
  np.testing.assert_allclose(raw, ref, rtol=2e-4, atol=1e-4)
  out = model.apply(variables, x)
  assert out.shape == (5, 256)
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out, ref / np.linalg.norm(ref, axis=-1, keepdims=True), rtol=2e-4,
                             atol=1e-5)


def test_full_size_song_branches_shapes():
  audio = jax.ShapeDtypeStruct((2, shortchunk.NUM_SAMPLES), jnp.float32)
  factors = jax.ShapeDtypeStruct((2, 200), jnp.float32)

  def shapes(model, *args):
    v = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a), *args)
    return v, jax.eval_shape(lambda v, *a: model.apply(v, *a), v, *args)

  v, out = shapes(branches.make_song_branch("acoustic"), audio)
  assert out.shape == (2, 256)
  assert v["params"]["cnn"]["dense1"]["kernel"].shape == (512, 512)
  assert v["params"]["cnn"]["dense2"]["kernel"].shape == (512, 256)

  v, out = shapes(branches.make_song_branch("cultural", input_dim=200), factors)
  assert out.shape == (2, 256)

  v, out = shapes(branches.make_song_branch("hybrid", factors_dim=200), audio, factors)
  assert out.shape == (2, 256)
  assert v["params"]["cultural_hidden"]["kernel"].shape == (200, 512)
  assert v["params"]["out"]["kernel"].shape == (1024, 256)  # [acoustic 512 ; cultural 512]
  assert "dense2" not in v["params"]["cnn"]

  v, out = shapes(branches.make_song_branch("late_fusion"), audio, factors)
  assert out.shape == (2, 2, 256)
  assert set(v["params"]) == {"acoustic", "cultural"}


def test_hybrid_concatenates_penultimates():
  model = branches.HybridConcat(**_TINY_CNN, hidden_dim=6, out_dim=4, fusion_hidden=5)
  audio, factors = _audio(3), jax.random.normal(jax.random.key(3), (3, 7))
  out, variables, inter = _init_with_output(model, audio, factors)
  assert out.shape == (3, 4)
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
  concat = inter["concat"]
  assert concat.shape == (3, 12)
  # The first half is the CNN's hidden layer, the second the cultural hidden layer.
  np.testing.assert_array_equal(concat[:, :6], inter["cnn"]["hidden"])
  p, s = variables["params"], variables["batch_stats"]
  h_cf = factors @ p["cultural_hidden"]["kernel"]
  h_cf = (h_cf - s["cultural_hidden_bn"]["mean"]) / jnp.sqrt(s["cultural_hidden_bn"]["var"] + 1e-5)
  np.testing.assert_allclose(concat[:, 6:], np.maximum(h_cf, 0.0), rtol=1e-5, atol=1e-6)
  p = variables["params"]
  assert p["fusion_hidden"]["kernel"].shape == (12, 5) and p["out"]["kernel"].shape == (5, 4)


def test_late_fusion_embeddings_and_scores():
  model = branches.LateFusion(**_TINY_CNN, hidden_dim=16, out_dim=4)
  audio, factors = _audio(3), jax.random.normal(jax.random.key(3), (3, 7))
  song, variables, _ = _init_with_output(model, audio, factors)
  assert song.shape == (3, 2, 4)
  np.testing.assert_allclose(jnp.linalg.norm(song, axis=-1), 1.0, rtol=1e-5)
  # The cultural slot is exactly the stand-alone branch with that sub-tree of the variables.
  cultural = branches.CulturalBranch(hidden_dim=16, out_dim=4)
  sub = {c: variables[c]["cultural"] for c in variables}
  np.testing.assert_allclose(song[:, 1], cultural.apply(sub, factors), rtol=1e-5, atol=1e-6)
  assert variables["params"]["acoustic"]["cnn"]["dense2"]["kernel"].shape == (16, 4)

  tags = np.asarray(jax.random.normal(jax.random.key(4), (5, 4)))
  s = np.asarray(song, np.float64)
  cos = np.einsum("td,smd->mts", tags / np.linalg.norm(tags, axis=-1, keepdims=True), s)
  for w in (0.0, 0.3, 1.0):
    np.testing.assert_allclose(branches.late_fusion_scores(tags, song, w),
                               w * cos[0] + (1 - w) * cos[1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="acoustic_weight=1.5"):
    branches.late_fusion_scores(tags, song, 1.5)
  with pytest.raises(ValueError, match=r"\[songs, 2, d\]"):
    branches.late_fusion_scores(tags, song[:, 0], 0.5)


def test_adam_steps_decrease_triplet_loss_and_gradients_reach_audio():
  song_model = branches.AcousticBranch(**{**_TINY_CNN, "widths": (4, 4)}, hidden_dim=16, out_dim=8,
                                       dropout_rate=0.1)
  tag_model = branches.TagBranch(input_dim=12, hidden_dim=16, out_dim=8, dropout_rate=0.1)
  audio = _audio(8)
  words = jax.random.normal(jax.random.key(5), (8, 12))
  sv, tv = _init(song_model, audio), tag_model.init(jax.random.key(0), words)
  params = {"song": sv["params"], "tag": tv["params"]}
  stats = {"song": sv["batch_stats"], "tag": tv["batch_stats"]}

  def loss_fn(p, stats, audio, rng):
    k1, k2 = jax.random.split(rng)
    s, su = song_model.apply({"params": p["song"], "batch_stats": stats["song"]}, audio,
                             train=True, rngs={"dropout": k1}, mutable=["batch_stats"])
    t, tu = tag_model.apply({"params": p["tag"], "batch_stats": stats["tag"]}, words, train=True,
                            rngs={"dropout": k2}, mutable=["batch_stats"])
    # Cosine triplet loss (Won et al. eq. 2): tag i, positive song i, negative song i + 1.
    pos, neg = jnp.sum(t * s, -1), jnp.sum(t * jnp.roll(s, -1, axis=0), -1)
    loss = jnp.mean(jax.nn.relu(0.4 - pos + neg))
    return loss, {"song": su["batch_stats"], "tag": tu["batch_stats"]}

  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state, rng):
    # The audio gradient too: it only exists if the mel front end is differentiable.
    (loss, stats), (grads, g_audio) = jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True)(
        params, stats, audio, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss, grads, g_audio

  losses = []
  for i in range(25):
    params, stats, opt_state, loss, grads, g_audio = step(params, stats, opt_state,
                                                          jax.random.key(i))
    losses.append(float(loss))
    if i == 0:
      # Gradients reach the input batch norm, the first convolution and the waveform.
      assert float(jnp.abs(grads["song"]["cnn"]["spec_bn"]["scale"]).sum()) > 0
      assert float(jnp.abs(grads["song"]["cnn"]["layer1_conv"]["kernel"]).sum()) > 0
      assert np.all(np.isfinite(g_audio)) and float(jnp.abs(g_audio).max()) > 0
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_bad_inputs_raise_clear_errors():
  model = _small()
  init = lambda m, *a: m.init(jax.random.key(0), *a)  # noqa: E731
  with pytest.raises(ValueError, match=rf"expected \[batch, {_N}\] raw mono"):
    init(model, jnp.zeros((_N,)))
  with pytest.raises(ValueError, match=rf"expected \[batch, {_N}\] raw mono"):
    init(model, jnp.zeros((2, _N, 1)))
  with pytest.raises(ValueError, match=rf"expected \[batch, {_N}\] samples"):
    init(model, jnp.zeros((2, _N - 1)))
  with pytest.raises(ValueError, match="complex"):
    init(model, jnp.zeros((2, _N), jnp.complex64))
  # Too short for three 2x2 pools (needs 8 frames = 7 * 128 samples).
  with pytest.raises(ValueError, match="need >= 8 frames, i.e. at least 896 samples"):
    init(_small(num_samples=None), jnp.zeros((2, 800)))
  with pytest.raises(ValueError, match="n_mels=4 halves to zero"):
    init(_small(mel=shortchunk.MelConfig(n_fft=256, hop_length=128, n_mels=4)), jnp.zeros((2, _N)))
  with pytest.raises(ValueError, match="widths=()"):
    init(_small(widths=()), jnp.zeros((2, _N)))
  with pytest.raises(ValueError, match="num_outputs=0"):
    init(_small(num_outputs=0), jnp.zeros((2, _N)))
  with pytest.raises(ValueError, match="hop_length=0"):
    shortchunk.MelConfig(hop_length=0)
  with pytest.raises(ValueError, match="top_db=-1"):
    shortchunk.MelConfig(top_db=-1.0)

  with pytest.raises(ValueError, match="expected input_dim=300"):
    init(branches.TagBranch(), jnp.zeros((2, 200)))
  with pytest.raises(ValueError, match=r"expected \[batch, dim\]"):
    init(branches.CulturalBranch(), jnp.zeros((200,)))
  hybrid = branches.HybridConcat(**_SMALL_CNN, factors_dim=7)
  with pytest.raises(ValueError, match="different numbers of songs"):
    init(hybrid, jnp.zeros((2, _N)), jnp.zeros((3, 7)))
  with pytest.raises(ValueError, match="expected input_dim=7"):
    init(hybrid, jnp.zeros((2, _N)), jnp.zeros((2, 8)))
  with pytest.raises(ValueError, match="different numbers of songs"):
    init(branches.LateFusion(**_SMALL_CNN), jnp.zeros((2, _N)), jnp.zeros((3, 7)))
  with pytest.raises(ValueError, match=rf"expected \[batch, {_N}\] raw mono"):
    init(branches.LateFusion(**_SMALL_CNN), jnp.zeros((_N,)), jnp.zeros((1, 7)))
  with pytest.raises(ValueError, match="unknown branch 'tag'"):
    branches.make_song_branch("tag")
  assert set(branches.SONG_INPUTS) == {"cultural", "acoustic", "hybrid", "late_fusion"}


def test_benchmark_measure_reports_throughput():
  from launch.benchmarks import shortchunk as bench
  r = bench.measure(batch_size=2, steps=1, widths=(2,), mel=_MEL, num_samples=_N)
  # A real training step of the full module ran (its timing logic: tests/benchmarks/timing_test.py).
  assert np.isfinite(r["loss"]) and r["steps"] == 1 and r["batch_size"] == 2
  with pytest.raises(ValueError, match="batch_size >= 2"):
    bench.measure(batch_size=1, steps=1)


def test_bfloat16_compute_keeps_float32_params_and_a_close_loss():
  audio = _audio(4)
  targets = jax.random.normal(jax.random.key(2), (4, 5))
  m32, m16 = _small(widths=(4,)), _small(widths=(4,), dtype="bfloat16")
  variables = _init(m32, audio)
  v16 = _init(m16, audio)
  assert all(a.dtype == b.dtype == jnp.float32 and np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(v16)))

  def loss_and_grads(model):
    def loss_fn(p):
      out, state = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, audio,
                               train=True, rngs={"dropout": jax.random.key(3)},
                               mutable=["batch_stats", "intermediates"])
      return jnp.mean(jnp.square(out - targets)), (out, state)
    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])

  (l32, (_, s32)), g32 = loss_and_grads(m32)
  (l16, (out16, s16)), g16 = loss_and_grads(m16)
  inter16 = s16["intermediates"]
  assert inter16["log_mel"][0].dtype == jnp.float32  # the front end stays float32
  assert inter16["layer1"][0].dtype == jnp.bfloat16
  assert s32["intermediates"]["layer1"][0].dtype == jnp.float32
  assert out16.dtype == jnp.float32
  assert abs(float(l16) - float(l32)) <= 0.02 * float(l32)
  flat32, flat16 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g32, g16))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(g16))
  assert np.dot(flat32, flat16) / np.linalg.norm(flat32) / np.linalg.norm(flat16) > 0.98
  from configs import common  # pylint: disable=g-import-not-at-top
  assert common.MODEL_DTYPES == shortchunk.COMPUTE_DTYPES  # the configs' model.dtype choices
  with pytest.raises(ValueError, match="dtype='float16'"):
    _init(_small(dtype="float16"), audio)
