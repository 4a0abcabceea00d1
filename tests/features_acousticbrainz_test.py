"""Tests for the AcousticBrainz-style descriptors of musemb.features (Rush et al.'s audio features).

References: librosa 0.11 for roll-off, zero-crossing rate, centroid and MFCCs; numpy written out
from Essentia's definitions (PoolAggregator, SingleGaussian) for the statistics; a hand-built
AcousticBrainz low-level document for the JSON layout.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from musemb import features as F

SR = 16000


def _signal(sr: int, seconds: float, seed: int) -> np.ndarray:
  """Chirp + noise with a stretch of digital silence and one of tiny values (ZCR's edge cases)."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(sr * seconds)) / sr
  chirp = scipy.signal.chirp(t, 80.0, t[-1], 0.4 * sr, method="logarithmic")
  y = (0.3 + 0.2 * np.sin(2 * np.pi * 0.9 * t)) * chirp + 0.02 * rng.standard_normal(t.size)
  y[sr // 4:sr // 4 + 3000] = 0.0
  y[sr // 2:sr // 2 + 500] = 1e-12 * rng.standard_normal(500)
  return y.astype(np.float32)


@pytest.fixture(scope="module")
def y():
  return _signal(SR, 2.0, seed=0)


def _magnitude(y, n_fft, hop):
  return np.abs(np.asarray(F.stft(y, n_fft, hop)))


# --------------------------------------------------------------------------------------------
# Frame-wise descriptors against librosa.


@pytest.mark.parametrize("n_fft,hop,roll_percent", [(2048, 512, 0.85), (1024, 512, 0.85),
                                                    (512, 256, 0.5), (1024, 256, 0.95)])
def test_rolloff_matches_librosa(librosa, y, n_fft, hop, roll_percent):
  got = np.asarray(F.spectral_rolloff(_magnitude(y, n_fft, hop), SR, roll_percent))
  want = librosa.feature.spectral_rolloff(y=y.astype(np.float64), sr=SR, n_fft=n_fft,
                                          hop_length=hop, roll_percent=roll_percent)[0]
  assert got.shape == want.shape and got.dtype == np.float32
  # float32 STFT and sums against float64: a frame whose cumulative sum meets the threshold
  # within rounding may move by one bin; none did on this signal.
  assert np.all(np.abs(got - want) <= SR / n_fft + 1e-3)
  assert np.mean(got == want) >= 0.99
  assert got[want == 0].size > 0 and np.all(got[want == 0] == 0)  # the silent frames


def test_rolloff_energy_is_librosa_on_the_power_spectrum(librosa, y):
  """power=2 (Essentia's and the descriptor vector's definition) = librosa given |X|^2."""
  mag = _magnitude(y, 1024, 512)
  got = np.asarray(F.spectral_rolloff(mag, SR, 0.85, power=2.0))
  want = librosa.feature.spectral_rolloff(S=mag.T.astype(np.float64)**2, sr=SR, n_fft=1024)[0]
  np.testing.assert_array_equal(got, want.astype(np.float32))
  # Energy weighs the strong low bins more, so its roll-off is never above the magnitude one here.
  assert np.all(got <= np.asarray(F.spectral_rolloff(mag, SR, 0.85)))


def test_rolloff_by_hand():
  # Bins at 0, 1, 2, 3 kHz (n_fft = 6 at 6 kHz). Magnitudes 1, 1, 1, 1: 85% (3.4 of 4) is reached
  # at bin 3, 80% (3.2) too; 4, 0, 0, 1: 85% (4.25 of 5) at bin 3, 80% (4.0) at bin 0.
  S = np.array([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
  np.testing.assert_array_equal(np.asarray(F.spectral_rolloff(S, 6000.0)), [3000.0, 3000.0, 0.0])
  np.testing.assert_array_equal(np.asarray(F.spectral_rolloff(S, 6000.0, 0.8)), [3000.0, 0.0, 0.0])
  with pytest.raises(ValueError, match="roll_percent"):
    F.spectral_rolloff(S, 6000.0, 1.0)
  with pytest.raises(ValueError, match="n_fft"):
    F.spectral_rolloff(S, 6000.0, n_fft=8)


@pytest.mark.parametrize("frame_length,hop,center", [(2048, 512, True), (1024, 512, True),
                                                     (512, 128, False), (256, 100, True)])
def test_zero_crossing_rate_matches_librosa(librosa, y, frame_length, hop, center):
  got = np.asarray(F.zero_crossing_rate(y, frame_length, hop, center))
  want = librosa.feature.zero_crossing_rate(y, frame_length=frame_length, hop_length=hop,
                                            center=center)[0]
  assert got.shape == want.shape
  # Counts are integers: the rates agree to float32 rounding of count / frame_length.
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
  assert np.any(want == 0) and np.any(want > 0.1)


def test_zero_crossing_rate_zero_is_positive(librosa):
  """librosa's convention, not Essentia's (which counts 0 as non-positive): see features.py."""
  frames = np.array([[1.0, 0.0, 1.0, 0.0],      # no change (Essentia: 3 / 4)
                     [1.0, -1.0, 1.0, -1.0],    # 3 changes
                     [0.0, -1.0, 1e-11, -1.0],  # 1e-11 counts as zero, i.e. positive: 3 changes
                     [-1.0, -2.0, -0.0, 0.5]],  # -0.0 is zero, so positive: 1 change
                    np.float32)
  got = np.asarray(F.zero_crossing_rate(frames, 4, 4, center=False))[:, 0]
  np.testing.assert_allclose(got, [0.0, 0.75, 0.75, 0.25])
  for row, rate in zip(frames, got):
    np.testing.assert_allclose(librosa.feature.zero_crossing_rate(
        row, frame_length=4, hop_length=4, center=False)[0, 0], rate)


def test_centroid_matches_librosa_and_rms_is_the_spectrum_rms(librosa, y):
  mag = _magnitude(y, 1024, 256)
  got = np.asarray(F.spectral_centroid(mag, SR))
  want = librosa.feature.spectral_centroid(y=y.astype(np.float64), sr=SR, n_fft=1024,
                                           hop_length=256)[0]
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-2)
  rms = np.asarray(F.spectral_rms(mag))
  np.testing.assert_allclose(rms, np.sqrt(np.mean(mag.astype(np.float64)**2, axis=-1)),
                             rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Statistics, as Essentia defines them.


def _essentia_stats(v: np.ndarray) -> list[float]:
  """PoolAggregator, written out: population variances, absolute differences."""
  v = np.asarray(v, np.float64)
  d1 = np.abs(v[1:] - v[:-1])
  d2 = np.abs(v[2:] - 2 * v[1:-1] + v[:-2])
  s = np.sort(v)
  n = len(s)
  median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
  return [v.sum() / n, ((v - v.mean())**2).sum() / n, s[0], s[-1], median, d1.mean(),
          ((d1 - d1.mean())**2).mean(), d2.mean(), ((d2 - d2.mean())**2).mean()]


def test_descriptor_statistics_by_hand():
  v = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0], np.float32)
  # By hand: mean 23/6; |d1| = 2, 3, 3, 4, 4; |d2| = |3+2|, |-3-3|, |4+3|, |4-4| = 5, 6, 7, 0;
  # median (3 + 4) / 2.
  got = np.asarray(F.descriptor_statistics(v))
  np.testing.assert_allclose(got[[0, 2, 3, 4, 5, 7]], [23 / 6, 1.0, 9.0, 3.5, 3.2, 4.5], rtol=1e-6)
  np.testing.assert_allclose(got, _essentia_stats(v), rtol=1e-5)
  batch = np.random.default_rng(1).standard_normal((3, 2, 51)).astype(np.float32)
  got = np.asarray(F.descriptor_statistics(batch))
  assert got.shape == (3, 2, 9)
  for index in np.ndindex(3, 2):
    np.testing.assert_allclose(got[index], _essentia_stats(batch[index]), rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="at least 3"):
    F.descriptor_statistics(v[:2])


def test_mfcc_gaussian_is_the_unbiased_covariance():
  c = np.random.default_rng(2).standard_normal((2, 40, 5)).astype(np.float32) * [1, 2, 3, 4, 50]
  mean, cov = F.mfcc_gaussian(c)
  for b in range(2):
    np.testing.assert_allclose(np.asarray(mean[b]), c[b].mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(cov[b]), np.cov(c[b], rowvar=False, ddof=1),
                               rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# The whole vector from audio.


def test_descriptor_config_framing():
  assert (F.DescriptorConfig().frame_length, F.DescriptorConfig().hop_length) == (2048, 1024)
  for sr, frame_length in ((44100, 2048), (48000, 2048), (22050, 1024), (16000, 1024),
                           (8000, 512)):
    config = F.DescriptorConfig.for_sample_rate(sr)
    assert (config.sample_rate, config.frame_length, config.hop_length) == (
        sr, frame_length, frame_length // 2)
  assert F.DescriptorConfig.for_sample_rate(16000).band_top == 8000.0
  assert F.DescriptorConfig.for_sample_rate(44100).band_top == 11000.0
  config = F.DescriptorConfig.for_sample_rate(16000, n_mels=64)
  assert F.DescriptorConfig.from_dict(config.to_dict()) == config and config.n_mels == 64
  with pytest.raises(ValueError, match="unknown keys"):
    F.DescriptorConfig.from_dict({"hop": 3})
  with pytest.raises(ValueError, match="window"):
    F.DescriptorConfig(window="nope")


def test_names_and_dim():
  names = F.descriptor_names()
  assert len(names) == F.descriptor_dim() == 140 == len(set(names))
  assert names[:2] == ("lowlevel.mfcc.mean.0", "lowlevel.mfcc.mean.1")
  assert names[13:16] == ("lowlevel.mfcc.cov.0.0", "lowlevel.mfcc.cov.0.1", "lowlevel.mfcc.cov.0.2")
  assert names[13 + 13] == "lowlevel.mfcc.cov.1.1" and names[103] == "lowlevel.mfcc.cov.12.12"
  assert names[104] == "lowlevel.spectral_centroid.mean"
  assert names[-1] == "lowlevel.zerocrossingrate.dvar2"
  assert names.index("lowlevel.spectral_rolloff.median") == 104 + 2 * 9 + 4


def test_audio_descriptors_are_their_parts(librosa, y):
  """Each block of the vector equals the librosa reference of its part, summarised."""
  config = F.DescriptorConfig.for_sample_rate(SR)  # 1024 / 512, 40 mels to 8 kHz
  got = np.asarray(config.compute(y))
  assert got.shape == (140,) and got.dtype == np.float32
  y64 = y.astype(np.float64)
  kwargs = dict(n_fft=1024, hop_length=512)
  c = librosa.feature.mfcc(y=y64, sr=SR, n_mfcc=13, n_mels=40, fmax=8000.0, window="hann",
                           **kwargs)  # [13, frames]
  assert c.shape[1] == config.n_frames(y.size)
  np.testing.assert_allclose(got[:13], c.mean(axis=1), atol=1e-4 * np.abs(c).max())
  cov = np.cov(c, ddof=1)
  np.testing.assert_allclose(got[13:104], cov[np.triu_indices(13)], atol=1e-4 * np.abs(cov).max())
  S = np.abs(librosa.stft(y64, **kwargs))
  parts = [librosa.feature.spectral_centroid(S=S, sr=SR, n_fft=1024)[0],
           np.sqrt(np.mean(S**2, axis=0)),
           librosa.feature.spectral_rolloff(S=S**2, sr=SR, n_fft=1024)[0],
           librosa.feature.zero_crossing_rate(y, frame_length=1024, hop_length=512)[0]]
  for k, part in enumerate(parts):
    block = got[104 + 9 * k:104 + 9 * (k + 1)]
    want = np.asarray(_essentia_stats(part))
    np.testing.assert_allclose(block, want, rtol=2e-3, atol=1e-6 * np.abs(want).max(),
                               err_msg=F.FRAME_DESCRIPTORS[k])


def test_audio_descriptors_batch_and_errors(y):
  config = F.DescriptorConfig.for_sample_rate(SR)
  clips = np.stack([y[::-1], y])
  batch = np.asarray(F.audio_descriptors(jnp.asarray(clips), config))
  assert batch.shape == (2, 140)
  single = np.asarray(F.audio_descriptors(y, config))
  # Batched and single runs may sum in different orders: covariances near 0 cancel, so they are
  # compared at the MFCC block's scale.
  np.testing.assert_allclose(batch[1, :104], single[:104], atol=1e-6 * np.abs(single[:104]).max())
  np.testing.assert_allclose(batch[1, 104:], single[104:], rtol=1e-5, atol=1e-9)
  with pytest.raises(ValueError, match="at least 3"):
    F.audio_descriptors(y[:600], config)


# --------------------------------------------------------------------------------------------
# The same layout from AcousticBrainz JSON.


# The statistics in the order an AcousticBrainz file happens to list them (not the vector's).
_FILE_ORDER = ("min", "max", "dvar2", "median", "dmean2", "dmean", "var", "dvar", "mean")


def _stats(base: float) -> dict[str, float]:
  return {s: base + k / 100 for k, s in enumerate(_FILE_ORDER)}


def _acousticbrainz_doc() -> dict:
  """A low-level document as AcousticBrainz serves it (abridged, extra fields kept), each value
  distinct so that a misplaced one is caught."""
  return {
      "lowlevel": {
          "average_loudness": 0.93,
          "dissonance": _stats(-50.0),
          "mfcc": {"mean": [-600.0 + i for i in range(13)],
                   "cov": [[1000.0 + 13 * i + j if j >= i else 1000.0 + 13 * j + i
                            for j in range(13)] for i in range(13)],
                   "icov": [[0.5] * 13 for _ in range(13)]},
          "spectral_centroid": _stats(100.0),
          "spectral_rms": _stats(200.0),
          "spectral_rolloff": _stats(300.0),
          "zerocrossingrate": _stats(400.0),
          "gfcc": {"mean": [1.0] * 13},
      },
      "rhythm": {"bpm": 120.0},
      "tonal": {"key_key": "A"},
      "metadata": {"tags": {"musicbrainz_recordingid": ["8f0bd6b3-..."]},
                   "audio_properties": {"length": 215.3}},
  }


def test_json_layout_on_a_fixture():
  assert set(_FILE_ORDER) == set(F.DESCRIPTOR_STATS)
  doc = _acousticbrainz_doc()
  vector = F.descriptors_from_acousticbrainz(json.loads(json.dumps(doc)))
  assert vector.shape == (140,) and vector.dtype == np.float32
  names = F.descriptor_names()
  for k, name in enumerate(names):
    parts = name.split(".")
    if parts[1] == "mfcc" and parts[2] == "mean":
      want = -600.0 + int(parts[3])
    elif parts[1] == "mfcc":
      i, j = int(parts[3]), int(parts[4])
      assert i <= j
      want = 1000.0 + 13 * i + j
    else:
      base = {"spectral_centroid": 100.0, "spectral_rms": 200.0, "spectral_rolloff": 300.0,
              "zerocrossingrate": 400.0}[parts[1]]
      want = base + _FILE_ORDER.index(parts[2]) / 100
    assert vector[k] == np.float32(want), name
  # The covariance's upper triangle, row by row.
  np.testing.assert_array_equal(vector[13:27], [1000.0 + j for j in range(13)] + [1014.0])
  # The authors' code's input, the whole matrix row-major, comes back from the triangle.
  full = F.full_mfcc_covariance(np.stack([vector, vector]))
  assert full.shape == (2, 169)
  np.testing.assert_array_equal(full[1], np.ravel(doc["lowlevel"]["mfcc"]["cov"]))


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["lowlevel"]["spectral_rms"].pop("dvar2"),
     "lowlevel.spectral_rms.dvar2 is missing"),
    (lambda d: d["lowlevel"].pop("zerocrossingrate"), "lowlevel.zerocrossingrate is missing"),
    (lambda d: d.pop("lowlevel"), "lowlevel is missing"),
    (lambda d: d["lowlevel"]["mfcc"].update(cov=[[1.0] * 13] * 12),
     r"mfcc.cov has shape \(12, 13\)"),
    (lambda d: d["lowlevel"]["mfcc"].update(mean=[1.0] * 12), r"mfcc.mean has shape \(12,\)"),
    (lambda d: d["lowlevel"]["spectral_rolloff"].update(mean=float("nan")),
     "lowlevel.spectral_rolloff.mean is nan"),
    (lambda d: d["lowlevel"]["spectral_centroid"].update(var="12"),
     "lowlevel.spectral_centroid.var is '12', not a number"),
])
def test_json_errors_name_the_field(edit, message):
  doc = _acousticbrainz_doc()
  edit(doc)
  with pytest.raises(ValueError, match=message):
    F.descriptors_from_acousticbrainz(doc)


def test_audio_vector_round_trips_through_acousticbrainz_json(y):
  vector = np.asarray(F.audio_descriptors(y, F.DescriptorConfig.for_sample_rate(SR)))
  doc = json.loads(json.dumps(F.descriptors_to_acousticbrainz(vector)))
  cov = np.array(doc["lowlevel"]["mfcc"]["cov"])
  np.testing.assert_array_equal(cov, cov.T)
  np.testing.assert_array_equal(F.descriptors_from_acousticbrainz(doc), vector)
  with pytest.raises(ValueError, match="expected"):
    F.descriptors_to_acousticbrainz(vector[:-1])


# --------------------------------------------------------------------------------------------
# Standardisation.


def test_standardizer_fits_on_train_and_round_trips(tmp_path):
  rng = np.random.default_rng(3)
  train = rng.standard_normal((50, 4)) * [1.0, 1e3, 1e-4, 0.0] + [5.0, -2e3, 1e-3, 7.0]
  scaler = F.Standardizer.fit(train, names=("a", "b", "c", "d"))
  z = scaler(train)
  assert z.dtype == np.float32
  np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(z[:, :3].std(axis=0), 1.0, rtol=1e-4)
  np.testing.assert_array_equal(scaler.std[3], 1.0)  # constant column: only centred
  np.testing.assert_array_equal(z[:, 3], 0.0)
  test = rng.standard_normal((5, 4))
  np.testing.assert_allclose(scaler(test), (test - train.mean(0)) / scaler.std, rtol=1e-5,
                             atol=1e-5)
  jz = scaler(jnp.asarray(test, jnp.float32))
  assert isinstance(jz, jax.Array) and np.allclose(np.asarray(jz), scaler(test), atol=1e-5)
  path = str(tmp_path / "run" / "audio_standardizer.json")
  scaler.save(path)
  loaded = F.Standardizer.load(path)
  np.testing.assert_array_equal(loaded.mean, scaler.mean)
  np.testing.assert_array_equal(loaded.std, scaler.std)
  assert loaded.names == ("a", "b", "c", "d")
  loaded.check_names(("a", "b", "c", "d"))
  with pytest.raises(ValueError, match="column 2"):
    loaded.check_names(("a", "b", "x", "d"))
  with pytest.raises(ValueError, match="fitted on 4 columns"):
    scaler(test[:, :3])
  with pytest.raises(ValueError, match="row 1"):
    F.Standardizer.fit(np.array([[1.0, 2.0], [np.nan, 1.0]]))
  (tmp_path / "bad.json").write_text("{")
  with pytest.raises(ValueError, match="bad.json"):
    F.Standardizer.load(str(tmp_path / "bad.json"))
