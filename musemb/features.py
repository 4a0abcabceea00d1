"""Audio features in JAX: STFT, mel filterbank, log-mel, MFCC (+ deltas), k-means codebooks.

Everything that touches samples is a pure JAX function, jit-compiled and batched over any leading
axes: `x: [..., samples]` in, `[..., frames, features]` out (time before features, the layout the
models consume; librosa returns the transpose). The numerics follow librosa 0.11, which the tests
use as the reference: same periodic windows, same centre padding, the Slaney mel scale and area
normalisation, `power_to_db` with a `top_db` floor, orthonormal DCT-II MFCCs and Savitzky-Golay
deltas with interpolated edges. Matrix products run at `Precision.HIGHEST`, so TPUs and GPUs
(whose default matmul precision is lower) give the same float32 numbers as the CPU.

The MFCC defaults are the setting of MUSLSE (Weston, Bengio & Hamel 2011, "Multi-tasking with joint
semantic spaces for large-scale music annotation and retrieval", section 6.2): 13 MFCCs every
10 ms over a 25 ms Hamming window, first and second derivatives appended (39 dims), a dictionary
of 2000 typical frames learnt with k-means and each song represented by the counts of its frames'
nearest codewords. The codebook is fitted with mini-batch k-means (Sculley 2010, "Web-scale
k-means clustering", per-centre learning rate 1/count) seeded with k-means++ (Arthur &
Vassilvitskii 2007); the histogram is kept sparse (`bag_of_frames`), as the song vectors are.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

_HIGHEST = jax.lax.Precision.HIGHEST
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
  spec = stft(x, n_fft, hop_length, win_length, window, center)
  if power == 2.0:
    mag = jnp.square(spec.real) + jnp.square(spec.imag)
  else:
    mag = jnp.abs(spec)**power
  fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  return jnp.matmul(mag, fb, precision=_HIGHEST)


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
  S = melspectrogram(x, sample_rate, n_fft, hop_length, win_length, window, n_mels, fmin, fmax,
                     center, 2.0)
  return power_to_db(S, top_db=top_db)


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
  if not 1 <= n_mfcc <= n_mels:
    raise ValueError(f"mfcc: n_mfcc={n_mfcc} must be in [1, n_mels={n_mels}].")
  n_fft, win_length, hop_length = mfcc_lengths(sample_rate, win_ms, hop_ms, n_fft)
  S = log_mel(x, sample_rate, n_fft, hop_length, win_length, window, n_mels, fmin, fmax, True,
              top_db)
  return jnp.matmul(S, dct_matrix(n_mels, n_mfcc), precision=_HIGHEST)


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
  c = mfcc(x, sample_rate, n_mfcc, win_ms, hop_ms, n_fft, n_mels, fmin, fmax, window, top_db)
  return jnp.concatenate(
      [c, delta(c, delta_width, 1, axis=-2),
       delta(c, delta_width, 2, axis=-2)], axis=-1)


@dataclasses.dataclass(frozen=True)
class MfccConfig:
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

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> MfccConfig:
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"MfccConfig.from_dict: unknown keys {sorted(unknown)}.")
    return cls(**d)

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
