"""The one training loop every system shares.

`train_and_evaluate(config, workdir)` runs a system (`musemb.systems.get(config.system)`, the
contract written in `musemb/systems/__init__.py`) from its data to `metrics.json`; `run` does the
same for systems with a fit verb of their own (WMF). The pieces are public so benchmarks and tests
call them instead of rebuilding them: `make_optimizer`, `create_train_state`, `make_train_step`,
`resolve_num_steps`, `finish` (the final evaluation), `load_variables` and `load_predictor`.

* one `TrainState` pytree (step, params, optimizer state, RNG key data), created already sharded
  (`jax.jit(init, out_shardings=...)`) and placed on a `(data, model)` mesh even on one device;
* one pure `train_step(state, batch, tables) -> (state, metrics)`, jitted with the state donated;
  randomness (task choice, negative sampling) is `fold_in(rng, step)` inside it, so a run's
  trajectory depends only on the seed and the step, never on how many devices or restarts it saw;
* the host batcher is a deterministic function of the step (`musemb.data.pipeline.EpochBatcher`), so
  the data position is the step and resuming is exact;
* `train.steps_per_call` > 1 runs that many steps per jitted call (`make_train_steps`, a `lax.scan`
  over stacked batches) for steps so short that the host's per-call work shows; a call never
  crosses a logging, checkpoint or validation step (`call_length`), so those happen at the same
  steps, with the same state, as with one step per call, and resuming stays exact;
* orbax `CheckpointManager`: periodic, keep N, final, and on SIGTERM (preemption) before exiting;
  a second manager keeps the best parameters by the validation metric;
* TensorBoard scalars (loss, gradient/parameter norms, learning rate, per-task losses, steps/s,
  examples/s, validation metrics), progress lines with ETA;
* periodic validation with early stopping (Algorithm 1 of Weston et al. 2011: "until validation
  error does not improve"), patience counted in evaluations, state kept in the checkpoint;
* a non-finite loss stops the run with `FloatingPointError` before any checkpoint of the bad state
  is written, so the last good checkpoint stays intact.

`init` returns the flax variables; their `params` collection is trained and the other collections
(batch statistics) ride in `TrainState.model_state`, updated from the loss's `aux["model_state"]`.
Evaluation, `best/` and `load_variables` see the variables `{"params": ..., **model_state}`.
The `tables` argument (device-resident lookup tables such as the training songs' features, used to
score sampled negatives) keeps large constants out of the per-step batch without closing over them
in the jitted function.

Metric names: the loop owns the prefixes. Validation metrics go to TensorBoard as
`valid/<key>/<metric>`, the final ones as `test/<key>/<metric>` and into `metrics.json` as
`<key>/<metric>`, where `<key>` is `system.key(config)` (the system's name, e.g. `muslse`).

Durations: `train.num_steps`, or `train.epochs` of `train.examples_per_epoch` examples (0: the
training split's size, `data.info["num_train_examples"]`) turned into steps at run time
(`resolve_num_steps`), so `--config.train.batch_size=...` never leaves a step count stale.

The learning rate lives in the optimizer state (`optax.inject_hyperparams`): with
`optimizer.plateau_drops = N`, running out of validation patience multiplies it by
`optimizer.plateau_factor` (and resets the patience) up to N times before stopping early, the
schedule of Lee et al. (2017) that Platt's §6.1 follows (0.2 four times).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any, Callable

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from musemb import sharding
from musemb import systems as systems_lib
from musemb import utils
from musemb import workdir as workdir_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw key data (uint32), so checkpoints hold plain arrays
  # Non-trained model variables updated by the forward pass (flax collections such as
  # `batch_stats`); an empty dict for systems without any.
  model_state: Any = flax.struct.field(default_factory=dict)


OPTIMIZERS = ("sgd", "adagrad", "adam")


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer named by `config.optimizer`, its learning rate held in the optimizer state.

  `optax.inject_hyperparams` keeps the rate in `opt_state.hyperparams["learning_rate"]`, so the
  loop can lower it on a plateau (`optimizer.plateau_drops`) and the checkpoint carries it.
  Keys (declared in configs/common.py): `momentum` (sgd; 0 = plain SGD), `nesterov`, and
  `weight_decay`, an L2 term added to the gradient before the update (PyTorch's `weight_decay`,
  which Won et al. use with Adam).
  """
  o = config.optimizer
  name = o.name
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={name!r}; expected one of {OPTIMIZERS}.")
  momentum = float(o.momentum)
  weight_decay = float(o.weight_decay)

  def build(learning_rate):
    if name == "sgd":
      base = optax.sgd(learning_rate, momentum=momentum or None, nesterov=bool(o.nesterov))
    elif name == "adagrad":
      base = optax.adagrad(learning_rate)
    else:
      base = optax.adam(learning_rate)
    return optax.chain(optax.add_decayed_weights(weight_decay), base) if weight_decay else base

  return optax.inject_hyperparams(build)(learning_rate=float(o.learning_rate))


