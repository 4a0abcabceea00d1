"""launch.sweep / musemb.sweep: a grid of runs, the choice made on validation alone."""

import json
import os

import pytest

from musemb import sweep
from musemb import train
from musemb import workdir as workdir_lib


def test_grid_values_take_the_declared_types(tiny_config):
  grid = sweep.parse_grid(["model.max_norm=1,2", "train.batch_size=8,16", "tasks.mode=sum"],
                          tiny_config)
  assert grid == [("model.max_norm", [1.0, 2.0]), ("train.batch_size", [8, 16]),
                  ("tasks.mode", ["sum"])]
  assert all(isinstance(v, float) for v in grid[0][1])
  pts = sweep.points(grid)
  assert len(pts) == 4 and pts[1] == {"model.max_norm": 1.0, "train.batch_size": 16,
                                      "tasks.mode": "sum"}
  assert sweep.point_name(pts[1]) == "model.max_norm=1.0,train.batch_size=16,tasks.mode=sum"
  c = sweep.point_config(tiny_config, pts[1])
  assert c.model.max_norm == 1.0 and c.train.batch_size == 16
  assert tiny_config.train.batch_size != 16 or tiny_config.tasks.mode != "sum"  # not mutated


@pytest.mark.parametrize("items, message", [
    (["model.max_nrom=1,2"], "does not declare"),
    (["model=1,2"], "a group of keys"),
    (["train.batch_size=8,x"], "is not an int"),
    (["model.max_norm"], "expected key=value1"),
    (["model.max_norm=1,1"], "repeats a value"),
    (["model.max_norm=1", "model.max_norm=2"], "twice"),
    (["train.eval_metric=mean_p@3,tag_prediction/p@3"], "cannot vary"),
    ([], "nothing to sweep"),
])
def test_bad_grids_are_refused_naming_the_item(tiny_config, items, message):
  with pytest.raises(sweep.SweepError, match=message):
    sweep.parse_grid(items, tiny_config)


def test_choice_is_the_best_validation_first_on_ties():
  runs = [{"point": {"a": i}, "validation": v, "metrics": {"m": float(i)}, "best_step": 1,
           "steps": 2, "still_improving": False} for i, v in enumerate([0.5, None, 0.7, 0.7])]
  record = sweep.choose(runs, "tag_prediction/p@3")
  assert record["chosen"] == 2 and record["metrics"] == {"m": 2.0}
  assert "<- chosen" in sweep.table(record).splitlines()[2]
  with pytest.raises(sweep.SweepError, match="validat"):
    sweep.choose([dict(runs[1])], "x")


def test_a_sweep_trains_each_point_keeps_the_best_and_resumes(tiny_config, tmp_path):
  workdir = str(tmp_path / "sweep")
  grid = sweep.parse_grid(["optimizer.learning_rate=0.0001,0.05"], tiny_config)
  calls = []

  def train_fn(config, sub):
    calls.append(sub)
    return train.run(config, sub)

  record = sweep.run_sweep(tiny_config, workdir, grid, train_fn, check_fn=train.check_config)
  assert len(calls) == 2 and len(record["runs"]) == 2
  for r in record["runs"]:
    with open(os.path.join(r["workdir"], "training.json")) as f:
      assert r["validation"] == json.load(f)["best_metric"]
    with open(os.path.join(r["workdir"], "config.json")) as f:
      assert json.load(f)["optimizer"]["learning_rate"] == r["point"]["optimizer.learning_rate"]
  vals = [r["validation"] for r in record["runs"]]
  assert record["chosen"] == vals.index(max(vals))
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == record["runs"][record["chosen"]]["metrics"]
  with open(os.path.join(workdir, "sweep.json")) as f:
    assert json.load(f)["chosen_point"] == record["chosen_point"]

  # A rerun reuses the finished points; a changed base config is refused, nothing retrained.
  again = sweep.run_sweep(tiny_config, workdir, grid, train_fn)
  assert len(calls) == 2 and again["chosen"] == record["chosen"]
  changed = tiny_config.copy_and_resolve_references()
  with changed.unlocked():
    changed.model.embed_dim = 8
  with pytest.raises(workdir_lib.ConfigMismatchError, match="model.embed_dim"):
    sweep.run_sweep(changed, workdir, grid, train_fn)
  assert len(calls) == 2


def test_a_bad_value_in_the_last_point_fails_before_the_first_trains(tiny_config, tmp_path):
  grid = sweep.parse_grid(["optimizer.learning_rate=0.05,-1"], tiny_config)
  with pytest.raises(sweep.SweepError, match="optimizer.learning_rate=-1"):
    sweep.run_sweep(tiny_config, str(tmp_path / "s"), grid,
                    lambda c, w: pytest.fail("trained"), check_fn=train.check_config)
  assert not os.path.exists(str(tmp_path / "s"))
