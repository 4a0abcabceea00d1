"""A workdir that survives mistakes: mismatched reruns, damaged checkpoints, two runs at once, bad
values, odd encodings, Ctrl-C, and what a user reads (musemb/workdir.py and the loop)."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from musemb import evaluate
from musemb import systems
from musemb import train
from musemb import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))






@pytest.fixture
def short(tiny_config):
  tiny_config.train.num_steps = 40
  tiny_config.train.checkpoint_every = 20
  tiny_config.train.eval_every = 20
  return tiny_config


# ----------------------------------------------------------------------------- 1. reruns


def test_a_rerun_with_another_shape_is_refused_and_the_run_still_evaluates(short, tmp_path):
  workdir = str(tmp_path / "run")
  first = train.train_and_evaluate(short, workdir)
  saved = open(os.path.join(workdir, "config.json")).read()
  other = short.copy_and_resolve_references()
  other.model.embed_dim = 8
  with pytest.raises(workdir_lib.ConfigMismatchError) as e:
    train.train_and_evaluate(other, workdir)
  assert "model.embed_dim: 16 in the saved run, 8 now" in str(e.value)
  assert "new --workdir" in str(e.value)
  assert open(os.path.join(workdir, "config.json")).read() == saved   # untouched
  again = train.evaluate_run(workdir)
  assert again["muslse/tag_prediction/p@3"] == pytest.approx(first["muslse/tag_prediction/p@3"])
  # Even --allow_changes cannot change a shape.
  with pytest.raises(workdir_lib.ConfigMismatchError, match="cannot change on resume"):
    train.train_and_evaluate(other, workdir, allow_changes=("model.embed_dim",))


def test_a_run_saved_before_a_key_existed_resumes_only_with_the_old_behaviour():
  saved = {"model": {"embed_dim": 100}, "train": {"num_steps": 10}}
  new = {"model": {"embed_dim": 100, "bag_form": "auto", "dtype": "float32"},
         "train": {"num_steps": 10}}
  assert workdir_lib.check_resume(saved, new) == {}
  new["model"]["dtype"] = "bfloat16"
  with pytest.raises(workdir_lib.ConfigMismatchError, match="model.dtype"):
    workdir_lib.check_resume(saved, new)
  # MUSLSE's per-tag bias: a run saved before the key resumes without one, not with one.
  saved = {"model": {"embed_dim": 100, "bag_form": "auto"}}
  assert workdir_lib.check_resume(saved, {"model": {"embed_dim": 100, "bag_form": "auto",
                                                    "label_bias": False}}) == {}
  with pytest.raises(workdir_lib.ConfigMismatchError, match="model.label_bias"):
    workdir_lib.check_resume(saved, {"model": {"embed_dim": 100, "bag_form": "auto",
                                               "label_bias": True}})
  # A block that matters only when an added key selects it reads as the new values.
  saved = {"model": {"head": "single"}}
  new = {"model": {"head": "single", "name": "samplecnn", "shortchunk": {"n_mels": 128}}}
  assert workdir_lib.check_resume(saved, new) == {}
  new["model"]["name"] = "shortchunk"
  with pytest.raises(workdir_lib.ConfigMismatchError, match="model.name"):
    workdir_lib.check_resume(saved, new)
  # A key the new config does not have is not invented for the saved one.
  assert workdir_lib.check_resume({"model": {}}, {"model": {}}) == {}


def test_resumable_keys_change_only_when_asked(short, tmp_path, final_params):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(short, workdir)
  longer = short.copy_and_resolve_references()
  longer.train.num_steps = 60
  longer.train.log_every = 7                                   # bookkeeping: always free
  with pytest.raises(workdir_lib.ConfigMismatchError, match="--allow_changes=train.num_steps"):
    train.train_and_evaluate(longer, workdir)
  train.train_and_evaluate(longer, workdir, allow_changes=("train.num_steps",))
  assert final_params(workdir)[0] == 60
  assert json.load(open(os.path.join(workdir, "config.json")))["train"]["num_steps"] == 60


# ----------------------------------------------------------------------------- 2. damaged checkpoints


def _largest_file(folder):
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "empty_metadata"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_step(short, tmp_path, damage,
                                                                     final_params):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(short, workdir)
  latest = os.path.join(workdir, "checkpoints", "40")
  if damage == "truncate":
    victim = _largest_file(os.path.join(latest, "state"))
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 3)
  else:
    with open(os.path.join(latest, "state", "_METADATA"), "w"):
      pass
  records = []
  handler = logging.Handler()
  handler.emit = lambda r: records.append(r.getMessage())
  logging.getLogger("absl").addHandler(handler)
  try:
    step, _ = train.load_variables(workdir, systems.get("muslse"), short,
                                   systems.get("muslse").load_data(short, workdir).info,
                                   best=False)
    assert step == 20                                       # read-only tools fall back too
    longer = short.copy_and_resolve_references()
    longer.train.num_steps = 60
    train.train_and_evaluate(longer, workdir, allow_changes=("train.num_steps",))
  finally:
    logging.getLogger("absl").removeHandler(handler)
  assert any("Checkpoint step 40" in r and "does not restore" in r for r in records), records
  assert any("resuming from step 20" in r for r in records), records
  assert os.listdir(os.path.join(workdir, "corrupt_checkpoints"))
  assert final_params(workdir)[0] == 60


def test_no_restorable_checkpoint_names_the_folder(short, tmp_path):
  workdir = str(tmp_path / "run")
  short.train.keep_checkpoints = 1
  train.train_and_evaluate(short, workdir)
  with open(os.path.join(workdir, "checkpoints", "40", "state", "_METADATA"), "w"):
    pass
  with pytest.raises(RuntimeError, match=r"no checkpoint in .*checkpoints restores"):
    train.train_and_evaluate(short, workdir)


# ----------------------------------------------------------------------------- 3. two runs at once


_HOLD = """
import sys, time
from musemb import workdir
with workdir.Lock(sys.argv[1], "a test holder"):
  print("held", flush=True)
  time.sleep(60)
