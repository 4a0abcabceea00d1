"""Won et al.'s modules for one config, and embedding with them: tags (word vectors -> the tag
branch), songs (chunks of audio and/or WMF factors -> the song branch), free-text queries."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import ops
from musemb.models import branches
from musemb.models import shortchunk
from musemb.text import readers as text_readers
from musemb.text import tags as text_tags
from musemb.text import vectors as text_vectors

BRANCHES = ("cultural", "acoustic", "hybrid", "late_fusion")


def make_tag_branch(config: ml_collections.ConfigDict, word_dim: int) -> branches.TagBranch:
  m = config.model
  return branches.TagBranch(input_dim=int(word_dim), hidden_dim=int(m.hidden_dim),
                            out_dim=int(m.embed_dim), dropout_rate=float(m.dropout),
                            bn_momentum=float(m.bn_momentum))


def make_song_branch(config: ml_collections.ConfigDict, num_factors: int) -> nn.Module:
  m = config.model
  if m.branch not in BRANCHES:
    raise ValueError(f"config.model.branch={m.branch!r}; expected one of {BRANCHES}.")
  common = dict(hidden_dim=int(m.hidden_dim), out_dim=int(m.embed_dim),
                dropout_rate=float(m.dropout), bn_momentum=float(m.bn_momentum))
  if m.branch == "cultural":
    return branches.CulturalBranch(input_dim=int(num_factors), **common)
  audio = dict(widths=tuple(int(w) for w in m.widths),
               mel=shortchunk.MelConfig(sample_rate=int(config.data.sample_rate)),
               num_samples=int(config.data.crop_samples))
  if m.branch == "acoustic":
    return branches.AcousticBranch(**audio, **common, dtype=str(m.get("dtype", "float32")))  # absent in runs saved before model.dtype
  return branches.make_song_branch(m.branch, factors_dim=int(num_factors), **audio, **common)


def _acoustic_module(config: ml_collections.ConfigDict) -> branches.AcousticBranch:
  m = config.model
  return branches.AcousticBranch(
      widths=tuple(int(w) for w in m.widths),
      mel=shortchunk.MelConfig(sample_rate=int(config.data.sample_rate)),
      num_samples=int(config.data.crop_samples), hidden_dim=int(m.hidden_dim),
      out_dim=int(m.embed_dim), dropout_rate=float(m.dropout), bn_momentum=float(m.bn_momentum),
      dtype=str(m.get("dtype", "float32")))  # absent in runs saved before model.dtype


def song_inputs(branch: str, audio: jax.Array | None, factors: jax.Array | None) -> list:
  named = {"audio": audio, "factors": factors}
  return [named[k] for k in branches.SONG_INPUTS[branch]]


def sub(variables: Any, name: str) -> dict:
  """The flax variables of one branch out of the system's `{"params", "batch_stats"}`."""
  return {"params": variables["params"][name], "batch_stats": variables["batch_stats"][name]}


def crop_audio(audio: jax.Array, lengths: jax.Array, songs: jax.Array, key: jax.Array,
               crop: int) -> jax.Array:
  """Random `crop`-sample chunks of the resident int16 clips -> float32 [len(songs), crop].

  A chunk starts uniformly in [0, length - crop] (0 for clips shorter than the crop, whose tail is
  the zero padding of `audio`, which is at least `crop` wide).
  """
  max_start = jnp.maximum(lengths[songs] - crop, 0)
  start = jax.random.randint(key, songs.shape, 0, max_start + 1, dtype=jnp.int32)

  def one(song, s):
    return jax.lax.dynamic_slice(audio, (song, s), (1, crop))[0]

  return jax.vmap(one)(songs, start).astype(jnp.float32) / 32768.0


@functools.lru_cache(maxsize=8)
def _tag_embedder(module: branches.TagBranch):
  @jax.jit
  def embed(variables, vectors):
    return module.apply(variables, vectors, train=False)
  return embed


