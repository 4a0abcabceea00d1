"""Audio files to float32 sample arrays: decode, downmix, resample, crop/pad, int16 storage.

numpy in, numpy out; this is the host side of data preparation (`launch/prepare.py` and the TFDS
builders call it once per file). Decoding is libsndfile through soundfile (WAV, FLAC, OGG/Vorbis
and, since libsndfile 1.1, MP3); resampling is libsoxr's "HQ" quality through soxr. A file that
cannot be used raises `AudioError`, whose `reason` lets a builder count and record the skip
(DESIGN.md, "Errors and data safety") and whose message names the file and the fix.

Conventions: mono audio is `[samples]`, multichannel audio is channels-last `[samples, channels]`
(soundfile's layout), float samples live in [-1, 1] and int16 storage scales by 32768.
"""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf
import soxr

REASONS = ("unreadable", "empty", "too_short", "nonfinite")
# Read this much beyond max_seconds so that the resampler's filter sees real signal, not the
# end of the buffer, at the crop point.
_CROP_MARGIN_SECONDS = 0.1


class AudioError(ValueError):
  """An audio file that cannot be used.

  Attributes:
    path: the file.
    reason: one of `REASONS`: "unreadable" (missing, or not a format libsndfile decodes),
      "empty" (no bytes or no samples), "too_short" (fewer than `min_seconds` after resampling),
      "nonfinite" (NaN or infinite samples, possible in float WAV).
  """

  def __init__(self, path: str | os.PathLike[str], reason: str, message: str):
    if reason not in REASONS:
      raise ValueError(f"AudioError reason {reason!r} is not one of {REASONS}.")
    super().__init__(message)
    self.path = os.fspath(path)
    self.reason = reason

  def __reduce__(self):
    # Keeps the exception picklable (multiprocessing workers) despite the extra arguments.
    return (type(self), (self.path, self.reason, self.args[0]))


