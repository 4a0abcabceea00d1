"""Text encoders of Rush et al.: the mean of learned word embeddings and a bidirectional LSTM.

Rush, Yang, Hsu, Rybicki, Le & Lin, *Learning to Rank with Text-Music Embeddings*, section 4.3 and
6.2. Both read the padded ids of `musemb.text.vocabulary.Vocabulary.encode`:

    ids      [batch, max_length] int, padding after each text's end
    lengths  [batch] int, the real tokens per text

    MeanEmbedding  eq. (11): y = (1/n) sum_i phi^w(s_i), phi^w a learned 256-d embedding table
    BiLSTM         eqs. (12)-(14): y = [h_bwd_1 ; h_fwd_n], the final hidden states of an LSTM
                   reading the tokens left to right (ending at token n) and of one reading them
                   right to left (ending at token 1), each 256-d, so y is 512-d

The third text input of the paper, precomputed ("BERT") sentence features, needs no encoder: the
two-branch network's text branch takes the vectors of `musemb.text.sentence_features` directly
(`make_text_encoder("features")` is None).

Padding never changes the result: the mean runs over the first `lengths` tokens only (the authors'
code, noah-rush/Joint-Music-Text-Embeddings `Model.py`, averages over all 400 columns, padding
included, so a review's vector there shrinks with the padding), and the LSTM uses `flax.linen.RNN`
with `seq_lengths`, whose carry is the one after each text's last real token, and for the backward
direction `reverse=True`, which flips only the real tokens (padding stays at the end), so the
backward LSTM starts at token n and ends at token 1 whatever the padded length. An empty text
(length 0) gives the zero vector from both encoders: the mean of nothing is taken as 0, and the
LSTM's carry is its initial (zero) state; `flax.linen.RNN` alone would return the state after the
padding for length 0, hence the explicit masking.

Word embeddings start from flax's default (N(0, 1), as PyTorch's `nn.Embedding`) or from loaded
word vectors: `embedding_init=pretrained_init(vectors_for_vocabulary(vocab, vectors).matrix)`.
They stay trainable either way; the paper found trainable embeddings mattered (section 8).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EMBED_DIM = 256  # phi^w, section 6.2
HIDDEN_DIM = 256  # each LSTM direction, section 6.2
TEXT_ENCODERS = ("mean", "lstm", "features")


def pretrained_init(matrix: Any) -> Callable[..., jax.Array]:
  """An `nn.Embed` initializer that returns `matrix` [vocab, dim] (checked against the shape)."""
  table = np.asarray(matrix, np.float32)
  if table.ndim != 2:
    raise ValueError(f"pretrained_init: the matrix must be [vocab, dim], got shape {table.shape}.")

  def init(key, shape, dtype=jnp.float32):
    del key
    if tuple(shape) != table.shape:
      raise ValueError(
          f"pretrained_init: the encoder wants a [{shape[0]}, {shape[1]}] table but the matrix is "
          f"{list(table.shape)}; build the encoder with vocab_size=len(vocab) and embed_dim equal "
          "to the vectors' dimension.")
    return jnp.asarray(table, dtype)

  return init


def _check_tokens(owner: str, ids: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
  ids, lengths = jnp.asarray(ids), jnp.asarray(lengths)
  if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f"{owner}: ids must be [batch, max_length] integers, got shape {ids.shape} "
                     f"dtype {ids.dtype}; encode texts with Vocabulary.encode.")
  if lengths.shape != ids.shape[:1] or not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise ValueError(f"{owner}: lengths must be [batch] = {ids.shape[:1]} integers, got shape "
                     f"{lengths.shape} dtype {lengths.dtype}.")
  # A length beyond the array means every column is real (a caller's cut), never an out-of-range
  # gather.
  return ids, jnp.clip(lengths, 0, ids.shape[1])


def _embed(ids: jax.Array, vocab_size: int, embed_dim: int,
           embedding_init: Callable | None) -> jax.Array:
  """The calling compact module's `embed` table applied to `ids` -> [batch, max_length, dim]."""
  kwargs = {} if embedding_init is None else {"embedding_init": embedding_init}
  return nn.Embed(vocab_size, embed_dim, name="embed", **kwargs)(ids)