def current_learning_rate(opt_state: Any) -> jax.Array:
  return opt_state.hyperparams["learning_rate"]


def scale_learning_rate(state: TrainState, factor: float) -> TrainState:
  """The state with its optimizer's learning rate multiplied by `factor` (a plateau drop)."""
  hyper = dict(state.opt_state.hyperparams)
  hyper["learning_rate"] = hyper["learning_rate"] * jnp.asarray(factor, hyper["learning_rate"].dtype)
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))


def variables_of(state: TrainState) -> Any:
  """The flax variables of a state: `{"params": ..., **model_state}` (what `init` returned)."""
  return {"params": state.params, **state.model_state}


def train_step(state: TrainState, batch: dict, tables: Any, *, system: systems_lib.System,
               config: ml_collections.ConfigDict, tx: optax.GradientTransformation
               ) -> tuple[TrainState, dict]:
  """One update: the loss's gradient with respect to `params`, the optimizer, the constraints.

  Always reports the loss, gradient and parameter norms and the learning rate, plus the loss's
  aux entries (minus `model_state`, which becomes the state's new non-trained collections).
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    return system.loss({"params": params, **state.model_state}, batch, tables, rng, config)

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  aux = dict(aux)
  model_state = aux.pop("model_state", state.model_state)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if system.project is not None:
    params = system.project(params, config)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "param_norm": optax.global_norm(params),
             "learning_rate": current_learning_rate(state.opt_state), **aux}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       model_state=model_state), metrics


def make_train_step(system: systems_lib.System, config: ml_collections.ConfigDict,
                    tx: optax.GradientTransformation) -> Callable:
  """`step(state, batch, tables) -> (state, metrics)`, jitted with the state donated."""
  return jax.jit(lambda s, b, t: train_step(s, b, t, system=system, config=config, tx=tx),
                 donate_argnums=(0,))


def make_train_steps(system: systems_lib.System, config: ml_collections.ConfigDict,
                     tx: optax.GradientTransformation) -> Callable:
  """`steps(state, batches, tables) -> (state, metrics)`: `train_step` over the leading axis of
  `batches` ([n, batch, ...], one batch per step) in one jitted `lax.scan`, the state donated;
  metrics come back stacked ([n] per entry). The same updates as n calls of `make_train_step`'s
  function (the step's randomness is `fold_in(rng, state.step)`), without n dispatches from
  Python: `train.steps_per_call` (a step of a few milliseconds, as MUSLSE's, spends a noticeable
  share of its time in the host's per-call work)."""
  def steps(state, batches, tables):
    return jax.lax.scan(
        lambda s, b: train_step(s, b, tables, system=system, config=config, tx=tx), state, batches)
  return jax.jit(steps, donate_argnums=(0,))


def call_length(step: int, steps_per_call: int, num_steps: int, every: tuple[int, ...]) -> int:
  """How many steps the call starting at `step` runs: at most `steps_per_call`, never past
  `num_steps` nor past the next multiple of any positive entry of `every` (the logging,
  checkpoint and validation periods), so each of them falls on a call boundary at the very step it
  would with one step per call."""
  n = min(int(steps_per_call), num_steps - step)
  for period in every:
    if period > 0:
      n = min(n, period - step % period)
  return max(n, 1)


def stacked_batches(data: Any, step: int, n: int, mesh) -> dict[str, jax.Array]:
  """The batches of steps [step, step + n) stacked [n, batch, ...], the batch axis over `data`."""
  host = [data.train_batch(s) for s in range(step, step + n)]
  spec = sharding.batch_sharding(mesh).spec
  placed = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *spec))
  return {k: jax.make_array_from_process_local_data(placed, np.stack([b[k] for b in host]))
          for k in host[0]}


