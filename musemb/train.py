"""The one training loop every system shares.

`train_and_evaluate(config, workdir)` runs a system (a module of `musemb.systems`, see
`musemb.systems.get_system`) from its data to `metrics.json`:

* one `TrainState` pytree (step, params, optimizer state, RNG key data), created already sharded
  (`jax.jit(init, out_shardings=...)`) and placed on a `(data, model)` mesh even on one device;
* one pure `train_step(state, batch, tables) -> (state, metrics)`, jitted with the state donated;
  randomness (task choice, negative sampling) is `fold_in(rng, step)` inside it, so a run's
  trajectory depends only on the seed and the step, never on how many devices or restarts it saw;
* the host batcher is a deterministic function of the step (`musemb.data.pipeline.EpochBatcher`), so
  the data position is the step and resuming is exact;
* orbax `CheckpointManager`: periodic, keep N, final, and on SIGTERM (preemption) before exiting;
  a second manager keeps the best parameters by the validation metric;
* TensorBoard scalars (loss, gradient/parameter norms, learning rate, per-task losses, steps/s,
  examples/s, validation metrics), progress lines with ETA;
* periodic validation with early stopping (Algorithm 1 of Weston et al. 2011: "until validation
  error does not improve"), patience counted in evaluations, state kept in the checkpoint;
* a non-finite loss stops the run with `FloatingPointError` before any checkpoint of the bad state
  is written, so the last good checkpoint stays intact.

A system module provides `load_data(config, workdir)`, `init(config, info, rng)`,
`loss(params, batch, tables, rng, config, task_names)`, `project(params, config)`,
`evaluate(params, data, config, split)` (validation) and `write_outputs(params, data, config, workdir)`
(the final evaluation on `config.eval.split`: writes metrics.json and friends, returns the metrics).
The `tables` argument (device-resident lookup tables such as the training songs' features, used to
score sampled negatives) is a departure from DESIGN.md's `loss(params, batch, rng, config)`: it keeps
large constants out of the per-step batch without closing over them in the jitted function.

Systems with non-trained variables (SampleCNN's batch-norm statistics) set `STATEFUL = True`: `init`
returns `(params, model_state)`, `loss(..., model_state=)` returns the updated state in
`aux["model_state"]`, the state rides in `TrainState.model_state` (checkpointed with the rest), and
evaluation, `best/` and `load_state` see the flax variables `{"params": ..., "batch_stats": ...}`.

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
  Optional keys: `momentum` (sgd; 0 = plain SGD), `nesterov`, and `weight_decay`, an L2 term
  added to the gradient before the update (PyTorch's `weight_decay`, which Won et al. use with Adam).
  """
  o = config.optimizer
  name = o.name
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer.name={name!r}; expected one of {OPTIMIZERS}.")
  momentum = float(o.get("momentum", 0.0) or 0.0)
  weight_decay = float(o.get("weight_decay", 0.0) or 0.0)

  def build(learning_rate):
    if name == "sgd":
      base = optax.sgd(learning_rate, momentum=momentum or None,
                       nesterov=bool(o.get("nesterov", False)))
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


def is_stateful(system) -> bool:
  """Systems with non-trained variables (batch norm statistics) set `STATEFUL = True`: their `init`
  returns `(params, model_state)` and their `loss` takes `model_state=` and returns the updated one
  as `aux["model_state"]`."""
  return bool(getattr(system, "STATEFUL", False))


def variables(params: Any, model_state: Any) -> Any:
  """What evaluation, prediction and `best/` see: the params alone for stateless systems, else the
  flax variables `{"params": ..., **model_state}` (e.g. with `batch_stats`)."""
  return {"params": params, **model_state} if model_state else params


