r"""What every experiment config starts from: the keys the training loop reads, and one variant parser.

`base(system)` declares every key `musemb.train` (and the shared data resolution) reads, with a
default; an experiment file (`configs/muslse.py`, ...) starts from it, adds its system's own keys and
changes a few defaults. Nothing downstream uses `config.get(key, default)`: a key is declared here
or in the experiment file, and `--config.x=y` overrides are checked against those declarations.

Durations are declared in the units a user thinks in and turned into steps by the loop at run time
(`musemb.train.resolve_num_steps`): `train.num_steps`, or `train.epochs` of
`train.examples_per_epoch` examples (0: the training split's size). Set one, the other to 0; the
loop refuses both. Validation runs every `train.eval_every` steps or, when
`train.eval_every_epochs` > 0, every that many epochs, so one config validates as often on a
collection ten times larger; `train.patience` validations without a better metric stop the run.

`parse_arg(arg, **spec)` reads the `get_config(arg)` variant string in the manner of big_vision's
`parse_arg`: comma-separated items, `name` alone sets a boolean spec entry, `name=value` is cast to
the type of its default; an unknown name is an error that lists the known ones.

This module imports nothing heavier than ml_collections, so parsing a config never loads JAX.
"""

from __future__ import annotations

import ml_collections

# `model.dtype` of the configs whose neural models take one (samplecnn, won's acoustic branch): the
# computation dtype of their convolutions and dense layers. "bfloat16" is mixed precision for
# accelerators (parameters, batch-norm statistics, the log-mel front end and the losses stay
# float32); the default is "float32" throughout.
MODEL_DTYPES = ("float32", "bfloat16")


def base(system: str) -> ml_collections.ConfigDict:
  """The keys the loop reads, with defaults that run on the built-in world."""
  c = ml_collections.ConfigDict()
  c.system = system
  c.seed = 0
  # A prepared TFDS dataset (or a folder holding exactly one); "" = the built-in synthetic world,
  # generated and prepared under <workdir>/data on first use.
  c.data_dir = ""

  c.data = ml_collections.ConfigDict()
  c.data.synthetic_size = "demo"   # tiny | demo | small | large (when data_dir is empty)
  c.data.synthetic_seed = 0
  c.data.sample_rate = 16000       # of the stored audio
  c.data.max_seconds = 0.0         # prepare crops clips to this (0 = whole clips)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"         # sgd | adagrad | adam
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.0       # sgd only; 0 = plain SGD
  c.optimizer.nesterov = False     # sgd with momentum
  c.optimizer.weight_decay = 0.0   # L2 term added to the gradient (PyTorch's weight_decay)
  # On a validation plateau (train.patience evaluations without improvement) multiply the rate by
  # plateau_factor, up to plateau_drops times, before stopping early (Lee et al. / Platt §6.1).
  c.optimizer.plateau_drops = 0
  c.optimizer.plateau_factor = 0.2

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64          # global batch, split over the devices' data axis
  c.train.num_steps = 0            # the run's length in steps, or ...
  c.train.epochs = 0.0             # ... in epochs of train.examples_per_epoch examples
  c.train.examples_per_epoch = 0   # 0 = the training split's size
  c.train.log_every = 100
  c.train.eval_every = 1000        # validation every N steps (0 = only at the end), or ...
  c.train.eval_every_epochs = 0.0  # ... every this many epochs (set one, the other to 0)
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.patience = 4             # evaluations without improvement before a drop / the stop
  c.train.eval_metric = ""         # validation metric ("-name": smaller is better)
  c.train.num_devices = 0          # 0 = all visible devices
  # Steps per jitted call (a lax.scan; musemb.train.make_train_steps): fewer host round trips for
  # steps of a few ms. Logging, checkpoints and validation stay on the same steps (calls end there).
  c.train.steps_per_call = 1

  c.eval = ml_collections.ConfigDict()
  c.eval.split = "test"            # what the final evaluation scores
  return c


def set_steps(c: ml_collections.ConfigDict, steps: int) -> None:
  """The run's length in steps (epochs off)."""
  c.train.num_steps, c.train.epochs = int(steps), 0.0


def set_epochs(c: ml_collections.ConfigDict, epochs: float, examples_per_epoch: int | None = None
               ) -> None:
  """The run's length in epochs (steps off), optionally of a given number of examples."""
  c.train.num_steps, c.train.epochs = 0, float(epochs)
  if examples_per_epoch is not None:
    c.train.examples_per_epoch = int(examples_per_epoch)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _cast(key: str, value: str, default, arg: str):
  if isinstance(default, bool):
    if value.lower() in _TRUE:
      return True
    if value.lower() in _FALSE:
      return False
    raise ValueError(f"{key}={value!r} in {arg!r}: expected true or false.")
  try:
    return type(default)(value)
  except ValueError as e:
    raise ValueError(f"{key}={value!r} in {arg!r}: expected a {type(default).__name__} "
                     f"(default {default!r}).") from e


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """`"tiny,d=400,loss=auc"` -> ConfigDict(tiny=True, d=400, loss="auc", <other spec defaults>).

  Args:
    arg: the variant string after `config.py:` (None or "" for none).
    **spec: every accepted name with its default; a bool default makes a bare name (a named
      variant, `tiny`) set it True, other types are cast from `name=value`.

  Raises:
    ValueError: an unknown name, a bare name that needs a value, or a value of the wrong type.
  """
  out = ml_collections.ConfigDict(spec)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, value = item.partition("=")
    key = key.strip()
    if key not in spec:
      flags = sorted(k for k, v in spec.items() if isinstance(v, bool))
      knobs = sorted(f"{k}=" for k, v in spec.items() if not isinstance(v, bool))
      raise ValueError(f"unknown config item {key!r} in {arg!r}; variants: {', '.join(flags)}; "
                       f"knobs: {', '.join(knobs)}; or override any key with "
                       "--config.<key>=<value>.")
    if not eq:
      if not isinstance(spec[key], bool):
        raise ValueError(f"{key!r} in {arg!r} needs a value: {key}=<{type(spec[key]).__name__}>.")
      out[key] = True
    else:
      out[key] = _cast(key, value.strip(), spec[key], arg)
  return out