def _state_initializer(system: systems_lib.System, config: ml_collections.ConfigDict, info: dict,
                       tx: optax.GradientTransformation) -> Callable[[jax.Array], TrainState]:
  def init_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    variables = dict(system.init(config, info, init_rng))
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(state_rng), model_state=variables)
  return init_state


def create_train_state(system: systems_lib.System, config: ml_collections.ConfigDict, info: dict,
                       tx: optax.GradientTransformation, mesh) -> TrainState:
  """The initial state (seeded by `config.seed`), created already placed on the mesh
  (`jax.jit(init, out_shardings=...)`: parameters are born on their devices)."""
  init_state = _state_initializer(system, config, info, tx)
  rng = jax.random.key(config.seed)
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh),
                                jax.eval_shape(init_state, rng))
  return jax.jit(init_state, out_shardings=state_sharding)(rng)


def resolve_num_steps(config: ml_collections.ConfigDict, info: dict) -> int:
  """`train.num_steps`, or `train.epochs` x `train.examples_per_epoch` (0: the training split's
  `info["num_train_examples"]`) / `train.batch_size`, at least one step."""
  t = config.train
  if t.num_steps and t.epochs:
    raise ValueError(f"train.num_steps={t.num_steps} and train.epochs={t.epochs} are both set; "
                     "set the one you mean and the other to 0 (--config.train.epochs=0).")
  if t.num_steps:
    return int(t.num_steps)
  if not t.epochs:
    raise ValueError("set train.num_steps or train.epochs (both are 0).")
  return _epochs_to_steps(config, info, t.epochs, "train.epochs is set but the epoch size is "
                          "unknown: set train.examples_per_epoch (the data reports no "
                          "num_train_examples).")


def resolve_eval_every(config: ml_collections.ConfigDict, info: dict) -> int:
  """Steps between validations: `train.eval_every`, or `train.eval_every_epochs` epochs (of
  `train.examples_per_epoch` or the training split) when that is > 0, at least one step
  (`check_config` refuses both set)."""
  t = config.train
  if not t.eval_every_epochs:
    return int(t.eval_every)
  return _epochs_to_steps(config, info, t.eval_every_epochs, "train.eval_every_epochs is set but "
                          "the epoch size is unknown: set train.examples_per_epoch or "
                          "train.eval_every (steps).")


def _epochs_to_steps(config: ml_collections.ConfigDict, info: dict, epochs: float,
                     unknown_size: str) -> int:
  """`epochs` of `train.examples_per_epoch` (0: `info["num_train_examples"]`) examples in steps of
  `train.batch_size`, at least one; `unknown_size` is the error when neither gives a size."""
  examples = int(config.train.examples_per_epoch) or int(info.get("num_train_examples", 0))
  if not examples:
    raise ValueError(unknown_size)
  return max(1, int(round(float(epochs) * examples / int(config.train.batch_size))))


class _Preemption:
  """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a flag the loop checks after each step:
  it saves a checkpoint, then exits. A second Ctrl-C interrupts at once, as usual."""

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = threading.Event()
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self.requested.is_set():
      raise KeyboardInterrupt        # a second Ctrl-C: the user means now
    self.signum = signum
    self.requested.set()
    if signum == signal.SIGINT:
      logging.warning("Ctrl-C: saving a checkpoint after this step (press it again to stop now).")

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


class Preempted(SystemExit):
  """Raised after the checkpoint on SIGTERM / SIGINT is written: exit status 143 (SIGTERM, which
  tells schedulers to retry) or 130 (Ctrl-C)."""

  def __init__(self, step: int, signum: int = signal.SIGTERM):
    super().__init__(130 if signum == signal.SIGINT else 143)
    self.step = step


def _periodic(step: int, every: int, num_steps: int) -> bool:
  """The one predicate for logging, checkpointing and evaluation: every N steps and the last one."""
  return step == num_steps or (every > 0 and step % every == 0)