class MeanEmbedding(nn.Module):
  """Eq. (11): the mean of learned word embeddings over each text's real tokens.

  Attributes:
    vocab_size: rows of the embedding table (`len(vocab)`, padding and unknown included).
    embed_dim: the embedding width (256).
    embedding_init: initializer of the table (`pretrained_init(matrix)`), or None for flax's.
  """
  vocab_size: int
  embed_dim: int = EMBED_DIM
  embedding_init: Callable | None = None

  @nn.compact
  def __call__(self, ids: jax.Array, lengths: jax.Array) -> jax.Array:
    """ids [batch, max_length], lengths [batch] -> [batch, embed_dim] (zero for empty texts)."""
    ids, lengths = _check_tokens("MeanEmbedding", ids, lengths)
    vectors = _embed(ids, self.vocab_size, self.embed_dim, self.embedding_init)
    real = (jnp.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(vectors.dtype)
    total = jnp.einsum("bt,btd->bd", real, vectors, precision=jax.lax.Precision.HIGHEST)
    return total / jnp.maximum(lengths, 1)[:, None].astype(vectors.dtype)


class BiLSTM(nn.Module):
  """Eqs. (12)-(14): [final backward hidden state ; final forward hidden state] of a BiLSTM.

  Parameters: `embed` (the table) and `forward_cell`, `backward_cell` (an `nn.OptimizedLSTMCell`
  each, run by the `nn.RNN`s `forward` and `backward`, which hold no parameters of their own).

  Attributes:
    vocab_size: rows of the embedding table (`len(vocab)`).
    embed_dim: the word-embedding width (256).
    hidden_dim: each direction's hidden state (256); the output is 2 * hidden_dim.
    embedding_init: as in `MeanEmbedding`.
  """
  vocab_size: int
  embed_dim: int = EMBED_DIM
  hidden_dim: int = HIDDEN_DIM
  embedding_init: Callable | None = None

  @nn.compact
  def __call__(self, ids: jax.Array, lengths: jax.Array) -> jax.Array:
    """ids [batch, max_length], lengths [batch] -> [batch, 2 * hidden_dim], backward half first."""
    ids, lengths = _check_tokens("BiLSTM", ids, lengths)
    vectors = _embed(ids, self.vocab_size, self.embed_dim, self.embedding_init)
    # RNN's carry selection reads index length - 1, so length 0 would pick the state after the
    # whole padding: run such rows with length 1 and zero them below.
    seq = jnp.maximum(lengths, 1)
    forward = nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim, name="forward_cell"),
                     return_carry=True, name="forward")
    backward = nn.RNN(nn.OptimizedLSTMCell(self.hidden_dim, name="backward_cell"),
                      return_carry=True, reverse=True, keep_order=True, name="backward")
    # The carry of an LSTM cell is (c, h); eq. (14) concatenates the hidden states h.
    (_, h_fwd), _ = forward(vectors, seq_lengths=seq)
    (_, h_bwd), _ = backward(vectors, seq_lengths=seq)
    out = jnp.concatenate([h_bwd, h_fwd], axis=-1)  # eq. (14): [h_bwd_1 ; h_fwd_n]
    return jnp.where((lengths > 0)[:, None], out, 0.0)


def make_text_encoder(kind: str, vocab_size: int | None = None, **kwargs) -> nn.Module | None:
  """The text encoder called `kind`: "mean" (`MeanEmbedding`), "lstm" (`BiLSTM`) or "features"
  (None: the text inputs are precomputed vectors). Keyword arguments go to the module."""
  if kind not in TEXT_ENCODERS:
    raise ValueError(f"make_text_encoder: unknown kind {kind!r}; expected one of {TEXT_ENCODERS}.")
  if kind == "features":
    if kwargs or vocab_size is not None:
      raise ValueError("make_text_encoder('features'): precomputed features have no encoder, so "
                       "vocab_size and encoder options do not apply.")
    return None
  if vocab_size is None:
    raise ValueError(f"make_text_encoder({kind!r}): pass vocab_size=len(vocab).")
  module = MeanEmbedding if kind == "mean" else BiLSTM
  return module(vocab_size=vocab_size, **kwargs)
