"""Short-chunk CNN: a VGG-like 2D CNN over about 4 s of log-mel spectrogram, computed on device.

Follows Won, Ferraro, Bogdanov and Serra, *Evaluation of CNN-based automatic music tagging models*
(SMC 2020), whose "short-chunk CNN" (minzwon/sota-music-tagging-models, `ShortChunkCNN`) is the
acoustic branch of Won, Oramas, Nieto, Gouyon and Serra, *Multimodal Metric Learning for Tag-Based
Music Retrieval* (ICASSP 2021, section 2.2.3; minzwon/tag-based-music-retrieval, `AudioModel`):

    input            [batch, num_samples]         raw mono audio at 22,050 Hz
    front end        log-mel (dB), computed here  -> [batch, frames, 128]   (time before mels)
    input BN         batch norm over one channel  -> [batch, frames, 128, 1]
    layer i = 1..7   conv(3x3, 'SAME', widths[i]) + BN + ReLU + max-pool(2x2)
                     widths = 128, 128, 256, 256, 256, 256, 512 -> [batch, 1, 1, 512] for 173 frames
    global max pool  over the remaining time x frequency map  -> [batch, 512]
    dense1           dense(512) + BN + ReLU + dropout(0.5)   -> [batch, 512]   (dense_width)
    dense2           dense(num_outputs)                      -> [batch, num_outputs]

Front end (Won et al. 2021, section 2.2.3): audio at 22.05 kHz (the paper's "22.5kHz" is 22,050 Hz,
librosa's default rate), a 1024-point FFT with 50 % overlap (hop 512), 128 mel bands, in dB. It is
`musemb.features.log_mel` (librosa numerics: periodic Hann window, zero centre padding, Slaney mel
scale and area normalisation, `10 log10(max(power, 1e-10))`), run inside the module so that the
whole model is one jitted function of the waveform and gradients reach the audio. The dB floor
follows the SMC 2020 code, torchaudio's `AmplitudeToDB()` (no `top_db` clipping); `MelConfig.top_db`
sets librosa's 80 dB floor instead.

Input length: the retrieval code crops `input_length = 173` frames (hop 512 at 22,050 Hz, about 4 s,
the paper's "≈ 4 s" short chunk), so `NUM_SAMPLES = 172 * 512 = 88,064` samples, which give exactly
173 centred frames. (SMC 2020 used 59,049 samples at 16 kHz, 3.69 s; 81,920 samples at 22,050 Hz is
the same duration and gives 161 frames.) Any clip with at least 2^len(widths) frames and
n_mels >= 2^len(widths) works: the pools floor as PyTorch's `MaxPool2d(2)` does, and the global max
pool takes whatever map is left (for 128 mels and 173 or 161 frames, one cell).

Layers and initialisation follow the SMC 2020 PyTorch code: 3x3 convolutions with padding 1,
`BatchNorm2d`/`BatchNorm1d` with PyTorch's momentum 0.1 and eps 1e-5 (Flax momentum 0.9: the
weight kept by the running average), PyTorch's default weight initialisation (uniform with variance
1 / (3 fan_in), `TORCH_INIT`); biases start at zero (PyTorch draws them uniformly, a difference
batch norm makes immaterial). Departure: a convolution or dense layer that feeds a batch norm has
no bias. Batch norm subtracts the batch mean, so such a bias changes no output and its gradient is
zero in exact arithmetic; Adam divides that zero's rounding noise by its own tiny running norm and
moves the bias by about a learning rate per step, in a direction that depends on the order of the
float reductions, i.e. on the number of devices (and the drift leaks into the running means the
evaluation uses). Without it the model computes the same functions and a run follows the same
trajectory on any device count. The widths are `won_widths(n_channels=128)`, i.e. the base width 128
doubled at layers 3 and 7. The dense head is SMC 2020's tagging head (dense, BN, ReLU, dropout 0.5,
dense); the retrieval code instead ends the CNN with a 1x1 convolution to 256 channels and a ReLU
(`Conv_emb`) before the max pool, which makes every song embedding non-negative. Here the head is
SMC 2020's with `dense_width = 512` and `num_outputs = 256`, which is also the paper's text (every
branch is "fully connected to a 512-dimensional hidden layer followed by a 256-dimensional output
layer"): see `musemb.models.branches.AcousticBranch`.

`num_outputs=None` returns the penultimate representation instead of dense2's output: the dense1
hidden layer after dropout (what dense2 would read), or the pooled CNN features when
`dense_width=None`. The hybrid branch concatenates it with the cultural branch's.

Batch statistics live in the `batch_stats` collection: `init` returns `{"params", "batch_stats"}`;
`apply(variables, audio, train=True, rngs={"dropout": key}, mutable=["batch_stats"])` normalises by
the batch's statistics and returns the updated running averages; `train=False` uses the running
averages and no dropout, so evaluation is deterministic and per-example. Train with at least two
examples per batch: dense1's batch norm normalises a batch of one to zero. The stages are sown
into `intermediates` (`log_mel` [batch, frames, n_mels], `layer1` ... `layer7` [batch, time,
freq, channels], `pooled`, `hidden`) for callers that pass `mutable=["intermediates"]`.

`dtype="bfloat16"` runs the CNN and the dense head in bfloat16 (mixed precision, for
accelerators): the log-mel front end stays float32 (the FFT and the dB scale need its range), its
output is cast after the input batch norm, parameters stay float32 (`param_dtype`), batch norm
reduces its statistics in float32, and the output is cast back to float32. Default: float32.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from musemb import features
from musemb import ops

SAMPLE_RATE = 22050
NUM_SAMPLES = 172 * 512  # 173 centred frames at hop 512: the retrieval code's input_length
WON_WIDTHS = (128, 128, 256, 256, 256, 256, 512)
# PyTorch's default for nn.Linear and nn.Conv2d weights: kaiming_uniform(a=sqrt(5)), i.e.
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), variance 1 / (3 fan_in).
TORCH_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# PyTorch's BatchNorm momentum 0.1 updates running = 0.9 running + 0.1 batch; Flax's momentum is
# the 0.9.
TORCH_BN_MOMENTUM = 0.9
COMPUTE_DTYPES = ops.COMPUTE_DTYPES


def won_widths(n_channels: int = 128) -> tuple[int, ...]:
  """The seven layer widths of the short-chunk CNN for base width c: (c, c, 2c, 2c, 2c, 2c, 4c)."""
  if n_channels < 1:
    raise ValueError(f"won_widths: n_channels={n_channels} must be >= 1.")
  c = int(n_channels)
  return (c, c, 2 * c, 2 * c, 2 * c, 2 * c, 4 * c)


@dataclasses.dataclass(frozen=True)
class MelConfig:
  """The log-mel front end; defaults are Won et al.'s (2021, section 2.2.3).

  Hashable, so it can be a module attribute and a static argument.

  Attributes:
    sample_rate: Hz of the audio (22,050).
    n_fft: FFT size and Hann window length (1024).
    hop_length: samples between frames (512: 50 % overlap).
    n_mels: mel bands (128).
    fmin, fmax: band edges in Hz; fmax None is the Nyquist frequency.
    top_db: dB kept below each example's peak; None (torchaudio's AmplitudeToDB, used by Won et
      al.'s code) keeps everything above the 1e-10 power floor (-100 dB).
  """

  sample_rate: int = SAMPLE_RATE
  n_fft: int = 1024
  hop_length: int = 512
  n_mels: int = 128
  fmin: float = 0.0
  fmax: float | None = None
  top_db: float | None = None

  def __post_init__(self):
    if self.sample_rate <= 0:
      raise ValueError(f"MelConfig: sample_rate={self.sample_rate} must be > 0.")
    if self.n_fft < 2 or self.hop_length < 1 or self.n_mels < 1:
      raise ValueError(
          f"MelConfig: need n_fft >= 2, hop_length >= 1 and n_mels >= 1; got n_fft={self.n_fft}, "
          f"hop_length={self.hop_length}, n_mels={self.n_mels}.")
    if self.top_db is not None and self.top_db < 0:
      raise ValueError(f"MelConfig: top_db={self.top_db} must be >= 0 or None.")

  def n_frames(self, num_samples: int) -> int:
    """Frames of a clip of `num_samples` samples: 1 + num_samples // hop_length (centred STFT)."""
    return features.n_stft_frames(num_samples, self.n_fft, self.hop_length, center=True)

  def compute(self, audio: jax.Array) -> jax.Array:
    """audio `[..., samples]` -> float32 dB log-mel `[..., frames, n_mels]` (features.log_mel)."""
    return features.log_mel(audio, self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                            n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax, center=True,
                            top_db=self.top_db)