def _summarise(history: list[dict]) -> dict[str, float]:
  """Means of the step metrics since the last log. A dict-valued metric logs each entry as
  `<key>/<name>` (`task_losses` as `loss/<task>`), averaged over the steps where it is finite (a
  task not drawn in a step reports NaN). An entry of `history` is one call's metrics: scalars for
  one step, or [n] for a call of n steps (`train.steps_per_call`); every step counts once."""
  host = jax.device_get(history)
  steps = lambda values: np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in values])
  out = {}
  for key, first in host[0].items():
    if isinstance(first, dict):
      prefix = "loss" if key == "task_losses" else key
      for name in first:
        values = steps([h[key][name] for h in host])
        if np.isfinite(values).any():
          out[f"{prefix}/{name}"] = float(values[np.isfinite(values)].mean())
    else:
      out[key] = float(np.mean(steps([h[key] for h in host])))
  return out


def run(config: ml_collections.ConfigDict, workdir: str, *, allow_changes: tuple[str, ...] = ()
        ) -> dict[str, float]:
  """Runs `config.system` into `workdir`: its fit verb if it has one, else the training loop.
  Returns the final metrics as in metrics.json (`<key>/<metric>`)."""
  system = systems_lib.get(config.system)
  if system.fit is not None:
    return system.fit(config, workdir)
  return train_and_evaluate(config, workdir, allow_changes=allow_changes)


def finish(system: systems_lib.System, variables: Any, data: Any,
           config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """The final evaluation: `write_outputs`, then the system's metrics into metrics.json as
  `<key>/<metric>` (process 0); returns them with the prefix."""
  metrics = system.write_outputs(jax.device_get(variables), data, config, workdir)
  prefixed = {f"{system.key(config)}/{k}": float(v) for k, v in metrics.items()}
  if jax.process_index() == 0:
    utils.update_metrics_json(workdir, prefixed)
  return prefixed


class ConfigError(ValueError):
  """A config value the loop cannot run with (found before anything loads)."""


def check_config(config: ml_collections.ConfigDict) -> None:
  """The loop's own keys, checked before anything loads (a bad value fails in a second, naming
  the key, instead of deep inside numpy or orbax)."""
  t, o = config.train, config.optimizer
  problems = []
  for name, value, low in (("train.batch_size", t.batch_size, 1), ("train.num_steps", t.num_steps, 0),
                           ("train.log_every", t.log_every, 0), ("train.eval_every", t.eval_every, 0),
                           ("train.checkpoint_every", t.checkpoint_every, 0),
                           ("train.keep_checkpoints", t.keep_checkpoints, 1),
                           ("train.patience", t.patience, 1),
                           ("train.examples_per_epoch", t.examples_per_epoch, 0),
                           ("train.num_devices", t.num_devices, 0),
                           ("train.steps_per_call", t.steps_per_call, 1),
                           ("optimizer.plateau_drops", o.plateau_drops, 0)):
    if int(value) != value or value < low:
      problems.append(f"{name}={value!r} (an integer >= {low})")
  for name, value in (("train.epochs", t.epochs), ("train.eval_every_epochs", t.eval_every_epochs),
                      ("optimizer.momentum", o.momentum),
                      ("optimizer.weight_decay", o.weight_decay)):
    if not np.isfinite(value) or value < 0:
      problems.append(f"{name}={value!r} (a finite number >= 0)")
  if not (np.isfinite(o.learning_rate) and o.learning_rate > 0):
    problems.append(f"optimizer.learning_rate={o.learning_rate!r} (a finite number > 0)")
  if not 0 < o.plateau_factor <= 1:
    problems.append(f"optimizer.plateau_factor={o.plateau_factor!r} (in (0, 1])")
  if o.name not in OPTIMIZERS:
    problems.append(f"optimizer.name={o.name!r} (one of {', '.join(OPTIMIZERS)})")
  if t.eval_every and t.eval_every_epochs:
    problems.append(f"train.eval_every={t.eval_every} and train.eval_every_epochs="
                    f"{t.eval_every_epochs} are both set (set the one you mean, the other to 0)")
  if problems:
    raise ConfigError("invalid config: " + "; ".join(problems) + ". Fix it with --config.<key>=.")
  try:
    resolve_num_steps(config, {"num_train_examples": 1})   # both or neither duration set
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _claim_workdir(config: ml_collections.ConfigDict, workdir: str, allow_changes: tuple[str, ...]
                   ) -> workdir_lib.Lock | None:
  """Process 0: takes the workdir's lock, checks a rerun against the saved config.json, then
  writes config.json. Nothing is written when a check fails."""
  if jax.process_index() != 0:
    return None
  lock = workdir_lib.Lock(os.path.join(workdir, ".lock"), f"a {config.system} training run")
  new = json.loads(config.to_json_best_effort())
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    lock.acquire()
    try:
      changed = workdir_lib.check_resume(saved, new, allow_changes, workdir=workdir)
    except BaseException:
      lock.release()
      raise
    for k, (old, now) in changed.items():
      logging.warning("Resuming %s with %s changed: %r -> %r.", workdir, k, old, now)
  else:
    lock.acquire()
  utils.write_json_atomic(path, new)
  return lock


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_changes: tuple[str, ...] = ()) -> dict[str, float]:
  """Trains `config.system` in `workdir` (resuming if it holds checkpoints); returns the final
  metrics on `config.eval.split` as metrics.json holds them (`<key>/<metric>`).

  A rerun must match the config the run started with (`musemb.workdir.check_resume`); the keys in
  `allow_changes` (durations, the learning rate, ...) may differ. The workdir is locked for the
  run's lifetime: a second run on it is refused (`musemb.workdir.WorkdirBusyError`).
  """
  system = systems_lib.get(config.system)
  if system.loss is None:
    raise ValueError(f"system {system.name!r} is not trained by the loop; use train.run.")
  check_config(config)
  mesh = sharding.make_mesh(config.train.num_devices or None)
  sharding.check_batch_size(config.train.batch_size, mesh)
  lock = _claim_workdir(config, workdir, tuple(allow_changes))
  try:
    return _train(system, config, workdir, mesh)
  finally:
    if lock is not None:
      lock.release()


