"""The launchers as a user runs them: demo (tiny), evaluate, predict."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_demo_evaluate_and_predict_end_to_end(tmp_path):
  workdir, data_dir = str(tmp_path / "demo"), str(tmp_path / "data")
  proc = _run("launch.demo", f"--workdir={workdir}", f"--data_dir={data_dir}", "--size=tiny",
              "--variant=tiny")
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "muslse/tag_prediction" in proc.stdout and "report:" in proc.stdout
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  # The table the demo prints is metrics.json's (p@1, p@3 columns), for every system it trained.
  printed = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()
             if line.split() and "/" in line.split()[0]}
  for row in ("muslse/tag_prediction", "muslse/artist_prediction", "muslse/similar_songs",
              "one_vs_rest/tag_prediction", "one_vs_rest/artist_prediction",
              "cosine/similar_songs"):
    assert printed[row][:2] == [f"{metrics[f'{row}/p@{k}']:.3f}" for k in (1, 3)], row
  report = open(os.path.join(workdir, "report.md")).read()
  assert "Table 2" in report and "Table 7" in report
  assert os.path.getsize(os.path.join(workdir, "map.png")) > 1000

  proc = _run("launch.evaluate", f"--workdir={workdir}", f"--baselines={workdir}/one_vs_rest")
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f)["muslse/tag_prediction/p@3"] == metrics["muslse/tag_prediction/p@3"]

  t = np.arange(16000 * 3) / 16000
  clip = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)
  wav, bad = str(tmp_path / "clip.wav"), str(tmp_path / "bad.mp3")
  sf.write(wav, clip, 22050)
  with open(bad, "wb") as f:
    f.write(b"not audio at all")
  proc = _run("launch.predict", f"--workdir={workdir}", "--top=3", wav, bad)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout)
  assert [len(out[wav][k]) for k in ("tags", "artists", "similar_songs")] == [3, 3, 3]
  scores = [x["score"] for x in out[wav]["tags"]]
  assert scores == sorted(scores, reverse=True)
  assert "bad.mp3" in out[bad]["error"]


_CACHE_PROBE = r"""
import json, os, sys
import jax
import musemb, musemb.ranking, musemb.systems.wmf.als  # importing the library sets no cache
before = jax.config.jax_compilation_cache_dir
from numpy._core import multiarray
advice_before = multiarray._set_madvise_hugepage(True)  # musemb's import left numpy's advice
from launch import common
if sys.argv[1] == "setup":
  common.setup()
else:  # what setup does about the cache, without its TensorFlow import
  common.configure_compilation_cache()
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
jax.jit(lambda a: a * 2 + 1)(jax.numpy.arange(5.0)).block_until_ready()
print(json.dumps({"before": before, "dir": jax.config.jax_compilation_cache_dir,
                  "enabled": jax.config.jax_enable_compilation_cache,
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses"),
                  "advice_before": advice_before, "stalls": common.hugepage_faults_stall(),
                  "advice": multiarray._set_madvise_hugepage(True)}))
