"""The built-in synthetic world: procedurally generated songs, artists, tags, listeners and reviews.

Every system in musemb trains and is tested on this world before it meets real data, so it is built
to have the structure real collections have, at a size a laptop generates in seconds:

* **Audio** is synthesised from what generates it (numpy, float32 mono in [-1, 1], in memory):
  instrument timbres (Karplus-Strong plucked strings, piano-like decaying partials, sawtooth pads
  and strings, organ drawbars, FM bells, breathy flute and saxophone, formant voices, basses),
  drum kits and patterns (four-on-the-floor, backbeat, breakbeat, swing ride, shuffle, double
  kick) or none, tempo, mode (major, minor, dorian, phrygian, pentatonic, blues, ...), register,
  rhythm (straight, swing, syncopated), note density, reverb and loudness. Melodies, chords and
  bass lines come from the track's scale and chord progression, so no two songs are alike.
* **Artists** have a style: a genre prior (ten genres, from ambient to metal) narrowed by personal
  choices (a favourite line-up, tempo, keys, timbre settings, drum kit, singer), so that songs of
  one artist are more alike than songs of one genre, which are more alike than the rest. Albums add
  a level in between.
* **Tags** are drawn from the generators (genre, instruments, drums / no drums, fast / slow,
  happy / sad, low / high, loud / quiet, ...) with real social tags' weaknesses: each true tag is
  kept with a probability below one, a few random wrong tags are added, the frequency is
  long-tailed, and synonym pairs ("guitar" / "guitars", "electronic" / "electro", "hip hop" /
  "rap", "classical" / "classic", "strings" / "violin", "quiet" / "soft", "female vocal" /
  "female", ...) both occur, with different frequencies, for zero-shot word queries.
* **Tables** (`SourceTables`): similar artists by style, listeners with style preferences and
  long-tailed play counts, playlists built by a style-guided random walk, and short album reviews
  whose wording (with synonyms) describes the album's genre, instruments, mood and tempo.

Splits are by piece: every artist has songs in train and test (and in valid when it has five songs
or more). Everything is deterministic given the seed; each track's audio is seeded from
(seed, track index), so `tracks()` can be iterated twice with identical results.

The world follows the tasks of Weston, Bengio and Hamel (MUSLSE: tags, artists, similar songs and
artists), Won et al. (tag and word queries), Lin et al. (playlists), Rush et al. (text reviews) and
Platt (listening counts); see ../shared/papers. The Karplus-Strong string follows Karplus and
Strong, "Digital synthesis of plucked-string and drum timbres" (Computer Music Journal, 1983); the
FM bell follows Chowning, "The synthesis of complex audio spectra by means of frequency
modulation" (JAES, 1973).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Mapping, Sequence

import numpy as np

from musemb.data.sources import records
from musemb.data.sources import synthetic_audio

# ------------------------------------------------------------------------------------------------
# Sizes.


@dataclasses.dataclass(frozen=True)
class WorldSize:
  """How big a world is.

  Attributes:
    artists: number of artists; genres are dealt out to them in turn, so with at least ten artists
      every genre has one.
    tracks_per_artist: songs per artist (split 70/10/20 by piece within each artist).
    clip_seconds: length of every clip.
    users: listeners in the play table.
    playlists: playlists, each made by one listener.
    reviews_per_album: reviews written about each album.
  """

  artists: int
  tracks_per_artist: int
  clip_seconds: float
  users: int
  playlists: int
  reviews_per_album: int = 1

  def __post_init__(self):
    if self.artists < 2 or self.tracks_per_artist < 2:
      raise ValueError(f"WorldSize needs at least 2 artists with 2 tracks each, got {self}; every "
                       "artist must have songs in both train and test.")
    if self.clip_seconds <= 0 or self.users < 1 or self.playlists < 0 or self.reviews_per_album < 0:
      raise ValueError(f"WorldSize {self}: clip_seconds and users must be positive, playlists and "
                       "reviews_per_album non-negative.")


SIZES: dict[str, WorldSize] = {
    # All tracks and tables in a couple of seconds: for unit tests.
    "tiny": WorldSize(artists=8, tracks_per_artist=10, clip_seconds=2.5, users=24, playlists=12),
    # Under a minute on two cores; big enough for a MUSLSE demo (4 artists per genre).
    "demo": WorldSize(artists=40, tracks_per_artist=12, clip_seconds=8.0, users=300,
                      playlists=200, reviews_per_album=2),
    "small": WorldSize(artists=120, tracks_per_artist=16, clip_seconds=10.0, users=2000,
                       playlists=1000, reviews_per_album=2),
    "large": WorldSize(artists=600, tracks_per_artist=20, clip_seconds=15.0, users=10000,
                       playlists=5000, reviews_per_album=3),
}

# ------------------------------------------------------------------------------------------------
# Musical material.

HAPPY_MODES = frozenset({"major", "lydian", "mixolydian", "major pentatonic"})

# Pitched instruments (harmony or lead), basses and drum patterns.
INSTRUMENTS = ("piano", "acoustic guitar", "electric guitar", "synth pad", "synth lead", "flute",
               "strings", "organ", "bells", "sax", "voice")
BASSES = ("bass", "upright bass", "synth bass")
DRUM_PATTERNS = ("four on the floor", "backbeat", "breakbeat", "swing", "shuffle", "double kick")
SYNTHS = frozenset({"synth pad", "synth lead", "synth bass"})


# Chord progressions as 0-based scale degrees, one chord per bar (or two bars when slow).
_PROGRESSIONS = {
    "pop": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4)),
    "modal": ((0, 6, 5, 6), (0, 3, 0, 3), (0, 0, 5, 6), (0, 2, 3, 2)),
    "jazz": ((1, 4, 0, 0), (1, 4, 0, 5), (0, 5, 1, 4), (2, 5, 1, 4)),
    "blues": ((0, 0, 3, 0), (3, 3, 0, 0), (4, 3, 0, 4), (0, 3, 0, 4)),
    "classical": ((0, 3, 4, 0), (0, 5, 1, 4), (0, 4, 5, 2), (0, 1, 4, 0)),
    "static": ((0, 0, 0, 0), (0, 0, 5, 5), (0, 3, 3, 0), (0, 5, 0, 5)),
}


@dataclasses.dataclass(frozen=True)
class Genre:
  """A genre is a prior over generators; artists narrow it down (weights need not sum to one)."""

  name: str
  tempo: tuple[float, float]            # bpm range, sampled log-uniformly per artist
  modes: Mapping[str, float]
  harmony: Mapping[str, float]          # instrument or "none"
  lead: Mapping[str, float]             # instrument or "none"
  bass: Mapping[str, float]             # a BASSES entry or "none"
  drums: Mapping[str, float]            # a DRUM_PATTERNS entry or "none"
  register: Mapping[int, float]         # semitone offset of harmony and lead
  rhythm: Mapping[str, float]           # straight / swing / syncopated
  density: tuple[float, float]          # lead notes per beat
  reverb: tuple[float, float]           # reverberation time, seconds
  loudness: tuple[float, float]         # RMS level, dBFS
  progressions: str                     # key of _PROGRESSIONS
  female_voice: float                   # probability that the artist's singer is a woman
  rap: bool = False                     # spoken-rhythm voice lines
  drive: tuple[float, float] = (2.0, 4.0)  # electric-guitar distortion gain
  # Relative levels of the four parts (lead, harmony, bass, drums).
  mix: tuple[float, float, float, float] = (1.0, 0.6, 0.6, 0.8)


GENRES: tuple[Genre, ...] = (
    Genre("ambient", tempo=(58, 82), modes={"major": 2, "lydian": 2, "major pentatonic": 2,
                                            "minor": 1.5, "dorian": 1},
          harmony={"synth pad": 4, "strings": 2, "organ": 1},
          lead={"bells": 3, "flute": 1.5, "piano": 2, "synth lead": 1, "none": 2},
          bass={"none": 3, "synth bass": 1}, drums={"none": 9, "four on the floor": 1},
          register={12: 2, 0: 1.5, -12: 0.5}, rhythm={"straight": 1}, density=(0.25, 0.7),
          reverb=(2.2, 4.0), loudness=(-30, -18), progressions="static", female_voice=0.5,
          mix=(0.7, 1.0, 0.5, 0.5)),
    Genre("techno", tempo=(120, 136), modes={"minor": 3, "dorian": 2, "phrygian": 1},
          harmony={"synth pad": 3, "none": 1, "organ": 0.5}, lead={"synth lead": 4, "bells": 1},
          bass={"synth bass": 1}, drums={"four on the floor": 1}, register={0: 2, -12: 1, 12: 1},
          rhythm={"straight": 3, "syncopated": 2}, density=(1.2, 2.5), reverb=(0.3, 1.2),
          loudness=(-17, -9), progressions="modal", female_voice=0.5,
          mix=(0.8, 0.6, 0.9, 1.1)),
    Genre("rock", tempo=(105, 150), modes={"major": 3, "mixolydian": 2, "minor": 2,
                                           "minor pentatonic": 1},
          harmony={"electric guitar": 3, "acoustic guitar": 1, "organ": 1, "piano": 0.5},
          lead={"voice": 4, "electric guitar": 1}, bass={"bass": 1}, drums={"backbeat": 1},
          register={0: 2, -12: 1, 12: 0.5}, rhythm={"straight": 3, "syncopated": 1},
          density=(0.8, 2.0), reverb=(0.4, 1.2), loudness=(-18, -10), progressions="pop",
          female_voice=0.3, drive=(3.0, 8.0), mix=(1.0, 0.9, 0.6, 0.9)),
    Genre("folk", tempo=(75, 120), modes={"major": 3, "major pentatonic": 2, "dorian": 1,
                                          "minor": 1, "mixolydian": 1},
          harmony={"acoustic guitar": 5, "piano": 1, "strings": 0.5},
          lead={"voice": 4, "flute": 2, "strings": 0.7},
          bass={"none": 2, "upright bass": 1, "bass": 0.5},
          drums={"none": 4, "backbeat": 1, "shuffle": 0.5}, register={0: 2, 12: 1},
          rhythm={"straight": 2, "swing": 1}, density=(0.5, 1.5), reverb=(0.6, 1.5),
          loudness=(-26, -15), progressions="pop", female_voice=0.5),
    Genre("jazz", tempo=(90, 190), modes={"dorian": 3, "mixolydian": 2, "minor": 1, "major": 1,
                                          "blues": 1},
          harmony={"piano": 4, "organ": 1, "acoustic guitar": 0.5},
          lead={"sax": 4, "piano": 1.5, "voice": 1, "flute": 0.5}, bass={"upright bass": 1},
          drums={"swing": 5, "none": 1}, register={0: 3, 12: 1, -12: 0.5}, rhythm={"swing": 1},
          density=(1.0, 2.5), reverb=(0.5, 1.5), loudness=(-26, -15), progressions="jazz",
          female_voice=0.5, mix=(1.0, 0.6, 0.7, 0.6)),
    Genre("classical", tempo=(60, 140), modes={"major": 3, "harmonic minor": 2, "minor": 2},
          harmony={"strings": 4, "piano": 3, "organ": 1},
          lead={"strings": 3, "flute": 2, "piano": 2, "none": 1},
          bass={"none": 2, "upright bass": 1}, drums={"none": 1}, register={0: 2, 12: 1, -12: 1},
          rhythm={"straight": 1}, density=(0.5, 2.5), reverb=(1.2, 2.5), loudness=(-30, -17),
          progressions="classical", female_voice=0.5, mix=(1.0, 0.8, 0.5, 0.0)),
    Genre("hip hop", tempo=(80, 98), modes={"minor": 3, "dorian": 2, "minor pentatonic": 1,
                                            "blues": 0.5},
          harmony={"piano": 2, "synth pad": 2, "strings": 1, "organ": 0.5, "none": 0.5},
          lead={"voice": 5, "synth lead": 1, "sax": 0.5},
          bass={"synth bass": 2, "bass": 1}, drums={"breakbeat": 1}, register={0: 2, -12: 1},
          rhythm={"syncopated": 2, "swing": 1}, density=(1.5, 3.0), reverb=(0.3, 1.0),
          loudness=(-17, -9), progressions="modal", female_voice=0.3, rap=True,
          mix=(1.0, 0.5, 0.9, 1.0)),
    Genre("metal", tempo=(140, 200), modes={"phrygian": 2, "minor": 2, "harmonic minor": 2,
                                            "minor pentatonic": 1},
          harmony={"electric guitar": 1}, lead={"electric guitar": 2, "voice": 2},
          bass={"bass": 1}, drums={"double kick": 3, "backbeat": 1}, register={-12: 3, 0: 1},
          rhythm={"straight": 1}, density=(1.5, 3.5), reverb=(0.3, 1.0), loudness=(-14, -8),
          progressions="modal", female_voice=0.1, drive=(10.0, 25.0),
          mix=(0.9, 1.0, 0.6, 0.9)),
    Genre("pop", tempo=(100, 128), modes={"major": 4, "major pentatonic": 1, "minor": 1},
          harmony={"synth pad": 2, "piano": 2, "acoustic guitar": 1, "electric guitar": 0.5},
          lead={"voice": 5, "synth lead": 1}, bass={"synth bass": 1, "bass": 1},
          drums={"four on the floor": 2, "backbeat": 2}, register={0: 2, 12: 2},
          rhythm={"straight": 2, "syncopated": 2}, density=(0.8, 2.0), reverb=(0.6, 1.4),
          loudness=(-17, -9), progressions="pop", female_voice=0.7),
    Genre("blues", tempo=(65, 110), modes={"blues": 3, "mixolydian": 2, "minor pentatonic": 2},
          harmony={"piano": 2, "organ": 2, "acoustic guitar": 1, "electric guitar": 1},
          lead={"voice": 3, "electric guitar": 2, "sax": 1, "piano": 1},
          bass={"bass": 2, "upright bass": 1}, drums={"shuffle": 3, "backbeat": 1, "none": 0.5},
          register={0: 2, -12: 1}, rhythm={"swing": 1}, density=(0.8, 2.0), reverb=(0.6, 1.4),
          loudness=(-22, -12), progressions="blues", female_voice=0.3, drive=(1.5, 4.0)),
)
GENRE_NAMES = tuple(g.name for g in GENRES)
_GENRE = {g.name: g for g in GENRES}

# ------------------------------------------------------------------------------------------------
# Tags: concepts read off the generators, and the words each one is tagged with (with the
# probability that a listener uses that word). Probabilities below one are the missing tags of
# real social tagging; pairs of words for one concept are the synonyms.

_EMISSIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "ambient": (("ambient", 0.8),),
    "techno": (("techno", 0.8),),
    "rock": (("rock", 0.85),),
    "folk": (("folk", 0.75),),
    "jazz": (("jazz", 0.85),),
    "classical": (("classical", 0.75), ("classic", 0.2)),
    "hip hop": (("hip hop", 0.7), ("rap", 0.3)),
    "metal": (("metal", 0.85),),
    "pop": (("pop", 0.75),),
    "blues": (("blues", 0.7),),
    "electronic": (("electronic", 0.6), ("electro", 0.15)),
    "acoustic": (("acoustic", 0.35),),
    "dance": (("dance", 0.4),),
    "piano": (("piano", 0.65),),
    "guitar": (("guitar", 0.6), ("guitars", 0.15)),
    "heavy": (("heavy", 0.5),),
    "synth": (("synth", 0.5),),
    "flute": (("flute", 0.6),),
    "strings": (("strings", 0.55), ("violin", 0.2)),
    "organ": (("organ", 0.5),),
    "bells": (("bells", 0.45),),
    "sax": (("sax", 0.55),),
    "bass": (("bass", 0.25),),
    "vocal": (("vocal", 0.3), ("vocals", 0.2)),
    "female vocal": (("female vocal", 0.4), ("female", 0.2)),
    "male vocal": (("male vocal", 0.35), ("male", 0.15)),
    "no vocals": (("no vocals", 0.2),),
    "drums": (("drums", 0.75),),
    "no drums": (("no drums", 0.35),),
    "fast": (("fast", 0.6),),
    "slow": (("slow", 0.6),),
    "happy": (("happy", 0.35),),
    "sad": (("sad", 0.35),),
    "low": (("low", 0.4),),
    "high": (("high", 0.4),),
    "loud": (("loud", 0.45),),
    "quiet": (("quiet", 0.35), ("soft", 0.2)),
    "atmospheric": (("atmospheric", 0.4),),
}
TAG_VOCABULARY: tuple[str, ...] = tuple(w for ws in _EMISSIONS.values() for w, _ in ws)
SYNONYMS: tuple[tuple[str, str], ...] = tuple(
    (ws[0][0], ws[1][0]) for ws in _EMISSIONS.values() if len(ws) == 2)
_WRONG_TAGS_PER_TRACK = 0.3   # Poisson mean of random wrong tags
FAST_BPM = 135.0
SLOW_BPM = 85.0
HIGH_REGISTER = 7             # semitones at or above which a track is "high" (at or below -: "low")
LOUD_DB = -14.0
QUIET_DB = -22.0
ATMOSPHERIC_REVERB = 2.0      # seconds

# Seed streams: each kind of randomness has its own, so that changing one never shifts another.
_STREAM_WORLD, _STREAM_ALBUM, _STREAM_TRACK, _STREAM_AUDIO, _STREAM_TAGS = 0, 1, 2, 3, 4
_STREAM_SPLIT, _STREAM_USERS, _STREAM_PLAYLISTS, _STREAM_REVIEWS, _STREAM_NAMES = 5, 6, 7, 8, 9


# ------------------------------------------------------------------------------------------------
# Plans: what generates each artist, album and track.


@dataclasses.dataclass(frozen=True)
class ArtistStyle:
  """An artist's narrowed-down genre prior and personal timbre settings."""

  name: str
  genre: str
  bpm: float
  modes: dict[str, float]
  harmony: dict[str, float]
  lead: dict[str, float]
  bass: dict[str, float]
  drums: dict[str, float]
  register: float
  rhythm: dict[str, float]
  density: float
  reverb: float
  loudness: float
  keys: tuple[int, ...]                 # favourite tonics, semitones from C in [-5, 6]
  progressions: tuple[tuple[int, ...], ...]
  female: bool                          # the singer's voice
  timbre: dict[str, float]              # per-artist synthesis settings (see _Renderer)
  popularity: float                     # relative, long-tailed (for listeners)