def load_audio(path: str | os.PathLike[str],
               sample_rate: int,
               *,
               mono: bool = True,
               min_seconds: float = 0.0,
               max_seconds: float | None = None) -> np.ndarray:
  """Decodes an audio file to float32 samples at `sample_rate`.

  Args:
    path: a WAV, FLAC, OGG or MP3 file (anything libsndfile decodes).
    sample_rate: target rate in Hz; other rates are resampled with soxr ("HQ").
    mono: average the channels into one.
    min_seconds: raise `AudioError("too_short")` below this duration (after resampling).
    max_seconds: keep only the first `max_seconds` (only that much is decoded).

  Returns:
    float32 `[samples]` (mono) or `[samples, channels]`, clipped to [-1, 1].

  Raises:
    AudioError: the file is missing or undecodable, empty, too short, or holds NaN/inf.
  """
  path_str = os.fspath(path)
  if int(sample_rate) != sample_rate or sample_rate <= 0:
    raise ValueError(f"load_audio: sample_rate={sample_rate} must be a positive integer (Hz).")
  if min_seconds < 0 or (max_seconds is not None and not 0 < max_seconds):
    raise ValueError(
        f"load_audio: need min_seconds >= 0 and max_seconds > 0, got {min_seconds}, {max_seconds}.")
  if max_seconds is not None and min_seconds > max_seconds:
    raise ValueError(f"load_audio: min_seconds={min_seconds} exceeds max_seconds={max_seconds}.")
  try:
    size = os.path.getsize(path_str)
  except OSError as e:
    raise AudioError(
        path_str, "unreadable",
        f"Cannot read audio file {path_str!r}: {e.strerror or e}. Check the path (and the data "
        "directory the source was given).") from e
  if size == 0:
    raise AudioError(
        path_str, "empty",
        f"Audio file {path_str!r} has 0 bytes; re-download or re-export it, or drop it from the "
        "source listing.")
  try:
    with sf.SoundFile(path_str) as f:
      orig_sr = int(f.samplerate)
      frames = -1
      if max_seconds is not None:
        frames = int(math.ceil((max_seconds + _CROP_MARGIN_SECONDS) * orig_sr))
      data = f.read(frames=frames, dtype="float32", always_2d=True)
  except (sf.SoundFileError, RuntimeError, OSError, EOFError) as e:
    why = str(e)
    if "possibly a pipe" in why or "not recognised" in why.lower():
      # libsndfile's words for an existing file whose bytes are no audio format it knows (a text
      # file named .mp3, say); the file does exist, so say what is true.
      why = "its contents are not an audio format libsndfile recognises"
    raise AudioError(
        path_str, "unreadable",
        f"Cannot decode audio file {path_str!r} ({why}). libsndfile "
        f"{sf.__libsndfile_version__} reads WAV, FLAC, OGG/Vorbis and MP3; convert other formats "
        "(e.g. `ffmpeg -i in.m4a out.flac`) or replace the corrupt file.") from e
  if data.shape[0] == 0:
    raise AudioError(
        path_str, "empty",
        f"Audio file {path_str!r} decodes to 0 samples; re-export it or drop it from the source.")
  if not np.isfinite(data).all():
    raise AudioError(
        path_str, "nonfinite",
        f"Audio file {path_str!r} contains NaN or infinite samples; re-export it (e.g. as 16-bit "
        "PCM) or drop it from the source.")
  if mono:
    data = to_mono(data)
  data = resample(data, orig_sr, sample_rate)
  if max_seconds is not None:
    data = data[:int(round(max_seconds * sample_rate))]
  min_samples = int(round(min_seconds * sample_rate))
  if data.shape[0] < min_samples:
    raise AudioError(
        path_str, "too_short",
        f"Audio file {path_str!r} lasts {data.shape[0] / sample_rate:.3f} s, shorter than "
        f"min_seconds={min_seconds}; lower min_seconds or drop the file.")
  return np.clip(data, -1.0, 1.0)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
  """Band-limited resampling with soxr ("HQ").

  Args:
    x: `[samples]` or `[samples, channels]`.
    orig_sr, target_sr: rates in Hz.

  Returns:
    float32 with about `samples * target_sr / orig_sr` samples (a copy even if the rates match).
  """
  x = np.asarray(x)
  if x.ndim not in (1, 2):
    raise ValueError(f"resample: x must be [samples] or [samples, channels], got {x.shape}.")
  if orig_sr <= 0 or target_sr <= 0:
    raise ValueError(f"resample: rates must be > 0, got orig_sr={orig_sr}, target_sr={target_sr}.")
  x = np.ascontiguousarray(x, np.float32)
  if orig_sr == target_sr or x.shape[0] == 0:
    return x.copy()
  return np.asarray(soxr.resample(x, orig_sr, target_sr, quality="HQ"), np.float32)


def to_mono(x: np.ndarray) -> np.ndarray:
  """float32 `[samples, channels] -> [samples]`, the mean of the channels; `[samples]` as is."""
  x = np.asarray(x, np.float32)
  if x.ndim == 1:
    return x
  if x.ndim != 2:
    raise ValueError(f"to_mono: x must be [samples] or [samples, channels], got {x.shape}.")
  return x.mean(axis=-1, dtype=np.float32)


def crop_or_pad(x: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
  """`length` samples of x starting at `offset`, zero-padded at the end if x runs out.

  Args:
    x: `[samples, ...]`.
    length: output samples.
    offset: first sample taken.

  Returns:
    `[length, ...]`, x's dtype.
  """
  x = np.asarray(x)
  if length < 0 or offset < 0:
    raise ValueError(f"crop_or_pad: length={length} and offset={offset} must be >= 0.")
  out = x[offset:offset + length]
  if out.shape[0] < length:
    pad = [(0, length - out.shape[0])] + [(0, 0)] * (x.ndim - 1)
    out = np.pad(out, pad)
  return out


def to_int16(x: np.ndarray) -> np.ndarray:
  """float samples in [-1, 1] -> int16 (x * 32768, rounded, clipped to [-32768, 32767])."""
  x = np.asarray(x, np.float32)
  if not np.isfinite(x).all():
    raise ValueError("to_int16: samples contain NaN or inf; load audio with load_audio, which "
                     "rejects such files.")
  return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def from_int16(x: np.ndarray) -> np.ndarray:
  """int16 samples -> float32 in [-1, 1) (x / 32768), the inverse of `to_int16`."""
  x = np.asarray(x)
  if x.dtype != np.int16:
    raise ValueError(f"from_int16: expected int16 samples, got {x.dtype}.")
  return x.astype(np.float32) / np.float32(32768.0)
