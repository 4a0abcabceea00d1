"""launch/benchmarks/accelerator.py: the peak table, the analytic ALS count, a quick CPU run."""

import numpy as np
import pytest

from launch.benchmarks import accelerator


def test_peak_table_is_keyed_by_device_kind():
  assert accelerator.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert accelerator.peak_flops("NVIDIA H100 80GB HBM3", "float32") == 495e12  # TF32
  assert accelerator.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12     # not the SXM's
  assert accelerator.peak_flops("NVIDIA L40S", "bfloat16") == 362e12          # not the L4's
  assert accelerator.peak_flops("NVIDIA L4", "bfloat16") == 121e12
  assert accelerator.peak_flops("TPU v5 lite", "float32") == 197e12
  assert accelerator.peak_flops("cpu", "float32") is None


def test_analytic_als_count_matches_a_hand_count():
  # 2 users x 3 items, 4 non-zeros, f = 2, 1 CG step: per side 4 nnz f for the residual passes,
  # 2 nnz f for Y_u p and none for a back-projection (last step): 6 * 4 * 2 = 48; x2 sides = 96.
  # Row terms: x0 G and p G for each of the 5 rows: 2 * 5 * 4 * 2 = 80; Grams: 2 * 5 * 4 = 40.
  assert accelerator.als_flops_per_iteration(2, 3, 4, 2, 1) == 96 + 80 + 40
  # Each extra CG step adds two passes over the non-zeros per side and one f x f product per row.
  assert (accelerator.als_flops_per_iteration(2, 3, 4, 2, 2)
          - accelerator.als_flops_per_iteration(2, 3, 4, 2, 1)) == 2 * 4 * 4 * 2 + 2 * 5 * 4


@pytest.fixture(scope="module")
def quick_run():
  return accelerator.run(quick=True, only=("samplecnn", "muslse"))


def test_quick_run_reports_throughput_and_flops(quick_run):
  rows = {(r.workload.split()[0], r.dtype): r for r in quick_run["rows"]}
  assert set(rows) == {("SampleCNN", "float32"), ("SampleCNN", "bfloat16"), ("MUSLSE", "float32")}
  for r in rows.values():
    assert r.step_s > 0 and r.examples_per_s == pytest.approx(r.batch / r.step_s, rel=1e-6)
    assert np.isfinite(r.flops_per_step) and r.flops_per_step > 0
  # The same model in either dtype: the counts differ only by the casts.
  ratio = rows["SampleCNN", "bfloat16"].flops_per_step / rows["SampleCNN", "float32"].flops_per_step
  assert 0.8 < ratio < 1.5
  assert "| unknown | unknown |" in quick_run["table"]  # a CPU has no entry in the peak table


def test_a_failing_row_is_reported_and_raises(monkeypatch):
  with pytest.raises(ValueError, match="unknown workloads"):
    accelerator.run(quick=True, only=("resnet",))

  def broken(*, quick):
    raise FloatingPointError("diverged")
  monkeypatch.setattr(accelerator, "muslse_row", broken)
  with pytest.raises(RuntimeError, match="muslse: FloatingPointError: diverged"):
    accelerator.run(quick=True, only=("muslse",))
