"""Throughput of the JAX feature front end against librosa on the same clips.

Two workloads, each timed in musemb (one jitted call on the whole batch, compile excluded, ended by
`block_until_ready`) and in librosa 0.11 (a loop over the clips, its usual use):

* log-mel: 22,050 Hz, n_fft 1024, hop 512, 128 Slaney mels, dB with an 80 dB floor;
* MFCC + deltas: 16 kHz, MUSLSE's setting (13 MFCCs, 25 ms Hamming window, 10 ms hop, 40 mels,
  first and second derivatives; 39 dims).

Each timing is the best of a few repeats, with the process CPU time of that repeat beside it (on
a machine shared with other jobs the wall-clock ratio swings with the load; the CPU-time ratio,
the work each side does, much less). The table also gives the largest absolute difference between
the two outputs, so a fast wrong answer cannot hide. librosa is a test-only dependency and is
imported inside `run`.

What made musemb's side fast (musemb/features.py): on CPU the batch is processed a few clips per
step of a `lax.map` (frames and spectra stay in cache; the batch-wide intermediates were hundreds
of MB), and the mel projection multiplies each 16-filter group by its band of FFT bins only. Tried
and measured: the STFT as a DFT matrix product (frames x n_fft times n_fft x (n_fft/2 + 1) cos/sin)
does ~80x the FFT's arithmetic at n_fft = 1024 (29 GFLOP for the log-mel batch), slower than
XLA's FFT on 2 cores; gather framing instead of slices, and default matmul precision instead of
HIGHEST: no difference on CPU.

    python -c "from launch.benchmarks import features; features.run()"
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax
import numpy as np

from musemb import features as F


def _clips(n: int, seconds: float, sr: int, seed: int) -> np.ndarray:
  """`[n, samples]` float32: log chirps over noise, a different sweep per clip."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sr)) / sr
  out = np.empty((n, t.size), np.float32)
  for i in range(n):
    f0 = rng.uniform(50.0, 400.0)
    phase = 2 * np.pi * f0 * t[-1] / np.log(0.45 * sr / f0) * ((0.45 * sr / f0)**(t / t[-1]) - 1)
    out[i] = 0.3 * np.sin(phase) + 0.02 * rng.standard_normal(t.size)
  return out


def _best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
  """(best wall-clock seconds, process CPU seconds of that repeat) over `repeats` calls."""
  best, cpu = float("inf"), float("inf")
  for _ in range(repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    elapsed = time.perf_counter() - start
    if elapsed < best:
      best, cpu = elapsed, time.process_time() - cpu_start
  return best, cpu


def run(quick: bool = False) -> str:
  """Times both workloads; returns (and prints) the table. quick: 4 clips x 3 s, else 32 x 10 s."""
  import librosa  # pylint: disable=g-import-not-at-top

  n_clips, seconds, repeats = (4, 3.0, 2) if quick else (32, 10.0, 3)
  rows = []

  # --- log-mel at 22,050 Hz.
  sr = 22050
  x = _clips(n_clips, seconds, sr, seed=0)
  logmel = jax.jit(lambda a: F.log_mel(a, sr, n_fft=1024, hop_length=512, n_mels=128))
  xd = jax.device_put(x)
  got = np.asarray(logmel(xd).block_until_ready())  # compile + reference output

  def librosa_logmel():
    return [
        librosa.power_to_db(
            librosa.feature.melspectrogram(y=c, sr=sr, n_fft=1024, hop_length=512, n_mels=128))
        for c in x
    ]

  want = np.stack(librosa_logmel()).transpose(0, 2, 1)
  t_jax = _best_time(lambda: logmel(xd).block_until_ready(), repeats)
  t_ref = _best_time(librosa_logmel, repeats)
  rows.append(("log-mel 22.05k/1024/512/128", *t_jax, *t_ref, np.abs(got - want).max(), "dB"))

  # --- MFCC + deltas at 16 kHz (MUSLSE).
  sr16 = 16000
  x16 = _clips(n_clips, seconds, sr16, seed=1)
  config = F.MfccConfig()
  n_fft, win, hop = config.lengths
  mfcc39 = jax.jit(config.compute)
  x16d = jax.device_put(x16)
  got = np.asarray(mfcc39(x16d).block_until_ready())

  def librosa_mfcc39():
    out = []
    for c in x16:
      m = librosa.feature.mfcc(y=c, sr=sr16, n_mfcc=13, n_fft=n_fft, hop_length=hop,
                               win_length=win, window="hamming", n_mels=40)
      out.append(np.concatenate(
          [m, librosa.feature.delta(m, order=1), librosa.feature.delta(m, order=2)], axis=0))
    return out

  want = np.stack(librosa_mfcc39()).transpose(0, 2, 1)
  t_jax = _best_time(lambda: mfcc39(x16d).block_until_ready(), repeats)
  t_ref = _best_time(librosa_mfcc39, repeats)
  rows.append(("MFCC+deltas 16k (MUSLSE, 39-d)", *t_jax, *t_ref, np.abs(got - want).max(), ""))

  audio_s = n_clips * seconds
  device = jax.devices()[0]
  lines = [
      f"features benchmark: {n_clips} clips x {seconds:g} s, best of {repeats}; "
      f"JAX {jax.__version__} on {device.platform} ({device.device_kind}), librosa "
      f"{librosa.__version__} (numpy, one clip at a time); load {os.getloadavg()[0]:.1f} on "
      f"{os.cpu_count()} cores",
      "",
      f"| {'workload':32s} | {'musemb clips/s':>14s} | {'librosa clips/s':>15s} | "
      f"{'musemb audio s/s':>16s} | {'librosa audio s/s':>17s} | {'musemb/librosa':>14s} | "
      f"{'CPU-time ratio':>14s} | {'max |diff|':>12s} |",
      f"|{'-' * 34}|{'-' * 16}|{'-' * 17}|{'-' * 18}|{'-' * 19}|{'-' * 16}|{'-' * 16}|{'-' * 14}|",
  ]
  for name, t_jax, cpu_jax, t_ref, cpu_ref, diff, unit in rows:
    lines.append(
        f"| {name:32s} | {n_clips / t_jax:14.1f} | {n_clips / t_ref:15.1f} | "
        f"{audio_s / t_jax:16.0f} | {audio_s / t_ref:17.0f} | {t_ref / t_jax:13.2f}x | "
        f"{cpu_ref / max(cpu_jax, 1e-9):13.2f}x | {diff:9.2e} {unit:2s} |")
  table = "\n".join(lines)
  print(table)
  return table


if __name__ == "__main__":
  run()
