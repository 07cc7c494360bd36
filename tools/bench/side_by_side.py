#!/usr/bin/env python3
"""Our engine and diffusers on the same shapes, side by side, in one run.

    pip install -r tools/bench/requirements.txt
    python3 tools/bench/side_by_side.py                       # UNet step and VAE decode, 256 px
    python3 tools/bench/side_by_side.py --cases unet-256,vae-256,unet-512,vae-512 --reps 3

Each case runs in a child process of its own (ours: the `engine` bench binary with
`--case`, diffusers: this script with `--torch-case`), one after the other, so that each
peak RSS is the case's own and the two never compete for the cores. Both sides build
the same module from the same config (`crates/engine/benches/configs/sd15-*.json`, SD
v1.5 sizes) with random weights, in f32 on the CPU, with the same thread count, and time
the same call after one untimed warm-up:

- `unet-N`: one UNet step with classifier-free guidance (batch 2) at N px;
- `sdxlunet-N`: one step of SDXL base's UNet (`configs/sdxl-unet.json`, 2.6 B
  parameters, about 10 GiB in f32 on each side, one side at a time) with classifier-free
  guidance at N px: the 2048-wide context, pooled text embeddings and size numbers;
- `vae-N`: the VAE decode of one latent at N px;
- `fixture-N`: a whole image at N px on the tiny-sd fixture (tests/fixtures/tiny-sd, its
  own PNDM scheduler), 4 steps with guidance 7.5, prompt to pixels.

Prints a Markdown table with the ratio ours / diffusers (below 1: we are faster). Times
are the fastest of `--reps` runs; this machine is shared, so compare ratios, not times.

On a GPU: `--device cuda` runs both sides in f16 (diffusers with PyTorch's SDPA, its
default attention), ours through the bench binary built with `--features cuda`; pass
`--ours-binary PATH` where there is no cargo (the carried binary on the device machine,
see scripts/gpu-check.sh). Memory is then the peak GPU memory PyTorch allocated against
our process's peak RSS, so only the times compare.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "crates/engine/benches/configs"


def torch_case(name: str, reps: int, threads: int, device: str) -> dict:
    """Runs one case with diffusers in this process; returns its measurement."""
    import torch

    start = time.perf_counter()
    call = torch_call(name, threads, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    build = time.perf_counter() - start
    times = []
    with torch.inference_mode():
        call()  # warm-up: first-call allocations and kernel selection
        sync()
        for _ in range(reps):
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
    return {
        "secs": times,
        "build_secs": build,
        "peak_rss_kb": (torch.cuda.max_memory_allocated() // 1024 if device == "cuda"
                        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "version": f"torch {torch.__version__}, diffusers {__import__('diffusers').__version__}",
    }


def torch_call(name: str, threads: int, device: str):
    """Builds one case's diffusers model and inputs; returns the call to time."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    randn = lambda *shape: torch.randn(*shape).to(device, dtype)
    kind, pixels = name.split("-")
    latent = int(pixels) // 8
    if kind == "unet":
        model = UNet2DConditionModel.from_config(json.loads((CONFIGS / "sd15-unet.json").read_text()))
        sample = randn(2, 4, latent, latent)
        context = randn(2, 77, 768)
        call = lambda: model(sample, 981, encoder_hidden_states=context).sample
    elif kind == "sdxlunet":
        model = UNet2DConditionModel.from_config(json.loads((CONFIGS / "sdxl-unet.json").read_text()))
        sample = randn(2, 4, latent, latent)
        context = randn(2, 77, 2048)
        size = float(pixels)
        added = {"text_embeds": randn(2, 1280),
                 "time_ids": torch.tensor([[size, size, 0.0, 0.0, size, size]] * 2).to(device, dtype)}
        call = lambda: model(sample, 981, encoder_hidden_states=context, added_cond_kwargs=added).sample
    elif kind == "fixture":
        # The same prompt and steps as the engine bench's `fixture-N` case.
        model = StableDiffusionPipeline.from_pretrained(ROOT / "tests/fixtures/tiny-sd", safety_checker=None)
        model.set_progress_bar_config(disable=True)
        size = int(pixels)
        call = lambda: model(
            "a photo of an astronaut riding a horse", num_inference_steps=4, guidance_scale=7.5,
            height=size, width=size, generator=torch.Generator().manual_seed(0), output_type="np",
        ).images
    elif kind == "vae":
        model = AutoencoderKL.from_config(json.loads((CONFIGS / "sd15-vae.json").read_text()))
        latents = randn(1, 4, latent, latent)
        call = lambda: model.decode(latents).sample
    else:
        raise SystemExit(f"unknown case {name}")
    if hasattr(model, "eval"):
        model.eval()
    model.to(device, dtype)
    return call


def ours(name: str, reps: int, threads: int, device: str, binary: str | None) -> dict:
    """Runs one case with our engine's bench binary (built by cargo unless given)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    dtype = "f16" if device == "cuda" else "f32"
    # One untimed run first, as on the diffusers side.
    case_args = ["--case", name, "--reps", str(reps + 1), "--device", device, "--dtype", dtype]
    if binary:
        command = [binary, *case_args]
    else:
        features = ["--features", "cuda"] if device == "cuda" else []
        command = ["cargo", "bench", "-q", "-p", "refact-engine", *features, "--bench", "engine",
                   "--", *case_args]
    out = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    measurement = json.loads(out.strip().splitlines()[-1])
    measurement["secs"] = measurement["secs"][1:]
    return measurement


def child(name: str, reps: int, threads: int, device: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--torch-case", name, "--reps", str(reps), "--threads", str(threads),
         "--device", device],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="unet-256,vae-256")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--ours-binary", help="the engine bench binary, instead of cargo bench")
    parser.add_argument("--torch-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_case:
        print(json.dumps(torch_case(args.torch_case, args.reps, args.threads, args.device)))
        return

    rows = []
    version = ""
    for name in args.cases.split(","):
        print(f"running {name}: ours ...", file=sys.stderr)
        mine = ours(name, args.reps, args.threads, args.device, args.ours_binary)
        print(f"running {name}: diffusers ...", file=sys.stderr)
        theirs = child(name, args.reps, args.threads, args.device)
        version = theirs["version"]
        rows.append((name, mine, theirs))

    where = "f16 CUDA" if args.device == "cuda" else "f32 CPU"
    memory = "peak GPU memory diffusers" if args.device == "cuda" else "peak RSS diffusers"
    print(f"\n{platform.processor() or platform.machine()}, {args.threads} threads, {where}, "
          f"random weights, fastest of {args.reps} runs after a warm-up; {version}\n")
    print(f"| case | ours | diffusers | ours / diffusers | peak RSS ours | {memory} |")
    print("|---|---|---|---|---|---|")
    for name, mine, theirs in rows:
        a, b = min(mine["secs"]), min(theirs["secs"])
        print(f"| {name} | {a:.2f} s | {b:.2f} s | {a / b:.2f}× | "
              f"{mine['peak_rss_kb'] / 1024:.0f} MiB | {theirs['peak_rss_kb'] / 1024:.0f} MiB |")


if __name__ == "__main__":
    main()
