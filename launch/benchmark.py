r"""Benchmarks of the hot paths, each against a peer library run in the same process on the same data.

  python -m launch.benchmark --suite=all  # or: features, evaluation, warp, samplecnn, als,
                                          #     shortchunk, propagation, accelerator
  python -m launch.benchmark --suite=warp --quick   # smaller sizes, for a smoke run

Suites (each prints a table with the musemb/peer ratio):
  features    log-mel and MFCC+deltas throughput, JAX vs librosa (launch.benchmarks.features)
  evaluation  Big-data-scale top-k evaluation (66,072 songs x 26,972 artists, d=100): seconds and
              memory vs faiss IndexFlatIP, 2 threads (launch.benchmarks.evaluation)
  warp        MUSLSE WARP training vs LightFM's WARP on the same bag-of-frames/tag data: time to
              reach LightFM's best test p@3, 2 threads each (launch.benchmarks.warp); LightFM is
              installed on demand (see its docstring), never a test dependency.
  samplecnn   SampleCNN (59,049 samples, factor head) training examples per second
              (launch.benchmarks.samplecnn)
  als         implicit-feedback ALS (musemb.systems.wmf.als) vs implicit 0.7.3's CPU ALS (use_cg=True, 2
              threads, fed 1 + alpha*count) on 50k users x 100k items, 5M non-zeros:
              whole fit with an empty and a filled compilation cache, seconds/iteration, held-out
              recall@50 / mAP@500 (launch.benchmarks.als)
  shortchunk  Won et al.'s acoustic branch (short-chunk CNN over an on-device log-mel) + tag branch
              + triplet loss, training examples per second on the current backend
              (launch.benchmarks.shortchunk)
  propagation Lin et al.'s playlist tag propagation: the tagprop system's SampleCNN training step
              with and without the walk and the supportive BCE (same model, same batch, one run),
              examples per second and their ratio, at the paper's AotM-2011 scale
              (launch.benchmarks.propagation)
  accelerator for a lent GPU/TPU (runs anywhere): SampleCNN and short-chunk training steps in
              float32 and bfloat16, the MUSLSE WARP step at the issue-14 scale and ALS at ten times
              the `als` suite's size: examples/s, FLOPs per step (XLA's cost analysis; analytic for
              ALS), achieved FLOP/s and the share of the chip's peak (launch.benchmarks.accelerator);
              not part of `all` (minutes of accelerator work, hours on 2 CPU cores)

Numbers are wall-clock on a shared machine: compare the ratio, not the absolute values.
"""

import importlib

from absl import app
from absl import flags

from launch import common

SUITES = ("features", "evaluation", "warp", "samplecnn", "als", "shortchunk", "propagation")
# Run only when named: at full size it is sized for an accelerator.
EXTRA_SUITES = ("accelerator",)
_SUITE = flags.DEFINE_enum("suite", "all", SUITES + EXTRA_SUITES + ("all",),
                           "Which benchmark to run.")
_QUICK = flags.DEFINE_boolean("quick", False, "Small sizes (smoke test of the benchmark itself).")


def main(argv):
  del argv
  common.setup()
  for name in SUITES if _SUITE.value == "all" else (_SUITE.value,):
    print(f"\n=== {name} ===")
    module = importlib.import_module(f"launch.benchmarks.{name}")
    module.run(quick=_QUICK.value)


if __name__ == "__main__":
  app.run(main)