def _restore_latest(ckpt_dir: str, abstract_state: TrainState, quarantine: bool
                    ) -> tuple[int, Any, dict] | None:
  """(step, state, progress) of the newest checkpoint that restores, or None when there is none.

  A step that fails to restore (a truncated array file, an empty `_METADATA`) is logged with its
  folder and the error, moved aside to `<workdir>/corrupt_checkpoints/` when `quarantine` (so the
  run can save that step again), and the next older step is tried.

  Raises:
    RuntimeError: steps exist but none restores; names the folder.
  """
  exists = os.path.isdir(ckpt_dir)
  if jax.process_count() > 1:
    # Every process looks before any creates the folder (the managers that follow do), so all
    # take the same branch and meet at the same orbax barriers.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("musemb.train.checkpoints_scanned")
  if not exists:
    return None
  with ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True)) as m:
    steps = sorted(m.all_steps(), reverse=True)
    failures = []
    for s in steps:
      try:
        restored = m.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_like(abstract_state)),
            progress=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore/json errors)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        logging.warning("Checkpoint step %d in %s does not restore (%s: %s)%s.", s, ckpt_dir,
                        type(e).__name__, first, "; trying the previous one" if s != steps[-1]
                        else "")
        failures.append((s, f"{type(e).__name__}: {first}"))
        continue
      if failures and quarantine:
        aside = os.path.join(os.path.dirname(ckpt_dir), "corrupt_checkpoints")
        os.makedirs(aside, exist_ok=True)
        for bad, _ in failures:
          target = os.path.join(aside, f"{bad}-{int(time.time())}")
          os.replace(os.path.join(ckpt_dir, str(bad)), target)
          logging.warning("Moved the damaged step %d to %s; resuming from step %d.", bad, target, s)
      return s, restored.state, dict(restored.progress)
  if steps:
    raise RuntimeError(f"no checkpoint in {ckpt_dir} restores (tried steps "
                       f"{', '.join(f'{s} ({why})' for s, why in failures)}); move the folder "
                       "aside to start the run afresh, or use a new --workdir.")
  return None


