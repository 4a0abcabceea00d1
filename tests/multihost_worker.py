r"""One process of `tests/multihost_test.py`: short runs of the loop, final variables to .npz.

  python tests/multihost_worker.py --systems=muslse,won --data_dir=D --factors=F \
      --workdir=W --out=O [--devices=N]

With `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` set it is one process of a
multi-host job (`musemb.sharding.initialize_distributed`, as `launch.train` does), with CPU
collectives over gloo; without them it is the one-process reference. Every process of a job takes
the same arguments: the workdir is shared (a pod's shared filesystem), and each process feeds its
share of every global batch (`data.train_batch`). Each system trains into `<workdir>/<system>`;
afterwards every process restores the final checkpoint (orbax restores are collective, so all of
them must take part) and process 0 writes `<out>/<system>.npz` (the flattened flax variables) and
`<out>/<system>.json` (the final step and metrics).

The runs are the tiny configs made short: MUSLSE for 24 steps with a validation (and a best/ save)
every 8, Won's cultural branch (the neural system without audio, so it costs seconds) for 6 steps
with a validation every 3; both have a global batch of 16.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# The repository root, so `configs` and `musemb` import however the script is started.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SYSTEMS = ("muslse", "won")


def make_config(system: str, data_dir: str, factors: str):
  """The short config of `system` on the prepared tiny world at `data_dir`."""
  # pylint: disable=g-import-not-at-top
  from configs import common
  from configs import muslse
  from configs import won
  # pylint: enable=g-import-not-at-top
  if system == "muslse":
    config = muslse.get_config("tiny")
    common.set_steps(config, 24)
    config.train.eval_every = 8
    config.train.checkpoint_every = 8
  elif system == "won":
    config = won.get_config("tiny,branch=cultural")
    config.data.factors = factors
    common.set_steps(config, 6)
    config.train.eval_every = 3
    config.train.checkpoint_every = 3
  else:
    raise ValueError(f"--systems names {system!r}; expected some of {SYSTEMS}.")
  config.data_dir = data_dir
  return config


def flatten(tree) -> dict:
  """{"params/V": array, ...}: a flax variables tree as the flat arrays of an .npz."""
  import jax  # pylint: disable=g-import-not-at-top
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): jax.device_get(x)
          for path, x in flat}


def run(system_name: str, args: argparse.Namespace) -> None:
  """Trains one system into `<workdir>/<system>` and writes its final variables (process 0)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from musemb import systems
  from musemb import train
  # pylint: enable=g-import-not-at-top
  config = make_config(system_name, args.data_dir, args.factors)
  workdir = os.path.join(args.workdir, system_name)
  metrics = train.train_and_evaluate(config, workdir)
  system = systems.get(config.system)
  # `init`'s shapes come from `data.info`; loading the data again reads the cached features.
  data = system.load_data(config, workdir)
  step, variables = train.load_variables(workdir, system, config, data.info, best=False)
  arrays = flatten(variables)   # fully replicated: every process holds the whole value
  if jax.process_index() == 0:
    np.savez(os.path.join(args.out, f"{system_name}.npz"), **arrays)
    with open(os.path.join(args.out, f"{system_name}.json"), "w") as f:
      json.dump({"step": int(step), "metrics": metrics, "process_count": jax.process_count(),
                 "device_count": jax.device_count()}, f, indent=1, sort_keys=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--systems", default=",".join(SYSTEMS))
  parser.add_argument("--data_dir", required=True, help="the prepared tiny world")
  parser.add_argument("--factors", default="", help="a WMF workdir (Won's cultural branch)")
  parser.add_argument("--workdir", required=True, help="shared by the processes of a job")
  parser.add_argument("--out", required=True, help="where process 0 writes <system>.npz/.json")
  parser.add_argument("--devices", type=int, default=1, help="CPU devices of this process")
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  # Before anything touches the backend: the process's devices, and gloo for the cross-process
  # all-reduces of the step (JAX's default CPU collectives, named so the test does not depend on
  # that default).
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", args.devices)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from musemb import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize_distributed()
  os.makedirs(args.out, exist_ok=True)
  for name in args.systems.split(","):
    run(name.strip(), args)


if __name__ == "__main__":
  main()
