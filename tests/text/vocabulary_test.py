"""Tests for musemb/text/vocabulary.py and musemb/text/sentence_features.py."""

from __future__ import annotations

import numpy as np
import pytest

from musemb.text import sentence_features
from musemb.text import vectors as vectors_lib
from musemb.text import vocabulary

TRAIN = ["Warm acoustic guitar, warm voice.", "A warm, dark record; guitar-heavy.",
         "Dark dark DARK hip-hop!", "acoustic"]
# Counts: dark 4, warm 3, acoustic 2, guitar 1, voice 1, a 1, record 1, guitar-heavy 1, hip-hop 1.


def test_build_keeps_the_most_frequent_words_with_alphabetical_ties():
  vocab = vocabulary.Vocabulary.build(TRAIN, size=4)
  assert vocab.words == ("dark", "warm", "acoustic", "a")  # "a" wins the tie of counts 1
  assert vocab.counts == (4, 3, 2, 1)
  assert len(vocab) == 6 and vocab.index["dark"] == vocabulary.NUM_SPECIAL
  # The order of the texts does not matter.
  assert vocabulary.Vocabulary.build(TRAIN[::-1], size=4).words == vocab.words
  assert vocabulary.Vocabulary.build(TRAIN, min_count=2).words == ("dark", "warm", "acoustic")
  assert vocabulary.Vocabulary.build(TRAIN).counts[-1] == 1  # room for all 9 words
  assert vocabulary.DEFAULT_SIZE == 60_000


def test_encode_pads_cuts_and_counts():
  vocab = vocabulary.Vocabulary.build(TRAIN, size=4)
  enc = vocab.encode(["warm dark jazz", "", "dark " * 7], max_length=5)
  d, w = vocab.index["dark"], vocab.index["warm"]
  np.testing.assert_array_equal(enc.ids, [[w, d, vocabulary.UNK_ID, 0, 0], [0] * 5, [d] * 5])
  np.testing.assert_array_equal(enc.lengths, [3, 0, 5])
  assert enc.ids.dtype == np.int32 and enc.lengths.dtype == np.int32
  assert (enc.num_truncated, enc.num_unknown, enc.num_tokens) == (1, 1, 8)
  assert vocab.decode(enc.ids[0], enc.lengths[0]) == ["warm", "dark", vocabulary.UNK]
  with pytest.raises(TypeError, match="not one str"):
    vocab.encode("warm", max_length=3)


def test_save_and_load_round_trip(tmp_path):
  vocab = vocabulary.Vocabulary.build(TRAIN + ["café"])
  path = vocab.save(str(tmp_path / "vocab.json"))
  loaded = vocabulary.Vocabulary.load(path)
  assert loaded.words == vocab.words and loaded.counts == vocab.counts
  (tmp_path / "bad.json").write_text('{"words": []}')
  with pytest.raises(ValueError, match="not a musemb vocabulary"):
    vocabulary.Vocabulary.load(str(tmp_path / "bad.json"))


def test_vectors_for_vocabulary_copies_found_rows_and_counts_missing_ones():
  vocab = vocabulary.Vocabulary.build(TRAIN, size=5)  # dark warm acoustic a guitar
  rng = np.random.default_rng(0)
  vectors = vectors_lib.WordVectors(("warm", "guitar", "dark", "unused"),
                                    rng.normal(0.0, 3.0, (4, 50)).astype(np.float32))
  init = vocabulary.vectors_for_vocabulary(vocab, vectors, seed=1)
  assert init.matrix.shape == (len(vocab), 50) and init.matrix.dtype == np.float32
  assert init.num_found == 3 and init.missing == ("acoustic", "a")
  for word in ("warm", "guitar", "dark"):
    np.testing.assert_array_equal(init.matrix[vocab.index[word]], vectors[word])
  assert not init.matrix[vocabulary.PAD_ID].any()
  # Random rows (UNK and the missing words) are on the loaded rows' scale (std 3 here).
  random_rows = init.matrix[[vocabulary.UNK_ID, vocab.index["acoustic"], vocab.index["a"]]]
  assert 2.0 < random_rows.std() < 4.0
  again = vocabulary.vectors_for_vocabulary(vocab, vectors, seed=1)
  assert np.array_equal(again.matrix, init.matrix)


def test_sentence_features_round_trip_and_lookup(tmp_path):
  ids = ["r1", "r2", "r3"]
  feats = np.arange(6, dtype=np.float32).reshape(3, 2)
  path = sentence_features.save_sentence_features(str(tmp_path / "bert.npz"), ids, feats)
  loaded = sentence_features.load_sentence_features(path)
  assert loaded.ids == tuple(ids) and loaded.dim == 2
  np.testing.assert_array_equal(loaded.lookup(["r3", "r1"]), feats[[2, 0]])
  with pytest.raises(KeyError, match="1 of 2 reviews have no features"):
    loaded.lookup(["r1", "r9"])
  np.save(tmp_path / "bert.npy", feats)
  from_npy = sentence_features.load_sentence_features(str(tmp_path / "bert.npy"), ids=ids)
  np.testing.assert_array_equal(from_npy.lookup(["r2"]), feats[[1]])
  with pytest.raises(ValueError, match="pass ids="):
    sentence_features.load_sentence_features(str(tmp_path / "bert.npy"))


def test_sentence_features_refuse_bad_files(tmp_path):
  with pytest.raises(ValueError, match="more than once"):
    sentence_features.SentenceFeatures(("a", "a"), np.zeros((2, 3)))
  with pytest.raises(ValueError, match="NaN or inf"):
    sentence_features.SentenceFeatures(("a", "b"), np.array([[0.0], [np.nan]]))
  with pytest.raises(ValueError, match="2 ids but 3 feature rows"):
    sentence_features.SentenceFeatures(("a", "b"), np.zeros((3, 4)))
  np.savez(tmp_path / "wrong.npz", vectors=np.zeros((2, 2)))
  with pytest.raises(ValueError, match="needs 'ids'"):
    sentence_features.load_sentence_features(str(tmp_path / "wrong.npz"))
  (tmp_path / "broken.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="cannot read"):
    sentence_features.load_sentence_features(str(tmp_path / "broken.npz"))


def test_mean_word_vectors_by_hand_and_the_description_round_trips(tmp_path):
  vectors = vectors_lib.WordVectors(("warm", "guitar", "dark"),
                                    np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]], np.float32))
  texts = ["Warm guitar, warm!", "zzz qqq", "dark"]
  features, empty = sentence_features.mean_word_vectors(texts, vectors)
  # (warm + guitar + warm) / 3; no known word -> zeros, counted; words without vectors left out.
  np.testing.assert_allclose(features, [[2 / 3, 2 / 3], [0.0, 0.0], [4.0, 4.0]], rtol=1e-6)
  assert empty == 1 and features.dtype == np.float32
  path = sentence_features.save_sentence_features(str(tmp_path / "w2v.npz"), ["a", "b", "c"],
                                                  features, description="mean word2vec")
  loaded = sentence_features.load_sentence_features(path)
  assert loaded.description == "mean word2vec"
  np.testing.assert_array_equal(loaded.lookup(["c"]), features[[2]])
  plain = sentence_features.save_sentence_features(str(tmp_path / "plain.npz"), ["a"],
                                                   features[:1])
  assert sentence_features.load_sentence_features(plain).description == ""