def pooled_shapes(n_frames: int, n_mels: int, num_layers: int) -> list[tuple[int, int]]:
  """(time, mel) sizes after each of `num_layers` 2x2 max-pools (floor), e.g. 173x128 -> ... 1x1."""
  shapes, t, f = [], int(n_frames), int(n_mels)
  for _ in range(num_layers):
    t, f = t // 2, f // 2
    shapes.append((t, f))
  return shapes


def dense_bn_relu_dropout(x: jax.Array, width: int, *, train: bool, dropout_rate: float,
                          bn_momentum: float, name: str, dtype: str = "float32") -> jax.Array:
  """Won et al.'s hidden layer, `Linear -> BatchNorm1d -> ReLU -> Dropout`, inside a compact method.

  Creates `{name}` (Dense, no bias: see the module docstring) and `{name}_bn` (BatchNorm) in the
  calling module; `dtype` is their computation dtype (parameters float32).
  """
  x = nn.Dense(width, use_bias=False, kernel_init=TORCH_INIT, dtype=dtype,
               param_dtype=jnp.float32, name=name)(x)
  x = nn.BatchNorm(use_running_average=not train, momentum=bn_momentum, epsilon=1e-5, dtype=dtype,
                   param_dtype=jnp.float32, name=f"{name}_bn")(x)
  x = nn.relu(x)
  return nn.Dropout(dropout_rate, deterministic=not train)(x)


