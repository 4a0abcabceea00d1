"""The shared training loop on MUSLSE's tiny config: end to end, resume, preemption, devices."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from musemb import sharding
from musemb import systems
from musemb import train
from musemb.systems import muslse
from musemb.systems.muslse import evaluation as muslse_evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))






def test_tiny_run_writes_metrics_and_checkpoints(tiny_config, tmp_path, final_params):
  workdir = str(tmp_path / "run")
  metrics = train.train_and_evaluate(tiny_config, workdir)
  with open(os.path.join(workdir, "metrics.json")) as f:
    written = json.load(f)
  # The loop owns the prefix: what it returns is what metrics.json holds, `<system>/<task>/...`.
  for task in ("tag_prediction", "artist_prediction", "song_prediction", "similar_songs",
               "similar_artists"):
    assert written[f"muslse/{task}/p@1"] == pytest.approx(metrics[f"muslse/{task}/p@1"]), task
  assert "cosine/similar_songs/p@1" in written
  # ... and the numbers are the best checkpoint's test precision, recomputed here.
  _, best = final_params(workdir, best=True)
  data = systems.get("muslse").load_data(tiny_config, workdir)
  recomputed, _ = muslse_evaluation.evaluate_tasks(best, data, tiny_config, "test")
  for key, value in recomputed.items():
    assert metrics[f"muslse/{key}"] == pytest.approx(value, abs=1e-9), key
  # Max-norm constraints (1)-(3) hold for the trained parameters.
  step, params = final_params(workdir)
  assert step == tiny_config.train.num_steps
  for name in ("V", "A", "T"):
    norms = np.linalg.norm(params[name], axis=-1)
    assert norms.max() <= muslse.table_max_norm(tiny_config, name) * (1 + 1e-5), name
  # A finished run rerun is a no-op resume: same step, same metrics.
  again = train.train_and_evaluate(tiny_config, workdir)
  assert again["muslse/tag_prediction/p@3"] == pytest.approx(metrics["muslse/tag_prediction/p@3"])


def test_training_beats_initialisation(tiny_config, tmp_path):
  tiny_config.train.num_steps = 1
  tiny_config.train.eval_every = 0
  before = train.train_and_evaluate(tiny_config, str(tmp_path / "one_step"))
  tiny_config.train.num_steps = 200
  tiny_config.train.eval_every = 100
  after = train.train_and_evaluate(tiny_config, str(tmp_path / "trained"))
  assert after["muslse/tag_prediction/p@3"] > before["muslse/tag_prediction/p@3"]
  assert after["muslse/artist_prediction/p@1"] > before["muslse/artist_prediction/p@1"]


_RUN = """
import sys, json
from absl import logging
logging.set_verbosity(logging.WARNING)
from configs import muslse
from musemb import sharding
from musemb import systems
from musemb import train
from musemb.systems.muslse import evaluation as muslse_evaluation
c = muslse.get_config("tiny")
c.data_dir = sys.argv[1]
c.train.num_steps = int(sys.argv[3])
c.train.num_devices = int(sys.argv[4])
c.train.checkpoint_every = 5
c.train.log_every = 1
c.train.eval_every = 0
c.model.ensemble = 2
train.train_and_evaluate(c, sys.argv[2])
"""


def test_sigterm_checkpoint_and_exact_resume(tiny_dataset_dir, tmp_path, repo_env, final_params):
  """A run killed with SIGTERM and restarted ends with exactly the uninterrupted run's parameters."""
  steps = "60"
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  subprocess.run([sys.executable, "-c", _RUN, tiny_dataset_dir, straight, steps, "1"], check=True,
                 env=repo_env(), cwd=ROOT)
  proc = subprocess.Popen([sys.executable, "-c", _RUN, tiny_dataset_dir, killed, steps, "1"],
                          env=repo_env(), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  ckpt = os.path.join(killed, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
      break
    time.sleep(0.05)
  assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=240)[0].decode()
  assert proc.returncode == 143, out[-3000:]
  interrupted_at = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  assert interrupted_at < int(steps), "the run finished before SIGTERM; the test proves nothing"
  subprocess.run([sys.executable, "-c", _RUN, tiny_dataset_dir, killed, steps, "1"], check=True,
                 env=repo_env(), cwd=ROOT)
  step_a, a = final_params(straight)
  step_b, b = final_params(killed)
  assert step_a == step_b == int(steps)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name])


