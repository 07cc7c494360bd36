#!/usr/bin/env bash
# Assembles a CUDA 13.0 toolkit from NVIDIA's wheels on PyPI, so that `--features cuda`
# builds on a machine with no GPU and no system CUDA. The result lives OUTSIDE the repo
# (default /work/cuda-sdk, override with CUDA_SDK_DIR) and is never committed.
#
#   scripts/cuda-toolchain.sh          # download (once), unpack, stub libcuda, self-test
#   source scripts/cuda-env.sh         # then build with --features cuda
#
# Why 13.0 exactly: the GPU machine's driver is R580 (CUDA 13.0). candle embeds its
# kernels as PTX that the driver compiles at start-up, and a driver refuses PTX written
# by a newer nvcc (13.1+ emits a PTX ISA version R580 does not know). The libraries are
# 13.0 too so that we link against the same sonames and symbol versions that PyTorch's
# cu130 wheels provide there.
#
# What the build scripts need (read from candle-kernels' build.rs, cudaforge, cudarc):
# - cudaforge: `nvcc` on PATH (or $NVCC / $CUDA_HOME/bin/nvcc), CUDA_COMPUTE_CAP since
#   there is no nvidia-smi here; nvcc needs cicc + libdevice (nvvm), ptxas, fatbinary,
#   nvlink, the crt/ and runtime headers, and CCCL (cuda/std, cub) for libmoe.a.
# - cudarc (dynamic-linking, cuda-version-from-build-system): `nvcc --version` for the
#   version, then -lcuda -lnvrtc -lcurand -lcublas -lcublasLt searched under $CUDA_HOME
#   (lib, lib/stubs, lib64, ...); candle-kernels adds -lcudart and -lstdc++.
# - libcuda.so comes with the driver, not the toolkit: we generate a link-time stub with
#   soname libcuda.so.1 from the driver functions cudarc declares for this CUDA version.
set -euo pipefail

CUDA_SDK_DIR=${CUDA_SDK_DIR:-/work/cuda-sdk}
CUDA_VERSION=13.0
# cudarc's name for the version (major, 0, minor, 0).
CUDARC_TAG=13000
ROOT="$CUDA_SDK_DIR/cuda-$CUDA_VERSION"
WHEEL_DIR="$CUDA_SDK_DIR/wheels"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Pinned to the CUDA 13.0 releases (13.0 Update 2 where there was one).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary, nvlink, cudafe++
  nvidia-cuda-crt==13.0.88      # include/crt/*: host_config.h, mma.h, ...
  nvidia-nvvm==13.0.88          # cicc, libdevice.10.bc
  nvidia-cuda-runtime==13.0.96  # cuda_runtime.h, cuda_fp16.h, cuda.h, libcudart.so.13
  nvidia-cuda-cccl==13.0.85     # include/cccl: cuda/std, cub, thrust
  nvidia-cuda-nvrtc==13.0.88    # libnvrtc.so.13
  nvidia-curand==10.4.0.35      # libcurand.so.10 (the curand of CUDA 13.0)
  nvidia-cublas==13.0.2.14      # libcublas.so.13, libcublasLt.so.13
)

log() { printf '[cuda-toolchain] %s\n' "$*" >&2; }

if [[ "$(uname -m)" != x86_64 ]]; then
  log "these wheels are for x86_64 Linux; this machine is $(uname -m)"
  exit 1
fi

# 1. Download the wheels once (pip skips the ones already in the folder).
mkdir -p "$WHEEL_DIR"
log "downloading ${#WHEELS[@]} wheels into $WHEEL_DIR (about 680 MB the first time)"
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEEL_DIR" "${WHEELS[@]}"

# 2. Unpack into a fresh folder, then move it into place, so a broken run leaves no
#    half-made toolkit behind. Every wheel puts its files under nvidia/cu13/.
stamp="$(printf '%s\n' "${WHEELS[@]}")"
if [[ -f "$ROOT/.wheels" && "$(cat "$ROOT/.wheels")" == "$stamp" ]]; then
  log "toolkit already unpacked at $ROOT"
else
  staging="$CUDA_SDK_DIR/.staging"
  rm -rf "$staging"
  mkdir -p "$staging"
  for spec in "${WHEELS[@]}"; do
    name=${spec%%==*}
    version=${spec##*==}
    wheel=$(ls "$WHEEL_DIR/${name//-/_}-$version"-*.whl)
    log "unpacking $(basename "$wheel")"
    unzip -qo "$wheel" 'nvidia/*' -d "$staging"
  done
  rm -rf "$ROOT"
  mv "$staging/nvidia/cu13" "$ROOT"
  rm -rf "$staging"

  # nvcc.profile looks for headers and libraries under targets/x86_64-linux, as in a
  # toolkit installed from NVIDIA's packages; cudaforge expects lib64.
  mkdir -p "$ROOT/targets/x86_64-linux"
  ln -sfn ../../include "$ROOT/targets/x86_64-linux/include"
  ln -sfn ../../lib "$ROOT/targets/x86_64-linux/lib"
  ln -sfn ../../lib "$ROOT/targets/x86_64-linux/lib64"
  ln -sfn lib "$ROOT/lib64"

  # The wheels ship only versioned libraries (libcublas.so.13); `-lcublas` needs the
  # unversioned link name.
  for lib in "$ROOT"/lib/lib*.so.*; do
    base=$(basename "$lib")
    case "$base" in *.alt.so.*) continue ;; esac
    link="${base%%.so.*}.so"
    [[ -e "$ROOT/lib/$link" ]] || ln -s "$base" "$ROOT/lib/$link"
  done
  printf '%s\n' "$stamp" >"$ROOT/.wheels"
