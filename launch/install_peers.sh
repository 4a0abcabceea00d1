#!/usr/bin/env bash
# Installs the peer libraries the benchmarks compare against into .venv (never a test dependency):
#
#   bash launch/install_peers.sh            # from the repository root; VENV=path to use another venv
#
# * lightfm 1.17 (musemb.benchmarks.warp). It ships only as a source distribution whose setup.py
#   fails under PEP 517 builds ("'dict' object has no attribute '__LIGHTFM_SETUP__'"), and the legacy
#   build it needs is gone from pip >= 25. So the wheel is built in a throwaway venv that has
#   pip < 25, setuptools, wheel, cython and the numpy/scipy versions of .venv, then installed into
#   .venv with .venv's own pip, which is left at its version. Compiling takes about 15 s (gcc, OpenMP).
# * implicit 0.7.3 (a binary wheel), for the ALS benchmark.
# * torch 2.13.0 (CPU), the SampleCNN benchmark's peer (see the torch block below).
# * faiss-cpu 1.15.1 (a binary wheel), faiss's IndexFlatIP is the evaluation benchmark's peer.
#
# Idempotent: a peer already importable at the pinned version is skipped.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
LIGHTFM_VERSION="1.17"
IMPLICIT_VERSION="0.7.3"
FAISS_VERSION="1.15.1"

if [[ ! -x "$PY" ]]; then
  echo "install_peers.sh: $PY not found; run 'make install' first (or set VENV=...)." >&2
  exit 1
fi

installed_version() {  # prints the installed version of a distribution, or nothing
  "$PY" - "$1" <<'EOF'
import importlib.metadata, sys
try:
  print(importlib.metadata.version(sys.argv[1]))
except importlib.metadata.PackageNotFoundError:
  pass
EOF
}

if [[ "$(installed_version lightfm)" == "$LIGHTFM_VERSION" ]] && "$PY" -c "import lightfm._lightfm_fast" 2>/dev/null; then
  echo "lightfm $LIGHTFM_VERSION already installed in $VENV."
else
  build="$(mktemp -d "${TMPDIR:-/tmp}/musemb-lightfm-build.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
  numpy_version="$("$PY" -c 'import numpy; print(numpy.__version__)')"
  scipy_version="$("$PY" -c 'import scipy; print(scipy.__version__)')"
  echo "Building lightfm $LIGHTFM_VERSION (numpy $numpy_version, scipy $scipy_version) in $build ..."
  "$PY" -m venv "$build/venv"
  "$build/venv/bin/python" -m pip install --quiet 'pip<25'
  "$build/venv/bin/python" -m pip install --quiet setuptools wheel cython "numpy==$numpy_version" "scipy==$scipy_version"
  "$build/venv/bin/python" -m pip wheel --quiet "lightfm==$LIGHTFM_VERSION" --no-deps \
      --no-build-isolation --no-use-pep517 -w "$build/wheels"
  "$PY" -m pip install --quiet "$build"/wheels/lightfm-*.whl
  "$PY" -c "import lightfm, lightfm._lightfm_fast; print('installed lightfm', lightfm.__version__)"
fi

if [[ "$(installed_version implicit)" == "$IMPLICIT_VERSION" ]]; then
  echo "implicit $IMPLICIT_VERSION already installed in $VENV."
else
  "$PY" -m pip install --quiet --only-binary=implicit "implicit==$IMPLICIT_VERSION"
  "$PY" -c "import implicit; print('installed implicit', implicit.__version__)"
fi

if [[ "$(installed_version faiss-cpu)" == "$FAISS_VERSION" ]]; then
  echo "faiss-cpu $FAISS_VERSION already installed in $VENV."
else
  "$PY" -m pip install --quiet --only-binary=faiss-cpu "faiss-cpu==$FAISS_VERSION"
  "$PY" -c "import faiss; print('installed faiss-cpu', faiss.__version__)"
fi

# torch 2.13.0, CPU build (musemb.benchmarks.samplecnn's peer). TORCH_INDEX=https://download.pytorch.org/whl/cpu
# picks PyTorch's CPU-only index where PyPI's default Linux wheel would pull the CUDA libraries.
TORCH_VERSION="2.13.0"
if [[ "$(installed_version torch)" == "$TORCH_VERSION"* ]]; then
  echo "torch $TORCH_VERSION already installed in $VENV."
else
  "$PY" -m pip install --quiet ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==$TORCH_VERSION"
  "$PY" -c "import torch; print('installed torch', torch.__version__)"
fi