def train_step(state: TrainState, batch: dict, tables: Any, *, system, config, tx, task_names
               ) -> tuple[TrainState, dict]:
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  stateful = is_stateful(system)

  def loss_fn(params):
    if stateful:
      return system.loss(params, batch, tables, rng, config, task_names,
                         model_state=state.model_state)
    return system.loss(params, batch, tables, rng, config, task_names)

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  aux = dict(aux)
  model_state = aux.pop("model_state") if stateful else state.model_state
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  params = system.project(params, config)
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "param_norm": optax.global_norm(params),
             "learning_rate": current_learning_rate(state.opt_state), **aux}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       model_state=model_state), metrics


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (save, then exit)."""

  def __init__(self):
    self.requested = threading.Event()
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self.requested.set())
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Preempted(SystemExit):
  """Raised after the checkpoint on SIGTERM is written; the exit code tells schedulers to retry."""

  def __init__(self, step: int):
    super().__init__(143)
    self.step = step


def _periodic(step: int, every: int, num_steps: int) -> bool:
  """The one predicate for logging, checkpointing and evaluation: every N steps and the last one."""
  return step == num_steps or (every > 0 and step % every == 0)


def _summarise(history: list[dict], task_names: tuple[str, ...]) -> dict[str, float]:
  """Means of the step metrics since the last log; per-task losses for the tasks that ran."""
  host = jax.device_get(history)
  out = {}
  for key in host[0]:
    if key in ("task", "task_losses"):
      continue
    out[key] = float(np.mean([h[key] for h in host]))
  if "task_losses" in host[0]:
    losses = np.stack([h["task_losses"] for h in host])          # [steps, tasks]
    ran = np.isfinite(losses)
    for i, name in enumerate(task_names):
      if ran[:, i].any():
        out[f"loss/{name}"] = float(losses[ran[:, i], i].mean())
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.system` in `workdir` (resuming if it holds checkpoints); returns test metrics."""
  system = systems_lib.get_system(config.system)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    utils.write_json_atomic(os.path.join(workdir, "config.json"),
                            json.loads(config.to_json_best_effort()))
  mesh = sharding.make_mesh(config.train.num_devices or None)
  sharding.check_batch_size(config.train.batch_size, mesh)

  data = system.load_data(config, workdir)
  tables = sharding.put_replicated(data.tables, mesh)
  tx = make_optimizer(config)

  init_state = _state_initializer(system, config, data, tx)
  rng = jax.random.key(config.seed)
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh),
                                jax.eval_shape(init_state, rng))
  state = jax.jit(init_state, out_shardings=state_sharding)(rng)

  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      max_to_keep=config.train.keep_checkpoints, create=True))
  best_manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "best"),
                                       options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
  progress = {"best_metric": None, "best_step": -1, "evals_without_improvement": 0,
              "stopped_early": False, "lr_drops": 0}
  max_drops = int(config.optimizer.get("plateau_drops", 0) or 0)
  drop_factor = float(config.optimizer.get("plateau_factor", 0.2))
  progress["base_learning_rate"] = float(config.optimizer.learning_rate)
  if manager.latest_step() is not None:
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(state)),
        progress=ocp.args.JsonRestore()))
    state, progress = restored.state, dict(restored.progress)
    logging.info("Resumed from %s at step %d.", ckpt_dir, int(state.step))
    state = _apply_config_learning_rate(state, progress, config, drop_factor)
  # `best/` is written apart from `checkpoints/`: a crash between the two leaves a best step the
  # restored progress does not know; drop it so the replayed steps can save it again.
  for stale in [s for s in best_manager.all_steps() if s != progress["best_step"]]:
    logging.info("Dropping best/%d, newer than the resumed state.", stale)
    best_manager.delete(stale)
  can_validate = "valid" in data.splits
  if not can_validate and config.train.eval_every:
    logging.warning("The dataset has no valid split: no periodic validation or early stopping; "
                    "the final parameters are evaluated.")

  step_fn = jax.jit(
      lambda s, b, t: train_step(s, b, t, system=system, config=config, tx=tx,
                                 task_names=data.task_names),
      donate_argnums=(0,))
  writer = utils.MetricWriter(workdir)
  num_steps = int(config.train.num_steps)
  step = int(state.step)
  batch_size = config.train.batch_size
  history: list[dict] = []
  clock = time.perf_counter()
  clock_step = step
  start_time, start_step = clock, step

  def save(step: int, state: TrainState) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               progress=ocp.args.JsonSave(progress)), force=True)

  with _Preemption() as preemption:
    while step < num_steps and not progress["stopped_early"]:
      batch = sharding.shard_batch(data.train_batch(step), mesh)
      state, metrics = step_fn(state, batch, tables)
      history.append(metrics)
      step += 1

      preempted = preemption.requested.is_set()   # read once: a signal mid-step waits a step
      checkpoint_due = _periodic(step, config.train.checkpoint_every, num_steps) or preempted
      # On SIGTERM the checkpoint comes first: a validation could overrun the grace period.
      eval_due = (can_validate and not preempted
                  and _periodic(step, config.train.eval_every, num_steps))
      # Losses are checked for finiteness whenever they are logged, and always before an evaluation
      # or a checkpoint, so a diverged state is never saved over the last good one.
      if _periodic(step, config.train.log_every, num_steps) or checkpoint_due or eval_due:
        summary = _summarise(history, data.task_names)
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
        eta = (num_steps - step) * (now - start_time) / max(step - start_step, 1)
        logging.info("step %d/%d (%.0f%%) loss %.4f | %.1f steps/s | ETA %s", step, num_steps,
                     100 * step / num_steps, summary["loss"], rate, utils.format_seconds(eta))

      if eval_due:
        val = system.evaluate(variables(state.params, state.model_state), data, config, "valid")
        writer.write_scalars(step, {f"valid/{k}": v for k, v in val.items()})
        metric = utils.select_metric(val, config.train.eval_metric)
        logging.info("step %d validation %s = %.4f (best %s at step %d)", step,
                     config.train.eval_metric, metric, progress["best_metric"], progress["best_step"])
        if progress["best_metric"] is None or metric > progress["best_metric"]:
          progress.update(best_metric=float(metric), best_step=step, evals_without_improvement=0)
          best_manager.save(step, args=ocp.args.StandardSave(
              variables(state.params, state.model_state)), force=True)
        else:
          progress["evals_without_improvement"] += 1
          if progress["evals_without_improvement"] >= config.train.patience:
            if progress.get("lr_drops", 0) < max_drops:
              # Lee et al. / Platt §6.1: lower the rate when validation stops improving, a fixed
              # number of times, before stopping.
              state = scale_learning_rate(state, drop_factor)
              progress["lr_drops"] = progress.get("lr_drops", 0) + 1
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
        logging.warning("SIGTERM: saved a checkpoint at step %d in %s; rerun the same command to "
                        "resume.", step, ckpt_dir)
        writer.close()
        raise Preempted(step)

  if manager.latest_step() != step:
    save(step, state)
  manager.wait_until_finished()
  best_manager.wait_until_finished()

  params = variables(state.params, state.model_state)
  if best_manager.latest_step() is not None:
    params = best_manager.restore(best_manager.latest_step(),
                                  args=ocp.args.StandardRestore(abstract_like(params)))
    logging.info("Evaluating the best parameters (step %d).", best_manager.latest_step())
  metrics = system.write_outputs(params, data, config, workdir)
  writer.write_scalars(step, {f"{config.eval.split}/{k}": v for k, v in metrics.items()})
  writer.close()
  return metrics


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


