"""Tests for the built-in synthetic world (musemb/data/sources/synthetic.py).

Audio checks render a small custom world at 8 kHz (about a second); the side-table checks plan the
demo world, which renders nothing until `tracks()` is called.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from musemb.data.sources import records
from musemb.data.sources import synthetic

SR = 8000
# Enough artists for every genre (twice) and every tag contrast, small enough to render in ~1 s.
PROBE = synthetic.WorldSize(artists=20, tracks_per_artist=4, clip_seconds=3.0, users=10,
                            playlists=5)


@pytest.fixture(scope="module")
def tiny():
  world = synthetic.SyntheticWorld("tiny", seed=0)
  return world, list(world.tracks())


@pytest.fixture(scope="module")
def probe():
  world = synthetic.SyntheticWorld(PROBE, seed=0, sample_rate=SR)
  tracks = list(world.tracks())
  return world, tracks, [_measures(t.audio) for t in tracks]


@pytest.fixture(scope="module")
def demo():
  world = synthetic.SyntheticWorld("demo", seed=0)
  return world, world.tables()


def _power_frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """|STFT|^2 with a Hann window: [frames, n_fft // 2 + 1]."""
  idx = np.arange(n_fft)[None, :] + hop * np.arange((len(x) - n_fft) // hop + 1)[:, None]
  return np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=1)) ** 2


def _measures(x: np.ndarray) -> dict[str, object]:
  """Plain numpy descriptors of a clip, independent of how the world made it."""
  p = _power_frames(x.astype(np.float64), 256, 64)
  freqs = np.fft.rfftfreq(256, 1.0 / SR)
  log_mag = 0.5 * np.log(p + 1e-6 * p.max())   # floor at -60 dB: ignore the hiss
  # Spectral flux of the log magnitude: level-independent transient strength per 8 ms frame.
  flux = np.maximum(np.diff(log_mag, axis=0), 0.0).mean(axis=1)
  peaks = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:]) & (flux[1:-1] > 0.3)
  return {
      "centroid": float((p @ freqs).sum() / p.sum()),
      "flux": float(flux.mean()),
      "onset_rate": float(peaks.sum() / (len(x) / SR)),
      "rms": float(np.sqrt(np.mean(x.astype(np.float64) ** 2))),
      "log_spectrum": np.log(p.mean(axis=0) + 1e-10),
  }


def _tag_means(tracks, measures, key, tag_a, tag_b) -> tuple[float, float]:
  a = [m[key] for t, m in zip(tracks, measures) if tag_a in t.tags]
  b = [m[key] for t, m in zip(tracks, measures) if tag_b in t.tags]
  assert len(a) >= 2 and len(b) >= 2, (tag_a, len(a), tag_b, len(b))
  return float(np.mean(a)), float(np.mean(b))


# -- construction ----------------------------------------------------------------------------------


