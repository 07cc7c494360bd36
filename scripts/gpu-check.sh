#!/usr/bin/env bash
# Run ON the GPU machine, from the repo root, with .devcarry/ carried (filled here by
# scripts/gpu-prepare.sh). No Rust toolchain or network is needed there: it finds the
# CUDA 13 libraries that PyTorch's pip wheels (or a system toolkit) installed, then runs
#   1. nvidia-smi
#   2. the cuda_matmul example (cuBLAS + candle's kernels against the CPU)
#   3. the carried test binaries (the engine's CUDA parity tests)
#   4. the carried bench binaries, then the engine bench's VAE decode at 1024 px whole
#      and in bands (vae_tile)
#   5. tools/bench/side_by_side.py --device cuda (ours: the carried engine bench; the
#      peer: diffusers from .devcarry/wheels in f16 with SDPA), if the wheel was carried
# and writes to $OUT: summary.txt, gpu-check.log (everything), logs.tar.gz (one log per
# step plus whatever the benches wrote under $REFACT_BENCH_OUT). Exits 1 if a step failed.
#
# Environment (all optional):
#   GPU_CHECK_BUDGET  seconds for all steps; later steps are skipped past it (480)
#   GPU_STEP_TIMEOUT  seconds for one test or bench binary (240)
#   GPU_TEST_ARGS     extra arguments for the test binaries (e.g. a name filter)
#   GPU_BENCH_ARGS    extra arguments for the bench binaries
#   GPU_LIB_DIRS      colon-separated folders searched first for the CUDA libraries
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
CARRY="$REPO_ROOT/.devcarry"
OUT=${OUT:-$REPO_ROOT/gpu-out}
GPU_CHECK_BUDGET=${GPU_CHECK_BUDGET:-480}
GPU_STEP_TIMEOUT=${GPU_STEP_TIMEOUT:-240}
read -r -a TEST_ARGS <<<"${GPU_TEST_ARGS:-}"
read -r -a BENCH_ARGS <<<"${GPU_BENCH_ARGS:-}"

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/refact-gpu.XXXXXX)
LOGS="$WORK/logs"
mkdir -p "$LOGS"
exec > >(tee "$OUT/gpu-check.log") 2>&1
TEE_PID=$!
STARTED=$SECONDS
: >"$OUT/summary.txt"

say() { printf '\n=== %s\n' "$*"; }
record() { printf '%-5s %-40s %s\n' "$1" "$2" "$3" | tee -a "$OUT/summary.txt"; }

# Runs one step with a time limit, its output to the screen and to logs/<name>.log.
FAILED=0
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((GPU_CHECK_BUDGET - (SECONDS - STARTED)))
  if ((left < 10)); then
    record SKIP "$name" "(budget of ${GPU_CHECK_BUDGET}s spent)"
    return
  fi
  ((limit > left)) && limit=$left
  say "$name: $*"
  local begin=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  local took="$((SECONDS - begin))s"
  if ((rc == 0)); then
    record PASS "$name" "$took"
  elif ((rc == 124 || rc == 137)); then
    record FAIL "$name" "$took, timed out after ${limit}s"
    FAILED=1
  else
    record FAIL "$name" "$took, exit $rc"
    FAILED=1
  fi
}

finish() {
  say "summary ($((SECONDS - STARTED))s)"
  cat "$OUT/summary.txt"
  tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs bench-out 2>/dev/null
  rm -rf "$WORK"
  # Let tee write the last lines before the machine collects $OUT.
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$FAILED"
}

if [[ ! -f "$CARRY/bin.tar.xz" ]]; then
  echo "no $CARRY/bin.tar.xz: run scripts/gpu-prepare.sh on the build machine and carry .devcarry"
  FAILED=1
  finish
fi
say "carry"
cat "$CARRY/MANIFEST.txt"
echo "machine: $(uname -srm); $(ldd --version 2>&1 | head -n1)"

# Unpack the binaries (tar's xz filter, or Python's lzma where xz is missing).
if command -v xz >/dev/null; then
  tar -C "$WORK" -xJf "$CARRY/bin.tar.xz"
else
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
    "$CARRY/bin.tar.xz" "$WORK"
fi
BIN="$WORK/bin"

