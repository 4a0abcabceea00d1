"""Audio features in JAX: STFT, mel filterbank, log-mel, MFCC (+ deltas), k-means codebooks.

Everything that touches samples is a pure JAX function, jit-compiled and batched over any leading
axes: `x: [..., samples]` in, `[..., frames, features]` out (time before features, the layout the
models consume; librosa returns the transpose). The numerics follow librosa 0.11, which the tests
use as the reference: same periodic windows, same centre padding, the Slaney mel scale and area
normalisation, `power_to_db` with a `top_db` floor, orthonormal DCT-II MFCCs and Savitzky-Golay
deltas with interpolated edges. Matrix products run at `Precision.HIGHEST`, so TPUs and GPUs
(whose default matmul precision is lower) give the same float32 numbers as the CPU.

Speed (the `features` benchmark, launch/benchmarks/features.py): on CPU the spectrogram features
run clip by clip (`lax.map` over the flattened leading axes, a few clips per step), so a clip's
frames and spectrum stay in cache instead of streaming batch-sized intermediates (hundreds of MB
for 32 x 10 s) through memory; elsewhere the whole batch is one vectorised computation. The mel
projection multiplies each group of adjacent mel filters by the band of FFT bins it covers only
(`_apply_filterbank`): the Slaney filters are triangles, so the dense product is mostly zeros.
Neither changes the maths, only the order of float32 sums.

The MFCC defaults are the setting of MUSLSE (Weston, Bengio & Hamel 2011, "Multi-tasking with joint
semantic spaces for large-scale music annotation and retrieval", section 6.2): 13 MFCCs every
10 ms over a 25 ms Hamming window, first and second derivatives appended (39 dims), a dictionary
of 2000 typical frames learnt with k-means and each song represented by the counts of its frames'
nearest codewords. The codebook is fitted with mini-batch k-means (Sculley 2010, "Web-scale
k-means clustering", per-centre learning rate 1/count) seeded with k-means++ (Arthur &
Vassilvitskii 2007); the histogram is kept sparse (`bag_of_frames`), as the song vectors are.

The last section computes AcousticBrainz-style track descriptors for Rush et al. (MFCC mean and
covariance, spectral centroid, spectral RMS, roll-off and zero-crossing rate with Essentia's
statistics) from audio, reads the same layout from AcousticBrainz JSON, and z-scores it
(`Standardizer`); its comment lists the known differences from Essentia's definitions.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

_HIGHEST = jax.lax.Precision.HIGHEST
# On CPU the spectrogram features take this many frame samples (frames x n_fft) per step of
# their loop over clips: 4 MB of float32 frames, a working set that stays in cache.
_CPU_STEP_SAMPLES = 1 << 20
# Mel filters per band of the banded mel projection.
_MEL_GROUP = 16
# Beyond this many shifted slices per frame, a gather is cheaper to compile and to run.
_MAX_FRAME_SLICES = 16
_PAD_MODES = ("constant", "reflect", "edge", "symmetric")


# ----------------------------------------------------------------------------------------------
# Framing and STFT.


def frame(x: jax.Array, frame_length: int, hop_length: int) -> jax.Array:
  """Slides a window over the last axis.

  Args:
    x: `[..., samples]`.
    frame_length: samples per frame.
    hop_length: samples between the starts of consecutive frames.

  Returns:
    `[..., n_frames, frame_length]` with `n_frames = 1 + (samples - frame_length) // hop_length`
    (librosa.util.frame, with frames before samples).
  """
  x = jnp.asarray(x)
  frame_length, hop_length = int(frame_length), int(hop_length)
  if frame_length < 1 or hop_length < 1:
    raise ValueError(
        f"frame: frame_length={frame_length} and hop_length={hop_length} must both be >= 1.")
  n = x.shape[-1]
  if n < frame_length:
    raise ValueError(
        f"frame: input has {n} samples on its last axis, fewer than frame_length={frame_length}; "
        "pad the signal (or use center=True in stft) or use a shorter frame.")
  n_frames = 1 + (n - frame_length) // hop_length
  lead = x.shape[:-1]
  k = -(-frame_length // hop_length)  # hop-sized blocks that cover one frame
  if k <= _MAX_FRAME_SLICES:
    # Frame i is blocks i..i+k-1 (each hop samples long) laid end to end and cut to
    # frame_length: k contiguous slices, much faster on CPU than a gather of every sample.
    needed = (n_frames + k - 1) * hop_length
    if needed > n:
      # Only samples past the last frame's end are padded; the final cut drops them.
      x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, needed - n)])
    blocks = x[..., :needed].reshape(*lead, n_frames + k - 1, hop_length)
    pieces = [blocks[..., j:j + n_frames, :] for j in range(k)]
    return jnp.concatenate(pieces, axis=-1)[..., :frame_length]
  idx = (np.arange(n_frames)[:, None] * hop_length + np.arange(frame_length)[None, :])
  return x[..., idx]


def get_window(window: str, win_length: int, n_fft: int | None = None) -> np.ndarray:
  """A periodic (DFT-even) window, zero-padded symmetrically to `n_fft` as librosa does.

  Args:
    window: any name `scipy.signal.get_window` knows ("hann", "hamming", "blackman", ...).
    win_length: samples in the window proper.
    n_fft: total length; defaults to `win_length`.

  Returns:
    float32 `[n_fft]`.
  """
  n_fft = win_length if n_fft is None else n_fft
  if not 1 <= win_length <= n_fft:
    raise ValueError(f"win_length={win_length} must be in [1, n_fft={n_fft}].")
  try:
    w = scipy.signal.get_window(window, win_length, fftbins=True)
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"Unknown window {window!r} ({e}); use a scipy.signal.get_window name such as 'hann' "
        "or 'hamming'.") from e
  left = (n_fft - win_length) // 2
  return np.pad(w, (left, n_fft - win_length - left)).astype(np.float32)


@functools.partial(
    jax.jit, static_argnames=("n_fft", "hop_length", "win_length", "window", "center", "pad_mode"))
def stft(x: jax.Array,
         n_fft: int,
         hop_length: int,
         win_length: int | None = None,
         window: str = "hann",
         center: bool = True,
         pad_mode: str = "constant") -> jax.Array:
  """Short-time Fourier transform with librosa.stft semantics.

  Args:
    x: real `[..., samples]`.
    n_fft: FFT size.
    hop_length: samples between frames.
    win_length: window length (<= n_fft; the window sits centred inside n_fft); defaults to n_fft.
    window: periodic window name (see `get_window`).
    center: pad `n_fft // 2` samples on both sides so that frame t is centred on t * hop_length.
    pad_mode: "constant" (zeros, librosa 0.11's default), "reflect", "edge" or "symmetric".

  Returns:
    complex64 `[..., n_frames, n_fft // 2 + 1]`.
  """
  x = jnp.asarray(x, jnp.float32)
  win = get_window(window, n_fft if win_length is None else win_length, n_fft)
  if center:
    if pad_mode not in _PAD_MODES:
      raise ValueError(f"stft: pad_mode={pad_mode!r} is not one of {_PAD_MODES}.")
    pad = n_fft // 2
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=pad_mode)
  return jnp.fft.rfft(frame(x, n_fft, hop_length) * win, axis=-1)


def n_stft_frames(num_samples: int, n_fft: int, hop_length: int, center: bool = True) -> int:
  """Frames that `stft` (hence every spectrogram feature here) gives for `num_samples` samples."""
  padded = num_samples + 2 * (n_fft // 2) if center else num_samples
  if padded < n_fft:
    raise ValueError(f"{num_samples} samples give no frame of n_fft={n_fft} (center={center}).")
  return 1 + (padded - n_fft) // hop_length


# ----------------------------------------------------------------------------------------------
# Mel scale.


def hz_to_mel(frequencies: Any, htk: bool = False) -> np.ndarray:
  """Hz -> mel: Slaney's Auditory Toolbox scale (linear below 1 kHz, log above) or HTK's."""
  f = np.asarray(frequencies, np.float64)
  if htk:
    return 2595.0 * np.log10(1.0 + f / 700.0)
  f_sp = 200.0 / 3
  min_log_hz = 1000.0
  min_log_mel = min_log_hz / f_sp
  logstep = np.log(6.4) / 27.0
  safe = np.maximum(f, min_log_hz)  # keeps log() quiet where the linear branch is taken
  return np.where(f >= min_log_hz, min_log_mel + np.log(safe / min_log_hz) / logstep, f / f_sp)


def mel_to_hz(mels: Any, htk: bool = False) -> np.ndarray:
  """Inverse of `hz_to_mel`."""
  m = np.asarray(mels, np.float64)
  if htk:
    return 700.0 * (10.0**(m / 2595.0) - 1.0)
  f_sp = 200.0 / 3
  min_log_hz = 1000.0
  min_log_mel = min_log_hz / f_sp
  logstep = np.log(6.4) / 27.0
  return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: float,
                   n_fft: int,
                   n_mels: int = 128,
                   fmin: float = 0.0,
                   fmax: float | None = None,
                   htk: bool = False,
                   norm: str | float | None = "slaney") -> np.ndarray:
  """Triangular mel filters, equal to `librosa.filters.mel(...).T`.

  Args:
    sample_rate: Hz.
    n_fft: FFT size (the filters cover its `n_fft // 2 + 1` bins).
    n_mels: number of filters.
    fmin, fmax: band edges in Hz; fmax defaults to the Nyquist frequency.
    htk: HTK mel formula instead of Slaney's.
    norm: "slaney" divides each triangle by its width in Hz (constant energy per channel),
      a number p normalises each filter to unit p-norm, None leaves peaks at 1.

  Returns:
    float32 `[n_fft // 2 + 1, n_mels]`, so that `power_spectrum @ filters` gives mel energies.
  """
  fmax = sample_rate / 2.0 if fmax is None else float(fmax)
  if not 0.0 <= fmin < fmax <= sample_rate / 2.0 + 1e-9:
    raise ValueError(
        f"mel_filterbank: need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, "
        f"fmax={fmax}, sample_rate={sample_rate}.")
  if n_mels < 1:
    raise ValueError(f"mel_filterbank: n_mels={n_mels} must be >= 1.")
  fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
  mel_edges = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
  widths = np.diff(mel_edges)
  ramps = mel_edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, bins]
  rising = -ramps[:-2] / widths[:-1, None]
  falling = ramps[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))  # [n_mels, bins]
  if norm == "slaney":
    weights *= (2.0 / (mel_edges[2:] - mel_edges[:-2]))[:, None]
  elif isinstance(norm, (int, float)) and not isinstance(norm, bool):
    lengths = np.linalg.norm(weights, ord=norm, axis=-1, keepdims=True)
    weights = weights / np.where(lengths > np.finfo(np.float64).tiny, lengths, 1.0)
  elif norm is not None:
    raise ValueError(f"mel_filterbank: norm={norm!r} must be 'slaney', a number or None.")
  if np.any(weights.max(axis=-1) == 0.0):
    warnings.warn(
        f"mel_filterbank: some of the {n_mels} mel filters are empty for n_fft={n_fft} at "
        f"{sample_rate} Hz; use fewer mels or a larger n_fft.",
        stacklevel=2)
  return weights.T.astype(np.float32)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
  """Orthonormal DCT-II basis (scipy.fft.dct(type=2, norm="ortho")), float32 `[n_in, n_out]`."""
  n = np.arange(n_in)[:, None]
  k = np.arange(n_out)[None, :]
  basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
  basis[:, 0] /= np.sqrt(2.0)
  return basis.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Spectrogram features.


def power_to_db(S: jax.Array,
                ref: float = 1.0,
                amin: float = 1e-10,
                top_db: float | None = 80.0) -> jax.Array:
  """Power -> decibels: `10 log10(max(amin, S) / max(amin, ref))`, floored `top_db` below the peak.

  As librosa.power_to_db, except that the peak is taken per example, over the last two axes
  (frames and features), so that batching never lets one clip set another's floor.

  Args:
    S: non-negative power `[..., frames, features]`.
    ref: the power that maps to 0 dB.
    amin: smallest power considered (avoids log(0)).
    top_db: dynamic range kept below each example's peak; None keeps everything.

  Returns:
    float32 dB, the shape of S.
  """
  S = jnp.asarray(S)
  if jnp.iscomplexobj(S):
    raise ValueError("power_to_db expects real power; pass jnp.abs(D) ** 2 for a complex STFT D.")
  if amin <= 0:
    raise ValueError(f"power_to_db: amin={amin} must be > 0.")
  S = S.astype(jnp.float32)
  log_spec = 10.0 * jnp.log10(jnp.maximum(amin, S))
  log_spec = log_spec - 10.0 * math.log10(max(amin, abs(ref)))
  if top_db is not None:
    if top_db < 0:
      raise ValueError(f"power_to_db: top_db={top_db} must be >= 0 (or None).")
    axes = tuple(range(max(0, S.ndim - 2), S.ndim))
    peak = jnp.max(log_spec, axis=axes, keepdims=True)
    log_spec = jnp.maximum(log_spec, peak - top_db)
  return log_spec


def _map_clips(fn, x: jax.Array, frames_per_clip: int, n_fft: int) -> jax.Array:
  """Applies `fn: [samples] -> [frames, d]` to every clip of `x: [..., samples]`.

  On CPU, a loop over clips (`lax.map`, as many clips per step as fit `_CPU_STEP_SAMPLES`);
  on other backends, `vmap` over the whole batch (`lax.platform_dependent` picks at lowering).
  Returns `[..., frames, d]`.
  """
  lead, n = x.shape[:-1], x.shape[-1]
  if not lead:
    return fn(x)
  flat = x.reshape(-1, n)
  per_step = max(1, _CPU_STEP_SAMPLES // max(1, frames_per_clip * n_fft))
  if flat.shape[0] <= per_step:
    out = jax.vmap(fn)(flat)
  else:
    out = jax.lax.platform_dependent(
        flat,
        cpu=lambda a: jax.lax.map(fn, a, batch_size=per_step if per_step > 1 else None),
        default=jax.vmap(fn))
  return out.reshape(*lead, *out.shape[1:])


def _filterbank_bands(fb: np.ndarray, group: int) -> list[tuple[int, int, int, int]]:
  """`(bin_lo, bin_hi, mel_lo, mel_hi)` for each run of `group` filters of `fb: [bins, mels]`:
  the filters `mel_lo:mel_hi` are zero outside bins `bin_lo:bin_hi` (empty filters: lo == hi)."""
  bands = []
  for m0 in range(0, fb.shape[1], group):
    m1 = min(fb.shape[1], m0 + group)
    nonzero = np.flatnonzero(np.any(fb[:, m0:m1] != 0.0, axis=1))
    lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (0, 0)
    bands.append((lo, hi, m0, m1))
  return bands


def _apply_filterbank(spectrum: jax.Array, fb: np.ndarray) -> jax.Array:
  """`spectrum: [..., bins] @ fb: [bins, mels]`, skipping the zeros of a banded (mel) filterbank.

  Each group of `_MEL_GROUP` adjacent filters is multiplied by the bins it covers only; for
  128 Slaney mels over 513 bins that is a quarter of the dense product's multiply-adds.
  """
  parts = []
  for lo, hi, m0, m1 in _filterbank_bands(fb, _MEL_GROUP):
    if hi == lo:
      parts.append(jnp.zeros((*spectrum.shape[:-1], m1 - m0), spectrum.dtype))
    else:
      parts.append(jnp.matmul(spectrum[..., lo:hi], fb[lo:hi, m0:m1], precision=_HIGHEST))
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _mel_power(x: jax.Array, sample_rate: float, n_fft: int, hop_length: int,
               win_length: int | None, window: str, n_mels: int, fmin: float,
               fmax: float | None, center: bool, power: float) -> jax.Array:
  """`melspectrogram` of any batch, vectorised: `[..., samples] -> [..., frames, n_mels]`."""
  spec = stft(x, n_fft, hop_length, win_length, window, center)
  if power == 2.0:
    mag = jnp.square(spec.real) + jnp.square(spec.imag)
  else:
    mag = jnp.abs(spec)**power
  return _apply_filterbank(mag, mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax))


@functools.partial(
    jax.jit,
    static_argnames=("sample_rate", "n_fft", "hop_length", "win_length", "window", "n_mels",
                     "fmin", "fmax", "center", "power"))
def melspectrogram(x: jax.Array,
                   sample_rate: float,
                   n_fft: int = 2048,
                   hop_length: int = 512,
                   win_length: int | None = None,
                   window: str = "hann",
                   n_mels: int = 128,
                   fmin: float = 0.0,
                   fmax: float | None = None,
                   center: bool = True,
                   power: float = 2.0) -> jax.Array:
  """Mel spectrogram as librosa.feature.melspectrogram (Slaney mels, zero centre padding).

  Args:
    x: `[..., samples]`.
    sample_rate: Hz of x.
    n_fft, hop_length, win_length, window, center: as in `stft`.
    n_mels, fmin, fmax: as in `mel_filterbank`.
    power: exponent of the magnitude (2: power, 1: magnitude).

  Returns:
    float32 `[..., frames, n_mels]`.
  """
  x = jnp.asarray(x, jnp.float32)
  frames = n_stft_frames(x.shape[-1], n_fft, hop_length, center)
  return _map_clips(
      lambda c: _mel_power(c, sample_rate, n_fft, hop_length, win_length, window, n_mels, fmin,
                           fmax, center, power), x, frames, n_fft)


@functools.partial(
    jax.jit,
    static_argnames=("sample_rate", "n_fft", "hop_length", "win_length", "window", "n_mels",
                     "fmin", "fmax", "center", "top_db"))
def log_mel(x: jax.Array,
            sample_rate: float,
            n_fft: int = 2048,
            hop_length: int = 512,
            win_length: int | None = None,
            window: str = "hann",
            n_mels: int = 128,
            fmin: float = 0.0,
            fmax: float | None = None,
            center: bool = True,
            top_db: float | None = 80.0) -> jax.Array:
  """Log-mel spectrogram in dB, `power_to_db(melspectrogram(...))`: `[..., frames, n_mels]`."""
  x = jnp.asarray(x, jnp.float32)
  frames = n_stft_frames(x.shape[-1], n_fft, hop_length, center)
  return _map_clips(
      lambda c: power_to_db(
          _mel_power(c, sample_rate, n_fft, hop_length, win_length, window, n_mels, fmin, fmax,
                     center, 2.0), top_db=top_db), x, frames, n_fft)


def mfcc_lengths(sample_rate: float,
                 win_ms: float = 25.0,
                 hop_ms: float = 10.0,
                 n_fft: int | None = None) -> tuple[int, int, int]:
  """`(n_fft, win_length, hop_length)` in samples for a window and hop given in milliseconds.

  The lengths are rounded to the nearest sample; n_fft defaults to the smallest power of two that
  holds the window (25 ms at 16 kHz: a 400-sample window in a 512-point FFT, hop 160).
  """
  win_length = int(round(sample_rate * win_ms / 1000.0))
  hop_length = int(round(sample_rate * hop_ms / 1000.0))
  if win_length < 1 or hop_length < 1:
    raise ValueError(
        f"win_ms={win_ms} and hop_ms={hop_ms} at {sample_rate} Hz give a window of {win_length} "
        f"and a hop of {hop_length} samples; both must be >= 1.")
  if n_fft is None:
    n_fft = 1 << (win_length - 1).bit_length()
  if n_fft < win_length:
    raise ValueError(
        f"n_fft={n_fft} is shorter than the {win_ms} ms window ({win_length} samples).")
  return n_fft, win_length, hop_length


@functools.partial(
    jax.jit,
    static_argnames=("sample_rate", "n_mfcc", "win_ms", "hop_ms", "n_fft", "n_mels", "fmin",
                     "fmax", "window", "top_db"))
def mfcc(x: jax.Array,
         sample_rate: float,
         n_mfcc: int = 13,
         win_ms: float = 25.0,
         hop_ms: float = 10.0,
         n_fft: int | None = None,
         n_mels: int = 40,
         fmin: float = 0.0,
         fmax: float | None = None,
         window: str = "hamming",
         top_db: float | None = 80.0) -> jax.Array:
  """MFCCs as librosa.feature.mfcc: orthonormal DCT-II of the dB mel spectrogram.

  With the defaults this is MUSLSE's front end (section 6.2): 13 coefficients every 10 ms over a
  25 ms Hamming window, from 40 Slaney mel bands.

  Args:
    x: `[..., samples]`.
    sample_rate: Hz of x.
    n_mfcc: coefficients kept (<= n_mels).
    win_ms, hop_ms: window and hop in milliseconds (see `mfcc_lengths`).
    n_fft: FFT size; defaults to the next power of two >= the window.
    n_mels, fmin, fmax: mel bands.
    window: window name.
    top_db: dB floor below each example's peak before the DCT.

  Returns:
    float32 `[..., frames, n_mfcc]`.
  """
  return _mfcc_clips(x, sample_rate, n_mfcc, win_ms, hop_ms, n_fft, n_mels, fmin, fmax, window,
                     top_db, delta_width=None)


def _mfcc_clips(x: jax.Array, sample_rate: float, n_mfcc: int, win_ms: float, hop_ms: float,
                n_fft: int | None, n_mels: int, fmin: float, fmax: float | None, window: str,
                top_db: float | None, delta_width: int | None) -> jax.Array:
  """`mfcc` (delta_width None) or `mfcc_with_deltas`, computed clip by clip (`_map_clips`)."""
  if not 1 <= n_mfcc <= n_mels:
    raise ValueError(f"mfcc: n_mfcc={n_mfcc} must be in [1, n_mels={n_mels}].")
  n_fft, win_length, hop_length = mfcc_lengths(sample_rate, win_ms, hop_ms, n_fft)
  x = jnp.asarray(x, jnp.float32)
  frames = n_stft_frames(x.shape[-1], n_fft, hop_length)
  basis = dct_matrix(n_mels, n_mfcc)

  def one(c):
    S = power_to_db(
        _mel_power(c, sample_rate, n_fft, hop_length, win_length, window, n_mels, fmin, fmax,
                   True, 2.0), top_db=top_db)
    m = jnp.matmul(S, basis, precision=_HIGHEST)
    if delta_width is None:
      return m
    return jnp.concatenate(
        [m, delta(m, delta_width, 1, axis=-2),
         delta(m, delta_width, 2, axis=-2)], axis=-1)

  return _map_clips(one, x, frames, n_fft)


def _savgol_rows(width: int, order: int, positions: np.ndarray) -> np.ndarray:
  """Rows mapping `width` samples to the order-th derivative, at `positions`, of their LS fit.

  The fit is a polynomial of degree `order` (librosa's polyorder = order) over positions
  0..width-1; centring the abscissae keeps the Vandermonde system well conditioned.
  """
  half = width // 2
  t = np.arange(width, dtype=np.float64) - half
  vander = t[:, None]**np.arange(order + 1)[None, :]  # [width, order + 1]
  pinv = np.linalg.pinv(vander)  # coefficients = pinv @ samples
  s = np.asarray(positions, np.float64)[:, None] - half
  p = np.arange(order + 1)[None, :]
  falling = np.array([math.perm(int(q), order) for q in range(order + 1)], np.float64)[None, :]
  deriv = falling * np.where(p >= order, s**np.maximum(p - order, 0), 0.0)  # [positions, order+1]
  return deriv @ pinv


def delta(features: jax.Array, width: int = 9, order: int = 1, axis: int = -2) -> jax.Array:
  """Local derivative along time, as librosa.feature.delta (Savitzky-Golay, mode="interp").

  Inside, each output is the order-th derivative of the degree-`order` least-squares polynomial
  through the `width` frames centred on it; in the first and last `width // 2` frames the
  polynomial fitted to the first (last) `width` frames is evaluated instead.

  Args:
    features: `[..., frames, features]` (or any array, with `axis` the time axis).
    width: odd number of frames (>= 3, <= frames).
    order: derivative order (1: delta, 2: delta-delta).
    axis: the time axis.

  Returns:
    float32 array of the same shape.
  """
  x = jnp.moveaxis(jnp.asarray(features, jnp.float32), axis, -1)
  n = x.shape[-1]
  if width < 3 or width % 2 != 1:
    raise ValueError(f"delta: width={width} must be an odd integer >= 3.")
  if not 1 <= order < width:
    raise ValueError(f"delta: order={order} must be in [1, width={width}).")
  if n < width:
    raise ValueError(
        f"delta: {n} frames along axis {axis}, fewer than width={width}; use a smaller width or "
        "a longer clip.")
  half = width // 2
  centre = _savgol_rows(width, order, [half])[0].astype(np.float32)
  left = _savgol_rows(width, order, np.arange(half)).astype(np.float32)
  right = _savgol_rows(width, order, np.arange(width - half, width)).astype(np.float32)
  inner = sum(centre[j] * x[..., j:n - width + 1 + j] for j in range(width))
  head = jnp.matmul(x[..., :width], left.T, precision=_HIGHEST)
  tail = jnp.matmul(x[..., n - width:], right.T, precision=_HIGHEST)
  return jnp.moveaxis(jnp.concatenate([head, inner, tail], axis=-1), -1, axis)


@functools.partial(
    jax.jit,
    static_argnames=("sample_rate", "n_mfcc", "win_ms", "hop_ms", "n_fft", "n_mels", "fmin",
                     "fmax", "window", "top_db", "delta_width"))
def mfcc_with_deltas(x: jax.Array,
                     sample_rate: float,
                     n_mfcc: int = 13,
                     win_ms: float = 25.0,
                     hop_ms: float = 10.0,
                     n_fft: int | None = None,
                     n_mels: int = 40,
                     fmin: float = 0.0,
                     fmax: float | None = None,
                     window: str = "hamming",
                     top_db: float | None = 80.0,
                     delta_width: int = 9) -> jax.Array:
  """MFCCs with their deltas and delta-deltas appended: float32 `[..., frames, 3 * n_mfcc]`.

  The keyword arguments are `mfcc`'s; the derivatives are `delta(order=1)` and `delta(order=2)`
  (librosa.feature.delta, width `delta_width`) of the MFCCs, as in MUSLSE's 39-dim frames.
  """
  return _mfcc_clips(x, sample_rate, n_mfcc, win_ms, hop_ms, n_fft, n_mels, fmin, fmax, window,
                     top_db, delta_width)


class _DictRoundTrip:
  """`to_dict` / `from_dict` for the frozen feature configs saved beside a run (unknown keys in a
  saved file are an error, not silently dropped)."""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"{cls.__name__}.from_dict: unknown keys {sorted(unknown)}.")
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class MfccConfig(_DictRoundTrip):
  """The frame features of a bag-of-frames pipeline; defaults are MUSLSE's (section 6.2).

  Hashable, so it can key caches and be a static argument; `to_dict` is what derived features
  store to refuse a cache built with other settings.
  """

  sample_rate: int = 16000
  n_mfcc: int = 13
  win_ms: float = 25.0
  hop_ms: float = 10.0
  n_mels: int = 40
  fmin: float = 0.0
  fmax: float | None = None
  top_db: float = 80.0
  deltas: bool = True

  def __post_init__(self):
    if self.sample_rate <= 0:
      raise ValueError(f"MfccConfig: sample_rate={self.sample_rate} must be > 0.")
    if not 1 <= self.n_mfcc <= self.n_mels:
      raise ValueError(f"MfccConfig: n_mfcc={self.n_mfcc} must be in [1, n_mels={self.n_mels}].")
    mfcc_lengths(self.sample_rate, self.win_ms, self.hop_ms)  # validates window and hop

  @property
  def lengths(self) -> tuple[int, int, int]:
    """`(n_fft, win_length, hop_length)` in samples."""
    return mfcc_lengths(self.sample_rate, self.win_ms, self.hop_ms)

  @property
  def dim(self) -> int:
    """Features per frame: 3 * n_mfcc with deltas, else n_mfcc."""
    return self.n_mfcc * (3 if self.deltas else 1)

  def n_frames(self, num_samples: int) -> int:
    """Frames that `compute` returns for a clip of `num_samples` samples."""
    n_fft, _, hop_length = self.lengths
    return n_stft_frames(num_samples, n_fft, hop_length, center=True)

  def compute(self, x: jax.Array) -> jax.Array:
    """`x: [..., samples]` at `sample_rate` -> float32 `[..., frames, dim]`."""
    kwargs = dict(n_mfcc=self.n_mfcc, win_ms=self.win_ms, hop_ms=self.hop_ms, n_mels=self.n_mels,
                  fmin=self.fmin, fmax=self.fmax, top_db=self.top_db)
    if self.deltas:
      return mfcc_with_deltas(x, self.sample_rate, **kwargs)
    return mfcc(x, self.sample_rate, **kwargs)


# ----------------------------------------------------------------------------------------------
# Codebooks and bags of frames.


def _sq_distances(x: jax.Array, centres: jax.Array) -> jax.Array:
  """`[n, d], [k, d] -> [n, k]` squared Euclidean distances (up to the per-row |x|^2)."""
  cross = jnp.matmul(x, centres.T, precision=_HIGHEST)
  # |x|^2 is the same for every centre of a row, so the argmin does not need it.
  return jnp.sum(jnp.square(centres), axis=-1)[None, :] - 2.0 * cross


@jax.jit
def _nearest(x: jax.Array, centres: jax.Array) -> jax.Array:
  return jnp.argmin(_sq_distances(x, centres), axis=-1).astype(jnp.int32)


@jax.jit
def _minibatch_step(centres: jax.Array, counts: jax.Array,
                    batch: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One Sculley (2010) update: every centre moves to the running mean of all points it has won.

  Applying the per-sample rule c <- c + (x - c) / count to the batch's points one by one gives
  (count * c + sum of new points) / (count + new points), which is what is computed here.
  """
  k = centres.shape[0]
  codes = _nearest(batch, centres)
  won = jax.ops.segment_sum(jnp.ones(codes.shape, jnp.float32), codes, k)
  sums = jax.ops.segment_sum(batch, codes, k)
  new_counts = counts + won
  moved = (centres * counts[:, None] + sums) / jnp.maximum(new_counts, 1.0)[:, None]
  return jnp.where((won > 0)[:, None], moved, centres), new_counts


@functools.partial(jax.jit, static_argnames=("k",))
def _kmeans_plus_plus(key: jax.Array, data: jax.Array, k: int) -> jax.Array:
  """k-means++ seeding on distinct rows `data: [m, d]` -> `[k, d]`."""
  key, sub = jax.random.split(key)
  first = data[jax.random.randint(sub, (), 0, data.shape[0])]
  centres = jnp.zeros((k, data.shape[1]), data.dtype).at[0].set(first)
  d2 = jnp.sum(jnp.square(data - first), axis=-1)

  def body(i, carry):
    centres, d2, key = carry
    key, sub = jax.random.split(key)
    # Chosen rows have d2 == 0 (log -> -inf), so with distinct rows each pick is new.
    c = data[jax.random.categorical(sub, jnp.log(d2))]
    return centres.at[i].set(c), jnp.minimum(d2, jnp.sum(jnp.square(data - c), axis=-1)), key

  centres, _, _ = jax.lax.fori_loop(1, k, body, (centres, d2, key))
  return centres


def kmeans_fit(frames: Any,
               n_codewords: int = 2000,
               *,
               batch_size: int = 4096,
               n_steps: int = 300,
               seed: int = 0) -> np.ndarray:
  """Learns a codebook of typical frames with mini-batch k-means.

  Seeding is k-means++ over distinct rows of a random subsample (at most max(20 K, 10,000) rows);
  each step then draws `batch_size` rows with replacement and applies Sculley's update (a
  per-centre learning rate of 1 / points won so far). Everything random comes from `seed`, so the
  result is reproducible on a given backend.

  Args:
    frames: `[n, dim]` feature frames (e.g. MFCC+deltas pooled over the training split).
    n_codewords: K, the number of centres (MUSLSE: 2000).
    batch_size: rows per mini-batch.
    n_steps: mini-batch updates.
    seed: random seed.

  Returns:
    float32 `[K, dim]` codebook.
  """
  frames = np.asarray(frames, np.float32)
  if frames.ndim != 2 or frames.shape[0] == 0:
    raise ValueError(f"kmeans_fit: frames must be a non-empty [n, dim] array, got {frames.shape}.")
  if n_codewords < 1 or batch_size < 1 or n_steps < 0:
    raise ValueError(
        f"kmeans_fit: need n_codewords >= 1, batch_size >= 1, n_steps >= 0; got {n_codewords}, "
        f"{batch_size}, {n_steps}.")
  if not np.isfinite(frames).all():
    raise ValueError("kmeans_fit: frames contain NaN or inf; drop those frames first.")
  n = frames.shape[0]
  rng = np.random.default_rng(seed)
  m = min(n, max(20 * n_codewords, 10_000))
  sample = frames[np.sort(rng.choice(n, size=m, replace=False))] if m < n else frames
  distinct = np.unique(sample, axis=0)
  if len(distinct) < n_codewords and m < n:
    distinct = np.unique(frames, axis=0)
    if len(distinct) > m:
      distinct = distinct[np.sort(rng.choice(len(distinct), size=m, replace=False))]
  if len(distinct) < n_codewords:
    raise ValueError(
        f"kmeans_fit: the {n} frames hold only {len(distinct)} distinct rows, fewer than "
        f"n_codewords={n_codewords}; lower n_codewords or pool frames from more audio.")
  key = jax.random.key(seed)
  centres = _kmeans_plus_plus(key, jnp.asarray(distinct), n_codewords)
  counts = jnp.zeros((n_codewords,), jnp.float32)
  for _ in range(n_steps):
    batch = frames[rng.integers(0, n, size=batch_size)]
    centres, counts = _minibatch_step(centres, counts, jnp.asarray(batch))
  return np.asarray(centres, np.float32)


def assign_codewords(frames: Any, codebook: Any, chunk_size: int = 65536) -> np.ndarray:
  """Index of the nearest codeword (squared Euclidean) of every frame.

  Frames go through a jitted kernel `chunk_size` rows at a time (the last chunk padded, so one
  compiled shape serves a whole data set); peak memory is about chunk_size * K * 4 bytes.

  Args:
    frames: `[..., dim]`.
    codebook: `[K, dim]`.
    chunk_size: rows per call.

  Returns:
    int32 `[...]` (frames' leading shape).
  """
  frames = np.asarray(frames, np.float32)
  codebook = jnp.asarray(codebook, jnp.float32)
  if codebook.ndim != 2 or frames.ndim < 1 or frames.shape[-1] != codebook.shape[1]:
    raise ValueError(
        f"assign_codewords: frames {frames.shape} and codebook {codebook.shape} must be "
        "[..., dim] and [K, dim] with the same dim.")
  lead = frames.shape[:-1]
  flat = frames.reshape(-1, frames.shape[-1])
  n = flat.shape[0]
  if n == 0:
    return np.zeros(lead, np.int32)
  # Small inputs use the next power of two, so repeated calls reuse a handful of shapes.
  chunk = min(int(chunk_size), 1 << (n - 1).bit_length())
  out = np.empty((n,), np.int32)
  for start in range(0, n, chunk):
    rows = flat[start:start + chunk]
    if len(rows) < chunk:
      rows = np.pad(rows, ((0, chunk - len(rows)), (0, 0)))
    codes = np.asarray(_nearest(jnp.asarray(rows), codebook))
    out[start:start + chunk] = codes[:min(chunk, n - start)]
  return out.reshape(lead)


def bag_of_frames(codes: Any,
                  n_codewords: int,
                  valid: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Sparse histogram of one song's codeword indices (MUSLSE's bag-of-frames vector).

  Args:
    codes: int codeword index per frame, any shape (flattened).
    n_codewords: K; every counted code must lie in [0, K).
    valid: optional bool mask of codes' shape; False frames (padding) are not counted.

  Returns:
    `(indices, counts)`: int32 `[U]` distinct codes in ascending order and float32 `[U]` how many
    frames chose each; the counts sum to the number of valid frames.
  """
  codes = np.asarray(codes)
  if not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"bag_of_frames: codes must be integers, got dtype {codes.dtype}.")
  if valid is not None:
    valid = np.asarray(valid, bool)
    if valid.shape != codes.shape:
      raise ValueError(f"bag_of_frames: valid {valid.shape} must match codes {codes.shape}.")
    codes = codes[valid]
  codes = codes.ravel()
  if codes.size and (codes.min() < 0 or codes.max() >= n_codewords):
    raise ValueError(
        f"bag_of_frames: codes span [{codes.min()}, {codes.max()}], outside [0, {n_codewords}); "
        "was the codebook built with a different n_codewords?")
  hist = np.bincount(codes, minlength=n_codewords)
  indices = np.flatnonzero(hist)
  return indices.astype(np.int32), hist[indices].astype(np.float32)


# ----------------------------------------------------------------------------------------------
# AcousticBrainz-style track descriptors (Rush et al.'s audio features).
#
# Rush et al. ("joint text-music embeddings from album reviews", section 4.4) describe a song by
# the AcousticBrainz low-level statistics of its MFCCs, spectral roll-off (85%) and zero-crossing
# rate. AcousticBrainz computes them with Essentia's music extractor: frame-wise descriptors,
# summarised over the song by Essentia's PoolAggregator (mean, var, min, max, median, dmean, dvar,
# dmean2, dvar2) and, for the MFCCs, by a single Gaussian (mean vector and covariance matrix).
# `audio_descriptors` computes the same summary from samples in JAX, and
# `descriptors_from_acousticbrainz` reads it from an AcousticBrainz JSON document, both into one
# fixed layout (`descriptor_names`), so that MARD's descriptor files, the built-in world and
# uploaded audio feed one audio branch.
#
# Layout (140 numbers for 13 MFCCs), in order:
#   lowlevel.mfcc.mean.{i}         13   the MFCC mean vector
#   lowlevel.mfcc.cov.{i}.{j}      91   the covariance's upper triangle with its diagonal (i <= j),
#                                       row by row: the matrix is symmetric, so the full 169
#                                       values of the authors' code repeat 78 of them, which would
#                                       weigh those entries twice in any distance or linear layer
#   lowlevel.{d}.{s}               36   for d in FRAME_DESCRIPTORS (spectral_centroid,
#                                       spectral_rms, spectral_rolloff, zerocrossingrate), s in
#                                       DESCRIPTOR_STATS. Centroid and RMS are added to the paper's
#                                       two: every AcousticBrainz file has them, and they separate
#                                       bright from dark and loud from quiet recordings, which
#                                       roll-off and ZCR only hint at. All nine statistics are
#                                       kept, as the authors' code does.
# The inverse covariance (`mfcc.icov`), which the authors' code also reads, is left out: it is a
# function of the covariance, and near-singular covariances make its entries explode. That code
# (noah-rush/Joint-Music-Text-Embeddings, Training.py) trains on the first 169 columns it builds,
# i.e. the full covariance alone; `full_mfcc_covariance` rebuilds that input from a vector here,
# for a run that reproduces the code rather than the paper.
#
# The statistics follow Essentia's definitions (PoolAggregator and SingleGaussian as in Essentia
# 2.1's src/algorithms/stats/poolaggregator.cpp and singlegaussian.cpp):
# var is the population variance (divided by n); dmean / dvar are the mean and population
# variance of |x[t+1] - x[t]|, dmean2 / dvar2 those of the absolute second difference; median
# averages the two middle values of an even count; the MFCC covariance is the unbiased one
# (divided by n - 1).
#
# Known differences from AcousticBrainz's numbers (so that vectors from MARD's JSON and vectors
# computed here are comparable in layout and meaning, not in value; z-score each source with its
# own training split, `Standardizer`, and never mix the two in one model):
# * Framing: Essentia resamples to 44.1 kHz and uses 2048-sample frames every 1024 samples under a
#   normalised Blackman-Harris (62 dB) window, replacing silent frames with low noise; here the
#   audio keeps its own rate (`DescriptorConfig.for_sample_rate` scales the frames to about the
#   same duration), the window is an unnormalised Hann window and silent frames stay silent, so
#   spectral magnitudes (hence spectral_rms) differ by a constant factor.
# * MFCC: Essentia's MFCC-FB40 sums a 40-band mel filterbank of its own (0 to 11 kHz, normalised
#   its own way) and takes 20 log10 of the band values before its DCT-II; here the MFCCs are
#   `mfcc`'s (librosa's Slaney filterbank on the power spectrum, 10 log10 with an 80 dB floor,
#   orthonormal DCT-II) with 40 bands up to 11 kHz (or Nyquist). The coefficients differ by scale
#   and offset, c0 most.
# * Roll-off: Essentia's RollOff sums the energy (squared magnitude) up to 85%, which is what the
#   descriptor vector uses; librosa's spectral_rolloff sums the magnitude (`power=1` here). Both
#   return the first bin's centre frequency k * sr / n_fft where the cumulative sum reaches the
#   fraction.
# * Zero-crossing rate: both count sign changes in a frame divided by the frame length. Essentia
#   puts an exact zero on the negative side (a value must exceed 0 to be positive); librosa, and
#   this code, put it on the positive side and first clip |x| <= 1e-10 to zero. The two differ only
#   on frames with exact zeros (digital silence, padded edges). Centre padding here repeats the
#   edge samples (librosa); Essentia's first frame is zero-padded.
# * Centroid: both are the magnitude-weighted mean bin frequency (Essentia's Centroid over
#   [0, sr/2] on the magnitude spectrum, librosa's spectral_centroid).

# Essentia's PoolAggregator statistics, in the order the descriptor vector holds them.
DESCRIPTOR_STATS = ("mean", "var", "min", "max", "median", "dmean", "dvar", "dmean2", "dvar2")
# Frame-wise scalar descriptors (AcousticBrainz `lowlevel` keys), in the order of the vector.
FRAME_DESCRIPTORS = ("spectral_centroid", "spectral_rms", "spectral_rolloff", "zerocrossingrate")
# Coefficients in every AcousticBrainz file's lowlevel.mfcc.
ACOUSTICBRAINZ_N_MFCC = 13


def _bin_frequencies(n_bins: int, sample_rate: float, n_fft: int | None) -> np.ndarray:
  """Centre frequencies (Hz) of an rfft's `n_bins` bins: `k * sample_rate / n_fft`."""
  n_fft = 2 * (n_bins - 1) if n_fft is None else int(n_fft)
  if n_bins < 2 or n_fft // 2 + 1 != n_bins:
    raise ValueError(f"A spectrum of {n_bins} bins does not come from an rfft of n_fft={n_fft}; "
                     "pass the n_fft it was computed with (n_fft // 2 + 1 bins).")
  return np.fft.rfftfreq(n_fft, d=1.0 / sample_rate).astype(np.float32)


def spectral_rolloff(S: jax.Array,
                     sample_rate: float,
                     roll_percent: float = 0.85,
                     power: float = 1.0,
                     n_fft: int | None = None) -> jax.Array:
  """Roll-off frequency: the lowest bin centre below which `roll_percent` of the spectrum lies.

  With `power=1` this is librosa.feature.spectral_rolloff (which sums magnitudes); with `power=2`
  it is Essentia's RollOff (which sums energies, as AcousticBrainz's `spectral_rolloff` does).
  A silent frame gives 0 Hz, as in both.

  Args:
    S: non-negative magnitude spectrogram `[..., frames, bins]` (`jnp.abs(stft(...))`).
    sample_rate: Hz of the audio.
    roll_percent: fraction in (0, 1).
    power: exponent applied to S before summing.
    n_fft: FFT size; defaults to `2 * (bins - 1)`.

  Returns:
    float32 `[..., frames]` in Hz.
  """
  if not 0.0 < roll_percent < 1.0:
    raise ValueError(f"spectral_rolloff: roll_percent={roll_percent} must lie in (0, 1).")
  S = jnp.asarray(S, jnp.float32)
  freqs = _bin_frequencies(S.shape[-1], sample_rate, n_fft)
  energy = S if power == 1.0 else S**power
  cumulative = jnp.cumsum(energy, axis=-1)
  # The total is the cumulative sum's last entry (not a separate sum), so the last bin always
  # reaches the threshold whatever the rounding.
  reached = cumulative >= roll_percent * cumulative[..., -1:]
  return jnp.asarray(freqs)[jnp.argmax(reached, axis=-1)]


def spectral_centroid(S: jax.Array, sample_rate: float, n_fft: int | None = None) -> jax.Array:
  """Magnitude-weighted mean frequency per frame, as librosa.feature.spectral_centroid.

  Args:
    S: non-negative magnitude spectrogram `[..., frames, bins]`.
    sample_rate: Hz of the audio.
    n_fft: FFT size; defaults to `2 * (bins - 1)`.

  Returns:
    float32 `[..., frames]` in Hz; 0 for a silent frame.
  """
  S = jnp.asarray(S, jnp.float32)
  freqs = jnp.asarray(_bin_frequencies(S.shape[-1], sample_rate, n_fft))
  total = jnp.sum(S, axis=-1)
  weighted = jnp.matmul(S, freqs, precision=_HIGHEST)
  return jnp.where(total > 0, weighted / jnp.where(total > 0, total, 1.0), 0.0)


def spectral_rms(S: jax.Array) -> jax.Array:
  """Root mean square of each frame's magnitude spectrum, `sqrt(mean_k S_k^2)`: `[..., frames]`.

  This is AcousticBrainz's `spectral_rms` (Essentia's RMS applied to the spectrum), not librosa's
  feature.rms, which estimates the time-domain RMS of the frame from its spectrum.
  """
  S = jnp.asarray(S, jnp.float32)
  return jnp.sqrt(jnp.mean(jnp.square(S), axis=-1))


def zero_crossing_rate(x: jax.Array,
                       frame_length: int = 2048,
                       hop_length: int = 512,
                       center: bool = True,
                       threshold: float = 1e-10) -> jax.Array:
  """Sign changes per sample in each frame, as librosa.feature.zero_crossing_rate.

  A sample is negative when it is below `-threshold` (values within the threshold count as zero,
  and zero as positive: librosa's `zero_pos=True`); a frame's rate is the number of changes
  between consecutive samples divided by `frame_length`.

  Args:
    x: `[..., samples]`.
    frame_length, hop_length: framing in samples.
    center: pad `frame_length // 2` copies of the edge samples on both sides (librosa), so that
      the frames line up with `stft(..., center=True)`'s.
    threshold: magnitude at or below which a sample counts as zero.

  Returns:
    float32 `[..., frames]`.
  """
  x = jnp.asarray(x, jnp.float32)
  if center:
    pad = int(frame_length) // 2
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="edge")
  frames = frame(x, frame_length, hop_length)
  negative = frames < -np.float32(threshold)
  changes = negative[..., 1:] != negative[..., :-1]
  return jnp.sum(changes, axis=-1, dtype=jnp.float32) / float(frame_length)


def descriptor_statistics(values: jax.Array) -> jax.Array:
  """Essentia's PoolAggregator summary of a frame-wise descriptor, in `DESCRIPTOR_STATS` order.

  Args:
    values: `[..., frames]` with at least 3 frames (the second difference needs them).

  Returns:
    float32 `[..., 9]`: mean, var, min, max, median, dmean, dvar, dmean2, dvar2 (population
    variances; d* over absolute first and second differences).
  """
  v = jnp.asarray(values, jnp.float32)
  if v.shape[-1] < 3:
    raise ValueError(f"descriptor_statistics: {v.shape[-1]} frames; the statistics need at least "
                     "3 (use a longer clip or a shorter hop).")
  d1 = jnp.abs(jnp.diff(v, n=1, axis=-1))
  d2 = jnp.abs(jnp.diff(v, n=2, axis=-1))
  return jnp.stack([
      jnp.mean(v, axis=-1), jnp.var(v, axis=-1), jnp.min(v, axis=-1), jnp.max(v, axis=-1),
      jnp.median(v, axis=-1), jnp.mean(d1, axis=-1), jnp.var(d1, axis=-1),
      jnp.mean(d2, axis=-1), jnp.var(d2, axis=-1)], axis=-1)


def mfcc_gaussian(c: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and unbiased covariance of frames (Essentia's SingleGaussian).

  Args:
    c: `[..., frames, n]` with at least 2 frames.

  Returns:
    float32 `[..., n]` mean and `[..., n, n]` covariance (divided by frames - 1).
  """
  c = jnp.asarray(c, jnp.float32)
  n_frames = c.shape[-2]
  if n_frames < 2:
    raise ValueError(f"mfcc_gaussian: {n_frames} frame(s); a covariance needs at least 2.")
  mean = jnp.mean(c, axis=-2)
  centred = c - mean[..., None, :]
  cov = jnp.matmul(jnp.swapaxes(centred, -1, -2), centred, precision=_HIGHEST) / (n_frames - 1)
  return mean, cov


def descriptor_names(n_mfcc: int = ACOUSTICBRAINZ_N_MFCC) -> tuple[str, ...]:
  """The name of every entry of a descriptor vector, as its AcousticBrainz JSON path."""
  if n_mfcc < 1:
    raise ValueError(f"descriptor_names: n_mfcc={n_mfcc} must be >= 1.")
  names = [f"lowlevel.mfcc.mean.{i}" for i in range(n_mfcc)]
  rows, cols = np.triu_indices(n_mfcc)
  names += [f"lowlevel.mfcc.cov.{i}.{j}" for i, j in zip(rows.tolist(), cols.tolist())]
  names += [f"lowlevel.{d}.{s}" for d in FRAME_DESCRIPTORS for s in DESCRIPTOR_STATS]
  return tuple(names)


def descriptor_dim(n_mfcc: int = ACOUSTICBRAINZ_N_MFCC) -> int:
  """Length of a descriptor vector: n + n(n+1)/2 + 4 * 9 (140 for 13 MFCCs)."""
  return n_mfcc + n_mfcc * (n_mfcc + 1) // 2 + len(FRAME_DESCRIPTORS) * len(DESCRIPTOR_STATS)


@dataclasses.dataclass(frozen=True)
class DescriptorConfig(_DictRoundTrip):
  """How `audio_descriptors` frames and summarises audio; the defaults are AcousticBrainz's.

  Hashable, so it is a static argument of the jitted computation; `to_dict` is what a run stores
  beside its standardisation statistics, so that predictions on new audio use the same settings.

  Attributes:
    sample_rate: Hz of the audio given to `compute`.
    frame_length, hop_length: samples per frame and between frames (Essentia: 2048 and 1024 at
      44.1 kHz; `for_sample_rate` scales them to another rate).
    window: window name (see `get_window`).
    n_mfcc, n_mels: cepstral coefficients kept and mel bands (Essentia's MFCC-FB40: 13 of 40).
    fmax: top of the mel bands in Hz (Essentia: 11 kHz); capped at the Nyquist frequency.
    top_db: the dB floor below each clip's peak before the DCT (as in `mfcc`).
    rolloff: the roll-off fraction (the paper's 85%).
  """

  sample_rate: int = 44100
  frame_length: int = 2048
  hop_length: int = 1024
  window: str = "hann"
  n_mfcc: int = ACOUSTICBRAINZ_N_MFCC
  n_mels: int = 40
  fmax: float = 11000.0
  top_db: float | None = 80.0
  rolloff: float = 0.85

  def __post_init__(self):
    if self.sample_rate <= 0 or self.frame_length < 2 or self.hop_length < 1:
      raise ValueError(
          f"DescriptorConfig: need sample_rate > 0, frame_length >= 2 and hop_length >= 1; got "
          f"{self.sample_rate}, {self.frame_length}, {self.hop_length}.")
    if not 1 <= self.n_mfcc <= self.n_mels:
      raise ValueError(
          f"DescriptorConfig: n_mfcc={self.n_mfcc} must be in [1, n_mels={self.n_mels}].")
    if not 0.0 < self.rolloff < 1.0:
      raise ValueError(f"DescriptorConfig: rolloff={self.rolloff} must lie in (0, 1).")
    if self.fmax <= 0:
      raise ValueError(f"DescriptorConfig: fmax={self.fmax} must be > 0.")
    get_window(self.window, self.frame_length)  # validates the name

  @classmethod
  def for_sample_rate(cls, sample_rate: int, **overrides) -> DescriptorConfig:
    """AcousticBrainz's framing scaled to `sample_rate`: frames of the power of two nearest to
    2048 samples at 44.1 kHz (46 ms; 1024 at 16 or 22.05 kHz), hops of half a frame."""
    frame_length = 1 << max(1, int(round(math.log2(sample_rate * 2048 / 44100))))
    return cls(**{"sample_rate": int(sample_rate), "frame_length": frame_length,
                  "hop_length": frame_length // 2, **overrides})

  @property
  def band_top(self) -> float:
    """The mel bands' upper edge: fmax, or the Nyquist frequency when that is lower."""
    return min(float(self.fmax), self.sample_rate / 2.0)

  @property
  def names(self) -> tuple[str, ...]:
    return descriptor_names(self.n_mfcc)

  @property
  def dim(self) -> int:
    return descriptor_dim(self.n_mfcc)

  def n_frames(self, num_samples: int) -> int:
    """Frames summarised for a clip of `num_samples` samples."""
    return n_stft_frames(num_samples, self.frame_length, self.hop_length, center=True)

  def compute(self, x: jax.Array) -> jax.Array:
    """`x: [..., samples]` at `sample_rate` -> float32 `[..., dim]` (see `audio_descriptors`)."""
    return audio_descriptors(x, self)


@functools.partial(jax.jit, static_argnames=("config",))
def audio_descriptors(x: jax.Array, config: DescriptorConfig = DescriptorConfig()) -> jax.Array:
  """A clip's AcousticBrainz-style descriptor vector, laid out as `descriptor_names`.

  One STFT (centred, `config`'s frames) gives the magnitude spectrum for centroid, spectral RMS and
  the energy roll-off; `mfcc` gives the MFCCs over the same frames; the zero-crossing rate is
  counted on the same (edge-padded) frames of the samples. Each is then summarised over the clip
  (see the section comment above for the definitions and the known differences from Essentia).

  Args:
    x: `[..., samples]` at `config.sample_rate`, at least 3 frames long.
    config: framing and band settings.

  Returns:
    float32 `[..., config.dim]`.
  """
  x = jnp.asarray(x, jnp.float32)
  n_frames = config.n_frames(x.shape[-1])
  if n_frames < 3:
    raise ValueError(
        f"audio_descriptors: {x.shape[-1]} samples give {n_frames} frame(s) of "
        f"{config.frame_length} every {config.hop_length}; the statistics need at least 3.")
  sr, n_fft, hop = config.sample_rate, config.frame_length, config.hop_length
  magnitude = jnp.abs(stft(x, n_fft, hop, window=config.window))
  coefficients = mfcc(x, sr, n_mfcc=config.n_mfcc, win_ms=1000.0 * n_fft / sr,
                      hop_ms=1000.0 * hop / sr, n_fft=n_fft, n_mels=config.n_mels, fmin=0.0,
                      fmax=config.band_top, window=config.window, top_db=config.top_db)
  mean, cov = mfcc_gaussian(coefficients)
  rows, cols = np.triu_indices(config.n_mfcc)
  per_frame = jnp.stack([
      spectral_centroid(magnitude, sr, n_fft),
      spectral_rms(magnitude),
      spectral_rolloff(magnitude, sr, config.rolloff, power=2.0, n_fft=n_fft),
      zero_crossing_rate(x, n_fft, hop, center=True),
  ], axis=-2)  # [..., 4, frames], in FRAME_DESCRIPTORS order
  stats = descriptor_statistics(per_frame)
  stats = stats.reshape(*stats.shape[:-2], len(FRAME_DESCRIPTORS) * len(DESCRIPTOR_STATS))
  return jnp.concatenate([mean, cov[..., rows, cols], stats], axis=-1)


def _lookup(doc: Any, path: tuple[str, ...]) -> Any:
  node = doc
  for depth, key in enumerate(path):
    if not isinstance(node, dict) or key not in node:
      raise ValueError(f"{'.'.join(path[:depth + 1])} is missing")
    node = node[key]
  return node


def descriptors_from_acousticbrainz(doc: dict[str, Any],
                                    n_mfcc: int = ACOUSTICBRAINZ_N_MFCC) -> np.ndarray:
  """Reads an AcousticBrainz low-level document into the `descriptor_names` layout.

  Args:
    doc: the parsed JSON of a low-level file (as MARD's acousticbrainz_descriptors/ holds, or the
      AcousticBrainz API's `/low-level` answer): `lowlevel.mfcc.mean` (n numbers),
      `lowlevel.mfcc.cov` (n lists of n), and `lowlevel.<descriptor>.<statistic>` for every
      `FRAME_DESCRIPTORS` x `DESCRIPTOR_STATS`. Other keys are ignored.
    n_mfcc: the number of coefficients expected (AcousticBrainz: 13).

  Returns:
    float32 `[descriptor_dim(n_mfcc)]`.

  Raises:
    ValueError: naming the first missing, ill-shaped or non-finite field.
  """
  mean = np.asarray(_lookup(doc, ("lowlevel", "mfcc", "mean")), dtype=object)
  cov = np.asarray(_lookup(doc, ("lowlevel", "mfcc", "cov")), dtype=object)
  if mean.shape != (n_mfcc,):
    raise ValueError(f"lowlevel.mfcc.mean has shape {mean.shape}, expected ({n_mfcc},)")
  if cov.shape != (n_mfcc, n_mfcc):
    raise ValueError(f"lowlevel.mfcc.cov has shape {cov.shape}, expected ({n_mfcc}, {n_mfcc})")
  rows, cols = np.triu_indices(n_mfcc)
  values = list(mean) + list(cov[rows, cols])
  for d in FRAME_DESCRIPTORS:
    for s in DESCRIPTOR_STATS:
      values.append(_lookup(doc, ("lowlevel", d, s)))
  names = descriptor_names(n_mfcc)
  out = np.empty(len(values), np.float64)
  for k, value in enumerate(values):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"{names[k]} is {value!r}, not a number")
    out[k] = value
  bad = np.flatnonzero(~np.isfinite(out) | (np.abs(out) > np.finfo(np.float32).max))
  if bad.size:
    raise ValueError(f"{names[bad[0]]} is {float(out[bad[0]])!r}, not a finite float32 number")
  return out.astype(np.float32)


def full_mfcc_covariance(vectors: Any, n_mfcc: int = ACOUSTICBRAINZ_N_MFCC) -> np.ndarray:
  """The full MFCC covariance of descriptor vectors, row-major: float32 `[..., n_mfcc ** 2]`.

  This is the authors' code's audio input (169 values for 13 MFCCs; see the section comment).
  """
  v = np.asarray(vectors, np.float32)
  if v.ndim == 0 or v.shape[-1] != descriptor_dim(n_mfcc):
    raise ValueError(f"full_mfcc_covariance: vectors of shape {v.shape}, expected [..., "
                     f"{descriptor_dim(n_mfcc)}] for n_mfcc={n_mfcc}.")
  rows, cols = np.triu_indices(n_mfcc)
  full = np.zeros(v.shape[:-1] + (n_mfcc, n_mfcc), np.float32)
  tri = v[..., n_mfcc:n_mfcc + rows.size]
  full[..., rows, cols] = tri
  full[..., cols, rows] = tri
  return full.reshape(v.shape[:-1] + (n_mfcc * n_mfcc,))


def descriptors_to_acousticbrainz(vector: Any, n_mfcc: int = ACOUSTICBRAINZ_N_MFCC) -> dict:
  """The inverse of `descriptors_from_acousticbrainz`: a `{"lowlevel": ...}` document.

  The covariance is written whole (symmetric, from the upper triangle), so a descriptor computed
  here from an upload can be saved as, and read back like, an AcousticBrainz file.
  """
  v = np.asarray(vector, np.float64)
  if v.shape != (descriptor_dim(n_mfcc),):
    raise ValueError(f"descriptors_to_acousticbrainz: vector of shape {v.shape}, expected "
                     f"({descriptor_dim(n_mfcc)},) for n_mfcc={n_mfcc}.")
  n_tri = n_mfcc * (n_mfcc + 1) // 2
  cov = np.zeros((n_mfcc, n_mfcc))
  rows, cols = np.triu_indices(n_mfcc)
  cov[rows, cols] = v[n_mfcc:n_mfcc + n_tri]
  cov[cols, rows] = v[n_mfcc:n_mfcc + n_tri]
  lowlevel: dict[str, Any] = {"mfcc": {"mean": v[:n_mfcc].tolist(), "cov": cov.tolist()}}
  stats = v[n_mfcc + n_tri:].reshape(len(FRAME_DESCRIPTORS), len(DESCRIPTOR_STATS))
  for d, row in zip(FRAME_DESCRIPTORS, stats):
    lowlevel[d] = dict(zip(DESCRIPTOR_STATS, row.tolist()))
  return {"lowlevel": lowlevel}


@dataclasses.dataclass(frozen=True)
class Standardizer:
  """Per-column z-scoring, `(x - mean) / std`, fitted on a training split and kept with the run.

  Descriptor columns span many orders of magnitude (MFCC covariances in the thousands, ZCR
  variances near 1e-5), so an audio branch sees them z-scored. The statistics are fitted on the
  training split only (evaluation data must not shape its own inputs), and saved beside the
  checkpoints (`save` / `load`), so that evaluation and predictions on new audio apply exactly
  the training statistics. A column that is constant on the training split (std <= 1e-6 |mean|,
  e.g. a coefficient that never varies) is only centred (std stored as 1), instead of being blown
  up by a tiny std.

  Attributes:
    mean, std: float64 `[dim]`.
    names: the column names (e.g. `descriptor_names()`), checked by `check_names`; may be empty.
  """

  mean: np.ndarray
  std: np.ndarray
  names: tuple[str, ...] = ()

  def __post_init__(self):
    mean = np.asarray(self.mean, np.float64)
    std = np.asarray(self.std, np.float64)
    if mean.ndim != 1 or std.shape != mean.shape:
      raise ValueError(f"Standardizer: mean {mean.shape} and std {std.shape} must be equal 1-D.")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
      raise ValueError("Standardizer: mean and std must be finite and std > 0.")
    if self.names and len(self.names) != mean.shape[0]:
      raise ValueError(f"Standardizer: {len(self.names)} names for {mean.shape[0]} columns.")
    object.__setattr__(self, "mean", mean)
    object.__setattr__(self, "std", std)
    object.__setattr__(self, "names", tuple(self.names))

  @classmethod
  def fit(cls, x: Any, names: tuple[str, ...] = ()) -> Standardizer:
    """Fits on `x: [rows, dim]` (the training split's vectors), in float64."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
      raise ValueError(f"Standardizer.fit: x must be a non-empty [rows, dim] array, got "
                       f"{x.shape}.")
    if not np.isfinite(x).all():
      row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
      raise ValueError(f"Standardizer.fit: row {row} holds NaN or inf; drop or fix it first.")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return cls(mean, np.where(std <= 1e-6 * np.abs(mean), 1.0, std), tuple(names))

  @property
  def dim(self) -> int:
    return int(self.mean.shape[0])

  def __call__(self, x: Any) -> Any:
    """`x: [..., dim]` -> float32 z-scores (a JAX array stays a JAX array)."""
    x = x.astype(jnp.float32) if isinstance(x, jax.Array) else np.asarray(x, np.float32)
    if x.ndim == 0 or x.shape[-1] != self.dim:
      raise ValueError(f"Standardizer: input of shape {x.shape}; fitted on {self.dim} columns.")
    return (x - self.mean.astype(np.float32)) / self.std.astype(np.float32)

  def check_names(self, names: tuple[str, ...]) -> None:
    """Refuses vectors laid out differently from the ones the statistics were fitted on."""
    if self.names and tuple(names) != self.names:
      first = next((i for i, (a, b) in enumerate(zip(self.names, names)) if a != b),
                   min(len(self.names), len(names)))
      raise ValueError(f"Standardizer: column layout differs from the fitted one at column "
                       f"{first} ({len(names)} columns given, {self.dim} fitted); recompute the "
                       "features with the run's settings.")

  def to_dict(self) -> dict[str, Any]:
    return {"mean": self.mean.tolist(), "std": self.std.tolist(), "names": list(self.names)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> Standardizer:
    missing = {"mean", "std"} - set(d)
    if missing:
      raise ValueError(f"Standardizer.from_dict: missing keys {sorted(missing)}.")
    return cls(np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64),
               tuple(d.get("names", ())))

  def save(self, path: str) -> None:
    """Writes `to_dict()` as JSON, atomically (temp file + rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(self.to_dict(), f)
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise

  @classmethod
  def load(cls, path: str) -> Standardizer:
    try:
      with open(path, encoding="utf-8") as f:
        d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"Standardizer.load: cannot read {path} ({e}); it is written by "
                       "Standardizer.save at training time.") from e
    try:
      return cls.from_dict(d)
    except (ValueError, TypeError) as e:
      raise ValueError(f"Standardizer.load: {path}: {e}") from e
