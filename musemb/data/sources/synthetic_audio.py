"""Rendering the built-in world's audio: a track's recipe -> float32 mono samples.

The planning side (`musemb.data.sources.synthetic`: artists, albums, track recipes, tags, tables)
decides what a track is; this module only synthesises it, with numpy and no per-sample Python.
`render(recipe, style, genre, sample_rate, rng, seconds)` is the one entry point; the world calls
it per track with a generator seeded from (world seed, track index), so a clip is identical
however often it is rendered.

The Karplus-Strong string follows Karplus and Strong, "Digital synthesis of plucked-string and drum
timbres" (Computer Music Journal, 1983); the FM bell follows Chowning, "The synthesis of complex
audio spectra by means of frequency modulation" (JAES, 1973).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

if TYPE_CHECKING:  # the planning module imports this one; types only, no cycle at run time
  from musemb.data.sources.synthetic import ArtistStyle, Genre, TrackRecipe

# Scales as semitone offsets from the tonic (shared with the planner, which picks a track's mode).
MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "major pentatonic": (0, 2, 4, 7, 9),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "minor pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}

# Octave placement of each instrument relative to the track's register (semitones).
_INSTRUMENT_OFFSET = {"piano": 0, "acoustic guitar": -12, "electric guitar": -12, "synth pad": 0,
                      "synth lead": 0, "flute": 12, "strings": 0, "organ": 0, "bells": 12,
                      "sax": -5, "voice": 0}

# ------------------------------------------------------------------------------------------------
# Synthesis. Every note is rendered whole with numpy (no per-sample Python); a track caches its
# notes by (instrument, pitch, length), since melodies and chords repeat.

_TABLE = 4096          # samples in one period of a wavetable


def _hz(midi: float) -> float:
  return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _harmonic_table(amps: np.ndarray) -> np.ndarray:
  """One period of sum_k amps[k-1] * sin(2 pi k x), peak-normalised: [_TABLE]."""
  spec = np.zeros(_TABLE // 2 + 1, np.complex128)
  k = min(len(amps), _TABLE // 2 - 1)
  spec[1:k + 1] = -0.5j * _TABLE * np.asarray(amps[:k], np.float64)
  table = np.fft.irfft(spec, _TABLE)
  return table / max(float(np.abs(table).max()), 1e-12)


def _band_limited(amps: np.ndarray, f0: float, sr: int) -> np.ndarray:
  """Drops the partials above 0.45 sr, which would alias."""
  return amps[:max(1, int(0.45 * sr / f0))]


def _phase(f0: float, n: int, sr: int, phase0: float = 0.0, vib_rate: float = 0.0,
           vib_depth: float = 0.0, vib_delay: float = 0.0) -> np.ndarray:
  """Phase in cycles of an oscillator at f0 with optional delayed vibrato: [n]."""
  t = np.arange(n) / sr
  if vib_depth <= 0.0:
    return phase0 + f0 * t
  ramp = np.minimum(t / vib_delay, 1.0) if vib_delay > 0 else 1.0
  inst = f0 * (1.0 + vib_depth * ramp * np.sin(2 * np.pi * vib_rate * t))
  return phase0 + np.cumsum(inst) / sr


def _lookup(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
  return table[(np.mod(phase, 1.0) * _TABLE).astype(np.intp) % _TABLE]


def _adsr(n: int, sr: int, attack: float, decay: float, sustain: float, hold: float,
          release: float) -> np.ndarray:
  """Piecewise-linear envelope; the note is held for `hold` seconds then released: [n]."""
  a_end = max(attack, 1.0 / sr)
  d_end = a_end + max(decay, 1.0 / sr)
  h_end = max(hold, d_end)
  return np.interp(np.arange(n) / sr, [0.0, a_end, d_end, h_end, h_end + max(release, 1e-3)],
                   [0.0, 1.0, sustain, sustain, 0.0])


def _pluck_env(n: int, sr: int, tau: float, hold: float, release: float,
               attack: float = 0.002) -> np.ndarray:
  """Exponential decay with a short attack and a damping release after `hold`: [n]."""
  t = np.arange(n) / sr
  env = np.exp(-t / tau) * np.minimum(t / attack, 1.0)
  return env * np.exp(-np.maximum(t - hold, 0.0) / release)


def _one_pole_lowpass(x: np.ndarray, cutoff: float, sr: int) -> np.ndarray:
  a = math.exp(-2 * math.pi * min(cutoff, 0.49 * sr) / sr)
  return signal.lfilter([1.0 - a], [1.0, -a], x)


def _butter(x: np.ndarray, sr: int, low: float | None, high: float | None) -> np.ndarray:
  """2nd-order Butterworth high-pass (low only), low-pass (high only) or band-pass."""
  nyq = 0.5 * sr
  if low is not None and high is not None:
    lo, hi = min(low, 0.8 * nyq), min(high, 0.95 * nyq)
    b, a = signal.butter(2, [lo, max(hi, lo * 1.2)], btype="bandpass", fs=sr)
  elif low is not None:
    b, a = signal.butter(2, min(low, 0.9 * nyq), btype="highpass", fs=sr)
  else:
    b, a = signal.butter(2, min(high, 0.95 * nyq), btype="lowpass", fs=sr)
  return signal.lfilter(b, a, x)


def _karplus_strong(rng: np.random.Generator, f0: float, n: int, sr: int, tau: float,
                    brightness: float) -> np.ndarray:
  """A plucked string (Karplus-Strong): a noise burst circulating in a damped delay line: [n].

  The loop runs once per period over a whole period of samples. The averaging filter delays by
  half a sample, so an integer delay N sounds at sr / (N + 0.5); reading the result back at the
  right rate tunes it exactly.
  """
  period = sr / f0
  delay = max(2, int(period - 0.5))
  rate = (delay + 0.5) / period                        # <= 1: read a little slower
  m = int(n * rate) + 3
  rho = math.exp(-1.0 / (f0 * tau))                    # extra loss per period
  burst = rng.uniform(-1.0, 1.0, delay)
  smooth = 0.75 * (1.0 - brightness)
  burst = signal.lfilter([1.0 - smooth], [1.0, -smooth], burst)
  y = np.zeros(m + delay + 1)
  y[:delay] = burst
  prev_last = 0.0
  for start in range(delay, m, delay):
    end = min(start + delay, m)
    cur = y[start - delay:end - delay]
    shifted = np.concatenate(([prev_last], cur[:-1]))
    prev_last = y[start - 1]
    y[start:end] = 0.5 * rho * (cur + shifted)
  return np.interp(np.arange(n) * rate, np.arange(m), y[:m])


_VOWELS = (  # formant frequencies (Hz) and relative levels of a, e, i, o, u
    ((800, 1150, 2800), (1.0, 0.5, 0.25)), ((400, 1700, 2600), (1.0, 0.5, 0.3)),
    ((300, 2200, 3000), (1.0, 0.35, 0.3)), ((450, 800, 2830), (1.0, 0.45, 0.15)),
    ((325, 700, 2530), (1.0, 0.3, 0.1)))


class _Renderer:
  """Turns one track's recipe into samples; one instance per track.

  Parts (lead, harmony, bass, drums) are lists of (onset seconds, pitch, seconds, velocity);
  `pitch` is a MIDI number, or a tuple of them for a chord voiced as one sound (power chords), or
  the drum name. Notes are cached per track: `(instrument, pitch, samples)` -> waveform.
  """

  def __init__(self, recipe: TrackRecipe, style: ArtistStyle, genre: Genre, sr: int,
               rng: np.random.Generator):
    self.recipe = recipe
    self.genre = genre
    self.style = style
    # A song never sounds exactly like the artist's last one: mixing and sounds drift a little.
    jitter = {"brightness": 0.1, "decay": 0.15, "drive": 0.2, "detune": 0.2, "kick_hz": 0.05,
              "kick_decay": 0.15, "snare_decay": 0.15, "hat_decay": 0.15, "gain_lead": 0.25,
              "gain_harmony": 0.25, "gain_bass": 0.25, "gain_drums": 0.25}
    self.timbre = {k: v * math.exp(jitter[k] * float(rng.standard_normal())) if k in jitter
                   else v for k, v in style.timbre.items()}
    self.timbre["brightness"] = min(self.timbre["brightness"], 1.0)
    self.sr = sr
    self.rng = rng
    self._cache: dict[tuple, np.ndarray] = {}

  # -- notes ----------------------------------------------------------------------------------

  def note(self, inst: str, pitch, n: int) -> np.ndarray:
    key = (inst, pitch, n)
    if key not in self._cache:
      self._cache[key] = getattr(self, "_" + inst.replace(" ", "_"))(pitch, n).astype(np.float32)
    return self._cache[key]

  def _piano(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.25 * sr)
    k = np.arange(1, 21)
    bright = _harmonic_table(_band_limited(k ** -(1.7 - 0.8 * tb["brightness"]), f0, sr))
    dull = _harmonic_table(_band_limited(np.array([1.0, 0.25, 0.06]), f0, sr))
    ph = _phase(f0, total, sr, self.rng.random())
    t = np.arange(total) / sr
    w = np.exp(-t / 0.12)                              # high partials die first
    x = w * _lookup(bright, ph) + (1.0 - w) * _lookup(dull, ph)
    tau = tb["decay"] * float(np.clip(1.6 - 0.025 * (m - 48), 0.3, 2.2))
    return x * _pluck_env(total, sr, tau, n / sr, 0.06)

  def _acoustic_guitar(self, m: int, n: int) -> np.ndarray:
    sr, tb = self.sr, self.timbre
    total = n + int(0.1 * sr)
    x = _karplus_strong(self.rng, _hz(m), total, sr, 1.2 * tb["decay"], tb["brightness"])
    return x * _pluck_env(total, sr, 10.0, n / sr, 0.05)

  def _electric_guitar(self, pitch, n: int) -> np.ndarray:
    sr, tb = self.sr, self.timbre
    chord = pitch if isinstance(pitch, tuple) else (pitch,)
    total = n + int(0.05 * sr)
    x = sum(_karplus_strong(self.rng, _hz(m), total, sr, 2.0, 0.9) for m in chord)
    x = np.tanh(tb["drive"] * x / max(float(np.abs(x).max()), 1e-9))
    # The cabinet: distortion is tamed by a speaker that passes little above a few kHz.
    x = _one_pole_lowpass(x, 2500.0 + 2500.0 * tb["brightness"], sr)
    return x * _pluck_env(total, sr, 1.5 * tb["decay"], n / sr, 0.03)

  def _synth_pad(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.5 * sr)
    k = np.arange(1, 7 + int(30 * tb["brightness"]))
    x = 0.0
    for cents in (-0.5 * tb["detune"], 0.5 * tb["detune"]):
      f = f0 * 2.0 ** (cents / 1200.0)
      x = x + _lookup(_harmonic_table(_band_limited(1.0 / k, f, sr)),
                      _phase(f, total, sr, self.rng.random()))
    return x * _adsr(total, sr, 0.25 * tb["decay"], 0.3, 0.8, n / sr, 0.5)

  def _synth_lead(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.1 * sr)
    k = np.arange(1, 24)
    amps = np.where(k % 2 == 1, 1.0 / k, 0.15 / k) * np.exp(-k * (1.0 - tb["brightness"]) / 8)
    ph = _phase(f0, total, sr, 0.0, 5.5, 0.004 * tb["vibrato"], 0.2)
    return (_lookup(_harmonic_table(_band_limited(amps, f0, sr)), ph)
            * _adsr(total, sr, 0.01, 0.15, 0.7, n / sr, 0.08))

  def _flute(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.1 * sr)
    ph = _phase(f0, total, sr, 0.0, 5.0, 0.004 * tb["vibrato"], 0.15)
    tone = _lookup(_harmonic_table(_band_limited(np.array([1.0, 0.45, 0.2, 0.1, 0.05]), f0, sr)),
                   ph)
    breath = np.diff(self.rng.standard_normal(total + 1)) * 0.04
    return (tone + breath) * _adsr(total, sr, 0.06, 0.1, 0.9, n / sr, 0.08)

  def _strings(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.3 * sr)
    k = np.arange(1, 8 + int(16 * tb["brightness"]))
    x = 0.0
    for cents in (-tb["detune"], 0.0, tb["detune"]):   # a small section, not one player
      f = f0 * 2.0 ** (cents / 1200.0)
      x = x + _lookup(_harmonic_table(_band_limited(1.0 / k, f, sr)),
                      _phase(f, total, sr, self.rng.random(), 5.5, 0.005 * tb["vibrato"], 0.1))
    return x * _adsr(total, sr, 0.15, 0.1, 0.9, n / sr, 0.3)

  def _organ(self, m: int, n: int) -> np.ndarray:
    sr, f0 = self.sr, _hz(m)
    total = n + int(0.05 * sr)
    drawbars = np.array([1.0, 0.8, 0.5, 0.6, 0.0, 0.35, 0.0, 0.3, 0.0, 0.0, 0.0, 0.15])
    t = np.arange(total) / sr
    x = _lookup(_harmonic_table(_band_limited(drawbars, f0, sr)), _phase(f0, total, sr))
    x = x * (1.0 + 0.12 * np.sin(2 * np.pi * 6.5 * t))   # the rotating speaker's tremolo
    click = self.rng.standard_normal(total) * np.exp(-t / 0.004) * 0.2
    return (x + click) * _adsr(total, sr, 0.008, 0.02, 1.0, n / sr, 0.04)

  def _bells(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.8 * sr)
    t = np.arange(total) / sr
    index = (1.5 + 3.0 * tb["brightness"]) * np.exp(-t / 0.4)
    ratio = tb["fm_ratio"]
    if ratio * f0 * 3 > 0.45 * sr:                     # keep the sidebands below Nyquist
      index = index * 0.3
    x = np.sin(2 * np.pi * f0 * t + index * np.sin(2 * np.pi * ratio * f0 * t))
    return x * _pluck_env(total, sr, 1.2 * tb["decay"], n / sr + 0.5, 0.3)

  def _sax(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.08 * sr)
    k = np.arange(1, 25)
    amps = k ** -0.7 * (1.0 + 1.5 * np.exp(-(((k * f0) - 1500.0) / 700.0) ** 2))
    ph = _phase(f0, total, sr, 0.0, 5.0, 0.006 * tb["vibrato"], 0.25)
    tone = _lookup(_harmonic_table(_band_limited(amps, f0, sr)), ph)
    breath = np.diff(self.rng.standard_normal(total + 1)) * 0.05
    return (tone + breath) * _adsr(total, sr, 0.04, 0.1, 0.85, n / sr, 0.06)

  def _voice(self, pitch: tuple[int, int], n: int) -> np.ndarray:
    """A sung or rapped vowel: harmonics of f0 shaped by the vowel's formants, and a consonant."""
    m, vowel = pitch
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    rap = self.genre.rap
    total = n + int(0.08 * sr)
    formants, levels = _VOWELS[vowel]
    shift = 1.17 if self.recipe.female else 1.0
    k = np.arange(1, 60)
    fk = k * f0
    width = max(120.0, 0.6 * f0)
    amps = 0.03 / np.sqrt(k) + sum(
        lv * np.exp(-0.5 * ((fk - fm * shift) / width) ** 2) for fm, lv in zip(formants, levels))
    vib = 0.0 if rap else 0.012 * tb["vibrato"]
    ph = _phase(f0, total, sr, 0.0, 5.5, vib, 0.12)
    tone = _lookup(_harmonic_table(_band_limited(amps, f0, sr)), ph)
    t = np.arange(total) / sr
    consonant = _butter(self.rng.standard_normal(total), sr, 2500.0, None) * np.exp(-t / 0.02)
    env = _adsr(total, sr, 0.01 if rap else 0.05, 0.1, 0.9, n / sr, 0.06)
    return tone * env + (0.5 if rap else 0.2) * consonant

  def _bass(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.05 * sr)
    amps = np.array([1.0, 0.6, 0.35, 0.2, 0.1, 0.05]) ** (1.5 - tb["brightness"])
    x = _lookup(_harmonic_table(_band_limited(amps, f0, sr)), _phase(f0, total, sr))
    return x * _pluck_env(total, sr, 0.8 * tb["decay"], n / sr, 0.04, attack=0.005)

  def _upright_bass(self, m: int, n: int) -> np.ndarray:
    sr, tb, f0 = self.sr, self.timbre, _hz(m)
    total = n + int(0.05 * sr)
    x = _lookup(_harmonic_table(_band_limited(np.array([1.0, 0.4, 0.12, 0.05]), f0, sr)),
                _phase(f0, total, sr))
    return x * _pluck_env(total, sr, 0.45 * tb["decay"], n / sr, 0.04, attack=0.012)

  def _synth_bass(self, m: int, n: int) -> np.ndarray:
    sr, f0 = self.sr, _hz(m)
    total = n + int(0.05 * sr)
    k = np.arange(1, 17)
    ph = _phase(f0, total, sr)
    t = np.arange(total) / sr
    w = np.exp(-t / 0.08)                              # a filter envelope closing after the attack
    x = (w * _lookup(_harmonic_table(_band_limited(1.0 / k, f0, sr)), ph)
         + (1 - w) * _lookup(_harmonic_table(np.array([1.0, 0.3, 0.1])), ph))
    return x * _adsr(total, sr, 0.005, 0.1, 0.8, n / sr, 0.05)

  # -- drums ----------------------------------------------------------------------------------

  def drum(self, name: str) -> np.ndarray:
    key = ("drum", name)
    if key not in self._cache:
      self._cache[key] = self._drum(name).astype(np.float32)
    return self._cache[key]

  def _drum(self, name: str) -> np.ndarray:
    sr, tb, rng = self.sr, self.timbre, self.rng
    electronic = self.recipe.genre in ("techno", "pop", "hip hop", "ambient")
    if name == "kick":
      n = int(4 * tb["kick_decay"] * sr)
      t = np.arange(n) / sr
      f = tb["kick_hz"] * (1.0 + 3.0 * np.exp(-t / 0.03))   # the pitch drop that makes the thump
      body = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / tb["kick_decay"])
      return body + 0.3 * rng.standard_normal(n) * np.exp(-t / 0.003)
    if name in ("snare", "clap"):
      n = int(4 * tb["snare_decay"] * sr)
      t = np.arange(n) / sr
      noise = _butter(rng.standard_normal(n), sr, 1200.0, 6000.0)
      if name == "clap":                                      # three quick hands, then the tail
        bursts = sum(np.exp(-np.maximum(t - d, 0) / 0.006) * (t >= d) for d in (0, 0.011, 0.022))
        return noise * (bursts + 0.5 * np.exp(-t / tb["snare_decay"]))
      tone = np.sin(2 * np.pi * tb["snare_hz"] * t) * np.exp(-t / 0.04)
      return 1.5 * noise * np.exp(-t / tb["snare_decay"]) + 0.6 * tone
    if name in ("hat", "open hat"):
      decay = tb["hat_decay"] * (6.0 if name == "open hat" else 1.0)
      n = int(5 * decay * sr)
      t = np.arange(n) / sr
      noise = _butter(rng.standard_normal(n), sr, tb["hat_cut"] * sr, None)
      return noise * np.exp(-t / decay) * (0.8 if electronic else 1.0)
    if name == "ride":
      n = int(1.5 * sr)
      t = np.arange(n) / sr
      noise = _butter(rng.standard_normal(n), sr, 0.3 * sr, None)
      ping = sum(np.sin(2 * np.pi * f * t) for f in (0.19 * sr, 0.23 * sr, 0.27 * sr)) / 3
      return (0.6 * noise + 0.4 * ping) * np.exp(-t / 0.5)
    raise ValueError(f"Unknown drum {name!r}.")

  # -- arrangement ----------------------------------------------------------------------------

  def _swing(self, s: int) -> float:
    """Delay, in 16th steps, of step s: triplet feel when the track swings."""
    if self.recipe.rhythm == "swing" or self.recipe.drums == "shuffle":
      return (0.0, 1 / 3, 2 / 3, 1 / 3)[s % 4]
    return 0.0

  def _time(self, s: float, step: float) -> float:
    jitter = self.timbre["humanize"] * float(self.rng.standard_normal())
    return max(0.0, (s + self._swing(int(s))) * step + jitter)

  def _degree_midi(self, tonic: int, degree: int) -> int:
    scale = MODES[self.recipe.mode]
    return tonic + 12 * (degree // len(scale)) + scale[degree % len(scale)]

  def _chord_degrees(self, root: int) -> list[int]:
    return [root, root + 2, root + 4] + ([root + 6] if self.recipe.genre == "jazz" else [])

  def _lead(self, inst: str, chords: list[int], n_steps: int, step: float) -> list[tuple]:
    r, rng, tb = self.recipe, self.rng, self.timbre
    rap = inst == "voice" and self.genre.rap
    density = min(r.density * (1.4 if rap else 1.0), 4.0)
    w = np.array([0.9, 0.7, 1.2, 0.9] if r.rhythm == "syncopated" else [1.6, 0.45, 1.0, 0.45])
    p = np.tile(np.minimum(1.0, density * w / w.sum()), 8)
    motif = rng.random(32) < p
    motif[0] = True
    if rng.random() < 0.5:
      motif[28:] = False                                # a breath at the end of the phrase
    if inst == "voice":
      tonic = (64 if r.female else 52) + r.key + int(round(r.register / 2))
    else:
      tonic = 60 + r.key + r.register + _INSTRUMENT_OFFSET[inst]
    n_scale = len(MODES[r.mode])
    legato = inst in ("voice", "strings", "flute", "sax", "synth lead")
    art = max(tb["articulation"], 0.9) if legato else tb["articulation"]
    events = []
    degree = 0
    for pair in range(0, n_steps, 64):
      onsets = motif ^ (rng.random(32) < 0.08)
      onsets[0] = True
      steps = np.flatnonzero(onsets)
      degrees = []
      for s in steps:
        if rap:
          degree = int(rng.choice([-1, 0, 0, 1]))
        else:
          degree = int(np.clip(degree + rng.choice([-2, -1, 0, 1, 2],
                                                   p=[0.15, 0.3, 0.1, 0.3, 0.15]), -3, 9))
          if s % 8 == 0:                                # strong beats land on a chord tone
            bar = (pair + s) // 16
            root = chords[min(bar, len(chords) - 1)]
            tones = [root + 2 * j + n_scale * o for j in range(3) for o in (-1, 0, 1)]
            degree = min(tones, key=lambda t: (abs(t - degree), t))
        degrees.append(degree)
      # The phrase is played twice, the second time with some notes changed.
      again = [d if rng.random() < 0.75 else d + int(rng.choice([-1, 1])) for d in degrees]
      for offset, degs in ((pair, degrees), (pair + 32, again)):
        for i, (s, d) in enumerate(zip(steps, degs)):
          start = offset + int(s)
          if start >= n_steps:
            break
          gap = (int(steps[i + 1]) if i + 1 < len(steps) else 32) - int(s)
          dur = max(1, min(8, int(round(gap * art))))
          m = int(np.clip(self._degree_midi(tonic, d), 36, 96))
          pitch = (m, int(tb["vowel_a"] if rng.random() < 0.6 else tb["vowel_b"])) \
              if inst == "voice" else m
          vel = 0.8 + (0.2 if s % 4 == 0 else 0.0) + 0.05 * float(rng.standard_normal())
          events.append((self._time(start, step), pitch, dur, vel))
    return events

  def _harmony(self, inst: str, chords: list[int], chord_bars: int, step: float) -> list[tuple]:
    r, rng, tb = self.recipe, self.rng, self.timbre
    tonic = 48 + r.key + r.register + _INSTRUMENT_OFFSET[inst]
    figure = int(tb["comp"])
    art = tb["articulation"]
    events = []
    for b, root in enumerate(chords):
      bar = 16 * b
      notes = [int(np.clip(self._degree_midi(tonic, d), 28, 88))
               for d in self._chord_degrees(root)]
      if inst in ("synth pad", "strings", "organ"):
        if b % chord_bars == 0:
          events += [(self._time(bar, step), m, 16 * chord_bars, 0.8) for m in notes]
      elif inst == "electric guitar":
        power = (notes[0], notes[0] + 7, notes[0] + 12)
        if r.genre == "metal":
          hits = range(0, 16, 2 if r.bpm > 165 else 1)
          events += [(self._time(bar + s, step), power, 1, 1.0 if s % 4 == 0 else 0.75)
                     for s in hits]
        else:
          hits, dur = [(range(0, 16, 2), 2), ((0, 8), 8), ((2, 6, 10, 14), 1),
                       ((0, 4, 8, 12), 3)][figure]
          events += [(self._time(bar + s, step), power, dur, 0.9) for s in hits]
      elif inst == "acoustic guitar":
        if figure in (0, 2):                            # strummed, down and up
          for s in range(0, 16, 2 if figure == 0 else 4):
            t0 = self._time(bar + s, step)
            order = notes if (s // 2) % 2 == 0 else notes[::-1]
            events += [(t0 + 0.008 * j, m, 2, 0.9 if s % 4 == 0 else 0.6)
                       for j, m in enumerate(order)]
        else:                                           # finger-picked
          cycle = [notes[0] - 12 if notes[0] >= 40 else notes[0]] + notes[1:] + [notes[1]]
          events += [(self._time(bar + s, step), cycle[(s // 2) % len(cycle)], 4, 0.8)
                     for s in range(0, 16, 2)]
      else:                                             # piano (or anything else that comps)
        if r.genre == "jazz":
          hits = [0, 6] + ([10] if rng.random() < 0.5 else [])
          events += [(self._time(bar + s, step), m, 3, 0.7) for s in hits for m in notes]
        elif figure == 1:                               # broken chords in eighths
          cycle = notes + notes[1:-1][::-1]
          events += [(self._time(bar + s, step), cycle[(s // 2) % len(cycle)], 3, 0.7)
                     for s in range(0, 16, 2)]
        else:
          hits, dur = [((0, 4, 8, 12), max(1, int(4 * art))), ((0, 8), 8),
                       ((2, 6, 10, 14), 2), ((0,), 16)][figure]
          events += [(self._time(bar + s, step), m, dur, 0.7) for s in hits for m in notes]
    return events

  def _bass_line(self, chords: list[int], chord_bars: int, step: float) -> list[tuple]:
    r, rng = self.recipe, self.rng
    tonic = 36 + r.key
    figure = int(self.timbre["bass_figure"])
    events = []
    for b, root in enumerate(chords):
      bar = 16 * b
      def midi(d):
        m = self._degree_midi(tonic, d)
        return m - 12 if m > 47 else m
      if r.genre == "techno":
        line = [(s, root, 1) for s in (2, 6, 10, 14)]
      elif r.genre in ("metal", "rock"):
        line = [(s, root, 2) for s in range(0, 16, 2)]
      elif r.genre == "jazz":                           # walking quarters towards the next chord
        line = [(0, root, 4), (4, root + int(rng.choice([1, 2])), 4), (8, root + 4, 4),
                (12, root + int(rng.choice([3, 5, -1])), 4)]
      elif r.genre == "blues":
        line = [(s, root + d, 4) for s, d in zip((0, 4, 8, 12), (0, 2, 4, 5))]
      elif r.genre == "hip hop":
        line = [(0, root, 3), (3, root, 2), (7, root, 3), (10, root, 2)]
      elif r.genre in ("ambient", "classical"):
        line = [(0, root, 16 * chord_bars)] if b % chord_bars == 0 else []
      else:
        line = [[(0, root, 7), (8, root, 7)], [(s, root, 2) for s in range(0, 16, 2)],
                [(0, root, 5), (6, root, 2), (8, root, 5), (14, root + 4, 2)]][figure]
      events += [(self._time(bar + s, step), midi(d), dur, 0.9) for s, d, dur in line]
    return events

  def _drum_hits(self, n_bars: int, step: float) -> list[tuple]:
    r, rng = self.recipe, self.rng
    pattern = {
        "four on the floor": {"kick": (0, 4, 8, 12), "clap": (4, 12), "open hat": (2, 6, 10, 14),
                              "hat": (1, 3, 5, 7, 9, 11, 13, 15)},
        "backbeat": {"kick": (0, 8, 10), "snare": (4, 12), "hat": tuple(range(0, 16, 2))},
        "breakbeat": {"kick": (0, 7, 10), "snare": (4, 12), "hat": tuple(range(0, 16, 2))},
        "swing": {"ride": (0, 4, 6, 8, 12, 14), "hat": (4, 12), "kick": (0,)},
        "shuffle": {"kick": (0, 8), "snare": (4, 12), "hat": tuple(range(0, 16, 2))},
        "double kick": {"kick": tuple(range(0, 16, 2 if r.bpm > 170 else 1)), "snare": (4, 12),
                        "hat": (0, 4, 8, 12)},
    }[r.drums]
    soft = {"hat": 0.5, "ride": 0.6, "kick": 0.9 if r.drums != "swing" else 0.4}
    hits = []
    for b in range(n_bars):
      for name, steps in pattern.items():
        for s in steps:
          hits.append((self._time(16 * b + s, step), name, 0,
                       soft.get(name, 1.0) * (0.9 + 0.1 * rng.random())))
      if "snare" in pattern:
        if b % 4 == 3:                                  # a fill into the next phrase
          hits += [(self._time(16 * b + s, step), "snare", 0, 0.7) for s in (13, 14, 15)]
        elif rng.random() < 0.3:                        # a ghost note
          hits.append((self._time(16 * b + int(rng.integers(16)), step), "snare", 0, 0.3))
    return hits

  def render(self, seconds: float) -> np.ndarray:
    """The track's clip: float32 mono in [-1, 1]: [round(seconds * sr)]."""
    r, sr, rng, tb = self.recipe, self.sr, self.rng, self.timbre
    genre = self.genre
    step = 60.0 / r.bpm / 4.0
    # Clips start anywhere in a bar, as excerpts of real songs do.
    start = float(rng.uniform(0.0, 16 * step))
    n_out = int(round(seconds * sr))
    n_bars = int(math.ceil((start + seconds) / (16 * step))) + 1
    chord_bars = 2 if (r.genre == "ambient" or r.bpm < 75) else 1
    chords = [r.progression[(b // chord_bars) % len(r.progression)] for b in range(n_bars)]
    total = int(start * sr) + n_out
    lo = int(start * sr)

    def place(buf: np.ndarray, x: np.ndarray, t0: float, vel: float) -> None:
      i = int(round(t0 * sr))
      if i < len(buf):
        j = min(len(buf), i + len(x))
        buf[i:j] += vel * x[:j - i]

    parts: list[tuple[np.ndarray, float]] = []
    voices = [("lead", r.lead), ("harmony", r.harmony), ("bass", r.bass)]
    for (part, inst), level in zip(voices, genre.mix[:3]):
      if inst is None:
        continue
      if part == "lead":
        events = self._lead(inst, chords, 16 * n_bars, step)
      elif part == "harmony":
        events = self._harmony(inst, chords, chord_bars, step)
      else:
        events = self._bass_line(chords, chord_bars, step)
      buf = np.zeros(total)
      for t0, pitch, steps, vel in events:
        place(buf, self.note(inst, pitch, max(1, int(steps * step * sr))), t0, vel)
      parts.append((buf, level * tb["gain_" + part]))
    if r.drums is not None:
      buf = np.zeros(total)
      for t0, name, _, vel in self._drum_hits(n_bars, step):
        place(buf, self.drum(name), t0, vel)
      parts.append((buf, max(genre.mix[3], 0.5) * tb["gain_drums"]))

    mix = np.zeros(total)
    for buf, level in parts:
      rms = math.sqrt(float(np.mean(buf[lo:] ** 2)))
      if rms > 0:                                       # balance parts by level, not note count
        mix += (level / rms) * buf
    if r.reverb > 0.05:
      # A room: exponentially decaying, slightly darkened noise; RT60 = r.reverb seconds.
      n_ir = max(2, int(min(r.reverb, 3.0) * sr))
      t = np.arange(n_ir) / sr
      ir = _one_pole_lowpass(rng.standard_normal(n_ir) * np.exp(-6.9 * t / r.reverb), 4000.0, sr)
      ir /= math.sqrt(float(np.sum(ir ** 2)))
      wet = signal.fftconvolve(mix, ir)[:total]
      mix = mix + min(0.9, 0.12 + 0.22 * r.reverb) * wet
    # Register is tone colour as well as pitch: low songs are mixed darker, high ones brighter.
    tilt = float(np.clip(r.register / 12.0, -1.5, 1.5))
    lows = _one_pole_lowpass(mix, 700.0, sr)
    mix = (1.0 - 0.4 * tilt) * lows + (1.0 + 0.4 * tilt) * (mix - lows)
    out = mix[lo:lo + n_out]
    rms = math.sqrt(float(np.mean(out ** 2)))
    if not np.isfinite(rms) or rms < 1e-9:
      raise RuntimeError(f"Synthetic track {r.index} rendered silent or non-finite: {r}.")
    out = out * (10.0 ** (r.loudness / 20.0) / rms)
    out = out + 10.0 ** (-65.0 / 20.0) * rng.standard_normal(n_out)   # a faint noise floor
    # Soft clipping keeps the loud genres in [-1, 1] the way a limiter would.
    return np.clip(np.tanh(out), -1.0, 1.0).astype(np.float32)


def render(recipe: TrackRecipe, style: ArtistStyle, genre: Genre, sample_rate: int,
           rng: np.random.Generator, seconds: float) -> np.ndarray:
  """One track's audio: float32 mono in [-1, 1], [round(seconds * sample_rate)] samples."""
  return _Renderer(recipe, style, genre, sample_rate, rng).render(seconds)
