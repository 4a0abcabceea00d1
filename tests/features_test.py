"""Tests for musemb.features against librosa 0.11 (float64) and brute-force numpy references.

Tolerances, for float32 JAX against float64 librosa on a few seconds of chirp + noise:
  frame: exact. STFT: |X - X_ref| <= 2e-6 * max|X_ref| (float32 FFT rounding; ~1.5e-7 seen).
  mel filterbank: rtol 1e-5, atol 1e-8 (float64 maths, one float32 rounding).
  log-mel: |dB - dB_ref| <= 1e-3 dB everywhere, floor included (~1e-4 seen).
  MFCC: per coefficient, max error <= 1e-5 * max|c_ref| (~6e-7 seen; c0 spans ~100s).
  delta: <= 1e-5 * max|ref| (float32 sums of 9 terms).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from musemb import features as F


def _signal(sr: int, seconds: float, seed: int) -> np.ndarray:
  """A loud chirp over low noise: energy sweeps every band, nothing sits at the dB floor long."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(sr * seconds)) / sr
  chirp = scipy.signal.chirp(t, 60.0, t[-1], 0.45 * sr, method="logarithmic")
  env = 0.3 + 0.2 * np.sin(2 * np.pi * 0.7 * t)
  return (env * chirp + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def y22():
  return _signal(22050, 3.0, seed=0)


@pytest.fixture(scope="module")
def y16():
  return _signal(16000, 3.0, seed=1)


# --------------------------------------------------------------------------------------------
# Framing and STFT.


@pytest.mark.parametrize("frame_length,hop", [(2048, 512), (512, 160), (100, 1), (300, 400)])
def test_frame_matches_librosa(librosa, y22, frame_length, hop):
  x = y22[:5000]
  got = np.asarray(F.frame(x, frame_length, hop))
  want = librosa.util.frame(x, frame_length=frame_length, hop_length=hop).T
  np.testing.assert_array_equal(got, want)
  batched = np.asarray(F.frame(np.stack([x, -x]), frame_length, hop))
  np.testing.assert_array_equal(batched[1], -want)


def test_frame_rejects_short_input():
  with pytest.raises(ValueError, match="fewer than frame_length"):
    F.frame(np.zeros(10, np.float32), 16, 4)


@pytest.mark.parametrize("window,win_length,n_fft", [("hann", 1024, 1024), ("hamming", 400, 512),
                                                    ("hann", 551, 1024)])
def test_window_is_librosa_padded_periodic_window(librosa, window, win_length, n_fft):
  want = librosa.util.pad_center(
      librosa.filters.get_window(window, win_length, fftbins=True), size=n_fft)
  np.testing.assert_allclose(F.get_window(window, win_length, n_fft), want, atol=1e-7)
  with pytest.raises(ValueError, match="Unknown window"):
    F.get_window("not-a-window", 64)


@pytest.mark.parametrize("kwargs", [
    dict(n_fft=2048, hop_length=512),
    dict(n_fft=512, hop_length=160, win_length=400, window="hamming"),
    dict(n_fft=1024, hop_length=256, pad_mode="reflect"),
    dict(n_fft=1024, hop_length=300, center=False),
], ids=["hann2048", "hamming400in512", "reflect", "uncentred"])
def test_stft_matches_librosa(librosa, y22, kwargs):
  got = np.asarray(F.stft(y22, **kwargs))
  want = librosa.stft(y22.astype(np.float64), **kwargs).T
  assert got.shape == want.shape and got.dtype == np.complex64
  assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()
  assert got.shape[0] == F.n_stft_frames(len(y22), kwargs["n_fft"], kwargs["hop_length"],
                                         kwargs.get("center", True))


# --------------------------------------------------------------------------------------------
# Mel scale and spectrogram features.


def test_mel_scale_matches_librosa(librosa):
  hz = np.array([0.0, 40.0, 999.0, 1000.0, 1001.0, 4000.0, 11025.0])
  for htk in (False, True):
    np.testing.assert_allclose(F.hz_to_mel(hz, htk), librosa.hz_to_mel(hz, htk=htk), rtol=1e-12)
    mels = librosa.hz_to_mel(hz, htk=htk)
    np.testing.assert_allclose(F.mel_to_hz(mels, htk), hz, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("sr,n_fft,kwargs", [
    (22050, 2048, {}),
    (22050, 1024, dict(n_mels=128)),
    (16000, 512, dict(n_mels=40)),
    (16000, 512, dict(n_mels=40, fmin=50.0, fmax=7000.0, htk=True)),
    (16000, 512, dict(n_mels=20, norm=None)),
    (16000, 512, dict(n_mels=20, norm=2.0)),
], ids=["default", "22k-1024", "muslse", "htk-band", "no-norm", "l2"])
def test_mel_filterbank_matches_librosa(librosa, sr, n_fft, kwargs):
  got = F.mel_filterbank(sr, n_fft, **kwargs)
  want = librosa.filters.mel(sr=sr, n_fft=n_fft, dtype=np.float64, **kwargs).T
  assert got.shape == want.shape and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


def test_mel_filterbank_rejects_bad_band():
  with pytest.raises(ValueError, match="fmin"):
    F.mel_filterbank(16000, 512, fmin=9000.0)


def test_power_to_db_matches_librosa(librosa):
  S = np.random.default_rng(3).exponential(size=(50, 20)) ** 4
  for kwargs in (dict(), dict(ref=10.0, amin=1e-5, top_db=40.0), dict(top_db=None)):
    got = np.asarray(F.power_to_db(S.astype(np.float32), **kwargs))
    np.testing.assert_allclose(got, librosa.power_to_db(S, **kwargs), atol=1e-4)
  with pytest.raises(ValueError, match="top_db"):
    F.power_to_db(S, top_db=-1.0)


def test_power_to_db_floor_is_per_example(librosa):
  loud = np.random.default_rng(4).exponential(size=(30, 8)).astype(np.float32)
  quiet = loud * 1e-6
  batched = np.asarray(F.power_to_db(np.stack([loud, quiet]), top_db=20.0))
  np.testing.assert_allclose(batched[1], np.asarray(F.power_to_db(quiet, top_db=20.0)), atol=1e-5)
  np.testing.assert_allclose(batched[1], librosa.power_to_db(quiet, top_db=20.0), atol=1e-4)


def test_melspectrogram_matches_librosa(librosa, y22):
  for power in (2.0, 1.0):
    got = np.asarray(F.melspectrogram(y22, 22050, n_fft=1024, hop_length=512, power=power))
    want = librosa.feature.melspectrogram(
        y=y22.astype(np.float64), sr=22050, n_fft=1024, hop_length=512, power=power).T
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6 * want.max())


@pytest.mark.parametrize("n_fft,hop,n_mels", [(1024, 512, 128), (2048, 512, 128), (512, 256, 64)])
def test_log_mel_matches_librosa(librosa, y22, n_fft, hop, n_mels):
  got = np.asarray(F.log_mel(y22, 22050, n_fft=n_fft, hop_length=hop, n_mels=n_mels))
  want = librosa.power_to_db(
      librosa.feature.melspectrogram(
          y=y22.astype(np.float64), sr=22050, n_fft=n_fft, hop_length=hop, n_mels=n_mels)).T
  assert got.shape == want.shape
  # Most of the spectrogram must be above the floor, or the comparison would prove little.
  assert np.mean(want > want.max() - 79.0) > 0.5
  np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("sr", [16000, 22050])
def test_mfcc_matches_librosa(librosa, y16, y22, sr):
  y = y16 if sr == 16000 else y22
  got = np.asarray(F.mfcc(y, sr))
  n_fft, win, hop = F.mfcc_lengths(sr, 25.0, 10.0)
  if sr == 16000:
    assert (n_fft, win, hop) == (512, 400, 160)  # MUSLSE section 6.2 at 16 kHz
  want = librosa.feature.mfcc(
      y=y.astype(np.float64), sr=sr, n_mfcc=13, n_fft=n_fft, hop_length=hop, win_length=win,
      window="hamming", n_mels=40).T
  assert got.shape == want.shape == (1 + len(y) // hop, 13)
  scale = np.abs(want).max(axis=0)
  assert np.all(np.abs(got - want).max(axis=0) <= 1e-5 * scale)


@pytest.mark.parametrize("width,order", [(9, 1), (9, 2), (5, 1), (5, 2), (3, 1)])
def test_delta_matches_librosa(librosa, y16, width, order):
  c = librosa.feature.mfcc(y=y16.astype(np.float64), sr=16000, n_mfcc=13, n_fft=512,
                           hop_length=160, win_length=400, window="hamming", n_mels=40).T
  for data in (c, c[:width]):  # long, and exactly one window (edges only)
    want = librosa.feature.delta(data, width=width, order=order, axis=-2)
    got = np.asarray(F.delta(data.astype(np.float32), width=width, order=order))
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
  # Any time axis, e.g. librosa's [features, frames] layout.
  got_t = np.asarray(F.delta(c.T.astype(np.float32), width=width, order=order, axis=-1))
  np.testing.assert_allclose(got_t, librosa.feature.delta(c.T, width=width, order=order),
                             atol=1e-5 * np.abs(c).max())


def test_delta_rejects_bad_arguments():
  x = np.zeros((8, 3), np.float32)
  with pytest.raises(ValueError, match="fewer than width"):
    F.delta(x, width=9)
  with pytest.raises(ValueError, match="odd"):
    F.delta(x, width=4)


def test_mfcc_with_deltas_and_config(librosa, y16):
  got = np.asarray(F.mfcc_with_deltas(y16, 16000))
  c = librosa.feature.mfcc(y=y16.astype(np.float64), sr=16000, n_mfcc=13, n_fft=512,
                           hop_length=160, win_length=400, window="hamming", n_mels=40)
  want = np.concatenate(
      [c, librosa.feature.delta(c, order=1),
       librosa.feature.delta(c, order=2)], axis=0).T
  assert got.shape == want.shape == (301, 39)
  np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(c).max())

  config = F.MfccConfig()
  assert config.dim == 39 and config.lengths == (512, 400, 160)
  assert config.n_frames(len(y16)) == got.shape[0]
  np.testing.assert_array_equal(np.asarray(config.compute(y16)), got)
  plain = F.MfccConfig(deltas=False)
  np.testing.assert_array_equal(np.asarray(plain.compute(y16)), got[:, :13])
  assert F.MfccConfig.from_dict(config.to_dict()) == config
  assert config.to_dict()["n_mfcc"] == 13
  with pytest.raises(ValueError, match="unknown keys"):
    F.MfccConfig.from_dict({"n_mfcc": 13, "lifter": 22})
  with pytest.raises(ValueError, match="n_mfcc"):
    F.MfccConfig(n_mfcc=50)


def test_batched_equals_per_example(y22):
  # Different loudness per example: the top_db floor must not leak across the batch.
  x = np.stack([y22[:16000], 1e-3 * y22[16000:32000], y22[32000:48000] ** 3]).reshape(3, 1, -1)
  got = np.asarray(F.log_mel(x, 22050, n_fft=1024, hop_length=512))
  assert got.shape == (3, 1, 32, 128)
  for i in range(3):
    np.testing.assert_allclose(got[i, 0], np.asarray(F.log_mel(x[i, 0], 22050, n_fft=1024,
                                                                hop_length=512)), atol=1e-4)
  got = np.asarray(F.mfcc_with_deltas(x[:, 0], 22050))
  for i in range(3):
    np.testing.assert_allclose(got[i], np.asarray(F.mfcc_with_deltas(x[i, 0], 22050)), atol=1e-3)


def test_banded_filterbank_product_equals_dense_product():
  rng = np.random.default_rng(0)
  for sr, n_fft, kwargs in [(22050, 1024, dict(n_mels=128)), (16000, 512, dict(n_mels=40)),
                            (16000, 512, dict(n_mels=50, fmin=300.0, fmax=5000.0))]:
    fb = F.mel_filterbank(sr, n_fft, **kwargs)
    spectrum = rng.random((3, 7, n_fft // 2 + 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(F._apply_filterbank(jnp.asarray(spectrum), fb)),
                               spectrum @ fb, rtol=1e-5, atol=1e-7)
    bands = F._filterbank_bands(fb, 16)
    # Every non-zero weight lies inside its group's band.
    for lo, hi, m0, m1 in bands:
      assert not np.any(fb[:lo, m0:m1]) and not np.any(fb[hi:, m0:m1])
  with pytest.warns(UserWarning, match="empty"):
    fb = F.mel_filterbank(8000, 64, n_mels=40)  # empty filters: a band of zero width
  spectrum = rng.random((5, 33)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(F._apply_filterbank(jnp.asarray(spectrum), fb)),
                             spectrum @ fb, rtol=1e-5, atol=1e-7)


def test_clip_loop_equals_per_example(y16, monkeypatch):
  # A small step budget sends a batch through the CPU loop over clips, two clips per step with a
  # remainder; the results must be those of each clip alone. (The clip length is used nowhere
  # else, so the jitted functions trace afresh under the patched budget.)
  n = 7001
  frames = F.n_stft_frames(n, 512, 160)
  monkeypatch.setattr(F, "_CPU_STEP_SAMPLES", 2 * frames * 512)
  x = np.stack([y16[i * 1000:i * 1000 + n] * (0.1 + i) for i in range(5)]).reshape(5, 1, n)
  got = np.asarray(F.mfcc_with_deltas(x, 16000))
  mel = np.asarray(F.log_mel(x, 16000, n_fft=512, hop_length=160, n_mels=40))
  assert got.shape == (5, 1, frames, 39) and mel.shape == (5, 1, frames, 40)
  for i in range(5):
    np.testing.assert_allclose(got[i, 0], np.asarray(F.mfcc_with_deltas(x[i, 0], 16000)),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        mel[i, 0], np.asarray(F.log_mel(x[i, 0], 16000, n_fft=512, hop_length=160, n_mels=40)),
        atol=1e-4)


def test_composes_with_jit_and_vmap(y16):
  x = np.stack([y16[:8000], y16[8000:16000]])
  direct = np.asarray(F.mfcc_with_deltas(x, 16000))
  fn = jax.jit(lambda a: F.mfcc_with_deltas(a, 16000) * 2.0)
  np.testing.assert_allclose(np.asarray(fn(x)), 2.0 * direct, rtol=1e-6, atol=1e-4)
  mapped = jax.vmap(lambda a: F.log_mel(a, 16000, n_fft=512, hop_length=160, n_mels=40))(x)
  np.testing.assert_allclose(
      np.asarray(mapped), np.asarray(F.log_mel(x, 16000, n_fft=512, hop_length=160, n_mels=40)),
      atol=1e-4)
  # The feature function is differentiable (a learnt front end can sit on top of it).
  g = jax.grad(lambda a: jnp.sum(F.melspectrogram(a, 16000, n_fft=512, hop_length=160)))(
      jnp.asarray(y16[:4000]))
  assert g.shape == (4000,) and bool(jnp.all(jnp.isfinite(g)))


# --------------------------------------------------------------------------------------------
# Codebooks and bags of frames.


def _planted(seed: int = 0, k: int = 6, per: int = 500, dim: int = 8):
  rng = np.random.default_rng(seed)
  centres = rng.normal(scale=10.0, size=(k, dim)).astype(np.float32)
  labels = np.repeat(np.arange(k), per)
  points = centres[labels] + rng.normal(scale=0.1, size=(k * per, dim)).astype(np.float32)
  perm = rng.permutation(len(points))
  return centres, points[perm], labels[perm]


def test_kmeans_recovers_planted_clusters_deterministically():
  centres, points, labels = _planted()
  book = F.kmeans_fit(points, 6, batch_size=256, n_steps=60, seed=0)
  assert book.shape == (6, 8) and book.dtype == np.float32
  d = np.linalg.norm(book[:, None] - centres[None], axis=-1)
  # One fitted centre per planted one, each within a fraction of the noise scale.
  assert sorted(d.argmin(axis=0)) == list(range(6))
  assert d.min(axis=0).max() < 0.05
  # The partition matches the planted labels exactly.
  codes = F.assign_codewords(points, book)
  assert len(set(zip(codes.tolist(), labels.tolist()))) == 6
  np.testing.assert_array_equal(F.kmeans_fit(points, 6, batch_size=256, n_steps=60, seed=0), book)
  other = F.kmeans_fit(points, 6, batch_size=256, n_steps=60, seed=1)
  assert not np.array_equal(other, book)
  assert np.linalg.norm(other[:, None] - centres[None], axis=-1).min(axis=0).max() < 0.05


def test_kmeans_errors():
  few = np.repeat(np.eye(3, dtype=np.float32), 50, axis=0)
  with pytest.raises(ValueError, match="only 3 distinct rows"):
    F.kmeans_fit(few, 4, n_steps=1)
  bad = np.ones((10, 2), np.float32)
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    F.kmeans_fit(bad, 2, n_steps=1)
  with pytest.raises(ValueError, match=r"\[n, dim\]"):
    F.kmeans_fit(np.zeros((5,), np.float32), 2)


def test_assign_codewords_equals_brute_force():
  rng = np.random.default_rng(5)
  frames = rng.normal(size=(3, 350, 39)).astype(np.float32)
  book = rng.normal(size=(50, 39)).astype(np.float32)
  want = np.argmin(((frames[..., None, :] - book) ** 2).sum(-1), axis=-1)
  for chunk in (100, 65536):  # padded last chunk, and one chunk
    got = F.assign_codewords(frames, book, chunk_size=chunk)
    assert got.shape == (3, 350) and got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="same dim"):
    F.assign_codewords(frames, book[:, :13])


def test_bag_of_frames_matches_bincount():
  rng = np.random.default_rng(6)
  codes = rng.integers(0, 2000, size=(1200,)).astype(np.int32)
  valid = rng.random(1200) < 0.8
  for mask in (None, valid):
    idx, counts = F.bag_of_frames(codes, 2000, valid=mask)
    kept = codes if mask is None else codes[mask]
    assert idx.dtype == np.int32 and counts.dtype == np.float32
    assert np.all(np.diff(idx) > 0)
    assert counts.sum() == len(kept)
    dense = np.zeros(2000, np.float32)
    dense[idx] = counts
    np.testing.assert_array_equal(dense, np.bincount(kept, minlength=2000))
  with pytest.raises(ValueError, match="outside"):
    F.bag_of_frames(np.array([0, 2000]), 2000)
