"""Won et al.'s (2021) tag and song branches: tag, cultural, acoustic, hybrid and late fusion.

Follows Won, Oramas, Nieto, Gouyon and Serra, *Multimodal Metric Learning for Tag-Based Music
Retrieval* (ICASSP 2021), section 2.2, and its code (minzwon/tag-based-music-retrieval,
`train/model.py`). A tag branch T(y) and a song branch S(x) map into one 256-d space, trained with
the cosine triplet loss `[D(T(y_a), S(x_p)) - D(T(y_a), S(x_n)) + delta]_+` (eq. 2, D the cosine
distance):

    TagBranch       word vectors [batch, 300] -> dense(512) + BN + ReLU + dropout(0.5) -> dense(256)
    CulturalBranch  WMF song factors [batch, 200, or any d] -> the same MLP        -> 256
    AcousticBranch  raw audio [batch, 88,064]  -> short-chunk CNN, whose dense head is the same
                                                  512 (+ BN + ReLU + dropout) -> 256
    HybridConcat    audio + factors            -> [acoustic 512 hidden ; cultural 512 hidden] -> 256
    LateFusion      audio + factors            -> [batch, 2, 256]: one embedding per modality

The MLPs are the authors' `word_to_embedding` and `cf_to_embedding` (Linear (no bias before the
batch norm: `musemb.models.shortchunk` says why), BatchNorm1d, ReLU,
Dropout(0.5), Linear); the paper's text only states the 512 and 256 widths. The acoustic branch is
`ShortChunkCNN(num_outputs=256, dense_width=512)`: the CNN's own dense head (SMC 2020) is the
branch's 512 -> 256 MLP, so no second MLP is stacked on it (see `musemb.models.shortchunk` for how
this differs from the retrieval code's 1x1 convolution to 256 channels).

Normalisation: every branch returns l2-normalised vectors (`normalize=True`). The cosine
similarity is invariant to the scale of its arguments, so the triplet loss, its gradients and the
retrieval ranking are the same as with the authors' unnormalised outputs fed to
`nn.CosineSimilarity`; with unit outputs the cosine is a dot product, so scoring a catalogue is one
matrix product and the distance-weighted sampler reads similarities off `tags @ songs.T`.
`normalize=False` returns the raw outputs (then take cosines, not dot products).

HybridConcat is the paper's "simple concatenation of cultural and acoustic embeddings" (Table 2,
Concat): each modality's penultimate (512-d hidden, after dropout) representation is concatenated
and a dense layer maps the 1024 values to 256, i.e. the two branches share their output layer
(`fusion_hidden` inserts one more hidden layer, like the code's `cat_fc1`). The authors' code
concatenates the CNN's 200-d `Conv_emb` output with the raw 200-d WMF factors and applies a
512 -> 256 MLP; both are one learned map of the joint representation trained by one triplet loss.

LateFusion (our design; the paper found concatenation did not help and calls for better fusion):
the acoustic and cultural branches are kept as separate song embeddings, each trained against the
same tag branch with its own triplet loss (sum the losses over `song[:, m]`, m = 0 acoustic,
1 cultural), and fused only at retrieval, where a song's score for a tag is the weighted mean of
the two cosines (`late_fusion_scores`, acoustic weight 0.5 by default, tuned on validation).
Why: (i) with one loss on a joint embedding the modality that fits the training triplets faster
(the cultural factors, which are already a compressed summary of listening) can dominate and the
other is under-trained, while separate losses make each embedding a complete retrieval model;
(ii) the paper's Figure 2 shows the modalities win on different tag categories (cultural on
location and language, acoustic elsewhere with sparse interactions), which score fusion with a
validation-tuned (possibly per-category) weight exploits without retraining; (iii) songs without
interactions (cold start) fall back to the acoustic score with weight 1, which a concatenation
model cannot do. Sharing the tag branch keeps one query embedding per tag.

Batch norm: every branch has batch norm, so `apply` in train mode needs `mutable=["batch_stats"]`
and an rng named "dropout"; see `musemb.models.shortchunk`. `SONG_INPUTS` names each song branch's
positional inputs, so a caller can run any of them as `branch(*[batch[k] for k in inputs])`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from musemb import ops
from musemb.models import shortchunk

EMBED_DIM = 256
HIDDEN_DIM = 512
WORD_DIM = 300  # Word2Vec (Google News) vectors, section 2.2.2
WMF_DIM = 200  # WMF song factors, section 2.2.3
MODALITIES = ("acoustic", "cultural")  # the order of LateFusion's second axis
SONG_INPUTS = {
    "cultural": ("factors",),
    "acoustic": ("audio",),
    "hybrid": ("audio", "factors"),
    "late_fusion": ("audio", "factors"),
}


def _check_vectors(owner: str, what: str, x: jax.Array, input_dim: int | None) -> None:
  if x.ndim != 2:
    raise ValueError(
        f"{owner}: {what} has shape {x.shape}; expected [batch, dim] (add a batch axis to a single "
        "vector).")
  if input_dim is not None and x.shape[1] != input_dim:
    raise ValueError(
        f"{owner}: {what} has {x.shape[1]} dims per row; expected input_dim={input_dim}. Pass "
        f"input_dim={x.shape[1]} (or None to accept any width) if these are the intended inputs.")


def _check_batches(owner: str, audio: jax.Array, factors: jax.Array) -> None:
  # Other ranks are the CNN's or the MLP's error to report, with the expected shape.
  if audio.ndim == 2 and factors.ndim == 2 and audio.shape[0] != factors.shape[0]:
    raise ValueError(
        f"{owner}: audio {audio.shape} and factors {factors.shape} hold different numbers of "
        "songs; row i of both must be the same song.")


def _mlp(x: jax.Array, *, hidden_dim: int, out_dim: int, dropout_rate: float, bn_momentum: float,
         train: bool) -> jax.Array:
  """Won et al.'s MLP in the calling compact module: `hidden` (+ BN, ReLU, dropout), then `out`."""
  h = shortchunk.dense_bn_relu_dropout(x, hidden_dim, train=train, dropout_rate=dropout_rate,
                                       bn_momentum=bn_momentum, name="hidden")
  return nn.Dense(out_dim, kernel_init=shortchunk.TORCH_INIT, name="out")(h)