# Find the CUDA libraries the binaries link to. The toolkit's libraries come from
# Python's site-packages first (PyTorch's nvidia-* wheels: nvidia/cu13/lib), then system
# toolkits; the driver's libcuda.so.1 from the loader's cache or the driver's folders
# only. Stub folders are skipped: a stub libcuda would hide the real driver.
say "CUDA libraries"
user_dirs=()
IFS=: read -r -a user_dirs <<<"${GPU_LIB_DIRS:-}"
toolkit_dirs=("${user_dirs[@]}")
for py in python3 /opt/torch/.venv/bin/python3; do
  if command -v "$py" >/dev/null; then
    while read -r dir; do toolkit_dirs+=("$dir/nvidia"); done < <(
      "$py" -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
  fi
done
toolkit_dirs+=(/usr/local/cuda/lib64 /usr/local/cuda/targets /opt)
driver_dirs=("${user_dirs[@]}" /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64)
in_cache() { ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n { print $NF; exit }'; }
find_in() {
  local soname=$1 dir found
  shift
  for dir in "$@"; do
    [[ -d "$dir" ]] || continue
    found=$(find -L "$dir" -maxdepth 6 -name "$soname" -not -path '*/stubs/*' 2>/dev/null | head -n1)
    if [[ -n "$found" ]]; then
      echo "$found"
      return
    fi
  done
}
lib_path=()
for soname in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
  if [[ $soname == libcuda.so.1 ]]; then
    found=$(in_cache "$soname")
    [[ -n "$found" ]] || found=$(find_in "$soname" "${driver_dirs[@]}")
  else
    found=$(find_in "$soname" "${toolkit_dirs[@]}")
    [[ -n "$found" ]] || found=$(in_cache "$soname")
  fi
  if [[ -n "$found" ]]; then
    echo "$soname -> $found"
    dir=$(dirname "$found")
    [[ " ${lib_path[*]:-} " == *" $dir "* ]] || lib_path+=("$dir")
  else
    echo "$soname -> NOT FOUND"
  fi
done
LD_LIBRARY_PATH="$(IFS=:; echo "${lib_path[*]:-}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for exe in "$BIN"/refact "$BIN"/examples/cuda_matmul; do
  [[ -x "$exe" ]] || continue
  if ldd "$exe" | grep -q 'not found'; then
    echo "$(basename "$exe") is missing libraries:"
    ldd "$exe" | grep 'not found'
  fi
done

# Tests and benches find the committed fixtures (tests/fixtures) from the working
# directory, the repo root (refact-testkit's workspace_root); benches may write under
# REFACT_BENCH_OUT.
export REFACT_BENCH_OUT="$WORK/bench-out"
mkdir -p "$REFACT_BENCH_OUT"
export REFACT_DEVICE=${REFACT_DEVICE:-cuda}
export RUST_BACKTRACE=1
# The driver compiles candle's PTX at first use and caches it here for later binaries.
export CUDA_CACHE_PATH="$WORK/nv-cache"

step nvidia-smi 30 nvidia-smi
step refact-version 30 "$BIN/refact" --version
step cuda_matmul 180 "$BIN/examples/cuda_matmul" cuda:0
for exe in "$BIN"/tests/*; do
  [[ -x "$exe" ]] || continue
  step "test-$(basename "$exe")" "$GPU_STEP_TIMEOUT" "$exe" "${TEST_ARGS[@]}"
done
for exe in "$BIN"/benches/*; do
  [[ -x "$exe" ]] || continue
  step "bench-$(basename "$exe")" "$GPU_STEP_TIMEOUT" "$exe" "${BENCH_ARGS[@]}"
done
engine_bench=$(find "$BIN/benches" -maxdepth 1 -name 'engine*' -type f | head -n1)
# Banded VAE decoding (vae_tile) is tested on the CPU only: run it here beside the whole
# decode at 1024 px, for its time on the device.
if [[ -n "$engine_bench" ]]; then
  for case in vae-1024 vaetiled-1024; do
    step "engine-$case" "$GPU_STEP_TIMEOUT" "$engine_bench" --case "$case" --device cuda --reps 2
  done
fi
if compgen -G "$CARRY/wheels/*.whl" >/dev/null && [[ -n "$engine_bench" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$WORK/site" "$CARRY"/wheels/*.whl &&
    step side-by-side-cuda "$GPU_STEP_TIMEOUT" env PYTHONPATH="$WORK/site" PYTHONUNBUFFERED=1 \
      python3 tools/bench/side_by_side.py --device cuda --ours-binary "$engine_bench" \
      --cases fixture-512,unet-512,vae-512,sdxlunet-1024 --reps 3
else
  record SKIP side-by-side-cuda "(no diffusers wheel in .devcarry/wheels, or no engine bench)"
fi
finish
