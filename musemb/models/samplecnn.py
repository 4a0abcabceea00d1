"""SampleCNN: the 3^9 sample-level CNN over raw waveforms, with a tag head and a latent-factor head.

Follows Lee, Park, Kim and Nam, *Sample-level Deep Convolutional Neural Networks for Music
Auto-tagging Using Raw Waveforms* (SMC 2017), the "3^9 model" of its Table 1, and its use by Platt,
*Content-Based Music Recommendation with the LFM-1b Dataset and Sample-Level Deep Convolutional
Neural Networks* (thesis, chapter 4 and section 6.1), which adapted the open-source Keras/TF
implementation of Lee et al. (tae-jun/sample-cnn):

    input            [batch, 59049]        3^10 raw samples
    stem             conv(3, stride 3, 128) + batch norm + ReLU          -> [batch, 19683, 128]
    block i = 1..9   conv(3, stride 1, 'SAME', widths[i]) + BN + ReLU + max-pool(3)
                     widths = 128, 128, 256, 256, 256, 256, 256, 256, 512 -> [batch, 1, 512]
    final            conv(1, 512) + BN + ReLU                           -> [batch, 1, 512]
    head             dropout(0.5), dense(num_outputs)

Each stage divides the length by 3, so 3^10 samples reach exactly one frame after the ninth block.
The thesis states the 3^9 structure, the 59,049-sample input and the heads, and defers the widths to
Lee et al.; the widths and the final 1x1 convolution with dropout 0.5 are Lee et al.'s Table 1 (and
the implementation the thesis adapted). `final_width=None` drops the 1x1 block.

Heads (`head`):

* `"tags"`: the dense layer's outputs are logits of independent sigmoids (Lee et al.); train with
  `bce_loss`.
* `"factors"`: a linear dense layer whose output is l2-normalised (the thesis found the bound
  necessary for regression from a deep ReLU network); train with `factor_mse_loss`, which
  l2-normalises the targets as the thesis normalised its latent factors.

Batch statistics live in the `batch_stats` collection: `init` returns `{"params", "batch_stats"}`;
`apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])` normalises by the
batch's statistics and returns the updated running averages; `train=False` uses the running
averages and no dropout, so evaluation is deterministic and per-example. Train with at least two
examples per batch: the last stages hold one frame per example, so a batch of one normalises them
to zero. The outputs of every stage
are sown into the `intermediates` collection (`stem`, `block1` ... `block9`, `final`) for callers
that ask for it with `mutable=["intermediates"]`.

`dtype="bfloat16"` runs the convolutions, batch norms and the dense head in bfloat16 (mixed
precision, for accelerators): parameters stay float32 (`param_dtype`, so the optimiser updates
float32 weights), batch norm reduces its statistics in float32, and the output is cast back to
float32 before the loss. The default is float32 throughout.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from musemb import ops

LEE_WIDTHS = (128, 128, 256, 256, 256, 256, 256, 256, 512)
HEADS = ("tags", "factors")
COMPUTE_DTYPES = ops.COMPUTE_DTYPES




def bce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean binary cross-entropy of sigmoid(logits) against multi-hot labels, both [batch, tags]."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)))


def factor_mse_loss(pred: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean squared error between pred and l2-normalised targets, both [batch, factors].

  The mean runs over batch and factors (Keras' MSE, as in the thesis' code). `pred` is used as
  given: the `factors` head already l2-normalises it.
  """
  return jnp.mean(jnp.square(pred - ops.l2_normalize(targets.astype(pred.dtype))))


class SampleCNN(nn.Module):
  """Lee et al.'s 3^9 sample-level CNN: raw audio [batch, num_samples] -> [batch, num_outputs].

  Attributes:
    num_outputs: tags (for `head="tags"`) or latent factors (for `head="factors"`).
    head: "tags" (sigmoid logits) or "factors" (linear, then l2-normalised).
    widths: channels of the nine conv(3) + max-pool(3) blocks; fewer blocks make a smaller model
      (tests), in which case num_samples must be 3^(len(widths) + 1).
    stem_width: channels of the strided first convolution.
    final_width: channels of the 1x1 convolution after the blocks; None leaves it out.
    dropout_rate: dropout before the dense head (train mode only).
    num_samples: input length; 3^(len(widths) + 1) so the last block outputs one frame.
    bn_momentum: running-average decay of batch norm.
    dtype: computation dtype, "float32" or "bfloat16" (parameters are float32 either way).
  """
  num_outputs: int = 50
  head: str = "tags"
  widths: Sequence[int] = LEE_WIDTHS
  stem_width: int = 128
  final_width: int | None = 512
  dropout_rate: float = 0.5
  num_samples: int = 3 ** 10
  bn_momentum: float = 0.99
  dtype: str = "float32"

  def _check(self, audio: jax.Array) -> None:
    if self.head not in HEADS:
      raise ValueError(f"SampleCNN: head={self.head!r}; expected one of {HEADS}.")
    ops.compute_dtype(self.dtype, "SampleCNN")
    if self.num_samples != 3 ** (len(self.widths) + 1):
      raise ValueError(
          f"SampleCNN: num_samples={self.num_samples} with {len(self.widths)} blocks does not end "
          f"in one frame; expected 3^(blocks + 1) = {3 ** (len(self.widths) + 1)} (59049 for "
          f"Lee et al.'s nine blocks). Change num_samples or widths.")
    if audio.ndim != 2 or audio.shape[1] != self.num_samples:
      raise ValueError(
          f"SampleCNN: audio has shape {audio.shape}; expected [batch, {self.num_samples}] raw "
          f"samples. Crop or pad the waveform to {self.num_samples} samples (a mono channel, no "
          f"trailing channel axis).")

  @nn.compact
  def __call__(self, audio: jax.Array, train: bool = False) -> jax.Array:
    """audio [batch, num_samples] -> [batch, num_outputs] (tag logits, or unit-norm factors).

    In train mode dropout needs an rng named "dropout" and batch_stats must be mutable.
    """
    self._check(audio)
    conv_init = nn.initializers.he_uniform()  # as in Lee et al.'s implementation
    dtype = ops.compute_dtype(self.dtype, "SampleCNN")

    def conv_bn_relu(x, width, kernel, stride, padding, name):
      x = nn.Conv(width, (kernel,), strides=(stride,), padding=padding, kernel_init=conv_init,
                  dtype=dtype, param_dtype=jnp.float32, name=f"{name}_conv")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, dtype=dtype,
                       param_dtype=jnp.float32, name=f"{name}_bn")(x)
      return nn.relu(x)

    x = audio[..., None].astype(dtype)  # [batch, samples, 1]
    x = conv_bn_relu(x, self.stem_width, 3, 3, "VALID", "stem")
    self.sow("intermediates", "stem", x)
    for i, width in enumerate(self.widths, start=1):
      x = conv_bn_relu(x, width, 3, 1, "SAME", f"block{i}")
      x = nn.max_pool(x, (3,), strides=(3,), padding="VALID")
      self.sow("intermediates", f"block{i}", x)
    if self.final_width is not None:
      x = conv_bn_relu(x, self.final_width, 1, 1, "VALID", "final")
      self.sow("intermediates", "final", x)
    x = x[:, 0, :]  # the single remaining frame: [batch, channels]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    out = nn.Dense(self.num_outputs, dtype=dtype, param_dtype=jnp.float32, name="head")(x)
    out = out.astype(jnp.float32)
    return ops.l2_normalize(out) if self.head == "factors" else out