class _VectorBranch(nn.Module):
  """The MLP both vector branches share: [batch, input_dim] -> 512 -> [batch, out_dim]."""
  input_dim: int | None = None
  hidden_dim: int = HIDDEN_DIM
  out_dim: int = EMBED_DIM
  dropout_rate: float = 0.5
  normalize: bool = True
  bn_momentum: float = shortchunk.TORCH_BN_MOMENTUM
  _input_name = "inputs"   # for error messages

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """x [batch, input_dim] -> [batch, out_dim] (unit rows when `normalize`)."""
    x = jnp.asarray(x, jnp.float32)
    _check_vectors(type(self).__name__, self._input_name, x, self.input_dim)
    out = _mlp(x, hidden_dim=self.hidden_dim, out_dim=self.out_dim,
               dropout_rate=self.dropout_rate, bn_momentum=self.bn_momentum, train=train)
    return ops.l2_normalize(out) if self.normalize else out


class TagBranch(_VectorBranch):
  """T(y): word vectors [batch, input_dim] -> [batch, out_dim] (section 2.2.2).

  Attributes:
    input_dim: expected width of the word vectors (300 for the paper's Word2Vec); None accepts any.
    hidden_dim: the hidden layer (512).
    out_dim: the embedding (256).
    dropout_rate: dropout after the hidden layer (train mode only).
    normalize: l2-normalise the output.
    bn_momentum: running-average decay of the batch norm (PyTorch's momentum 0.1).
  """
  input_dim: int | None = WORD_DIM
  _input_name = "words"


class CulturalBranch(_VectorBranch):
  """S_cultural(x): WMF song factors [batch, input_dim] -> [batch, out_dim] (section 2.2.3).

  Attributes:
    input_dim: expected number of factors (200 in the paper); None accepts any.
    hidden_dim, out_dim, dropout_rate, normalize, bn_momentum: as in `TagBranch`.
  """
  input_dim: int | None = None
  _input_name = "factors"


