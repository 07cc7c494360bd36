# Source this (bash) to build `--features cuda` with the toolkit that
# scripts/cuda-toolchain.sh assembled:
#
#   source scripts/cuda-env.sh
#   cargo build --release --features cuda -p refact-server --bin refact
#
# CUDA builds go to their own target dir (/work/target-cuda unless CARGO_TARGET_DIR is
# already set) so that they never invalidate the CPU builds in the shared /work/target.

CUDA_SDK_DIR=${CUDA_SDK_DIR:-/work/cuda-sdk}
export CUDA_HOME="$CUDA_SDK_DIR/cuda-13.0"
if [[ ! -x "$CUDA_HOME/bin/nvcc" || ! -f "$CUDA_HOME/lib/stubs/libcuda.so" ]]; then
  echo "cuda-env: no toolkit at $CUDA_HOME; run scripts/cuda-toolchain.sh first" >&2
  return 1 2>/dev/null || exit 1
fi

# cudarc reads CUDA_HOME/CUDA_PATH for its link search; cudaforge reads NVCC, and
# CUDA_COMPUTE_CAP because there is no nvidia-smi here (90 = H100/H200; cudaforge turns
# it into sm_90a).
export CUDA_PATH="$CUDA_HOME"
export NVCC="$CUDA_HOME/bin/nvcc"
export PATH="$CUDA_HOME/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# Saves cudarc parsing `nvcc --version`; must match the toolkit.
export CUDARC_CUDA_VERSION=13000
# The linker finds the wheels' libraries and the libcuda stub here as well.
export LIBRARY_PATH="$CUDA_HOME/lib:$CUDA_HOME/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
# nvcc runs on two shared cores: one kernel file at a time.
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-cuda}