def test_unknown_size_names_the_valid_ones():
  with pytest.raises(ValueError, match="unknown size 'huge'.*tiny, demo, small, large"):
    synthetic.SyntheticWorld("huge")


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"sample_rate": 1000}, "sample_rate=1000 Hz is too low"),
    ({"clip_seconds": 0.0}, "clip_seconds=0.0 must be positive"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    synthetic.SyntheticWorld("tiny", **kwargs)


def test_world_size_needs_two_songs_per_artist():
  with pytest.raises(ValueError, match="at least 2 artists with 2 tracks"):
    synthetic.WorldSize(artists=3, tracks_per_artist=1, clip_seconds=1.0, users=1, playlists=1)


def test_sizes_grow_and_tiny_is_tiny():
  assert list(synthetic.SIZES) == ["tiny", "demo", "small", "large"]
  totals = [s.artists * s.tracks_per_artist * s.clip_seconds for s in synthetic.SIZES.values()]
  assert totals == sorted(totals) and len(set(totals)) == 4
  tiny = synthetic.SIZES["tiny"]
  assert tiny.artists * tiny.tracks_per_artist <= 80 and tiny.clip_seconds <= 3.0
  # Two test songs per artist at least, so the similar-songs task has positives in tests.
  assert round(0.2 * tiny.tracks_per_artist) >= 2
  demo = synthetic.SIZES["demo"]
  assert demo.artists >= 3 * len(synthetic.GENRES)   # several artists per genre for the demo


def test_is_a_source(tiny):
  world, tracks = tiny
  assert world.name == "synthetic" and world.size == "tiny" and world.seed == 0
  assert world.skipped.total == 0
  assert len(tracks) == synthetic.SIZES["tiny"].artists * synthetic.SIZES["tiny"].tracks_per_artist and len({t.id for t in tracks}) == len(tracks)
  assert "tiny" in world.description() and str(len(world.tag_names)) in world.description()


# -- audio -----------------------------------------------------------------------------------------


def test_audio_is_float32_mono_of_the_stated_length_in_range(tiny):
  world, tracks = tiny
  for t in tracks:
    assert isinstance(t, records.Track) and t.audio_path is None
    assert t.sample_rate == 16000
    assert t.audio.dtype == np.float32 and t.audio.shape == (round(2.5 * 16000),)
    assert np.all(np.isfinite(t.audio))
    assert np.abs(t.audio).max() <= 1.0
    assert np.sqrt(np.mean(t.audio.astype(np.float64) ** 2)) > 1e-3, t.id   # not silent


def test_sample_rate_and_clip_seconds_are_honoured():
  world = synthetic.SyntheticWorld("tiny", seed=3, sample_rate=11025, clip_seconds=1.5)
  track = world.track(0)
  assert track.sample_rate == 11025 and track.audio.shape == (round(1.5 * 11025),)
  assert world.config.clip_seconds == 1.5 and world.config.artists == 8


def test_same_seed_gives_identical_world_and_other_seeds_differ(tiny):
  world, tracks = tiny
  again = list(synthetic.SyntheticWorld("tiny", seed=0).tracks())
  twice = list(world.tracks())                        # a second pass over the same object
  for other in (again, twice):
    for a, b in zip(tracks, other):
      assert (a.id, a.artists, a.tags, a.split, a.title, a.album) == \
             (b.id, b.artists, b.tags, b.split, b.title, b.album)
      assert a.audio.tobytes() == b.audio.tobytes()
  assert synthetic.SyntheticWorld("tiny", seed=0).tables() == world.tables()

  other = synthetic.SyntheticWorld("tiny", seed=1)
  assert other.artist_names != world.artist_names
  assert [t.tags for t in tracks] != other.track_tags
  assert all(other.audio(i).tobytes() != tracks[i].audio.tobytes() for i in range(3))


def test_tags_and_artists_come_from_the_vocabularies(tiny):
  world, tracks = tiny
  assert set(world.tag_names) <= set(synthetic.TAG_VOCABULARY)
  assert len(world.tag_names) == len(set(world.tag_names))
  for t in tracks:
    assert t.tags and set(t.tags) <= set(world.tag_names), t.tags
    assert t.artists and set(t.artists) <= set(world.artist_names)
    assert world.artist_genre[t.artists[0]] in synthetic.GENRE_NAMES


def test_high_tracks_are_brighter_than_low_ones(probe):
  world, tracks, measures = probe
  high, low = _tag_means(tracks, measures, "centroid", "high", "low")
  assert high > 1.3 * low, (high, low)


def test_drums_bring_transients(probe):
  world, tracks, measures = probe
  drums, no_drums = _tag_means(tracks, measures, "flux", "drums", "no drums")
  assert drums > 1.15 * no_drums, (drums, no_drums)


def test_fast_tracks_have_more_onsets_than_slow_ones(probe):
  world, tracks, measures = probe
  fast, slow = _tag_means(tracks, measures, "onset_rate", "fast", "slow")
  assert fast > 1.5 * slow, (fast, slow)


def test_loud_tracks_are_louder_than_quiet_ones(probe):
  world, tracks, measures = probe
  loud, quiet = _tag_means(tracks, measures, "rms", "loud", "quiet")
  assert loud > 2.0 * quiet, (loud, quiet)


def test_same_artist_is_closer_than_same_genre_closer_than_other_genres(probe):
  world, tracks, measures = probe
  spec = np.stack([m["log_spectrum"] for m in measures])
  spec = (spec - spec.mean(0)) / (spec.std(0) + 1e-9)
  dist = np.sqrt(((spec[:, None] - spec[None]) ** 2).sum(-1))
  artist = np.array([t.artists[0] for t in tracks])
  genre = np.array([world.artist_genre[a] for a in artist])
  off_diagonal = ~np.eye(len(tracks), dtype=bool)
  same_artist = (artist[:, None] == artist[None]) & off_diagonal
  same_genre = (genre[:, None] == genre[None]) & ~same_artist & off_diagonal
  other_genre = genre[:, None] != genre[None]
  assert same_genre.any()                             # PROBE has two artists per genre
  assert dist[same_artist].mean() < dist[same_genre].mean() < 0.85 * dist[other_genre].mean()


# -- labels and splits -----------------------------------------------------------------------------


def test_splits_are_by_piece_with_every_artist_in_train_and_test(tiny):
  world, tracks = tiny
  per_artist = collections.defaultdict(collections.Counter)
  for t in tracks:
    per_artist[t.artists[0]][t.split] += 1
  assert set(per_artist) == set(world.artist_names)
  for counts in per_artist.values():
    assert counts == {"train": 7, "valid": 1, "test": 2}    # 70/10/20 of ten songs
  few = synthetic.SyntheticWorld(
      synthetic.WorldSize(artists=3, tracks_per_artist=3, clip_seconds=1.0, users=2, playlists=1))
  splits = collections.Counter(few.splits)
  assert splits == {"train": 6, "test": 3}                    # too few songs for valid


def test_tag_frequency_is_long_tailed_with_synonyms(demo):
  world, _ = demo
  counts = collections.Counter(tag for tags in world.track_tags for tag in tags)
  freq = np.array(sorted(counts.values(), reverse=True))
  assert freq[0] >= 4 * np.median(freq), freq
  assert freq[0] >= 0.4 * len(world.recipes)          # a tag on close to half the tracks or more
  assert (freq <= 0.05 * len(world.recipes)).sum() >= 5   # and many rare ones
  assert 30 <= len(world.tag_names) <= 50
  for main, synonym in [("guitar", "guitars"), ("electronic", "electro"), ("hip hop", "rap"),
                        ("classical", "classic")]:
    assert counts[main] > counts[synonym] > 0, (main, synonym)


def test_tags_are_weak_labels_of_the_generators(demo):
  world, _ = demo
  missing = extra = total = 0
  for i in range(len(world.recipes)):
    clean = set(world.clean_tags(i)) & set(world.tag_names)
    noisy = set(world.track_tags[i])
    total += len(clean)
    missing += len(clean - noisy)
    extra += len(noisy - clean - {s for _, s in synthetic.SYNONYMS})
  assert 0.2 < missing / total < 0.6                  # many true tags go unsaid
  assert 0 < extra < 0.1 * total                      # and a few wrong ones are said


# -- tables ----------------------------------------------------------------------------------------


def test_tables_only_reference_existing_tracks_and_artists(tiny):
  world, tracks = tiny
  tables = world.tables()
  ids = {t.id for t in tracks}
  artists = set(world.artist_names)
  assert set(tables.artist_similarity) == artists
  for artist, similar in tables.artist_similarity.items():
    assert 3 <= len(similar) <= 5 and artist not in similar and set(similar) <= artists
    assert len(set(similar)) == len(similar)
  assert len(tables.playlists) == world.config.playlists
  for p in tables.playlists:
    assert 8 <= len(p.track_ids) <= 20 and set(p.track_ids) <= ids
    assert len(set(p.track_ids)) == len(p.track_ids) and p.user
  users = {p.user for p in tables.plays}
  assert len(users) == world.config.users
  assert all(p.track_id in ids and p.count >= 1 for p in tables.plays)
  album_of = {t.id: t.album for t in tracks}
  artist_of = {t.id: t.artists[0] for t in tracks}
  assert {r.album for r in tables.reviews} == set(album_of.values())
  for r in tables.reviews:
    assert set(r.track_ids) <= ids and len({artist_of[i] for i in r.track_ids}) == 1
    assert {album_of[i] for i in r.track_ids} == {r.album}
    assert len(r.text.split()) >= 15


def test_similar_artists_share_style(demo):
  world, tables = demo
  shared = [world.artist_genre[a] == world.artist_genre[b]
            for a, similar in tables.artist_similarity.items() for b in similar]
  assert np.mean(shared) > 0.5                        # chance: 3 of 39 other artists


def test_playlists_keep_to_a_genre(demo):
  world, tables = demo
  genre = {world.track_id(r.index): r.genre for r in world.recipes}

  def dominant_share(ids):
    return collections.Counter(genre[i] for i in ids).most_common(1)[0][1] / len(ids)

  shares = [dominant_share(p.track_ids) for p in tables.playlists]
  rng = np.random.default_rng(0)
  all_ids = list(genre)
  chance = [dominant_share(rng.choice(all_ids, len(p.track_ids), replace=False))
            for p in tables.playlists]
  assert np.mean(shares) > 0.6 and np.mean(shares) > 2 * np.mean(chance), (
      np.mean(shares), np.mean(chance))


def test_plays_are_long_tailed_and_follow_taste(demo):
  world, tables = demo
  counts = np.array([p.count for p in tables.plays])
  assert counts.min() >= 1 and counts.max() >= 10 * np.median(counts)
  per_user = collections.Counter(p.user for p in tables.plays)
  assert 10 <= np.median(list(per_user.values())) <= 100   # tens of songs each
  genre = {world.track_id(r.index): r.genre for r in world.recipes}
  by_user = collections.defaultdict(collections.Counter)
  for p in tables.plays:
    by_user[p.user][genre[p.track_id]] += p.count
  top_share = np.mean([c.most_common(1)[0][1] / sum(c.values()) for c in by_user.values()])
  assert top_share > 0.35                             # listeners have favourite genres


def test_reviews_describe_their_album(demo):
  world, tables = demo
  recipe = {world.track_id(r.index): r for r in world.recipes}
  for review in tables.reviews:
    genre = recipe[review.track_ids[0]].genre
    text = review.text.lower()
    assert any(w in text for w in synthetic.GENRE_WORDS[genre]), (genre, review.text)
  texts = [r.text for r in tables.reviews]
  assert len(set(texts)) == len(texts)                # varied wording
  vocabulary = {w.strip(".,'").lower() for t in texts for w in t.split()}
  for main, synonym in [("guitar", "guitars"), ("electronic", "electro"), ("sad", "melancholy")]:
    assert main in vocabulary and synonym in vocabulary
