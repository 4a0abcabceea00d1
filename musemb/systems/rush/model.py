"""The two-branch network of a config, and embedding with it outside the training step.

`make_model(config, info)` builds `musemb.models.two_branch.TwoBranch` with the text encoder
`config.model.text` names (`mean`: eq. 11, `lstm`: eqs. 12-14, `features`: precomputed sentence
vectors, no encoder) and `config.model.linear` for Table 1's one-layer row; with
`config.text.word_vectors` the data's `info` names the saved initial embedding table
(`embedding_init`) and its width (`embed_dim`). Variables are
`{"params": {"net": <TwoBranch params>[, "log_scale": scalar for InfoNCE]}, "batch_stats": ...}`.

`embed_audio` / `embed_text` run the branches in inference mode (batch norm's running averages)
over any number of rows, in padded chunks of a few fixed sizes, so a split of any size compiles
the network at most a few times.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb.models import text as text_models
from musemb.models import two_branch

_CHUNK = 1024


def make_model(config: ml_collections.ConfigDict, info: dict) -> two_branch.TwoBranch:
  kind = config.model.text
  if kind not in text_models.TEXT_ENCODERS:
    raise ValueError(f"config.model.text={kind!r}; expected one of {text_models.TEXT_ENCODERS}.")
  encoder = None
  if kind != "features":
    options = {"embed_dim": int(info.get("embed_dim", text_models.EMBED_DIM))}
    if info.get("embedding_init"):
      options["embedding_init"] = text_models.pretrained_init(_embedding_table(
          info["embedding_init"]))
    encoder = text_models.make_text_encoder(kind, vocab_size=int(info["vocab_size"]), **options)
  return two_branch.TwoBranch(text_encoder=encoder, linear=bool(config.model.linear),
                              bn_last=bool(config.model.bn_last),
                              bn_hidden=bool(config.model.bn_hidden))


def _embedding_table(path: str) -> np.ndarray:
  """The table `load_data` saved from `config.text.word_vectors` (see `rush.data`)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} (the word-embedding table made from config.text.word_vectors) "
                            "is missing: rerun load_data in this workdir, or train without "
                            "text.word_vectors.")
  with np.load(path) as z:
    return z["matrix"]


def shapes_info(variables: dict, audio: jax.Array, text: jax.Array) -> dict:
  """What `make_model` needs, read off the parameters and the inputs (inside the step, where the
  data's `info` is not at hand): the vocabulary is the embedding table's row count."""
  encoder = variables["params"]["net"].get("text_encoder", {})
  vocab, dim = encoder["embed"]["embedding"].shape if "embed" in encoder else (0, 0)
  return {"audio_dim": audio.shape[1], "vocab_size": vocab, "max_length": text.shape[1],
          "text_dim": text.shape[1], "embed_dim": dim or text_models.EMBED_DIM}


def dummy_inputs(config: ml_collections.ConfigDict, info: dict, rows: int = 2):
  """(audio, text, lengths) of the right shapes, for `init` and shape checks."""
  audio = jnp.zeros((rows, int(info["audio_dim"])), jnp.float32)
  if config.model.text == "features":
    return audio, jnp.zeros((rows, int(info["text_dim"])), jnp.float32), None
  return (audio, jnp.zeros((rows, int(info["max_length"])), jnp.int32),
          jnp.ones((rows,), jnp.int32))


def net_variables(variables: dict) -> dict:
  """The TwoBranch's own variables out of the system's."""
  out = {"params": variables["params"]["net"]}
  if variables.get("batch_stats"):
    out["batch_stats"] = variables["batch_stats"]
  return out


@functools.lru_cache(maxsize=16)
def _jitted(config_json: str, info_json: str):
  config = ml_collections.ConfigDict(json.loads(config_json))
  model = make_model(config, json.loads(info_json))
  audio = jax.jit(lambda v, x: model.apply(v, x, train=False,
                                           method=two_branch.TwoBranch.embed_audio))
  text = jax.jit(lambda v, x, n: model.apply(v, x, n, train=False,
                                             method=two_branch.TwoBranch.embed_text))
  return audio, text


def _fns(config: ml_collections.ConfigDict, info: dict):
  keep = {k: info[k] for k in ("audio_dim", "vocab_size", "text_dim", "max_length")}
  keep["embed_dim"] = int(info.get("embed_dim", text_models.EMBED_DIM))
  model_keys = {"model": config.model.to_dict()}
  return _jitted(json.dumps(model_keys, sort_keys=True), json.dumps(keep, sort_keys=True))


def _chunks(n: int):
  """(start, stop, padded size) of n rows: full chunks, the rest padded to a multiple of 64."""
  for lo in range(0, n, _CHUNK):
    hi = min(lo + _CHUNK, n)
    yield lo, hi, min(_CHUNK, -(-(hi - lo) // 64) * 64)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)]) if len(x) < size \
      else x


def embed_audio(variables: dict, config: ml_collections.ConfigDict, info: dict,
                audio: np.ndarray) -> np.ndarray:
  """[n, audio_dim] z-scored descriptors -> [n, 128] float32 unit vectors."""
  fn, _ = _fns(config, info)
  v = net_variables(variables)
  out = [np.asarray(fn(v, _pad(audio[lo:hi], size)))[:hi - lo]
         for lo, hi, size in _chunks(len(audio))]
  return np.concatenate(out) if out else np.zeros((0, two_branch.EMBED_DIM), np.float32)


def embed_text(variables: dict, config: ml_collections.ConfigDict, info: dict,
               text: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
  """Token ids [n, L] with lengths [n] (or sentence vectors [n, F], lengths None) -> [n, 128]."""
  _, fn = _fns(config, info)
  v = net_variables(variables)
  out = []
  for lo, hi, size in _chunks(len(text)):
    n = None if lengths is None else _pad(lengths[lo:hi], size)
    out.append(np.asarray(fn(v, _pad(text[lo:hi], size), n))[:hi - lo])
  return np.concatenate(out) if out else np.zeros((0, two_branch.EMBED_DIM), np.float32)