class AcousticBranch(nn.Module):
  """S_acoustic(x): raw audio [batch, num_samples] -> [batch, out_dim] via the short-chunk CNN.

  The CNN (submodule `cnn`) is `ShortChunkCNN(num_outputs=out_dim, dense_width=hidden_dim)`: its
  dense head is the branch's 512 -> 256 MLP.

  Attributes:
    widths: the CNN's conv widths (`shortchunk.WON_WIDTHS`).
    mel: the log-mel front end (22,050 Hz, 1024-point FFT, hop 512, 128 mels).
    num_samples: required clip length (88,064); None accepts any long-enough clip.
    input_bn: batch-normalise the spectrogram.
    hidden_dim, out_dim, dropout_rate, normalize, bn_momentum: as in `TagBranch`.
    dtype: the CNN's computation dtype ("float32" or "bfloat16"; `ShortChunkCNN.dtype`).
  """
  widths: Sequence[int] = shortchunk.WON_WIDTHS
  mel: shortchunk.MelConfig = shortchunk.MelConfig()
  num_samples: int | None = shortchunk.NUM_SAMPLES
  input_bn: bool = True
  hidden_dim: int = HIDDEN_DIM
  out_dim: int = EMBED_DIM
  dropout_rate: float = 0.5
  normalize: bool = True
  bn_momentum: float = shortchunk.TORCH_BN_MOMENTUM
  dtype: str = "float32"

  @nn.compact
  def __call__(self, audio: jax.Array, train: bool = False) -> jax.Array:
    """audio [batch, num_samples] -> [batch, out_dim] (unit rows when `normalize`)."""
    out = shortchunk.ShortChunkCNN(
        num_outputs=self.out_dim, widths=self.widths, dense_width=self.hidden_dim,
        dropout_rate=self.dropout_rate, input_bn=self.input_bn, mel=self.mel,
        num_samples=self.num_samples, bn_momentum=self.bn_momentum, dtype=self.dtype,
        name="cnn")(audio, train)
    return ops.l2_normalize(out) if self.normalize else out


class HybridConcat(nn.Module):
  """The paper's concatenation: [acoustic hidden ; cultural hidden] -> [batch, out_dim].

  Submodules: `cnn` (the short-chunk CNN up to its 512-d hidden layer), `cultural_hidden` (+ `_bn`)
  for the factors, optionally `fusion_hidden` (+ `_bn`), and `out`.

  Attributes:
    widths, mel, num_samples, input_bn: the acoustic side, as in `AcousticBranch`.
    factors_dim: expected number of WMF factors; None accepts any.
    hidden_dim: each modality's hidden layer (512).
    fusion_hidden: width of an extra dense + BN + ReLU + dropout layer on the concatenation; None
      maps the concatenation straight to out_dim.
    out_dim, dropout_rate, normalize, bn_momentum: as in `TagBranch`.
  """
  widths: Sequence[int] = shortchunk.WON_WIDTHS
  mel: shortchunk.MelConfig = shortchunk.MelConfig()
  num_samples: int | None = shortchunk.NUM_SAMPLES
  input_bn: bool = True
  factors_dim: int | None = None
  hidden_dim: int = HIDDEN_DIM
  fusion_hidden: int | None = None
  out_dim: int = EMBED_DIM
  dropout_rate: float = 0.5
  normalize: bool = True
  bn_momentum: float = shortchunk.TORCH_BN_MOMENTUM

  @nn.compact
  def __call__(self, audio: jax.Array, factors: jax.Array, train: bool = False) -> jax.Array:
    """audio [batch, num_samples], factors [batch, factors_dim] -> [batch, out_dim]."""
    audio = jnp.asarray(audio)
    factors = jnp.asarray(factors, jnp.float32)
    _check_vectors("HybridConcat", "factors", factors, self.factors_dim)
    _check_batches("HybridConcat", audio, factors)
    h_audio = shortchunk.ShortChunkCNN(
        num_outputs=None, widths=self.widths, dense_width=self.hidden_dim,
        dropout_rate=self.dropout_rate, input_bn=self.input_bn, mel=self.mel,
        num_samples=self.num_samples, bn_momentum=self.bn_momentum, name="cnn")(audio, train)
    h_cf = shortchunk.dense_bn_relu_dropout(
        factors, self.hidden_dim, train=train, dropout_rate=self.dropout_rate,
        bn_momentum=self.bn_momentum, name="cultural_hidden")
    x = jnp.concatenate([h_audio, h_cf], axis=-1)  # [batch, 2 * hidden_dim]
    self.sow("intermediates", "concat", x)
    if self.fusion_hidden is not None:
      x = shortchunk.dense_bn_relu_dropout(
          x, self.fusion_hidden, train=train, dropout_rate=self.dropout_rate,
          bn_momentum=self.bn_momentum, name="fusion_hidden")
    out = nn.Dense(self.out_dim, kernel_init=shortchunk.TORCH_INIT, name="out")(x)
    return ops.l2_normalize(out) if self.normalize else out