@functools.lru_cache(maxsize=8)
def chunk_embedder(module: nn.Module, branch: str):
  """Jitted: (variables, chunks [B, C, n] or None, factors [B, f] or None) -> the mean of each
  track's chunk embeddings, re-normalised: [B, d] (late fusion: [B, 2, d])."""

  @jax.jit
  def embed(variables, chunks, factors):
    if branch == "cultural":
      return module.apply(variables, factors, train=False)
    b, c, n = chunks.shape
    flat_factors = None if factors is None else jnp.repeat(factors, c, axis=0)
    out = module.apply(variables, *song_inputs(branch, chunks.reshape(b * c, n), flat_factors),
                       train=False)
    out = out.reshape((b, c) + out.shape[1:])
    return ops.l2_normalize(jnp.mean(out, axis=1))

  return embed


def embed_tag_vectors(variables: Any, config: ml_collections.ConfigDict,
                      vectors: np.ndarray) -> np.ndarray:
  """Word vectors [n, word dim] -> unit tag-space embeddings [n, d] (float32)."""
  vectors = np.asarray(vectors, np.float32)
  module = make_tag_branch(config, vectors.shape[1])
  return np.asarray(_tag_embedder(module)(sub(variables, "tag_branch"), vectors), np.float32)


def chunk_starts(length: int, crop: int, chunks: int) -> np.ndarray:
  """`chunks` evenly spaced chunk starts covering a clip: round(linspace(0, length - crop))."""
  return np.round(np.linspace(0, max(length - crop, 0), chunks)).astype(np.int64)


def audio_chunks(audio: np.ndarray, crop: int, chunks: int) -> np.ndarray:
  """int16 or float samples [n] -> float32 [chunks, crop] evenly spaced (zero padded if short)."""
  audio = np.asarray(audio)
  x = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
  if len(x) < crop:
    x = np.pad(x, (0, crop - len(x)))
  return np.stack([x[s:s + crop] for s in chunk_starts(len(x), crop, chunks)])


def embed_audio(variables: Any, config: ml_collections.ConfigDict,
                waveform: np.ndarray) -> np.ndarray:
  """A waveform at `config.data.sample_rate` (22,050 Hz) -> [d], the mean over `eval.chunks`
  evenly spaced chunks through the acoustic branch (late fusion: its acoustic embedding)."""
  branch = config.model.branch
  waveform = np.asarray(waveform)
  if waveform.ndim != 1:
    raise ValueError(f"embed_audio: waveform has shape {waveform.shape}; pass mono samples [n] at "
                     f"{config.data.sample_rate} Hz (average the channels first).")
  if branch == "acoustic":
    module, song_vars = _acoustic_module(config), sub(variables, "song_branch")
  elif branch == "late_fusion":
    module = _acoustic_module(config)
    song_vars = {"params": variables["params"]["song_branch"]["acoustic"],
                 "batch_stats": variables["batch_stats"]["song_branch"]["acoustic"]}
  else:
    raise ValueError(f"embed_audio: the {branch} branch does not embed audio alone (it needs WMF "
                     "factors); use a model trained with branch=acoustic or late_fusion.")
  chunks = audio_chunks(waveform, int(config.data.crop_samples), int(config.eval.chunks))
  out = chunk_embedder(module, "acoustic")(song_vars, chunks[None], None)
  return np.asarray(out[0], np.float32)


def _resolve_words(data_or_info: Any) -> text_vectors.WordVectors:
  if isinstance(data_or_info, text_vectors.WordVectors):
    return data_or_info
  words = getattr(data_or_info, "words", None)
  if words is None and isinstance(data_or_info, dict):
    words = data_or_info.get("words")
  if isinstance(words, str):
    words = text_readers.load_word_vectors(words)
  if not isinstance(words, text_vectors.WordVectors):
    raise TypeError("embed_query: pass the TagData, a WordVectors, or a dict with 'words' (a "
                    "WordVectors or the run's words.npz path).")
  return words


def embed_query(variables: Any, data_or_info: Any, config: ml_collections.ConfigDict,
                text: str) -> np.ndarray:
  """Free text -> [d]: `musemb.text.tags.query_vector` (phrase, word or mean of pieces) then the tag branch.

  Raises:
    ValueError: no word of `text` has a vector.
  """
  words = _resolve_words(data_or_info)
  vector, how = text_tags.query_vector(words, text)
  if how == "oov":
    raise ValueError(f"embed_query: no word of {text!r} is in the word vectors ({words!r}); try "
                     "other words, or train domain vectors on a corpus that has them.")
  return embed_tag_vectors(variables, config, vector[None])[0]