class ShortChunkCNN(nn.Module):
  """Won et al.'s short-chunk CNN: raw audio [batch, num_samples] -> [batch, num_outputs].

  Attributes:
    num_outputs: width of the final dense layer (tags, or 256 for the retrieval embedding); None
      returns the penultimate representation (see the module docstring).
    widths: channels of the conv(3x3) + max-pool(2x2) layers (seven in Won et al.; fewer make a
      smaller model for tests, which then needs at least 2^len(widths) frames and mel bands).
    dense_width: width of the hidden dense layer (dense + BN + ReLU + dropout) after the global
      pool; None feeds the pooled features straight to the final dense layer.
    dropout_rate: dropout after the hidden dense layer (train mode only).
    input_bn: batch-normalise the log-mel input (Won et al.'s `spec_bn`: one channel, so one
      mean, variance, scale and offset for the whole spectrogram).
    mel: the log-mel front end.
    num_samples: required input length (88,064: 173 frames); None accepts any long-enough clip.
    bn_momentum: running-average decay of every batch norm (PyTorch's momentum 0.1).
    dtype: computation dtype of the CNN and head, "float32" or "bfloat16" (parameters float32).
  """
  num_outputs: int | None = 50
  widths: Sequence[int] = WON_WIDTHS
  dense_width: int | None = 512
  dropout_rate: float = 0.5
  input_bn: bool = True
  mel: MelConfig = MelConfig()
  num_samples: int | None = NUM_SAMPLES
  bn_momentum: float = TORCH_BN_MOMENTUM
  dtype: str = "float32"

  def _check(self, audio: jax.Array) -> None:
    layers = len(self.widths)
    ops.compute_dtype(self.dtype, "ShortChunkCNN")
    if layers < 1 or any(int(w) < 1 for w in self.widths):
      raise ValueError(
          f"ShortChunkCNN: widths={tuple(self.widths)} must be a non-empty sequence of positive "
          f"channel counts, e.g. won_widths(128) = {WON_WIDTHS}.")
    if self.num_outputs is not None and self.num_outputs < 1:
      raise ValueError(f"ShortChunkCNN: num_outputs={self.num_outputs} must be >= 1 or None.")
    if self.dense_width is not None and self.dense_width < 1:
      raise ValueError(f"ShortChunkCNN: dense_width={self.dense_width} must be >= 1 or None.")
    if not isinstance(self.mel, MelConfig):
      raise ValueError(f"ShortChunkCNN: mel must be a MelConfig, got {type(self.mel).__name__}.")
    if self.mel.n_mels < 2 ** layers:
      raise ValueError(
          f"ShortChunkCNN: n_mels={self.mel.n_mels} halves to zero in {layers} 2x2 max-pools; "
          f"need n_mels >= 2^{layers} = {2 ** layers} (use more mel bands or fewer widths).")
    shape_hint = f"{self.num_samples}" if self.num_samples is not None else "num_samples"
    if audio.ndim != 2:
      raise ValueError(
          f"ShortChunkCNN: audio has shape {audio.shape}; expected [batch, {shape_hint}] raw mono "
          f"samples at {self.mel.sample_rate} Hz (no channel axis: average or pick a channel, and "
          "add a batch axis to a single clip).")
    if jnp.iscomplexobj(audio):
      raise ValueError(f"ShortChunkCNN: audio has complex dtype {audio.dtype}; pass real samples.")
    n = audio.shape[1]
    if self.num_samples is not None and n != self.num_samples:
      raise ValueError(
          f"ShortChunkCNN: audio has shape {audio.shape}; expected [batch, {self.num_samples}] "
          f"samples. Crop or pad clips to {self.num_samples} samples, or set num_samples=None to "
          "accept any length with enough frames.")
    frames = self.mel.n_frames(n)
    if frames < 2 ** layers:
      need = (2 ** layers - 1) * self.mel.hop_length
      raise ValueError(
          f"ShortChunkCNN: {n} samples give {frames} frames at hop {self.mel.hop_length}, which "
          f"halve to zero in {layers} 2x2 max-pools; need >= {2 ** layers} frames, i.e. at least "
          f"{need} samples.")

  @nn.compact
  def __call__(self, audio: jax.Array, train: bool = False) -> jax.Array:
    """audio [batch, num_samples] -> [batch, num_outputs] (or the penultimate representation).

    In train mode dropout needs an rng named "dropout" and batch_stats must be mutable.
    """
    audio = jnp.asarray(audio)
    self._check(audio)

    dtype = ops.compute_dtype(self.dtype, "ShortChunkCNN")

    def batch_norm(name, bn_dtype=dtype):
      return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                          dtype=bn_dtype, param_dtype=jnp.float32, name=name)

    x = self.mel.compute(audio.astype(jnp.float32))  # [batch, frames, n_mels]
    self.sow("intermediates", "log_mel", x)
    x = x[..., None]  # one input channel: [batch, time, freq, 1]
    if self.input_bn:
      x = batch_norm("spec_bn", jnp.float32)(x)  # dB values: normalised before the cast
    x = x.astype(dtype)
    for i, width in enumerate(self.widths, start=1):
      x = nn.Conv(int(width), (3, 3), padding="SAME", use_bias=False, kernel_init=TORCH_INIT,
                  dtype=dtype, param_dtype=jnp.float32, name=f"layer{i}_conv")(x)
      x = nn.relu(batch_norm(f"layer{i}_bn")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      self.sow("intermediates", f"layer{i}", x)
    x = jnp.max(x, axis=(1, 2))  # global max pool over time and frequency: [batch, channels]
    self.sow("intermediates", "pooled", x)
    if self.dense_width is not None:
      x = dense_bn_relu_dropout(x, self.dense_width, train=train, dropout_rate=self.dropout_rate,
                                bn_momentum=self.bn_momentum, name="dense1", dtype=self.dtype)
      self.sow("intermediates", "hidden", x)
    if self.num_outputs is None:
      return x.astype(jnp.float32)
    return nn.Dense(self.num_outputs, kernel_init=TORCH_INIT, dtype=dtype, param_dtype=jnp.float32,
                    name="dense2")(x).astype(jnp.float32)