class LateFusion(nn.Module):
  """Two song embeddings, acoustic and cultural, fused at retrieval: -> [batch, 2, out_dim].

  `out[:, 0]` is an `AcousticBranch` (submodule `acoustic`), `out[:, 1]` a `CulturalBranch`
  (submodule `cultural`), both in the tag space. Train with one triplet loss per modality against
  the shared tag branch; score with `late_fusion_scores`.

  Attributes:
    widths, mel, num_samples, input_bn: the acoustic branch, as in `AcousticBranch`.
    factors_dim: expected number of WMF factors; None accepts any.
    hidden_dim, out_dim, dropout_rate, normalize, bn_momentum: both branches, as in `TagBranch`.
  """
  widths: Sequence[int] = shortchunk.WON_WIDTHS
  mel: shortchunk.MelConfig = shortchunk.MelConfig()
  num_samples: int | None = shortchunk.NUM_SAMPLES
  input_bn: bool = True
  factors_dim: int | None = None
  hidden_dim: int = HIDDEN_DIM
  out_dim: int = EMBED_DIM
  dropout_rate: float = 0.5
  normalize: bool = True
  bn_momentum: float = shortchunk.TORCH_BN_MOMENTUM

  @nn.compact
  def __call__(self, audio: jax.Array, factors: jax.Array, train: bool = False) -> jax.Array:
    """audio [batch, num_samples], factors [batch, factors_dim] -> [batch, 2, out_dim]."""
    audio = jnp.asarray(audio)
    factors = jnp.asarray(factors)
    _check_batches("LateFusion", audio, factors)
    common = dict(hidden_dim=self.hidden_dim, out_dim=self.out_dim, dropout_rate=self.dropout_rate,
                  normalize=self.normalize, bn_momentum=self.bn_momentum)
    acoustic = AcousticBranch(widths=self.widths, mel=self.mel, num_samples=self.num_samples,
                              input_bn=self.input_bn, name="acoustic", **common)(audio, train)
    cultural = CulturalBranch(input_dim=self.factors_dim, name="cultural", **common)(factors, train)
    return jnp.stack([acoustic, cultural], axis=1)


def late_fusion_scores(tag_emb: jax.Array, song_emb: jax.Array,
                       acoustic_weight: float | jax.Array = 0.5) -> jax.Array:
  """Retrieval scores of LateFusion: w cos(t, s_acoustic) + (1 - w) cos(t, s_cultural).

  Args:
    tag_emb: [tags, d] tag-branch embeddings.
    song_emb: [songs, 2, d] LateFusion outputs (acoustic first, see `MODALITIES`).
    acoustic_weight: w in [0, 1]; 1 ranks by audio alone (songs without interactions), 0 by the
      cultural embedding alone.

  Returns:
    [tags, songs] fused cosine similarities (normalised here, so raw outputs work too).
  """
  tag_emb = jnp.asarray(tag_emb, jnp.float32)
  song_emb = jnp.asarray(song_emb, jnp.float32)
  if tag_emb.ndim != 2 or song_emb.ndim != 3 or song_emb.shape[1] != len(MODALITIES):
    raise ValueError(
        f"late_fusion_scores: tag_emb {tag_emb.shape} and song_emb {song_emb.shape} must be "
        f"[tags, d] and [songs, {len(MODALITIES)}, d] (LateFusion's output).")
  if tag_emb.shape[1] != song_emb.shape[2]:
    raise ValueError(
        f"late_fusion_scores: tag dim {tag_emb.shape[1]} != song dim {song_emb.shape[2]}.")
  if isinstance(acoustic_weight, (int, float)) and not 0.0 <= acoustic_weight <= 1.0:
    raise ValueError(f"late_fusion_scores: acoustic_weight={acoustic_weight} must be in [0, 1].")
  cos = jnp.einsum("td,smd->mts", ops.l2_normalize(tag_emb), ops.l2_normalize(song_emb),
                   precision=jax.lax.Precision.HIGHEST)  # [2, tags, songs]
  return acoustic_weight * cos[0] + (1.0 - acoustic_weight) * cos[1]


def make_song_branch(name: str, **kwargs) -> nn.Module:
  """The song branch called `name` ("cultural", "acoustic", "hybrid", "late_fusion").

  Keyword arguments go to the module (`CulturalBranch`, `AcousticBranch`, `HybridConcat`,
  `LateFusion`); `SONG_INPUTS[name]` lists its positional inputs.
  """
  modules = {"cultural": CulturalBranch, "acoustic": AcousticBranch, "hybrid": HybridConcat,
             "late_fusion": LateFusion}
  if name not in modules:
    raise ValueError(
        f"make_song_branch: unknown branch {name!r}; expected one of {tuple(modules)}.")
  return modules[name](**kwargs)
