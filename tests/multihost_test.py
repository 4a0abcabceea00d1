"""Two processes train like one: the loop's multi-host path, run for real on one machine.

`tests/multihost_worker.py` runs a short MUSLSE run and a short run of Won's cultural branch (a
neural system: MLPs with batch norm, dropout, Adam) twice:

* the reference: one process with two CPU devices;
* a two-process job: `jax.distributed` with its coordinator on a free loopback port, one CPU device
  per process, gloo for the cross-process all-reduces, each process feeding its half of every
  global batch, both writing into one workdir (a pod's shared filesystem).

Both jobs place the global batch of 16 on the same two-device `data` mesh, so they partition and
reduce the same way and the two-process job should end bit for bit where the reference does (we
compare with rtol 1e-5, atol 1e-6). A one-device reference would not do for Won: the bias of each
Dense layer that feeds a batch norm has a true gradient of zero, and Adam scales the rounding noise
that stands in for it into steps of the learning rate's size, so those biases (and the running
means they feed) wander apart with the reduction order.

The jobs run one after the other (the reference first computes the bag-of-frames cache beside the
dataset, which the job then reads); about a minute each on two CPU cores.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
SYSTEMS = ("muslse", "won")
TIMEOUT_S = 300   # per job; a deadlocked barrier otherwise waits out orbax's and JAX's timeouts
RTOL, ATOL = 1e-5, 1e-6


def _free_port() -> int:
  """A loopback port nobody listens on (the coordinator binds it a moment later)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
  """This environment without anything that would make a worker join or shape another job."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("JAX_") and "proxy" not in k.lower()}   # proxies: gRPC on loopback
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu",
             XLA_FLAGS=" ".join(flags))
  env.update(extra)
  return env


def _tail(path: str, chars: int = 5000) -> str:
  with open(path, errors="replace") as f:
    return f.read()[-chars:]


def _run_job(root: str, num_processes: int, devices: int, data_dir: str, factors: str) -> str:
  """Runs the worker as one job of `num_processes` processes; returns its output folder.

  Every process gets the same arguments and its own `JAX_PROCESS_ID`. A process that fails, or a
  job past `TIMEOUT_S`, ends the job (the others are killed: they would wait at a barrier) and
  fails the test with every process's log tail.
  """
  out, workdir = os.path.join(root, "out"), os.path.join(root, "workdir")
  os.makedirs(root, exist_ok=True)
  args = [sys.executable, WORKER, f"--systems={','.join(SYSTEMS)}", f"--data_dir={data_dir}",
          f"--factors={factors}", f"--workdir={workdir}", f"--out={out}", f"--devices={devices}"]
  if num_processes == 1:
    envs = [_env()]
  else:
    address = f"127.0.0.1:{_free_port()}"
    envs = [_env(JAX_COORDINATOR_ADDRESS=address, JAX_COORDINATOR_BIND_ADDRESS=address,
                 JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(p))
            for p in range(num_processes)]
  logs = [os.path.join(root, f"process{p}.log") for p in range(num_processes)]
  procs = []
  for env, log in zip(envs, logs):
    with open(log, "w") as f:   # a file, not a pipe: a full pipe would stall a chatty process
      procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT))
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while any(p.poll() is None for p in procs):
      if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
        break
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()   # SIGKILL: the loop turns SIGTERM into a checkpoint, which needs its peers
        p.wait()
  codes = [p.returncode for p in procs]
  if any(codes):
    how = f"timed out after {TIMEOUT_S} s" if time.monotonic() > deadline else "failed"
    raise AssertionError(
        f"the {num_processes}-process job {how} (exit codes {codes}; negative: killed):\n"
        + "\n".join(f"----- process {p} ({logs[p]}), last lines:\n{_tail(logs[p])}"
                     for p in range(num_processes)))
  return out


@pytest.fixture(scope="module")
def wmf_factors(tmp_path_factory) -> str:
  """WMF item factors of the tiny world, for Won's cultural branch."""
  from configs import wmf as wmf_config
  from musemb import train
  workdir = str(tmp_path_factory.mktemp("multihost_wmf"))
  train.run(wmf_config.get_config("tiny"), workdir)
  return workdir


@pytest.fixture(scope="module")
def jobs(tiny_dataset_dir, wmf_factors, tmp_path_factory) -> tuple[str, str]:
  """(reference output folder, two-process job's output folder)."""
  root = str(tmp_path_factory.mktemp("multihost"))
  reference = _run_job(os.path.join(root, "reference"), 1, 2, tiny_dataset_dir, wmf_factors)
  job = _run_job(os.path.join(root, "two_processes"), 2, 1, tiny_dataset_dir, wmf_factors)
  return reference, job


@pytest.mark.slow
@pytest.mark.parametrize("system", SYSTEMS)
def test_two_processes_end_with_the_one_process_parameters(jobs, system):
  reference, job = jobs
  with open(os.path.join(reference, f"{system}.json")) as f:
    want = json.load(f)
  with open(os.path.join(job, f"{system}.json")) as f:
    got = json.load(f)
  assert (want["process_count"], got["process_count"]) == (1, 2)
  assert want["device_count"] == got["device_count"] == 2
  assert got["step"] == want["step"] > 0
  with np.load(os.path.join(reference, f"{system}.npz")) as a, \
       np.load(os.path.join(job, f"{system}.npz")) as b:
    assert sorted(b.files) == sorted(a.files)
    for name in a.files:
      np.testing.assert_allclose(b[name], a[name], rtol=RTOL, atol=ATOL,
                                 err_msg=f"{system} {name}")
  # The validations (which pick best/) and the final evaluation agree too, so each process fed
  # its own rows and process 0 wrote what the one-process run writes.
  assert sorted(got["metrics"]) == sorted(want["metrics"])
  for key, value in want["metrics"].items():
    np.testing.assert_allclose(got["metrics"][key], value, rtol=RTOL, atol=ATOL, err_msg=key)
  with open(os.path.join(os.path.dirname(job), "workdir", system, "metrics.json")) as f:
    stored = json.load(f)
  for key, value in got["metrics"].items():
    np.testing.assert_allclose(stored[key], value, rtol=RTOL, atol=ATOL, err_msg=key)