def test_eight_devices_follow_the_one_device_trajectory(tiny_dataset_dir, tmp_path, repo_env,
                                                       final_params):
  one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
  env = repo_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
  for workdir, n in ((one, "1"), (eight, "8")):
    subprocess.run([sys.executable, "-c", _RUN, tiny_dataset_dir, workdir, "30", n], check=True,
                   env=env, cwd=ROOT)
  _, a = final_params(one)
  _, b = final_params(eight)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("override, message", [
    ("--config.model.embed_dimm=3", "embed_dimm"),
    ("--config.model.embed_dim=abc", "embed_dim"),
])
def test_bad_override_is_a_clear_error(tmp_path, override, message, repo_env):
  proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/muslse.py:tiny",
                         f"--workdir={tmp_path}", override], env=repo_env(), cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_config, tmp_path,
                                                              monkeypatch, final_params):
  import dataclasses
  import jax.numpy as jnp
  workdir = str(tmp_path / "nan")
  tiny_config.train.num_steps = 10
  tiny_config.train.checkpoint_every = 5
  tiny_config.train.eval_every = 0
  train.train_and_evaluate(tiny_config, workdir)
  tiny_config.train.num_steps = 20
  # The resumed run diverges: its loss (and so every gradient) becomes NaN.
  muslse = systems.get("muslse")

  def nan_loss(*args):
    value, aux = muslse.loss(*args)
    return value * jnp.nan, aux

  monkeypatch.setattr(systems, "get", lambda name: dataclasses.replace(muslse, loss=nan_loss))
  with pytest.raises(FloatingPointError, match="non-finite loss"):
    train.train_and_evaluate(tiny_config, workdir, allow_changes=("train.num_steps",))
  monkeypatch.undo()
  step, params = final_params(workdir)
  assert step == 10
  assert all(np.isfinite(p).all() for p in params.values())


def test_crash_between_best_and_checkpoint_saves_resumes(tiny_config, tmp_path, final_params):
  """A crash after best/N but before checkpoints/N is written must not wedge the next run."""
  import shutil
  workdir = str(tmp_path / "crash")
  tiny_config.train.num_steps = 20
  tiny_config.train.eval_every = 10
  tiny_config.train.checkpoint_every = 10
  first = train.train_and_evaluate(tiny_config, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "20"))
  again = train.train_and_evaluate(tiny_config, workdir)
  assert again["muslse/tag_prediction/p@3"] == pytest.approx(first["muslse/tag_prediction/p@3"])
  assert final_params(workdir)[0] == 20


def test_the_jitted_step_compiles_once(tiny_config):
  """Batches of later steps (new ids, same shapes) reuse the first step's compilation."""
  system = systems.get("muslse")
  data = system.load_data(tiny_config, "/nonexistent-unused")
  mesh = sharding.make_mesh(1)
  tx = train.make_optimizer(tiny_config)
  state = train.create_train_state(system, tiny_config, data.info, tx, mesh)
  tables = sharding.put_replicated(data.tables, mesh)
  step = train.make_train_step(system, tiny_config, tx)
  for i in range(3):
    state, _ = step(state, sharding.shard_batch(data.train_batch(i), mesh), tables)
  assert step._cache_size() == 1   # pylint: disable=protected-access


