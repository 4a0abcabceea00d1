"""Rush et al.'s two-branch network: audio features and review text mapped into one 128-d space.

Rush, Yang, Hsu, Rybicki, Le & Lin, *Learning to Rank with Text-Music Embeddings*, section 4.1 and
Figure 1, after Wang, Li & Lazebnik, *Learning Deep Structure-Preserving Image-Text Embeddings*
(CVPR 2016) and Wang, Li, Huang & Lazebnik, *Learning Two-Branch Neural Networks for Image-Text
Matching Tasks* (TPAMI 2018). Each branch is

    non-linear (default)   x -> Dense(256) -> ReLU -> Dense(128) -> BatchNorm -> l2-normalise
    linear (Table 1 row)   x -> Dense(128) -> BatchNorm -> l2-normalise

("W and V are fully connected layers separated by a non-linear activation and L2 normalization is
performed before entry into the embedding space"; 256 hidden and 128 out, section 6.2).

Batch normalisation: where the paper's text puts it, "after the last linear layer" and before the
l2 normalisation (section 2.3, citing Wang et al. as getting their best results that way). Two
other placements exist and are options, not defaults: Wang et al.'s public code
(lwwang/Two_branch_network, `retrieval_model.py`) normalises the hidden layer instead (Dense -> BN
-> ReLU -> dropout, then Dense -> l2), `bn_hidden=True, bn_last=False`; Rush et al.'s code
(noah-rush/Joint-Music-Text-Embeddings, `Model.py`) has none, `bn_last=False`. In the linear
variant the batch norm is an affine map at inference, so the branch stays linear up to the
l2 normalisation. BN makes `apply` in train mode need `mutable=["batch_stats"]`; momentum 0.9 is
PyTorch's 0.1 (the authors' framework) in flax's convention.

The text branch reads what `text_encoder` makes of the text (`musemb.models.text`: the mean of
word embeddings or the BiLSTM, trained jointly with the branches), or, with `text_encoder=None`,
precomputed sentence vectors (the paper's BERT row; GloVe means for the CCA comparison).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musemb import ops

EMBED_DIM = 128  # the joint space, section 6.2
HIDDEN_DIM = 256  # "the fully connected dimension layer was also 256"
BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1


class Branch(nn.Module):
  """One branch: [batch, input_dim] -> [batch, out_dim] unit vectors (see the module docstring).

  Parameters: `hidden` (absent when `linear`), `out`, and `hidden_bn` / `out_bn` where enabled.

  Attributes:
    hidden_dim: the hidden layer (256).
    out_dim: the joint space (128).
    linear: one Dense layer instead of two (the ablation's linear row).
    bn_last: batch norm after the last linear layer (the paper's text).
    bn_hidden: batch norm after the hidden linear layer, before the ReLU (Wang et al.'s code).
    bn_momentum: running-average decay of the batch norms.
    normalize: l2-normalise the output (the paper always does; False for inspection only).
  """
  hidden_dim: int = HIDDEN_DIM
  out_dim: int = EMBED_DIM
  linear: bool = False
  bn_last: bool = True
  bn_hidden: bool = False
  bn_momentum: float = BN_MOMENTUM
  normalize: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x [batch, input_dim] -> [batch, out_dim]."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 2:
      raise ValueError(f"Branch: inputs must be [batch, dim], got shape {x.shape} (add a batch "
                       "axis to a single vector).")
    if self.linear and self.bn_hidden:
      raise ValueError("Branch: linear=True has no hidden layer, so bn_hidden must be False.")
    if not self.linear:
      x = nn.Dense(self.hidden_dim, name="hidden")(x)
      if self.bn_hidden:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         name="hidden_bn")(x)
      x = nn.relu(x)
    x = nn.Dense(self.out_dim, name="out")(x)
    if self.bn_last:
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="out_bn")(x)
    return ops.l2_normalize(x) if self.normalize else x


class TwoBranch(nn.Module):
  """Audio branch and text branch (+ optional text encoder): -> (audio [B, 128], text [B, 128]).

  Submodules: `audio_branch`, `text_branch` (`Branch`es) and `text_encoder` when given. Use
  `embed_audio` / `embed_text` (through `apply(..., method=...)`) to embed one side, e.g. a
  catalogue of albums or a text query.

  Attributes:
    text_encoder: `musemb.models.text.MeanEmbedding` or `BiLSTM`, or None for precomputed vectors.
    hidden_dim, out_dim, linear, bn_last, bn_hidden, bn_momentum: both branches, as in `Branch`.
  """
  text_encoder: nn.Module | None = None
  hidden_dim: int = HIDDEN_DIM
  out_dim: int = EMBED_DIM
  linear: bool = False
  bn_last: bool = True
  bn_hidden: bool = False
  bn_momentum: float = BN_MOMENTUM

  def setup(self):
    common = dict(hidden_dim=self.hidden_dim, out_dim=self.out_dim, linear=self.linear,
                  bn_last=self.bn_last, bn_hidden=self.bn_hidden, bn_momentum=self.bn_momentum)
    self.audio_branch = Branch(**common)
    self.text_branch = Branch(**common)

  def embed_audio(self, audio: jax.Array, train: bool = False) -> jax.Array:
    """audio [batch, audio_dim] features -> [batch, out_dim] unit vectors."""
    return self.audio_branch(audio, train)

  def embed_text(self, text: jax.Array, text_lengths: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
    """Text -> [batch, out_dim] unit vectors.

    With a text encoder, `text` is [batch, max_length] token ids and `text_lengths` [batch] their
    real lengths (`Vocabulary.encode`); without one, `text` is [batch, dim] sentence vectors and
    `text_lengths` must be None.
    """
    if self.text_encoder is None:
      if text_lengths is not None:
        raise ValueError("TwoBranch.embed_text: text_lengths was given but there is no text "
                         "encoder (text_encoder=None reads precomputed vectors).")
      features = text
    else:
      if text_lengths is None:
        raise ValueError("TwoBranch.embed_text: the text encoder needs text_lengths [batch] "
                         "beside the token ids.")
      features = self.text_encoder(text, text_lengths)
    return self.text_branch(features, train)

  def __call__(self, audio: jax.Array, text: jax.Array, text_lengths: jax.Array | None = None,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """audio [B, audio_dim], text (see `embed_text`) -> (audio [B, out_dim], text [B, out_dim])."""
    return self.embed_audio(audio, train), self.embed_text(text, text_lengths, train)
