"""Tests for musemb.audio: decoding every supported format, downmix, resampling, errors, int16."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import soundfile as sf

from musemb import audio

SR = 22050


def _sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
  t = np.arange(int(round(seconds * sr))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return float(np.fft.rfftfreq(len(x), 1.0 / sr)[np.argmax(spectrum)])


# libsndfile >= 1.1 encodes MP3 too (LAME), so every format the loader promises is written here.
FORMATS = [
    ("wav", "WAV", "PCM_16", 1.0 / 32768),
    ("flac", "FLAC", "PCM_16", 1.0 / 32768),
    ("ogg", "OGG", "VORBIS", None),
    ("mp3", "MP3", "MPEG_LAYER_III", None),
]


@pytest.mark.parametrize("ext,fmt,subtype,atol", FORMATS, ids=[f[0] for f in FORMATS])
def test_load_each_format(tmp_path, ext, fmt, subtype, atol):
  x = _sine(440.0, 0.5, SR)
  path = tmp_path / f"tone.{ext}"
  sf.write(path, x, SR, format=fmt, subtype=subtype)
  y = audio.load_audio(path, SR)
  assert y.dtype == np.float32 and y.ndim == 1
  assert np.all(np.abs(y) <= 1.0)
  if atol is not None:  # lossless: the samples themselves, to 16-bit quantisation
    np.testing.assert_array_equal(y.shape, x.shape)
    np.testing.assert_allclose(y, x, atol=atol)
  else:  # lossy: the right length (within a codec frame) and the right tone
    assert abs(len(y) - len(x)) <= 1152
    assert abs(_peak_hz(y, SR) - 440.0) <= SR / len(y)
    n = min(len(x), len(y))
    assert np.corrcoef(x[:n], y[:n])[0, 1] > 0.95


def test_stereo_is_averaged_to_mono(tmp_path):
  left, right = _sine(300.0, 0.25, SR), _sine(1200.0, 0.25, SR, amp=0.25)
  path = tmp_path / "stereo.flac"
  sf.write(path, np.stack([left, right], axis=1), SR, subtype="PCM_24")
  y = audio.load_audio(path, SR)
  np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)
  both = audio.load_audio(path, SR, mono=False)
  assert both.shape == (len(left), 2)
  np.testing.assert_allclose(both[:, 1], right, atol=1e-6)
  np.testing.assert_allclose(audio.to_mono(both), y, atol=1e-7)
  np.testing.assert_array_equal(audio.to_mono(left), left)


@pytest.mark.parametrize("orig_sr,target_sr", [(44100, 16000), (16000, 22050), (22050, 22050)])
def test_resampling_keeps_frequency_and_length_ratio(tmp_path, orig_sr, target_sr):
  x = _sine(1000.0, 1.0, orig_sr)
  path = tmp_path / "tone.wav"
  sf.write(path, x, orig_sr, subtype="FLOAT")
  y = audio.load_audio(path, target_sr)
  assert abs(len(y) - len(x) * target_sr / orig_sr) <= 1
  assert abs(_peak_hz(y, target_sr) - 1000.0) <= target_sr / len(y)
  # A band-limited tone well below both Nyquists survives resampling almost untouched.
  t = np.arange(len(y)) / target_sr
  mid = slice(len(y) // 10, -len(y) // 10)
  np.testing.assert_allclose(y[mid], 0.5 * np.sin(2 * np.pi * 1000.0 * t[mid]), atol=2e-3)


def test_resample_multichannel():
  x = np.stack([_sine(500.0, 0.5, 48000), _sine(2000.0, 0.5, 48000)], axis=1)
  y = audio.resample(x, 48000, 16000)
  assert y.shape == (8000, 2) and y.dtype == np.float32
  assert abs(_peak_hz(y[:, 0], 16000) - 500.0) <= 2.0
  assert abs(_peak_hz(y[:, 1], 16000) - 2000.0) <= 2.0


def test_max_seconds_crops_like_a_full_decode(tmp_path):
  x = _sine(440.0, 2.0, 44100) + _sine(3000.0, 2.0, 44100, amp=0.2)
  path = tmp_path / "long.wav"
  sf.write(path, x, 44100, subtype="FLOAT")
  full = audio.load_audio(path, 16000)
  head = audio.load_audio(path, 16000, max_seconds=0.75)
  assert head.shape == (12000,)
  # Only the prefix is decoded, yet the resampler saw enough context at the cut.
  np.testing.assert_allclose(head, full[:12000], atol=1e-4)


def test_clips_float_overshoot(tmp_path):
  path = tmp_path / "loud.wav"
  sf.write(path, np.array([0.0, 1.5, -2.0, 0.25] * 100, np.float32), SR, subtype="FLOAT")
  y = audio.load_audio(path, SR)
  assert y.max() == 1.0 and y.min() == -1.0


def _reason(path, **kwargs) -> audio.AudioError:
  with pytest.raises(audio.AudioError) as info:
    audio.load_audio(path, SR, **kwargs)
  assert str(path) in str(info.value)
  assert info.value.path == str(path)
  return info.value


def test_error_unreadable(tmp_path):
  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(bytes(range(256)) * 8)
  err = _reason(garbage)
  assert err.reason == "unreadable" and "ffmpeg" in str(err)
  assert _reason(tmp_path / "missing.flac").reason == "unreadable"


def test_error_empty(tmp_path):
  zero = tmp_path / "zero.wav"
  zero.write_bytes(b"")
  assert _reason(zero).reason == "empty"
  no_samples = tmp_path / "no_samples.wav"
  sf.write(no_samples, np.zeros((0,), np.float32), SR)
  assert _reason(no_samples).reason == "empty"


def test_error_too_short(tmp_path):
  path = tmp_path / "short.wav"
  sf.write(path, _sine(440.0, 0.5, 44100), 44100)
  err = _reason(path, min_seconds=1.0)
  assert err.reason == "too_short" and "min_seconds" in str(err)
  # Measured after resampling: exactly the minimum passes.
  assert len(audio.load_audio(path, 16000, min_seconds=0.5)) == 8000


def test_error_nonfinite(tmp_path):
  x = _sine(440.0, 0.1, SR)
  x[100] = np.nan
  path = tmp_path / "nan.wav"
  sf.write(path, x, SR, subtype="FLOAT")
  assert _reason(path).reason == "nonfinite"


def test_audio_error_is_value_error_and_pickles():
  err = audio.AudioError("/data/a.mp3", "empty", "/data/a.mp3 is empty; drop it.")
  assert isinstance(err, ValueError)
  back = pickle.loads(pickle.dumps(err))
  assert (back.path, back.reason, str(back)) == (err.path, err.reason, str(err))
  with pytest.raises(ValueError, match="reason"):
    audio.AudioError("/x.wav", "corrupt", "bad")


def test_int16_round_trip():
  # The int16 grid tops out at 32767 / 32768, so the last half step below 1.0 clips.
  x = np.random.default_rng(0).uniform(-1.0, 32767 / 32768, size=10_000).astype(np.float32)
  q = audio.to_int16(x)
  assert q.dtype == np.int16
  back = audio.from_int16(q)
  assert back.dtype == np.float32
  np.testing.assert_allclose(back, x, atol=0.5 / 32768 + 1e-7)
  # Exact on the int16 grid, clipped outside [-1, 1).
  np.testing.assert_array_equal(audio.to_int16(audio.from_int16(q)), q)
  np.testing.assert_array_equal(
      audio.to_int16(np.array([1.0, 1.5, -1.0, -3.0, 0.5])), [32767, 32767, -32768, -32768, 16384])
  with pytest.raises(ValueError, match="NaN"):
    audio.to_int16(np.array([0.0, np.nan]))
  with pytest.raises(ValueError, match="int16"):
    audio.from_int16(np.zeros(3, np.int32))


def test_crop_or_pad():
  x = np.arange(10, dtype=np.float32)
  np.testing.assert_array_equal(audio.crop_or_pad(x, 4, offset=3), [3, 4, 5, 6])
  np.testing.assert_array_equal(audio.crop_or_pad(x, 5, offset=8), [8, 9, 0, 0, 0])
  np.testing.assert_array_equal(audio.crop_or_pad(x, 3, offset=20), [0, 0, 0])
  stereo = np.stack([x, -x], axis=1)
  out = audio.crop_or_pad(stereo, 12)
  assert out.shape == (12, 2)
  np.testing.assert_array_equal(out[:10], stereo)
  np.testing.assert_array_equal(out[10:], 0)
  with pytest.raises(ValueError, match="offset"):
    audio.crop_or_pad(x, 3, offset=-1)
