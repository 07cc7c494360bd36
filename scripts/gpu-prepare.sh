#!/usr/bin/env bash
# Run HERE (no GPU needed): builds the CUDA binaries and fills .devcarry/ (git-ignored)
# with what scripts/gpu-check.sh needs on the GPU machine, which has no Rust toolchain:
#
#   .devcarry/bin.tar.xz         binaries without debug info: bin/refact, examples/*, tests/*, benches/*
#   .devcarry/MANIFEST.txt       commit, sizes, libraries the binaries need
#   .devcarry/wheels/            diffusers (the GPU image has PyTorch and transformers,
#                                not diffusers) for tools/bench/side_by_side.py there
#
# The fixtures (tests/fixtures) and the caption corpus (assets/) are committed: they
# travel with the working tree, and the carried binaries find them from the repo root.
# The whole working tree that travels must stay under 64 MiB. Environment:
#   GPU_PACKAGES   packages whose tests/benches/examples are built (default refact-engine)
#   GPU_TESTS      regex on test binary names to carry (default 'cuda|gpu'; '.' = all,
#                  the unit tests of a crate are named after it, e.g. refact_engine)
#   CARRY_LIMIT_MB the travel limit to check against (default 64)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
GPU_PACKAGES=${GPU_PACKAGES:-refact-engine}
GPU_TESTS=${GPU_TESTS:-cuda|gpu}
CARRY_LIMIT_MB=${CARRY_LIMIT_MB:-64}
CARRY="$REPO_ROOT/.devcarry"

log() { printf '[gpu-prepare] %s\n' "$*" >&2; }

if [[ ! -x "${CUDA_SDK_DIR:-/work/cuda-sdk}/cuda-13.0/bin/nvcc" ]]; then
  scripts/cuda-toolchain.sh
fi
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
log "building with CUDA_HOME=$CUDA_HOME, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, into $CARGO_TARGET_DIR"

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/bin/examples" "$staging/bin/tests" "$staging/bin/benches"

# Paths of the executables that a cargo command produced, read from its JSON messages,
# keeping the artifacts whose message contains `want`. `cargo test` also builds examples
# and `--benches` the library's bench harness: `want` keeps those out.
executables() {
  local want=$1
  shift
  cargo "$@" --message-format=json-render-diagnostics |
    grep '"reason":"compiler-artifact"' | grep -F "$want" |
    grep -o '"executable":"[^"]*"' | cut -d'"' -f4
}
# Copies a binary into the staging folder without its debug info (the symbol table
# stays, so a panic's backtrace still names functions); cargo's hash suffix is dropped.
stage() {
  local source=$1 folder=$2 name
  name=$(basename "$source" | sed -E 's/-[0-9a-f]{16}$//')
  strip --strip-debug -o "$staging/$folder/$name" "$source"
  log "  $folder/$name: $(du -m "$source" | cut -f1) MiB -> $(du -m "$staging/$folder/$name" | cut -f1) MiB without debug info"
}

packages=()
for package in $GPU_PACKAGES; do packages+=(-p "$package"); done

log "cargo build --release --features cuda -p refact-server --bin refact"
for exe in $(executables '"kind":["bin"]' build --release --features cuda -p refact-server --bin refact); do
  stage "$exe" bin
done
log "examples of $GPU_PACKAGES"
for exe in $(executables '"kind":["example"]' build --release --features cuda "${packages[@]}" --examples); do
  stage "$exe" bin/examples
done
log "tests of $GPU_PACKAGES (carrying those matching /$GPU_TESTS/)"
for exe in $(executables '"test":true' test --release --features cuda "${packages[@]}" --no-run); do
  if basename "$exe" | grep -Eq "$GPU_TESTS"; then stage "$exe" bin/tests; fi
done
log "benches of $GPU_PACKAGES"
for exe in $(executables '"kind":["bench"]' build --release --features cuda "${packages[@]}" --benches); do
  stage "$exe" bin/benches
done