@dataclasses.dataclass(frozen=True)
class TrackRecipe:
  """Everything that generates one track; tags and audio are functions of it."""

  index: int
  artist: int
  album: int                            # world-wide album index
  genre: str
  bpm: float
  mode: str
  key: int
  register: int
  rhythm: str
  density: float
  harmony: str | None
  lead: str | None
  bass: str | None
  drums: str | None
  reverb: float
  loudness: float
  female: bool
  progression: tuple[int, ...]

  @property
  def happy(self) -> bool:
    return self.mode in HAPPY_MODES

  @property
  def parts(self) -> tuple[str, ...]:
    return tuple(p for p in (self.harmony, self.lead, self.bass) if p is not None)

  def concepts(self) -> list[str]:
    """The true tag concepts (keys of the emission table) of this track, before label noise."""
    c = [self.genre]
    parts = set(self.parts)
    n_synth = len(parts & SYNTHS)
    if n_synth >= 2 or (n_synth == 1 and self.genre in ("techno", "ambient")):
      c.append("electronic")
    if not n_synth and "electric guitar" not in parts and self.drums in (None, "swing"):
      c.append("acoustic")
    if self.drums == "four on the floor" and self.bpm >= 115:
      c.append("dance")
    for inst, concept in (("piano", "piano"), ("flute", "flute"), ("strings", "strings"),
                          ("organ", "organ"), ("bells", "bells"), ("sax", "sax")):
      if inst in parts:
        c.append(concept)
    if parts & {"acoustic guitar", "electric guitar"}:
      c.append("guitar")
    if "electric guitar" in parts and self.genre in ("metal", "rock"):
      c.append("heavy")
    if parts & {"synth pad", "synth lead"}:
      c.append("synth")
    if parts & set(BASSES):
      c.append("bass")
    if self.lead == "voice":
      c += ["vocal", "female vocal" if self.female else "male vocal"]
    else:
      c.append("no vocals")
    c.append("drums" if self.drums else "no drums")
    if self.bpm >= FAST_BPM:
      c.append("fast")
    elif self.bpm <= SLOW_BPM:
      c.append("slow")
    c.append("happy" if self.happy else "sad")
    if self.register >= HIGH_REGISTER:
      c.append("high")
    elif self.register <= -HIGH_REGISTER:
      c.append("low")
    if self.loudness >= LOUD_DB:
      c.append("loud")
    elif self.loudness <= QUIET_DB:
      c.append("quiet")
    if self.reverb >= ATMOSPHERIC_REVERB:
      c.append("atmospheric")
    return c