def _train(system: systems_lib.System, config: ml_collections.ConfigDict, workdir: str,
           mesh) -> dict[str, float]:
  key = system.key(config)
  data = system.load_data(config, workdir)
  num_steps = resolve_num_steps(config, data.info)
  eval_every = resolve_eval_every(config, data.info)
  tables = sharding.put_replicated(data.tables, mesh)
  tx = make_optimizer(config)
  state = create_train_state(system, config, data.info, tx, mesh)

  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  # Before the managers open the folder: a damaged newest step is moved aside, an older one used.
  found = _restore_latest(ckpt_dir, state, quarantine=jax.process_index() == 0)
  # Two managers may save the same step at once (a best validation on a checkpoint step); on
  # multi-host jobs their background commits meet at coordination barriers named by the step, so
  # each manager gets its own barrier prefix or the two race for one barrier.
  manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      max_to_keep=config.train.keep_checkpoints, create=True,
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix="checkpoints")))
  best_manager = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "best"), options=ocp.CheckpointManagerOptions(
          max_to_keep=1, create=True, multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix="best")))
  progress = {"best_metric": None, "best_step": -1, "evals_without_improvement": 0,
              "stopped_early": False, "lr_drops": 0}
  max_drops = int(config.optimizer.plateau_drops)
  drop_factor = float(config.optimizer.plateau_factor)
  progress["base_learning_rate"] = float(config.optimizer.learning_rate)
  if found is not None:
    _, state, progress = found
    logging.info("Resumed from %s at step %d.", ckpt_dir, int(state.step))
    state = _apply_config_learning_rate(state, progress, config, drop_factor)
  # `best/` is written apart from `checkpoints/`: a crash between the two leaves a best step the
  # restored progress does not know; drop it so the replayed steps can save it again.
  for stale in [s for s in best_manager.all_steps() if s != progress["best_step"]]:
    logging.info("Dropping best/%d, newer than the resumed state.", stale)
    best_manager.delete(stale)
  can_validate = "valid" in data.splits
  if not can_validate and eval_every:
    logging.warning("The dataset has no valid split: no periodic validation or early stopping; "
                    "the final parameters are evaluated.")

  step_fn = make_train_step(system, config, tx)
  steps_per_call = int(config.train.steps_per_call)
  steps_fn = make_train_steps(system, config, tx) if steps_per_call > 1 else None
  # Periods that must fall on call boundaries (`call_length`): events happen at the same steps
  # whatever `train.steps_per_call` is, so a run is the same run.
  periods = (config.train.log_every, config.train.checkpoint_every,
             eval_every if can_validate else 0)
  writer = utils.MetricWriter(workdir)
  step = int(state.step)
  batch_size = config.train.batch_size
  history: list[dict] = []
  clock = time.perf_counter()
  clock_step = step
  # The ETA counts from the first step's end, so the compilation is not projected onto the rest.
  start_time, start_step = None, step

  def save(step: int, state: TrainState) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               progress=ocp.args.JsonSave(progress)), force=True)

  with _Preemption() as preemption:
    while step < num_steps and not progress["stopped_early"]:
      n = call_length(step, steps_per_call, num_steps, periods) if steps_fn else 1
      if n == 1:
        batch = sharding.shard_batch(data.train_batch(step), mesh)
        state, metrics = step_fn(state, batch, tables)
      else:
        state, metrics = steps_fn(state, stacked_batches(data, step, n, mesh), tables)
      history.append(metrics)
      step += n
      if start_time is None:
        jax.block_until_ready(metrics["loss"])
        start_time, start_step = time.perf_counter(), step

      preempted = preemption.requested.is_set()   # read once: a signal mid-call waits a call
      checkpoint_due = _periodic(step, config.train.checkpoint_every, num_steps) or preempted
      # On SIGTERM the checkpoint comes first: a validation could overrun the grace period.
      eval_due = (can_validate and not preempted
                  and _periodic(step, eval_every, num_steps))
      # Losses are checked for finiteness whenever they are logged, and always before an evaluation
      # or a checkpoint, so a diverged state is never saved over the last good one.
      if _periodic(step, config.train.log_every, num_steps) or checkpoint_due or eval_due:
        summary = _summarise(history)
        history = []
        # The loss alone can hide a diverged state (a ranking loss masks NaN scores to 0), so the
        # gradient and parameter norms are checked too.
        bad = [k for k in ("loss", "grad_norm", "param_norm") if not np.isfinite(summary[k])]
        if bad:
          manager.wait_until_finished()
          raise FloatingPointError(
              f"non-finite loss ({', '.join(f'{k}={summary[k]}' for k in bad)}) by step {step}; "
              f"the last good checkpoint in "
              f"{ckpt_dir} is step {manager.latest_step()}. Lower --config.optimizer.learning_rate "
              "or check the input features for NaN.")
        now = time.perf_counter()
        rate = (step - clock_step) / max(now - clock, 1e-9)
        summary["steps_per_sec"] = rate
        summary["examples_per_sec"] = rate * batch_size
        clock, clock_step = now, step
        writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
        eta = ((num_steps - step) * (now - start_time) / (step - start_step)
               if step > start_step else float("nan"))
        logging.info("step %d/%d (%.0f%%) loss %.4f | %.1f steps/s | ETA %s", step, num_steps,
                     100 * step / num_steps, summary["loss"], rate, utils.format_seconds(eta))

      if eval_due:
        val = system.evaluate(jax.device_get(variables_of(state)), data, config, "valid")
        writer.write_scalars(step, {f"valid/{key}/{k}": v for k, v in val.items()})
        metric = utils.select_metric(val, config.train.eval_metric)
        progress["last_eval_step"] = step
        logging.info("step %d validation %s = %.4f (%s)", step, config.train.eval_metric, metric,
                     "the first" if progress["best_metric"] is None else
                     f"best {progress['best_metric']:.4f} at step {progress['best_step']}")
        if progress["best_metric"] is None or metric > progress["best_metric"]:
          progress.update(best_metric=float(metric), best_step=step, evals_without_improvement=0)
          best_manager.save(step, args=ocp.args.StandardSave(variables_of(state)), force=True)
        else:
          progress["evals_without_improvement"] += 1
          if progress["evals_without_improvement"] >= config.train.patience:
            if progress["lr_drops"] < max_drops:
              # Lee et al. / Platt §6.1: lower the rate when validation stops improving, a fixed
              # number of times, before stopping.
              state = scale_learning_rate(state, drop_factor)
              progress["lr_drops"] += 1
              progress["evals_without_improvement"] = 0
              logging.info("step %d: %s has not improved for %d evaluations; learning rate "
                           "x%g -> %.3g (drop %d of %d).", step, config.train.eval_metric,
                           config.train.patience, drop_factor,
                           float(current_learning_rate(state.opt_state)), progress["lr_drops"],
                           max_drops)
            else:
              logging.info("Early stop at step %d: %s has not improved for %d evaluations.", step,
                           config.train.eval_metric, config.train.patience)
              progress["stopped_early"] = True

      if checkpoint_due or progress["stopped_early"]:
        save(step, state)

      if preempted:
        manager.wait_until_finished()
        best_manager.wait_until_finished()
        logging.warning("%s: saved a checkpoint at step %d in %s; rerun the same command to "
                        "resume.", signal.Signals(preemption.signum).name, step, ckpt_dir)
        writer.close()
        raise Preempted(step, preemption.signum)

  if manager.latest_step() != step:
    save(step, state)
  manager.wait_until_finished()
  best_manager.wait_until_finished()
  _record_training(workdir, config, progress, step, num_steps, can_validate)

  variables = variables_of(state)
  if best_manager.latest_step() is not None:
    variables = best_manager.restore(best_manager.latest_step(),
                                     args=ocp.args.StandardRestore(abstract_like(variables)))
    logging.info("Evaluating the best parameters (step %d).", best_manager.latest_step())
  metrics = finish(system, variables, data, config, workdir)
  writer.write_scalars(step, {f"{config.eval.split}/{k}": v for k, v in metrics.items()})
  writer.close()
  return metrics