"""


def _holder(path, env):
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, path], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_run_on_a_live_workdir_is_refused_before_it_loads_anything(short, tmp_path,
                                                                            monkeypatch, repo_env):
  import dataclasses
  workdir = str(tmp_path / "run")
  holder = _holder(os.path.join(workdir, ".lock"), repo_env())
  try:
    # The launcher refuses before TensorFlow or JAX load ...
    proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/muslse.py:tiny",
                           f"--workdir={workdir}"], env=repo_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and f"pid {holder.pid}" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # ... and the loop refuses before it loads data or writes config.json.
    muslse = systems.get("muslse")

    def never(*args):
      raise AssertionError("the data was loaded although the workdir is busy")

    with monkeypatch.context() as m:
      m.setattr(systems, "get", lambda name: dataclasses.replace(muslse, load_data=never))
      with pytest.raises(workdir_lib.WorkdirBusyError, match=f"pid {holder.pid}"):
        train.train_and_evaluate(short, workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json"))
  finally:
    holder.kill()
    holder.wait()
  # The holder died without releasing: its lock is stale and taken over.
  assert os.path.exists(os.path.join(workdir, ".lock"))
  short.train.num_steps = 2
  train.train_and_evaluate(short, workdir)
  assert not os.path.exists(os.path.join(workdir, ".lock"))   # released at the end


def test_prepare_is_one_at_a_time_and_clears_what_a_killed_one_left(tmp_path, repo_env):
  from musemb.data import builders
  from musemb.data.sources import synthetic
  data_dir = tmp_path / "data"
  leftover = data_dir / "musemb_synthetic" / "tiny-16k" / "incomplete.ABC123_1.0.0"
  spill = data_dir / ".musemb-spill-xyz"
  leftover.mkdir(parents=True)
  spill.mkdir()
  world = synthetic.SyntheticWorld("tiny", seed=0)
  holder = _holder(str(data_dir / ".musemb-prepare.lock"), repo_env())
  try:
    with pytest.raises(workdir_lib.WorkdirBusyError, match="in use by a test holder"):
      builders.prepare(world, str(data_dir))
  finally:
    holder.kill()
    holder.wait()
  path = builders.prepare(world, str(data_dir))
  assert os.path.exists(os.path.join(path, "dataset_info.json"))
  assert not leftover.exists() and not spill.exists()


# ----------------------------------------------------------------------------- 4. values up front


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", -4, r"train.batch_size=-4 \(an integer >= 1\)"),
    ("batch_size", 0, r"train.batch_size=0"),
    ("patience", 0, r"train.patience=0"),
])
def test_bad_values_fail_before_anything_loads_and_leave_no_files(tiny_config, tmp_path, key,
                                                                   value, message):
  tiny_config.train[key] = value
  workdir = str(tmp_path / "never")
  with pytest.raises(train.ConfigError, match=message):
    train.train_and_evaluate(tiny_config, workdir)
  assert not os.path.exists(workdir)          # refused before the workdir (or data) was touched


def test_a_split_of_one_song_evaluates_instead_of_crashing():
  songs = np.ones((1, 4), np.float32)
  means, per_query = evaluate.retrieval_metrics(songs, songs, [np.zeros(0, np.int64)], (1, 3),
                                                exclude=np.arange(1))
  assert means["num_queries"] == 0 and np.isnan(means["p@1"])
  assert per_query["p@3"].shape == (1,)


def test_an_unknown_override_prints_its_message_alone(tmp_path, repo_env):
  proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/muslse.py:tiny",
                         f"--workdir={tmp_path}/w", "--config.model.embed_dimm=3"], env=repo_env(),
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert 'Did you mean "embed_dim"' in proc.stderr
  assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr


# ----------------------------------------------------------------------------- 5. encodings


def test_a_latin1_byte_in_a_folder_csv_is_read_not_fatal(tmp_path):
  import soundfile as sf
  from musemb.data.sources import folder
  for name in ("a", "b"):
    sf.write(str(tmp_path / f"{name}.wav"), np.zeros(16000, np.float32), 16000)
  (tmp_path / "metadata.csv").write_bytes(
      "id,path,artist,tags\n".encode() + b"a,a.wav,Bj\xf6rk,pop\n" +
      "b,b.wav,Sigur Rós,rock\n".encode("utf-8"))
  tracks = {t.id: t for t in folder.AudioFolder(str(tmp_path), top_n_tags=None).tracks()}
  assert tracks["a"].artists == ["Björk"]          # the Latin-1 line
  assert tracks["b"].artists == ["Sigur Rós"]      # the UTF-8 line beside it


# ----------------------------------------------------------------------------- 6. Ctrl-C


_RUN = """
import sys
from absl import logging
logging.set_verbosity(logging.WARNING)
from configs import muslse
from musemb import train
c = muslse.get_config("tiny")
c.data_dir, c.train.num_steps = sys.argv[1], 400
c.train.checkpoint_every, c.train.log_every, c.train.eval_every = 100, 1, 0
train.train_and_evaluate(c, sys.argv[2])
"""


def test_ctrl_c_saves_a_checkpoint_and_the_rerun_resumes(tiny_dataset_dir, tmp_path, repo_env,
                                                        final_params):
  workdir = str(tmp_path / "interrupted")
  proc = subprocess.Popen([sys.executable, "-c", _RUN, tiny_dataset_dir, workdir], env=repo_env(),
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  started = os.path.join(workdir, "checkpoints")   # made just before the loop begins
  deadline = time.time() + 240
  while time.time() < deadline and not os.path.isdir(started):
    time.sleep(0.05)
  time.sleep(2)                                   # into the training loop
  proc.send_signal(signal.SIGINT)
  out = proc.communicate(timeout=240)[0].decode()
  assert proc.returncode == 130, out[-3000:]
  assert "KeyboardInterrupt" not in out
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  assert steps and max(steps) < 400, steps
  assert f"SIGINT: saved a checkpoint at step {max(steps)}" in out, out[-3000:]
  subprocess.run([sys.executable, "-c", _RUN, tiny_dataset_dir, workdir], check=True,
                 env=repo_env(), cwd=ROOT, timeout=600)
  assert final_params(workdir)[0] == 400


# ----------------------------------------------------------------------------- 7. what a user reads


def test_validation_lines_say_what_is_true(short, tmp_path):
  from absl import logging as absl_logging
  records = []
  handler = logging.Handler()
  handler.emit = lambda r: records.append(r.getMessage())
  logging.getLogger("absl").addHandler(handler)
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  try:
    train.train_and_evaluate(short, str(tmp_path / "run"))
  finally:
    absl_logging.set_verbosity(verbosity)
    logging.getLogger("absl").removeHandler(handler)
  validation = [r for r in records if r.startswith("step ") and " validation " in r]
  assert validation and "(the first)" in validation[0] and "None" not in " ".join(validation)
  assert "best " in validation[1] and "at step 20" in validation[1]


def test_launchers_print_no_tensorflow_start_up_lines_and_prepare_no_download(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "launch.prepare", "--source=synthetic",
                         "--size=tiny", f"--data_dir={tmp_path}"], env=dict(
                             os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  both = proc.stdout + proc.stderr
  assert "oneDNN" not in both and "absl::InitializeLog" not in both
  assert "Downloading" not in both


def test_predict_names_a_text_file_as_not_audio_and_fails_when_every_file_fails(tmp_path, repo_env):
  from musemb import audio
  fake = tmp_path / "song.mp3"
  fake.write_text("these are not samples\n" * 50)
  with pytest.raises(audio.AudioError, match="not an audio format libsndfile recognises"):
    audio.load_audio(str(fake), 16000)
  run = tmp_path / "run"
  os.makedirs(run)
  with open(run / "config.json", "w") as f:
    json.dump({"system": "won", "model": {"branch": "acoustic"}, "data": {"sample_rate": 16000}},
              f)
  rng = np.random.default_rng(0)
  np.savez(str(run / "song_index.npz"), track_ids=np.array(["TR0"]),
           embeddings=rng.normal(size=(1, 4)).astype(np.float32), tag_names=np.array(["rock"]),
           tag_embeddings=rng.normal(size=(1, 4)).astype(np.float32))
  from musemb.text import vectors as text_vectors
  text_vectors.WordVectors(("rock",), np.ones((1, 3), np.float32)).save(str(run / "words.npz"))
  proc = subprocess.run([sys.executable, "-m", "launch.predict", f"--workdir={run}", str(fake)],
                        env=repo_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "not an audio format" in json.loads(proc.stdout)[str(fake)]["error"]
