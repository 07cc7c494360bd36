"""Where diffusers spends one UNet step: PyTorch's profiler over one call of a
`side_by_side.py` case, its operators grouped by self CPU time.

    python3 tools/bench/profile_diffusers.py sdxlunet-256 --threads 2

This is the peer's half of a per-module comparison; ours comes from `perf` on the engine
bench (docs/PERFORMANCE.md says how). One warm-up call, then one profiled call.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import side_by_side  # noqa: E402  (its case builders are the ones compared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a side_by_side.py case, e.g. sdxlunet-256")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25, help="operators to list")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    call = side_by_side.torch_call(args.case, args.threads, "cpu")
    with torch.inference_mode():
        call()
        with profile(activities=[ProfilerActivity.CPU]) as recorded:
            call()
    print(f"diffusers {args.case}, {args.threads} threads, one call after a warm-up")
    print(recorded.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