"""


def test_launcher_setup_turns_on_the_compilation_cache_and_the_library_does_not(tmp_path):
  def probe(how="setup", **env):
    full = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu",
                XDG_CACHE_HOME=str(tmp_path / "xdg"))
    full.update(env)
    full.pop("JAX_COMPILATION_CACHE_DIR", None)
    full.pop("NUMPY_MADVISE_HUGEPAGE", None)
    if "MUSEMB_JAX_CACHE" not in env:
      full.pop("MUSEMB_JAX_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", _CACHE_PROBE, how], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])

  default = str(tmp_path / "xdg" / "musemb" / "jax")
  first = probe()
  assert first["before"] is None  # musemb's import left JAX's cache alone
  # ... and numpy's huge-page advice; setup turned it off where huge-page faults stall.
  assert first["advice_before"] and first["advice"] is not first["stalls"]
  assert first["dir"] == default and first["enabled"]
  assert first["misses"] >= 1 and first["hits"] == 0 and os.listdir(default)
  # A second run loads the program instead of compiling it; $MUSEMB_JAX_CACHE names the folder
  # (here the same one, with XDG_CACHE_HOME elsewhere).
  second = probe(MUSEMB_JAX_CACHE=default, XDG_CACHE_HOME=str(tmp_path / "elsewhere"))
  assert second["dir"] == default and second["hits"] >= 1 and second["misses"] == 0
  off = probe("configure", MUSEMB_JAX_CACHE="off")
  assert not off["enabled"] and off["hits"] == off["misses"] == 0


def _numpy_hugepage_advice(enabled: bool) -> bool:
  from launch import common  # pylint: disable=g-import-not-at-top
  return common.numpy_hugepage_advice(enabled)


@pytest.mark.parametrize("modes,stalls", [
    ("always defer defer+madvise [madvise] never", True),
    ("[always] defer defer+madvise madvise never", True),
    ("always defer [defer+madvise] madvise never", True),
    ("always [defer] defer+madvise madvise never", False),
    ("always defer defer+madvise madvise [never]", False),
])
def test_host_memory_turns_numpy_hugepage_advice_off_only_where_faults_stall(
    tmp_path, monkeypatch, modes, stalls):
  from launch import common  # pylint: disable=g-import-not-at-top
  defrag = tmp_path / "defrag"
  defrag.write_text(modes + "\n")
  monkeypatch.delenv(common.HUGEPAGE_ENV, raising=False)
  assert common.hugepage_faults_stall(str(defrag)) is stalls
  assert common.host_memory_env(str(defrag)) == ({common.HUGEPAGE_ENV: "0"} if stalls else {})
  previous = _numpy_hugepage_advice(True)
  try:
    assert common.configure_host_memory(str(defrag)) is stalls
    assert _numpy_hugepage_advice(True) is (not stalls)  # the advice the call left
  finally:
    _numpy_hugepage_advice(previous)


def test_host_memory_leaves_a_users_numpy_hugepage_choice_and_unknown_kernels_alone(
    tmp_path, monkeypatch):
  from launch import common  # pylint: disable=g-import-not-at-top
  defrag = tmp_path / "defrag"
  defrag.write_text("always defer defer+madvise [madvise] never\n")
  previous = _numpy_hugepage_advice(True)
  try:
    monkeypatch.setenv(common.HUGEPAGE_ENV, "1")
    assert common.host_memory_env(str(defrag)) == {}
    assert not common.configure_host_memory(str(defrag))
    assert _numpy_hugepage_advice(True) is True
    monkeypatch.delenv(common.HUGEPAGE_ENV)
    missing = str(tmp_path / "no-thp")  # not Linux, or THP compiled out
    assert not common.hugepage_faults_stall(missing)
    assert not common.configure_host_memory(missing)
    assert _numpy_hugepage_advice(True) is True
  finally:
    _numpy_hugepage_advice(previous)


_CPU_DEVICES_PROBE = r"""
import json, sys
from launch import common
asked = int(sys.argv[1])
if sys.argv[2] == "started":
  import jax
  jax.numpy.zeros(1).block_until_ready()  # JAX has started: too late to change the devices
got = common.configure_cpu_devices(asked)
import jax
print(json.dumps({"got": got, "devices": len(jax.devices("cpu"))}))
"""


@pytest.mark.parametrize("asked,when,xla_flags,expect", [
    (3, "fresh", "", {"got": 3, "devices": 3}),
    (0, "fresh", "", {"got": min(os.cpu_count() or 1, 8), "devices": min(os.cpu_count() or 1, 8)}),
    (3, "fresh", "--xla_force_host_platform_device_count=5", {"got": None, "devices": 5}),
    (3, "started", "", {"got": None, "devices": 1}),
])
def test_configure_cpu_devices(asked, when, xla_flags, expect):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=xla_flags)
  proc = subprocess.run([sys.executable, "-c", _CPU_DEVICES_PROBE, str(asked), when], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == expect


def test_configure_cpu_devices_rejects_a_negative_count():
  from launch import common  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="cpu_devices=-1"):
    common.configure_cpu_devices(-1)


@pytest.mark.parametrize("launcher", ["launch.wmf", "launch.train"])
def test_wmf_launchers_fit_on_the_configured_cpu_devices(tmp_path, launcher):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS="")
  proc = subprocess.run([sys.executable, "-m", launcher, "--config=configs/wmf.py:tiny",
                         f"--workdir={tmp_path / 'wmf'}", "--config.wmf.cpu_devices=3",
                         "--jax_cache=off"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "solver=cg, 3 devices" in proc.stderr
  assert os.path.exists(tmp_path / "wmf" / "factors.npz")


def test_only_a_system_that_asks_gets_cpu_devices():
  from configs import muslse  # pylint: disable=g-import-not-at-top
  from launch import common  # pylint: disable=g-import-not-at-top
  assert common.configure_system_devices(muslse.get_config()) is None  # JAX's default stays