def _state_initializer(system, config, data, tx) -> Callable[[jax.Array], TrainState]:
  def init_state(rng):
    init_rng, state_rng = jax.random.split(rng)
    params, model_state = system.init(config, data.info, init_rng), {}
    if is_stateful(system):
      params, model_state = params
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(state_rng), model_state=model_state)
  return init_state


def load_state(workdir: str, config: ml_collections.ConfigDict, data, *, best: bool = True,
               mesh=None) -> tuple[int, Any]:
  """(step, params) from a run: the best parameters by validation if kept (and `best`), else the
  latest checkpoint's. Restores onto the current devices whatever topology the run trained on.
  For stateful systems "params" are the variables `{"params": ..., "batch_stats": ...}`."""
  system = systems_lib.get_system(config.system)
  mesh = mesh or sharding.make_mesh()
  init_state = _state_initializer(system, config, data, make_optimizer(config))
  abstract = jax.eval_shape(init_state, jax.random.key(0))
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)), abstract)
  root = os.path.abspath(workdir)
  options = ocp.CheckpointManagerOptions(read_only=True)
  if best and os.path.isdir(os.path.join(root, "best")):
    with ocp.CheckpointManager(os.path.join(root, "best"), options=options) as m:
      if m.latest_step() is not None:
        return m.latest_step(), m.restore(m.latest_step(), args=ocp.args.StandardRestore(
            variables(abstract.params, abstract.model_state)))
  if os.path.isdir(os.path.join(root, "checkpoints")):
    with ocp.CheckpointManager(os.path.join(root, "checkpoints"), options=options) as m:
      if m.latest_step() is not None:
        restored = m.restore(m.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
        return m.latest_step(), variables(restored.state.params, restored.state.model_state)
  raise FileNotFoundError(f"no checkpoint in {workdir}/best or {workdir}/checkpoints; train first "
                          "with `python -m launch.train --workdir=...`.")


def load_params(workdir: str, config: ml_collections.ConfigDict, data) -> Any:
  """The parameters `evaluate`/`predict` use: the best by validation, else the latest checkpoint."""
  return load_state(workdir, config, data)[1]