# What the binaries will ask of the GPU machine's dynamic loader.
manifest="$staging/MANIFEST.txt"
{
  echo "refact-serve GPU carry, built $(date -u +%FT%TZ) from $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "toolkit: nvcc $(nvcc --version | awk '/release/ { print $6 }'), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP (candle's PTX and libmoe's SASS)"
  echo "libraries needed (DT_NEEDED):"
  find "$staging/bin" -type f -exec readelf -d {} + 2>/dev/null |
    sed -n 's/.*Shared library: \[\(.*\)\]/  \1/p' | sort -u
  echo "newest symbol versions needed:"
  find "$staging/bin" -type f -exec objdump -T {} + 2>/dev/null |
    grep -oE '(GLIBC|GLIBCXX|CXXABI)_[0-9.]+' | sort -u -t_ -k1,1 -k2,2V |
    awk -F_ '{ newest[$1] = $0 } END { for (k in newest) print "  " newest[k] }'
  echo "binaries:"
  (cd "$staging" && find bin -type f -printf '  %p %s bytes\n' | sort)
} >"$manifest"

# Every driver function the binaries import must exist in the CUDA 13.0 driver API,
# else the dynamic loader refuses to start them (Rust links with -z now).
declared=$(cat "$CUDA_HOME"/include/cuda*.h | grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' | sort -u)
imported=$(find "$staging/bin" -type f -exec nm -D --undefined-only {} + 2>/dev/null |
  awk '{ print $NF }' | grep -E '^cu[A-Z]' | sed 's/@.*//' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$imported") <(printf '%s\n' "$declared"))
if [[ -n "$missing" ]]; then
  log "driver functions imported but not in the CUDA 13.0 headers: $(echo $missing)"
  exit 1
fi
echo "driver functions imported: $(printf '%s\n' "$imported" | grep -c .) (all in the CUDA 13.0 API)" >>"$manifest"

# One xz stream over all binaries: they embed the same PTX, which xz's 64 MiB window
# stores once.
log "compressing binaries"
tar -C "$staging" -cf - bin | xz -9 -T1 >"$staging/bin.tar.xz"
rm -rf "$staging/bin"

rm -rf "$CARRY"
mkdir -p "$CARRY"
mv "$staging/bin.tar.xz" "$staging/MANIFEST.txt" "$CARRY/"

# diffusers for the side-by-side on the GPU machine (Python 3.12 there): a pure-Python
# wheel; its other needs are in that image. Optional: without it the step is skipped.
diffusers_version=$(sed -n 's/^diffusers==//p' tools/bench/requirements.txt)
if python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform any -d "$CARRY/wheels" "diffusers==$diffusers_version"; then
  echo "wheels: $(ls "$CARRY/wheels" | tr '\n' ' ')" >>"$CARRY/MANIFEST.txt"
else
  log "could not download diffusers $diffusers_version: the GPU side-by-side will be skipped"
fi

# Everything that travels: tracked and untracked-not-ignored files (tests/fixtures among
# them), plus .devcarry.
mib() { echo $((($1 + 1048575) / 1048576)); }
tree_bytes=$(git ls-files -z --cached --others --exclude-standard |
  xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
fixture_bytes=$(du -sb tests/fixtures 2>/dev/null | cut -f1)
limit_bytes=$((CARRY_LIMIT_MB * 1048576))
carry_bytes=$(du -sb "$CARRY" | cut -f1)
total=$((tree_bytes + carry_bytes))
{
  echo "sizes: .devcarry $(mib "$carry_bytes") MiB (bin.tar.xz $(mib "$(stat -c %s "$CARRY/bin.tar.xz")") MiB), working tree $(mib "$tree_bytes") MiB (tests/fixtures $(mib "${fixture_bytes:-0}") MiB), total $(mib "$total") of $CARRY_LIMIT_MB MiB"
} | tee -a "$CARRY/MANIFEST.txt" >&2
if ((total > limit_bytes)); then
  log "over the $CARRY_LIMIT_MB MiB travel limit: carry fewer tests (GPU_TESTS) or packages"
  exit 1
fi
log "done; on the GPU machine run: bash scripts/gpu-check.sh  (carry: .devcarry)"