def _record_training(workdir: str, config: ml_collections.ConfigDict, progress: dict, step: int,
                     num_steps: int, can_validate: bool) -> dict:
  """How the run ended, in the log and in `<workdir>/training.json` (read by the reports).

  A run whose last validation was its best when the steps ran out has not converged by the loop's
  own criterion (early stopping never saw it stop improving); it says so, with the way to continue
  it, instead of passing its last numbers off as final.
  """
  still_improving = bool(can_validate and progress["best_metric"] is not None
                         and not progress["stopped_early"]
                         and progress["best_step"] == progress.get("last_eval_step", -1))
  record = {"steps": int(step), "num_steps": int(num_steps),
            "eval_metric": config.train.eval_metric,
            "best_metric": progress["best_metric"], "best_step": int(progress["best_step"]),
            "last_eval_step": int(progress.get("last_eval_step", -1)),
            "stopped_early": bool(progress["stopped_early"]), "still_improving": still_improving,
            "lr_drops": int(progress["lr_drops"])}
  if still_improving:
    duration = "train.epochs" if config.train.epochs else "train.num_steps"
    logging.warning(
        "Still improving at the last step %d: its last validation (%s = %.4f) was its best, so "
        "the run may be too short. Continue it with a larger --config.%s and "
        "--allow_changes=%s on the same --workdir.", step, config.train.eval_metric,
        progress["best_metric"], duration, duration)
  elif progress["stopped_early"]:
    logging.info("Stopped early at step %d of %d: validation %s best at step %d.", step, num_steps,
                 config.train.eval_metric, progress["best_step"])
  if jax.process_index() == 0:
    utils.write_json_atomic(os.path.join(workdir, "training.json"), record)
  return record