@pytest.mark.parametrize("num_steps, epochs, per_epoch, want", [
    (100, 0, 0, 100),          # steps as given
    (0, 2.0, 0, 2 * 50 // 8),  # epochs of the training split (50 examples), batch 8
    (0, 1.5, 160, 30),         # epochs of a declared size: 1.5 * 160 / 8
])
def test_durations_become_steps_at_run_time(num_steps, epochs, per_epoch, want):
  from configs import common
  c = common.base("muslse")
  c.train.batch_size, c.train.num_steps, c.train.epochs = 8, num_steps, epochs
  c.train.examples_per_epoch = per_epoch
  assert train.resolve_num_steps(c, {"num_train_examples": 50}) == want
  c.train.batch_size = 16    # a changed batch size never leaves the step count stale
  if epochs:
    assert train.resolve_num_steps(c, {"num_train_examples": 50}) == round(want / 2)


def test_durations_set_twice_or_not_at_all_are_errors():
  from configs import common
  c = common.base("muslse")
  with pytest.raises(ValueError, match="both are 0"):
    train.resolve_num_steps(c, {})
  c.train.num_steps, c.train.epochs = 10, 2.0
  with pytest.raises(ValueError, match="both set"):
    train.resolve_num_steps(c, {})
  c.train.num_steps = 0
  with pytest.raises(ValueError, match="examples_per_epoch"):
    train.resolve_num_steps(c, {})


def test_eval_every_epochs_follows_the_training_split():
  from configs import common
  c = common.base("muslse")
  c.train.batch_size, c.train.eval_every = 8, 123
  assert train.resolve_eval_every(c, {"num_train_examples": 50}) == 123
  c.train.eval_every_epochs = 2.0
  assert train.resolve_eval_every(c, {"num_train_examples": 50}) == round(2 * 50 / 8)
  # Ten times the data validates ten times fewer often in steps, as often in epochs.
  assert train.resolve_eval_every(c, {"num_train_examples": 500}) == round(2 * 500 / 8)
  c.train.examples_per_epoch = 80
  assert train.resolve_eval_every(c, {"num_train_examples": 50}) == 20
  c.train.examples_per_epoch, c.train.eval_every_epochs = 0, 0.01
  assert train.resolve_eval_every(c, {"num_train_examples": 50}) == 1
  with pytest.raises(ValueError, match="epoch size is unknown"):
    train.resolve_eval_every(c, {})


def test_a_run_still_improving_at_its_last_step_says_so(tiny_config, tmp_path):
  from musemb.systems.muslse import report
  tiny_config.train.eval_every = 0    # one validation, at the end: the best is the last
  workdir = str(tmp_path / "short")
  train.train_and_evaluate(tiny_config, workdir)
  with open(os.path.join(workdir, "training.json")) as f:
    record = json.load(f)
  assert record["still_improving"] and not record["stopped_early"]
  assert record["steps"] == record["num_steps"] == 40 and record["last_eval_step"] == 40
  text = open(report.write_report(workdir)).read()
  assert "**Still improving** when its 40 steps ran out" in text
  # Patience 1, many validations: the loop stops on the first one that does not improve.
  tiny_config.train.patience, tiny_config.train.eval_every = 1, 5
  tiny_config.train.num_steps = 2000
  workdir = str(tmp_path / "long")
  train.train_and_evaluate(tiny_config, workdir)
  with open(os.path.join(workdir, "training.json")) as f:
    record = json.load(f)
  assert record["stopped_early"] and not record["still_improving"]
  assert record["steps"] < 2000 and record["best_step"] < record["steps"]
  assert "Stopped early at step" in open(report.write_report(workdir)).read()
  # A run that ran out of steps after its peak is neither stopped nor still improving.
  progress = {"best_metric": 0.5, "best_step": 20, "last_eval_step": 40, "stopped_early": False,
              "evals_without_improvement": 1, "lr_drops": 0}
  record = train._record_training(workdir, tiny_config, progress, 40, 40, True)  # pylint: disable=protected-access
  assert not record["stopped_early"] and not record["still_improving"]
  assert "Ran all 40 steps (best validation" in open(report.write_report(workdir)).read()


def test_call_length_ends_calls_at_every_period():
  assert train.call_length(0, 8, 100, (10, 0)) == 8
  assert train.call_length(8, 8, 100, (10, 0)) == 2          # the log/eval step 10 ends a call
  assert train.call_length(10, 8, 100, (10, 25)) == 8
  assert train.call_length(18, 8, 100, (10, 25)) == 2
  assert train.call_length(20, 8, 100, (10, 25)) == 5        # 25 is a checkpoint step
  assert train.call_length(96, 8, 100, ()) == 4              # never past num_steps
  assert train.call_length(5, 1, 100, (10,)) == 1


def test_steps_per_call_is_the_same_run(tiny_config, tmp_path, final_params):
  """Several steps per jitted call (lax.scan) give the parameters, checkpoints and validations of
  one step per call: calls end at every log, checkpoint and validation step."""
  runs = {}
  for steps_per_call in (1, 4):
    config = tiny_config.copy_and_resolve_references()
    config.train.num_steps, config.train.steps_per_call = 26, steps_per_call
    config.train.log_every, config.train.checkpoint_every, config.train.eval_every = 7, 10, 6
    config.train.keep_checkpoints = 5
    workdir = str(tmp_path / f"calls{steps_per_call}")
    metrics = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "training.json")) as f:
      record = json.load(f)
    runs[steps_per_call] = (metrics, record, sorted(os.listdir(os.path.join(workdir, "checkpoints"))),
                            final_params(workdir)[1])
  (m1, r1, c1, p1), (m4, r4, c4, p4) = runs[1], runs[4]
  assert c1 == c4 and r1 == r4 and r1["steps"] == 26
  for name in p1:
    np.testing.assert_allclose(p1[name], p4[name], rtol=1e-5, atol=1e-6)
  for key, value in m1.items():
    assert m4[key] == pytest.approx(value, abs=1e-6), key
