"""PyTorch's `linear` at the shapes of crates/engine/examples/gemm_shapes.rs, in GF/s.

    python3 tools/bench/linear_shapes.py          # 1 and 2 threads

Each cell is the median of 7 runs; each row has 3 rounds, to show the machine's noise.
"""
import statistics
import time

import torch

SHAPES = [(64, 1280, 1280), (64, 1280, 10240), (64, 5120, 1280),
          (128, 1280, 10240), (256, 1280, 10240), (1024, 640, 5120)]

for threads in (1, 2):
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__} linear, f32, {threads} threads, GF/s (3 rounds)")
    for m, k, n in SHAPES:
        x, w = torch.randn(m, k), torch.randn(n, k)
        rounds = []
        for _ in range(3):
            torch.nn.functional.linear(x, w)
            times = []
            for _ in range(7):
                started = time.perf_counter()
                torch.nn.functional.linear(x, w)
                times.append(time.perf_counter() - started)
            rounds.append(f"{2 * m * k * n / statistics.median(times) / 1e9:.0f}")
        print(f"| {m} | {k} | {n} | {', '.join(rounds)} |")