def _rng(*keys: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _pick(rng: np.random.Generator, weights: Mapping) -> object:
  keys = list(weights)
  p = np.asarray([weights[k] for k in keys], np.float64)
  return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _narrow(rng: np.random.Generator, prior: Mapping, keep: int, noise: float = 0.8,
            borrow: Sequence | None = None, borrow_p: float = 0.0) -> dict:
  """An artist's preferences: the genre prior with personal noise, sharpened, top `keep` kept.

  With probability `borrow_p` one option from `borrow` (another genre's palette) joins in, so
  that a few artists cross genre lines as real ones do.
  """
  w = {k: float(v) * math.exp(noise * rng.standard_normal()) for k, v in prior.items()}
  top = sorted(w, key=lambda k: (-w[k], str(k)))[:keep]
  out = {k: w[k] ** 2 for k in top}
  if borrow and rng.random() < borrow_p:
    extra = borrow[int(rng.integers(len(borrow)))]
    out[extra] = out.get(extra, 0.0) + 0.4 * sum(out.values())
  total = sum(out.values())
  return {k: v / total for k, v in out.items()}


def _plan_artist(rng: np.random.Generator, name: str, genre: Genre) -> ArtistStyle:
  lo, hi = genre.tempo
  instruments = [i for i in INSTRUMENTS if i != "voice"]
  timbre = {
      "brightness": rng.uniform(0.3, 1.0),      # harmonic richness
      "decay": rng.uniform(0.6, 1.6),           # scales note decay times
      "detune": rng.uniform(3.0, 14.0),         # cents between pad voices
      "drive": rng.uniform(*genre.drive),
      "vibrato": rng.uniform(0.5, 1.5),
      "vowel_a": float(rng.integers(5)), "vowel_b": float(rng.integers(5)),
      "fm_ratio": float(rng.choice([1.4, 2.76, 3.5, 4.1])),
      "kick_hz": rng.uniform(45.0, 65.0), "kick_decay": rng.uniform(0.15, 0.4),
      "snare_hz": rng.uniform(160.0, 240.0), "snare_decay": rng.uniform(0.08, 0.2),
      "hat_decay": rng.uniform(0.02, 0.06), "hat_cut": rng.uniform(0.3, 0.42),
      "humanize": rng.uniform(0.0, 0.012),      # seconds of timing jitter
      "articulation": rng.uniform(0.5, 1.0),    # fraction of the gap a note sounds
      "comp": float(rng.integers(4)),           # accompaniment figure
      "bass_figure": float(rng.integers(3)),
      "gain_lead": math.exp(0.2 * rng.standard_normal()),
      "gain_harmony": math.exp(0.2 * rng.standard_normal()),
      "gain_bass": math.exp(0.2 * rng.standard_normal()),
      "gain_drums": math.exp(0.2 * rng.standard_normal()),
  }
  return ArtistStyle(
      name=name,
      genre=genre.name,
      bpm=float(math.exp(rng.uniform(math.log(lo), math.log(hi)))),
      modes=_narrow(rng, genre.modes, keep=2),
      harmony=_narrow(rng, genre.harmony, keep=3, borrow=instruments, borrow_p=0.25),
      lead=_narrow(rng, genre.lead, keep=3, borrow=instruments, borrow_p=0.25),
      bass=_narrow(rng, genre.bass, keep=1),
      drums=_narrow(rng, genre.drums, keep=2, noise=0.5),
      register=float(_pick(rng, genre.register)) + 3.0 * float(rng.standard_normal()),
      rhythm=_narrow(rng, genre.rhythm, keep=1),
      density=float(rng.uniform(*genre.density)),
      reverb=float(rng.uniform(*genre.reverb)),
      loudness=float(rng.uniform(*genre.loudness)),
      keys=tuple(int(k) for k in rng.choice(np.arange(-5, 7), size=3, replace=False)),
      progressions=tuple(_PROGRESSIONS[genre.progressions][int(i)]
                         for i in rng.choice(4, size=2, replace=False)),
      female=bool(rng.random() < genre.female_voice),
      timbre=timbre,
      popularity=float(math.exp(1.0 * rng.standard_normal())),
  )


def _none(x: str) -> str | None:
  return None if x == "none" else x


def _plan_album(rng: np.random.Generator, style: ArtistStyle) -> dict:
  """An album's shared choices: its mood, line-up and feel vary less within it than across."""
  main_mode = max(style.modes, key=lambda k: (style.modes[k], k))
  return {
      "mode": main_mode if rng.random() < 0.7 else _pick(rng, style.modes),
      "harmony": _pick(rng, style.harmony), "lead": _pick(rng, style.lead),
      "drums": _pick(rng, style.drums),
      "bpm": style.bpm * math.exp(0.08 * rng.standard_normal()),
      "register": style.register + 3.0 * rng.standard_normal(),
      "reverb": style.reverb * math.exp(0.25 * rng.standard_normal()),
      "loudness": style.loudness + 2.0 * rng.standard_normal(),
      "key": int(rng.choice(style.keys)) if rng.random() < 0.6 else int(rng.integers(-5, 7)),
  }


def _plan_track(rng: np.random.Generator, index: int, artist: int, album_index: int,
                style: ArtistStyle, album: dict) -> TrackRecipe:
  def keep_or(value, prior, p):
    return value if rng.random() < p else _pick(rng, prior)

  lead = _none(keep_or(album["lead"], style.lead, 0.65))
  harmony = _none(keep_or(album["harmony"], style.harmony, 0.65))
  if lead is None and harmony is None:
    # Something must carry the song: fall back on the artist's likeliest melodic instrument.
    options = {k: v for k, v in {**style.lead, **style.harmony}.items() if k != "none"}
    lead = max(options, key=lambda k: (options[k], k)) if options else "piano"
  female = style.female if rng.random() < 0.9 else not style.female   # the odd guest singer
  return TrackRecipe(
      index=index, artist=artist, album=album_index, genre=style.genre,
      bpm=float(np.clip(album["bpm"] * math.exp(0.06 * rng.standard_normal()), 50.0, 210.0)),
      mode=str(keep_or(album["mode"], style.modes, 0.85)),
      key=int(album["key"] if rng.random() < 0.5 else rng.integers(-5, 7)),
      register=int(round(album["register"] + 3.0 * rng.standard_normal())),
      rhythm=str(_pick(rng, style.rhythm)),
      density=float(style.density * math.exp(0.25 * rng.standard_normal())),
      harmony=harmony, lead=lead, bass=_none(_pick(rng, style.bass)),
      drums=_none(keep_or(album["drums"], style.drums, 0.85)),
      reverb=float(album["reverb"] * math.exp(0.15 * rng.standard_normal())),
      loudness=float(album["loudness"] + 1.5 * rng.standard_normal()),
      female=female,
      progression=style.progressions[int(rng.integers(len(style.progressions)))],
  )


# ------------------------------------------------------------------------------------------------
# Names and words.

_ADJECTIVES = (
    "Velvet", "Crimson", "Silent", "Electric", "Golden", "Hollow", "Neon", "Paper", "Iron", "Lunar",
    "Amber", "Bitter", "Broken", "Copper", "Distant", "Emerald", "Frozen", "Gentle", "Hidden",
    "Indigo", "Jaded", "Kindred", "Lonely", "Midnight", "Northern", "Opal", "Pale", "Quiet",
    "Restless", "Scarlet", "Tidal", "Violet", "Wild", "Young", "Ashen", "Blue", "Cosmic", "Dusty",
    "Early", "Faded")
_NOUNS = (
    "Harbors", "Lanterns", "Foxes", "Engines", "Orchards", "Tides", "Circuits", "Meadows",
    "Choirs", "Static", "Rivers", "Mirrors", "Wolves", "Satellites", "Gardens", "Ghosts",
    "Signals", "Sparrows", "Canyons", "Embers", "Islands", "Machines", "Pilots", "Ravens",
    "Shadows", "Towers", "Valleys", "Waves", "Comets", "Deserts", "Feathers", "Glaciers", "Hearts",
    "Keys", "Lights", "Moths", "Oceans", "Prisms", "Roads", "Storms")
_FIRST = ("Ada", "Bruno", "Clara", "Dmitri", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas",
          "Kira", "Leon", "Mara", "Nico", "Olga", "Pablo", "Rosa", "Sami", "Tara", "Ugo", "Vera",
          "Wim", "Yara", "Zeno")
_LAST = ("Adler", "Berg", "Costa", "Dahl", "Engel", "Falk", "Gray", "Holm", "Ivers", "Jensen",
         "Kovac", "Lund", "Moreau", "Novak", "Ortiz", "Park", "Quinn", "Rossi", "Stone", "Tanaka",
         "Ulman", "Varga", "Weiss", "Young")
_ORDINALS = ("debut", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")

# Review vocabulary: each attribute in several wordings, synonyms included on purpose. GENRE_WORDS
# is public: the words a text query may use for a genre.
GENRE_WORDS = {
    "ambient": ("ambient", "atmospheric ambient", "drone", "ambient electronic"),
    "techno": ("techno", "electronic", "electro", "club techno"),
    "rock": ("rock", "guitar rock", "indie rock", "rock and roll"),
    "folk": ("folk", "acoustic folk", "singer-songwriter folk"),
    "jazz": ("jazz", "bebop", "modern jazz", "small-combo jazz"),
    "classical": ("classical", "classic", "orchestral", "chamber music"),
    "hip hop": ("hip hop", "rap", "hip-hop", "boom-bap"),
    "metal": ("metal", "heavy metal", "thrash metal"),
    "pop": ("pop", "synth-pop", "radio pop", "electropop"),
    "blues": ("blues", "electric blues", "twelve-bar blues", "delta blues"),
}
_INSTRUMENT_WORDS = {
    "piano": ("piano", "keys", "grand piano"),
    "acoustic guitar": ("acoustic guitar", "guitar", "guitars", "fingerpicked guitar"),
    "electric guitar": ("distorted guitars", "heavy guitars", "crunching guitar riffs", "guitar"),
    "synth pad": ("synth pads", "synths", "synthesizers", "washes of synth"),
    "synth lead": ("synth leads", "synth", "synthesizer lines", "electro synths"),
    "flute": ("flute", "woodwinds", "breathy flute"),
    "strings": ("strings", "violins", "a string section", "violin"),
    "organ": ("organ", "hammond organ", "swirling organ"),
    "bells": ("bells", "chimes", "glockenspiel"),
    "sax": ("sax", "saxophone", "horns"),
    "female": ("female vocals", "a female voice", "her voice", "female vocal"),
    "male": ("male vocals", "a male voice", "his voice", "male vocal"),
    "rap": ("rapping", "rap verses", "spoken vocals"),
    "bass": ("bass", "a bassline", "low end"),
    "upright bass": ("upright bass", "double bass", "walking bass"),
    "synth bass": ("synth bass", "a subby bassline", "bass"),
}
_DRUM_WORDS = {
    "four on the floor": ("four-on-the-floor kicks", "a pounding kick drum", "steady dance beats"),
    "backbeat": ("a solid backbeat", "crisp drums", "steady drums"),
    "breakbeat": ("chopped breakbeats", "head-nodding beats", "dusty drums"),
    "swing": ("brushed drums", "a swinging ride cymbal", "light swing drums"),
    "shuffle": ("a shuffling beat", "shuffle drums", "loping drums"),
    "double kick": ("pounding double-kick drums", "blast beats", "relentless drums"),
    None: ("no drums at all", "no percussion", "a beatless arrangement"),
}
_MOOD_WORDS = {True: ("happy", "cheerful", "bright", "upbeat", "sunny", "joyful"),
               False: ("sad", "melancholy", "brooding", "somber", "wistful", "dark")}
_TEMPO_WORDS = {"fast": ("fast", "frantic", "breakneck", "high-energy", "driving"),
                "mid": ("mid-tempo", "steady", "loping", "easygoing"),
                "slow": ("slow", "languid", "unhurried", "gentle", "slow-burning")}
_REGISTER_WORDS = {
    "low": ("low", "deep and dark", "low in the mix, bass-heavy", "murky and low"),
    "high": ("high", "high and airy", "high, soaring over the mix", "bright and high")}
_LOUD_WORDS = {"loud": ("loud", "punishing", "full-throttle", "crushing"),
               "quiet": ("quiet", "soft", "hushed", "delicate")}
_VERDICTS = ("A fine record.", "Recommended.", "Worth a listen.", "Not essential, but pleasant.",
             "One of the year's best.", "A little uneven.", "Three stars.", "Four stars.",
             "Two stars.", "A grower.")


def _unique_names(rng: np.random.Generator, count: int, make) -> list[str]:
  """`count` distinct names from `make(rng)`; once collisions pile up, later names get a number."""
  names: list[str] = []
  seen: set[str] = set()
  attempts = 0
  while len(names) < count:
    name = make(rng)
    attempts += 1
    if name in seen and attempts > 4 * count:
      name = f"{name} {len(names) + 1}"                 # made-up names never hold digits
    if name not in seen:
      seen.add(name)
      names.append(name)
  return names


def _artist_name(rng: np.random.Generator) -> str:
  form = int(rng.integers(4))
  adj, noun = _ADJECTIVES[rng.integers(len(_ADJECTIVES))], _NOUNS[rng.integers(len(_NOUNS))]
  if form == 0:
    return f"The {adj} {noun}"
  if form == 1:
    return f"{_FIRST[rng.integers(len(_FIRST))]} {_LAST[rng.integers(len(_LAST))]}"
  if form == 2:
    return f"{adj} {noun}"
  return f"{_FIRST[rng.integers(len(_FIRST))]} and the {noun}"


def _title(rng: np.random.Generator) -> str:
  adj, noun = _ADJECTIVES[rng.integers(len(_ADJECTIVES))], _NOUNS[rng.integers(len(_NOUNS))]
  return (f"{adj} {noun}", f"{noun} of {adj} Days", f"The {noun}", f"{adj}")[rng.integers(4)]


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
  return "an" if word[:1].lower() in "aeiou" else "a"


# ------------------------------------------------------------------------------------------------
# The world.


class SyntheticWorld:
  """A generated music collection implementing `records.Source`.

  Construction plans the whole world (artists, albums, track recipes, tags, splits) without
  rendering any audio; `tracks()` renders each clip on the fly from its recipe and a generator
  seeded by (seed, track index), and `tables()` builds the side tables once and caches them.

  Attributes:
    name: "synthetic".
    size: the preset name ("tiny", "demo", "small", "large") or "custom".
    config: the `WorldSize` in use (with `clip_seconds` overridden when given).
    seed, sample_rate, clip_seconds: as given.
    tag_names: tags that occur on at least two tracks, most frequent first (ties by name).
    artist_names: one per artist, in planning order.
    artist_genre: artist name -> genre name.
    styles: `ArtistStyle` per artist; recipes: `TrackRecipe` per track (the generators).
    splits, track_tags: per track (by index), the split and the (noisy) tags that `tracks()`
      yields; read them to know the labels without rendering any audio.
    skipped: always empty: nothing generated is ever unusable.
  """

  name = "synthetic"

  def __init__(self, size: str | WorldSize = "tiny", seed: int = 0, sample_rate: int = 16000,
               clip_seconds: float | None = None):
    if isinstance(size, WorldSize):
      config, self.size = size, "custom"
    elif size in SIZES:
      config, self.size = SIZES[size], size
    else:
      raise ValueError(f"SyntheticWorld: unknown size {size!r}; valid sizes are "
                       f"{', '.join(SIZES)} (or pass a WorldSize).")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"SyntheticWorld: seed must be a non-negative integer, got {seed!r}.")
    if sample_rate < 4000:
      raise ValueError(f"SyntheticWorld: sample_rate={sample_rate} Hz is too low to hold the "
                       "instruments; use 4000 Hz or more (16000 is the default).")
    if clip_seconds is not None:
      if clip_seconds <= 0:
        raise ValueError(f"SyntheticWorld: clip_seconds={clip_seconds} must be positive.")
      config = dataclasses.replace(config, clip_seconds=float(clip_seconds))
    self.config = config
    self.seed = int(seed)
    self.sample_rate = int(sample_rate)
    self.clip_seconds = float(config.clip_seconds)
    self.skipped = records.SkipCounter()
    self._tables: records.SourceTables | None = None

    rng = _rng(self.seed, _STREAM_WORLD)
    genre_order = rng.permutation(len(GENRES))
    self.artist_names = _unique_names(_rng(self.seed, _STREAM_NAMES), config.artists,
                                      _artist_name)
    self.styles = [_plan_artist(rng, name, GENRES[genre_order[a % len(GENRES)]])
                   for a, name in enumerate(self.artist_names)]
    self.artist_genre = {s.name: s.genre for s in self.styles}

    tpa = config.tracks_per_artist
    n_albums = max(1, round(tpa / 4))
    self.recipes: list[TrackRecipe] = []
    self._album_titles: list[str] = []
    self._album_artist: list[int] = []
    album_names = _unique_names(_rng(self.seed, _STREAM_NAMES, 1),
                                config.artists * n_albums, _title)
    titles = _unique_names(_rng(self.seed, _STREAM_NAMES, 2), config.artists * tpa, _title)
    for a, style in enumerate(self.styles):
      for chunk in np.array_split(np.arange(tpa), n_albums):
        album_index = len(self._album_titles)
        self._album_titles.append(album_names[album_index])
        self._album_artist.append(a)
        album = _plan_album(_rng(self.seed, _STREAM_ALBUM, album_index), style)
        for j in chunk:
          index = a * tpa + int(j)
          self.recipes.append(_plan_track(_rng(self.seed, _STREAM_TRACK, index), index, a,
                                          album_index, style, album))
    self._titles = titles
    self.splits = self._plan_splits()
    raw_tags = [self._noisy_tags(r) for r in self.recipes]
    counts: dict[str, int] = {}
    for tags in raw_tags:
      for t in tags:
        counts[t] = counts.get(t, 0) + 1
    self.tag_names = sorted((t for t, c in counts.items() if c >= 2),
                            key=lambda t: (-counts[t], t))
    self.track_tags = [[t for t in self.tag_names if t in tags] for tags in raw_tags]

  # -- planning -------------------------------------------------------------------------------

  def _plan_splits(self) -> list[str]:
    """70/10/20 by piece within each artist; valid only for artists with five songs or more."""
    tpa = self.config.tracks_per_artist
    n_test = max(1, round(0.2 * tpa))
    n_valid = max(1, round(0.1 * tpa)) if tpa >= 5 else 0
    splits = [""] * len(self.recipes)
    for a in range(self.config.artists):
      order = _rng(self.seed, _STREAM_SPLIT, a).permutation(tpa)
      for rank, j in enumerate(order):
        split = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
        splits[a * tpa + int(j)] = split
    return splits

  def _noisy_tags(self, recipe: TrackRecipe) -> list[str]:
    """The words listeners used: true concepts kept at random, plus a few wrong tags."""
    rng = _rng(self.seed, _STREAM_TAGS, recipe.index)
    concepts = recipe.concepts()
    tags = [w for c in concepts for w, p in _EMISSIONS[c] if rng.random() < p]
    for _ in range(rng.poisson(_WRONG_TAGS_PER_TRACK)):
      tags.append(TAG_VOCABULARY[int(rng.integers(len(TAG_VOCABULARY)))])
    if not tags:                                        # every track keeps at least its genre
      tags.append(_EMISSIONS[recipe.genre][0][0])
    return sorted(set(tags))

  # -- Source protocol ------------------------------------------------------------------------

  def track_id(self, index: int) -> str:
    return f"syn{index:06d}"

  def clean_tags(self, index: int) -> list[str]:
    """Track `index`'s tags without label noise: every true concept's main word (some may be
    missing from `tag_names` in a small world, where a concept can occur on fewer than two
    tracks)."""
    return [_EMISSIONS[c][0][0] for c in self.recipes[index].concepts()]

  def audio(self, index: int) -> np.ndarray:
    """Renders track `index`: float32 mono in [-1, 1]: [round(clip_seconds * sample_rate)]."""
    recipe = self.recipes[index]
    return synthetic_audio.render(recipe, self.styles[recipe.artist], _GENRE[recipe.genre],
                                  self.sample_rate, _rng(self.seed, _STREAM_AUDIO, index),
                                  self.clip_seconds)

  def track(self, index: int) -> records.Track:
    r = self.recipes[index]
    return records.Track(
        id=self.track_id(index), artists=[self.artist_names[r.artist]],
        tags=list(self.track_tags[index]), split=self.splits[index], audio=self.audio(index),
        sample_rate=self.sample_rate,
        title=self._titles[index], album=self._album_titles[r.album])

  def tracks(self) -> Iterator[records.Track]:
    for index in range(len(self.recipes)):
      yield self.track(index)

  def tables(self) -> records.SourceTables:
    if self._tables is None:
      plays, users = self._plays()
      self._tables = records.SourceTables(
          artist_similarity=self._artist_similarity(),
          playlists=self._playlists(users),
          plays=plays,
          reviews=self._reviews())
    return self._tables

  def description(self) -> str:
    c = self.config
    per_split = {s: self.splits.count(s) for s in records.SPLITS}
    return (
        f"The built-in synthetic world (size {self.size!r}, seed {self.seed}): "
        f"{len(self.recipes)} procedurally synthesised clips of {self.clip_seconds:g} s at "
        f"{self.sample_rate} Hz by {c.artists} artists ({c.tracks_per_artist} songs each, in "
        f"albums) across {len(GENRES)} genres ({', '.join(GENRE_NAMES)}); each artist's style "
        f"narrows its genre's prior over instruments, drums, tempo, mode, register, rhythm, "
        f"texture and loudness. {len(self.tag_names)} tags are read off the generators with "
        f"social-tag noise (missing tags, about {_WRONG_TAGS_PER_TRACK:g} wrong tags per track, "
        f"synonym pairs such as guitar/guitars and hip hop/rap). Split by piece within each "
        f"artist: {per_split['train']} train, {per_split['valid']} valid, {per_split['test']} "
        f"test. Side tables: similar artists by style, {c.users} listeners with style "
        f"preferences and long-tailed play counts, {c.playlists} style-coherent playlists and "
        f"{c.reviews_per_album} short text review(s) per album.")

  # -- tables ---------------------------------------------------------------------------------

  def _style_vectors(self) -> np.ndarray:
    """One row per artist: the generator settings that shape its sound: [artists, features]."""
    def dist(d: Mapping, keys: Sequence) -> list[float]:
      return [float(d.get(k, 0.0)) for k in keys]
    rows = []
    for s in self.styles:
      happy = sum(p for m, p in s.modes.items() if m in HAPPY_MODES)
      rows.append(
          dist({s.genre: 1.0}, GENRE_NAMES)
          + dist(s.harmony, INSTRUMENTS) + dist(s.lead, INSTRUMENTS)
          + dist(s.bass, BASSES) + dist(s.drums, DRUM_PATTERNS)
          + [happy, math.log(s.bpm / 110.0) * 2.0, s.register / 12.0, s.density / 2.0,
             s.reverb / 2.0, (s.loudness + 18.0) / 8.0])
    return np.asarray(rows, np.float64)

  def _artist_similarity(self) -> dict[str, list[str]]:
    """Each artist's nearest artists by style (up to 5, never itself)."""
    x = self._style_vectors()
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    k = min(5, len(x) - 1)
    out = {}
    for a, name in enumerate(self.artist_names):
      order = np.lexsort((np.arange(len(x)), d[a]))[:k]
      out[name] = [self.artist_names[int(b)] for b in order]
    return out

  def _track_arrays(self) -> dict[str, np.ndarray]:
    r = self.recipes
    bpm = np.log([t.bpm for t in r])
    return {
        "genre": np.array([GENRE_NAMES.index(t.genre) for t in r]),
        "artist": np.array([t.artist for t in r]),
        "happy": np.array([1.0 if t.happy else -1.0 for t in r]),
        "tempo": (bpm - bpm.mean()) / max(bpm.std(), 1e-9),
        "drums": np.array([t.drums is not None for t in r]),
        "artist_pop": np.log([self.styles[t.artist].popularity for t in r]),
        # Songs differ in popularity within an artist, too.
        "track_pop": _rng(self.seed, _STREAM_USERS, 1).normal(0.0, 0.6, len(r)),
    }

  def _plays(self) -> tuple[list[records.Play], list[dict]]:
    """Listeners with style preferences; each plays tens of songs, counts long-tailed."""
    c, n = self.config, len(self.recipes)
    arr = self._track_arrays()
    rng = _rng(self.seed, _STREAM_USERS)
    plays, users = [], []
    for u in range(c.users):
      user = {
          "name": f"user{u:05d}",
          "genres": rng.dirichlet(np.full(len(GENRES), 0.3)),   # a few favourite genres
          "mood": rng.normal(), "tempo": rng.normal(), "drums": rng.normal(),
          "activity": float(rng.lognormal(0.0, 0.8)),
      }
      users.append(user)
      score = (np.log(user["genres"][arr["genre"]] + 1e-3)
               + 0.6 * user["mood"] * arr["happy"] + 0.6 * user["tempo"] * arr["tempo"]
               + 0.5 * user["drums"] * np.where(arr["drums"], 1.0, -1.0)
               + 0.8 * arr["artist_pop"] + 0.5 * arr["track_pop"])
      k = int(np.clip(rng.lognormal(math.log(30.0), 0.6), 10, 200))
      k = min(k, max(1, n // 2))
      chosen = np.argsort(-(score + rng.gumbel(size=n)), kind="stable")[:k]
      affinity = score[chosen] - score[chosen].mean()
      lam = 2.0 * user["activity"] * np.exp(0.7 * np.clip(affinity, -3.0, 3.0))
      counts = 1 + rng.poisson(lam)
      plays += [records.Play(user["name"], self.track_id(int(t)), int(cnt))
                for t, cnt in zip(chosen, counts)]
      user["score"] = score
    return plays, users

  def _playlists(self, users: list[dict]) -> list[records.Playlist]:
    """Style-guided random walks: each playlist keeps to one genre, mostly, and flows by mood,
    tempo and artist from one song to the next."""
    c, n = self.config, len(self.recipes)
    arr = self._track_arrays()
    rng = _rng(self.seed, _STREAM_PLAYLISTS)
    activity = np.array([u["activity"] for u in users])
    pop = np.exp(0.5 * arr["artist_pop"] + 0.3 * arr["track_pop"])
    playlists = []
    for p in range(c.playlists):
      user = users[int(rng.choice(len(users), p=activity / activity.sum()))]
      genre = int(rng.choice(len(GENRES), p=user["genres"]))
      in_genre = arr["genre"] == genre
      if not in_genre.any():                            # the world may lack that genre
        genre = int(arr["genre"][int(np.argmax(user["score"]))])
        in_genre = arr["genre"] == genre
      length = min(int(rng.integers(8, 21)), n)
      w = pop * in_genre
      current = int(rng.choice(n, p=w / w.sum()))
      used = np.zeros(n, bool)
      order = []
      for _ in range(length):
        order.append(current)
        used[current] = True
        w = pop * np.exp(2.5 * in_genre + 1.2 * (arr["artist"] == arr["artist"][current])
                         + 0.6 * arr["happy"] * arr["happy"][current]
                         - 0.8 * np.abs(arr["tempo"] - arr["tempo"][current])
                         + 0.3 * user["score"] / 5.0)
        w[used] = 0.0
        if w.sum() <= 0:
          break
        current = int(rng.choice(n, p=w / w.sum()))
      playlists.append(records.Playlist(
          id=f"playlist{p:05d}", track_ids=tuple(self.track_id(t) for t in order),
          user=user["name"]))
    return playlists

  def _reviews(self) -> list[records.Review]:
    """Short album reviews that describe the album's generators in varied words."""
    reviews = []
    by_album: dict[int, list[TrackRecipe]] = {}
    for r in self.recipes:
      by_album.setdefault(r.album, []).append(r)
    for album, tracks in by_album.items():
      for k in range(self.config.reviews_per_album):
        rng = _rng(self.seed, _STREAM_REVIEWS, album, k)
        reviews.append(records.Review(
            id=f"review{len(reviews):06d}", track_ids=tuple(self.track_id(t.index) for t in tracks),
            text=self._review_text(rng, album, tracks), album=self._album_titles[album]))
    return reviews

  def _review_text(self, rng: np.random.Generator, album: int, tracks: list[TrackRecipe]) -> str:
    artist = self.artist_names[tracks[0].artist]
    possessive = artist + ("'" if artist.endswith("s") else "'s")
    title = self._album_titles[album]
    nth = sum(1 for a in self._album_artist[:album] if a == tracks[0].artist)
    nth_word = _ORDINALS[min(nth, len(_ORDINALS) - 1)]
    genre = _choice(rng, GENRE_WORDS[tracks[0].genre])
    happy = sum(t.happy for t in tracks) * 2 >= len(tracks)
    mood = _choice(rng, _MOOD_WORDS[happy])
    key = "major" if happy else "minor"
    bpm = float(np.mean([t.bpm for t in tracks]))
    pace = "fast" if bpm >= FAST_BPM - 10 else "slow" if bpm <= SLOW_BPM + 5 else "mid"
    tempo = _choice(rng, _TEMPO_WORDS[pace])
    counts: dict[str, int] = {}
    for t in tracks:
      for inst in t.parts:
        if inst == "voice":
          inst = "rap" if _GENRE[t.genre].rap else "female" if t.female else "male"
        counts[inst] = counts.get(inst, 0) + 1
    words = [_choice(rng, _INSTRUMENT_WORDS[i])
             for i in sorted(counts, key=lambda i: (-counts[i], i))[:3]]
    insts = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    drums = max((t.drums for t in tracks),
                key=lambda d: (sum(t.drums == d for t in tracks), d or ""))
    beat = _choice(rng, _DRUM_WORDS[drums])
    if drums is None:
      rhythm = _choice(rng, (f"There are no drums at all, and the pace is {tempo}.",
                             f"It is {tempo} music without percussion.",
                             f"The songs drift along, {tempo} and beatless."))
    else:
      rhythm = _choice(rng, (f"The tempo is {tempo} throughout, carried by {beat}.",
                             f"Expect {beat} and {_choice(rng, _TEMPO_WORDS[pace])} grooves.",
                             f"Underneath it all: {beat}; the songs stay {tempo}.",
                             f"It is {tempo} music with {beat}."))
    sentences = [
        _choice(rng, (
            f"{_article(mood).capitalize()} {mood} {key}-key {genre} record built on {insts}.",
            f"{possessive} {nth_word} album, {title}, is {_article(tempo)} {tempo} {genre} set "
            f"built on {insts}.",
            f"{title} finds {artist} making {mood}, {tempo} {genre} out of {insts}.",
            f"{title}: {len(tracks)} {mood} {genre} songs from {artist}, full of {insts}.")),
        rhythm,
        _choice(rng, (
            f"The mood is {mood}, with melodies in a {key} key.",
            f"Everything feels {mood}.",
            f"The {key}-key melodies leave {_article(mood)} {mood} taste.",
            f"Fans of {genre} will find it {mood} and {tempo}.")),
    ]
    register = np.mean([t.register for t in tracks])
    if abs(register) >= HIGH_REGISTER - 2:
      sentences.append(f"The arrangements sit "
                       f"{_choice(rng, _REGISTER_WORDS['high' if register > 0 else 'low'])}.")
    loud = np.mean([t.loudness for t in tracks])
    if loud >= LOUD_DB - 1 or loud <= QUIET_DB + 1:
      word = _choice(rng, _LOUD_WORDS["loud" if loud >= LOUD_DB - 1 else "quiet"])
      sentences.append(f"It is {_article(word)} {word} record.")
    if np.mean([t.reverb for t in tracks]) >= ATMOSPHERIC_REVERB:
      sentences.append(_choice(rng, ("Everything is drenched in reverb.",
                                     "The production is spacious and atmospheric.")))
    sentences.append(_choice(rng, _VERDICTS))
    order = [0] + list(1 + rng.permutation(len(sentences) - 2)) + [len(sentences) - 1]
    return " ".join(sentences[i] for i in order)
