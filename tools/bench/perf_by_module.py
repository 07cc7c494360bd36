"""Where our engine spends a bench case, by module: folds `perf script` output.

    RAYON_NUM_THREADS=1 perf record -F 299 --call-graph dwarf,32768 -o perf.data -- \\
        target/release/deps/engine-HASH --case sdxlunet-256 --reps 1
    perf script -i perf.data -F tid,time,ip,sym --no-inline > stacks.txt
    python3 tools/bench/perf_by_module.py stacks.txt

Run the case on one thread: a product that `gemm` spreads over rayon's threads leaves
samples whose stacks no longer reach the engine function that called it. Samples before
the first one inside `--start` (the UNet's forward by default; building the model with
random weights is not what is measured) are skipped. Each sample is attributed to the
innermost engine function on its stack that MODULES names, and to the leaf kind of the
frames nearest the sample; the tables are shares of the samples kept.
"""
import argparse
import collections
import re

# (name, pattern over frame symbols), tried innermost frame first, in this order.
MODULES = [
    ("convolution", r"layers::conv::|im2col"),
    ("attention kernel", r"fused_attention"),
    ("group norm", r"group_norm|GroupNorm"),
    ("softmax", r"softmax"),
    ("GEGLU", r"GegluFeedForward|layers::geglu"),
    ("attention (reshapes, scaling)", r"unet::attention::Attention::"),
    ("linear layers", r"RowLinear"),
    ("layer norm", r"LayerNorm|layer_norm"),
    ("transformer block (rest)", r"BasicTransformerBlock"),
    ("transformer 2d (rest)", r"Transformer2DModel"),
    ("resnet (rest)", r"resnet|Resnet"),
    ("unet (rest)", r"unet::"),
]
LEAVES = [
    ("gemm microkernel", r"microkernel"),
    ("gemm packing", r"pack_lhs|pack_rhs"),
    ("gemm other", r"gemm"),
    ("erf / gelu", r"erf|gelu"),
    ("copies", r"memcpy|memmove|copy_strided|copy2d"),
    ("zeroing", r"memset|clear_page|zero"),
    ("candle elementwise", r"binary_map|unary_map"),
]


def read_samples(path: str) -> list[dict]:
    samples, current = [], None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if current:
                samples.append(current)
            current = None
        elif not line.startswith("\t"):  # a header: tid, time; frames are tab-indented
            fields = line.split()
            current = {"time": float(fields[1].rstrip(":")), "frames": []}
        elif current is not None:
            parts = line.strip().split(None, 1)
            current["frames"].append(parts[1] if len(parts) > 1 else "?")
    if current:
        samples.append(current)
    return samples


def first_match(frames: list[str], patterns: list[tuple[str, str]]) -> str | None:
    for frame in frames:
        for name, pattern in patterns:
            if re.search(pattern, frame):
                return name
    return None


def leaf_kind(frames: list[str]) -> str:
    # `gemm`'s packing runs inside pulp's vectorising trampoline: name its caller.
    leaf = next((f for f in frames if not re.search(r"vectorize::imp|LocalKey", f)), frames[0])
    return first_match([leaf], LEAVES) or f"other: {leaf[:60]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", help="`perf script -F tid,time,ip,sym --no-inline` output")
    parser.add_argument("--start", default="forward_with", help="skip samples before this frame's first")
    args = parser.parse_args()

    samples = read_samples(args.stacks)
    starts = [s["time"] for s in samples if any(args.start in f for f in s["frames"])]
    if not starts:
        raise SystemExit(f"no sample inside {args.start}")
    samples = [s for s in samples if s["time"] >= min(starts)]
    by_module, by_leaf, both = collections.Counter(), collections.Counter(), collections.Counter()
    for sample in samples:
        module = first_match(sample["frames"], MODULES) or "(none)"
        leaf = leaf_kind(sample["frames"])
        by_module[module] += 1
        by_leaf[leaf] += 1
        both[(module, leaf)] += 1
    total = len(samples)
    print(f"{total} samples from the first in {args.start}\n")
    for title, counter, limit in [("module", by_module, 0.0), ("leaf", by_leaf, 0.3),
                                  ("module × leaf", both, 0.5)]:
        print(f"| {title} | share |\n|---|---|")
        for key, count in counter.most_common():
            share = 100 * count / total
            if share >= limit:
                label = " / ".join(key) if isinstance(key, tuple) else key
                print(f"| {label} | {share:.1f}% |")
        print()


if __name__ == "__main__":
    main()