fi

# 3. The libcuda stub. The symbol list is every driver function that cudarc (the version
#    in Cargo.lock) declares for CUDA 13.0: with dynamic linking each one becomes an
#    undefined symbol that the linker must resolve. Every stub returns 34
#    (CUDA_ERROR_STUB_LIBRARY), as NVIDIA's own stub does, so a binary that picks it up
#    at run time by mistake fails cleanly instead of crashing.
cudarc_version=$(awk '/^name = "cudarc"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$REPO_ROOT/Cargo.lock")
if [[ -z "$cudarc_version" ]]; then
  log "cudarc is not in Cargo.lock; is candle's cuda feature declared?"
  exit 1
fi
cargo_home=${CARGO_HOME:-$HOME/.cargo}
sys_rs=$(ls "$cargo_home"/registry/src/*/"cudarc-$cudarc_version"/src/driver/sys/mod.rs 2>/dev/null | head -n1 || true)
if [[ -z "$sys_rs" ]]; then
  (cd "$REPO_ROOT" && cargo fetch --locked >/dev/null)
  sys_rs=$(ls "$cargo_home"/registry/src/*/"cudarc-$cudarc_version"/src/driver/sys/mod.rs | head -n1)
fi
stub_dir="$ROOT/lib/stubs"
mkdir -p "$stub_dir"
symbols="$stub_dir/libcuda.symbols"
# A function preceded by #[cfg(any(feature = "cuda-...", ...))] exists only for those
# versions; one with no cfg line exists for all of them.
awk -v tag="\"cuda-$CUDARC_TAG\"" '
  /^#\[cfg\(/ { cfg = $0; next }
  /^pub unsafe fn cu[A-Za-z0-9_]*\(/ {
    name = $0
    sub(/^pub unsafe fn /, "", name)
    sub(/\(.*/, "", name)
    if (cfg == "" || index(cfg, tag) > 0) print name
  }
  { cfg = "" }
' "$sys_rs" | sort -u >"$symbols"
count=$(wc -l <"$symbols")
if ((count < 300)); then
  log "only $count driver functions found in $sys_rs: the bindings' layout changed"
  exit 1
fi
# Names cudarc declares but this toolkit's headers do not: the real driver may lack them.
declared=$(cat "$ROOT"/include/cuda*.h | grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' | sort -u)
unknown=$(comm -23 "$symbols" <(printf '%s\n' "$declared"))
if [[ -n "$unknown" ]]; then
  log "declared by cudarc but absent from the CUDA $CUDA_VERSION headers: $(echo $unknown)"
fi
stub_c="$stub_dir/libcuda_stub.c"
{
  echo '/* Link-time stand-in for the driver library; generated by scripts/cuda-toolchain.sh. */'
  while read -r name; do
    echo "int $name(void) { return 34; }"
  done <"$symbols"
} >"$stub_c"
cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$stub_dir/libcuda.so" "$stub_c"
# Lets a CUDA binary start here (it then reports no usable device) when asked for.
ln -sfn libcuda.so "$stub_dir/libcuda.so.1"
log "libcuda stub: $count functions from cudarc $cudarc_version (soname libcuda.so.1)"

# 4. Self-test: nvcc must find cicc, the headers and CCCL, and write PTX for sm_90a.
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
cat >"$probe_dir/probe.cu" <<'EOF'
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>
#include <cuda/std/limits>
extern "C" __global__ void probe(float *x, const __half *h) {
  x[threadIdx.x] = erff(x[threadIdx.x]) + __half2float(h[0]) + cuda::std::numeric_limits<float>::epsilon();
}
EOF
"$ROOT/bin/nvcc" -gencode=arch=compute_90a,code=sm_90a --ptx -std=c++17 -O3 \
  -o "$probe_dir/probe.ptx" "$probe_dir/probe.cu"
"$ROOT/bin/nvcc" -gencode=arch=compute_90a,code=sm_90a -c -Xcompiler -fPIC -std=c++17 \
  -o "$probe_dir/probe.o" "$probe_dir/probe.cu"
ptx_isa=$(awk '/^\.version/ { print $2; exit }' "$probe_dir/probe.ptx")
log "nvcc $("$ROOT/bin/nvcc" --version | awk '/release/ { print $6 }') works; PTX ISA $ptx_isa for sm_90a"
log "ready: source scripts/cuda-env.sh"