def _apply_config_learning_rate(state: TrainState, progress: dict, config, drop_factor: float
                                ) -> TrainState:
  """On resume the checkpoint's learning rate (with its plateau drops) is kept unless the config's
  base rate changed since the run started: then the new base rate, times the drops taken, applies
  (so `--config.optimizer.learning_rate=...` on a rerun does what it says)."""
  base = float(config.optimizer.learning_rate)
  saved_base = progress.get("base_learning_rate")
  if saved_base is None or saved_base == base:
    progress["base_learning_rate"] = base
    return state
  rate = base * drop_factor ** progress.get("lr_drops", 0)
  logging.warning("optimizer.learning_rate changed from %g to %g since the run started; resuming "
                  "at %g.", saved_base, base, rate)
  progress["base_learning_rate"] = base
  hyper = dict(state.opt_state.hyperparams)
  hyper["learning_rate"] = jnp.full_like(hyper["learning_rate"], rate)
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) that tell orbax how to restore `tree`."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def load_variables(workdir: str, system: systems_lib.System, config: ml_collections.ConfigDict,
                   info: dict, *, best: bool = True, mesh=None) -> tuple[int, Any]:
  """(step, variables) of a run: the best by validation if kept (and `best`), else the latest
  checkpoint's. Restores onto the current devices whatever topology the run trained on."""
  mesh = mesh or sharding.make_mesh()
  init_state = _state_initializer(system, config, info, make_optimizer(config))
  abstract = jax.eval_shape(init_state, jax.random.key(0))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)), abstract)
  root = os.path.abspath(workdir)
  options = ocp.CheckpointManagerOptions(read_only=True)
  if best and os.path.isdir(os.path.join(root, "best")):
    with ocp.CheckpointManager(os.path.join(root, "best"), options=options) as m:
      if m.latest_step() is not None:
        try:
          return m.latest_step(), m.restore(m.latest_step(), args=ocp.args.StandardRestore(
              variables_of(abstract)))
        except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore/json errors)
          logging.warning("best/%d in %s does not restore (%s: %s); using the latest checkpoint "
                          "instead.", m.latest_step(), root, type(e).__name__,
                          str(e).strip().splitlines()[0][:300] if str(e).strip() else "")
  found = _restore_latest(os.path.join(root, "checkpoints"), abstract, quarantine=False)
  if found is not None:
    return found[0], variables_of(found[1])
  raise FileNotFoundError(f"no checkpoint in {workdir}/best or {workdir}/checkpoints; train first "
                          "with `python -m launch.train --workdir=...`.")


def evaluate_run(workdir: str) -> dict[str, float]:
  """Reruns the final evaluation of a trained run (best parameters) into its workdir."""
  system, config = systems_lib.for_workdir(workdir)
  if system.loss is None:
    raise ValueError(f"{workdir} holds a {system.name!r} run, which is evaluated by its fit "
                     "(rerun it: it resumes and evaluates).")
  data = system.load_data(config, workdir)
  _, variables = load_variables(workdir, system, config, data.info)
  return finish(system, variables, data, config, workdir)


def load_predictor(workdir: str, **options) -> systems_lib.Predictor:
  """The run in `workdir` as its system's `Predictor` (best parameters, loaded once)."""
  system, config = systems_lib.for_workdir(workdir)
  if system.predictor is None:
    raise ValueError(f"{workdir} holds a {system.name!r} run, which answers no queries; the "
                     f"systems that do: {[n for n in systems_lib.names() if systems_lib.get(n).predictor]}.")
  restore = lambda info: jax.device_get(load_variables(workdir, system, config, info)[1])
  return system.predictor(workdir, config, restore, **options)
