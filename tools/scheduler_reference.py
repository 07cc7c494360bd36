#!/usr/bin/env python3
"""Reference trajectories of diffusers' schedulers, for the Rust scheduler tests.

The engine's schedulers (crates/engine/src/scheduler/) must behave exactly like
diffusers' `Class.from_config(scheduler_config.json)`. The full-pipeline goldens need a
UNet, so this tool isolates the schedulers: it runs each one for N steps on a fixed
4-element sample with a fixed fake model, the way StableDiffusionPipeline drives them:

    scheduler = Class.from_config(config); scheduler.set_timesteps(N)
    x = BASE_SAMPLE * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        model_output = 0.3 * model_input + 0.1 * cos(t / 100)       # the fake model
        x = scheduler.step(model_output, t, x).prev_sample          # DDIM: eta = 0

and records timesteps, init_noise_sigma, every model input and every sample. It also
records the timesteps of many (config, N) pairs, or the fact that diffusers refuses them
or produces an out-of-range timestep, which the Rust code must then refuse.

Configs: the fixture's scheduler_config.json (an SD v1.5-style PNDM file) with keys
added, changed or removed, so each case also exercises the per-class defaults of
absent keys.

Output: crates/engine/tests/data/scheduler_reference.json (read by
crates/engine/tests/scheduler_reference.rs). The tests never run this script; rerun it
by hand when the reference changes:

    python3 tools/scheduler_reference.py \
        [--fixture tests/fixtures/tiny-sd] [--out crates/engine/tests/data/scheduler_reference.json]

Needs: torch, diffusers (0.42), numpy.
"""
import argparse
import json
import math
import os

import diffusers
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler

CLASSES = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpmpp-2m": DPMSolverMultistepScheduler,
}

# Shaped like a latent, [batch, channels, h, w]; mixed signs and magnitudes so that
# clip_sample bites on some elements and not on others.
BASE_SAMPLE = [[[[0.9, -1.3], [0.25, 2.1]]]]
FAKE_MODEL = "0.3 * model_input + 0.1 * cos(t / 100)"
REMOVE = object()  # marks a key to delete from the fixture's config


def fake_model(model_input, t):
    return 0.3 * model_input + 0.1 * math.cos(float(t) / 100.0)


def make_config(base, changes):
    cfg = dict(base)
    for key, value in changes.items():
        if value is REMOVE:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


def flat(tensor):
    # 9 significant digits round-trip an f32 exactly; more would only bloat the file.
    return [float("%.9g" % v) for v in tensor.flatten().tolist()]


def times(timesteps):
    # Integral timesteps as JSON integers: shorter, and exact either way.
    return [int(t) if float(t).is_integer() else float(t) for t in timesteps.tolist()]


def trajectory(kind, cfg, steps):
    sched = CLASSES[kind].from_config(cfg)
    sched.set_timesteps(steps)
    x = torch.tensor(BASE_SAMPLE, dtype=torch.float32) * sched.init_noise_sigma
    initial = flat(x)
    inputs, samples = [], []
    for t in sched.timesteps:
        model_input = sched.scale_model_input(x, t)
        inputs.append(flat(model_input))
        x = sched.step(fake_model(model_input, t), t, x).prev_sample
        samples.append(flat(x))
    return dict(
        timesteps=times(sched.timesteps),
        init_noise_sigma=float(sched.init_noise_sigma),
        initial_sample=initial,
        model_inputs=inputs,
        samples=samples,
    )


def trajectory_cases(base):
    """(name, kind, changes to the fixture's config, steps)."""
    linear_defaults = {k: REMOVE for k in ("beta_start", "beta_end", "beta_schedule", "steps_offset")}
    return [
        # PNDM
        ("pndm_fixture", "pndm", {}, 10),
        ("pndm_trailing", "pndm", {"timestep_spacing": "trailing"}, 10),
        ("pndm_linspace_7", "pndm", {"timestep_spacing": "linspace"}, 7),
        ("pndm_prk_warmup", "pndm", {"skip_prk_steps": False}, 10),
        ("pndm_prk_by_default", "pndm", {"skip_prk_steps": REMOVE}, 6),
        ("pndm_v_prediction_alpha_one", "pndm", {"prediction_type": "v_prediction", "set_alpha_to_one": True}, 10),
        ("pndm_class_defaults_linear", "pndm", dict(linear_defaults), 12),
        # DDIM
        ("ddim_fixture", "ddim", {}, 10),
        ("ddim_clip_sample_by_default", "ddim", {"clip_sample": REMOVE}, 10),
        ("ddim_clip_sample_range", "ddim", {"clip_sample": True, "clip_sample_range": 1.5}, 10),
        ("ddim_trailing", "ddim", {"timestep_spacing": "trailing"}, 10),
        ("ddim_linspace_13", "ddim", {"timestep_spacing": "linspace"}, 13),
        ("ddim_v_prediction", "ddim", {"prediction_type": "v_prediction"}, 10),
        ("ddim_sample_prediction", "ddim", {"prediction_type": "sample"}, 10),
        ("ddim_alpha_to_one_by_default", "ddim", {"set_alpha_to_one": REMOVE}, 10),
        ("ddim_squaredcos", "ddim", {"beta_schedule": "squaredcos_cap_v2"}, 10),
        ("ddim_trained_betas", "ddim",
         {"num_train_timesteps": 100, "trained_betas": [0.001 + 0.0002 * i for i in range(100)]}, 8),
        # Euler
        ("euler_fixture", "euler", {}, 10),
        ("euler_leading", "euler", {"timestep_spacing": "leading"}, 10),
        ("euler_trailing", "euler", {"timestep_spacing": "trailing"}, 10),
        ("euler_linspace_20", "euler", {}, 20),
        ("euler_karras", "euler", {"use_karras_sigmas": True}, 10),
        ("euler_karras_leading_sigma_bounds", "euler",
         {"use_karras_sigmas": True, "timestep_spacing": "leading", "sigma_min": 0.1, "sigma_max": 10.0}, 8),
        ("euler_v_prediction", "euler", {"prediction_type": "v_prediction"}, 10),
        ("euler_continuous_v_prediction", "euler",
         {"prediction_type": "v_prediction", "timestep_type": "continuous"}, 10),
        ("euler_final_sigma_min", "euler", {"final_sigmas_type": "sigma_min"}, 10),
        # DPM++ 2M
        ("dpmpp_fixture", "dpmpp-2m", {}, 10),
        ("dpmpp_karras", "dpmpp-2m", {"use_karras_sigmas": True}, 10),
        ("dpmpp_karras_25", "dpmpp-2m", {"use_karras_sigmas": True}, 25),
        ("dpmpp_leading", "dpmpp-2m", {"timestep_spacing": "leading"}, 10),
        ("dpmpp_trailing", "dpmpp-2m", {"timestep_spacing": "trailing"}, 10),
        ("dpmpp_20_steps", "dpmpp-2m", {}, 20),
        ("dpmpp_3_steps", "dpmpp-2m", {}, 3),
        ("dpmpp_v_prediction", "dpmpp-2m", {"prediction_type": "v_prediction"}, 10),
        ("dpmpp_sample_prediction", "dpmpp-2m", {"prediction_type": "sample"}, 10),
        ("dpmpp_heun", "dpmpp-2m", {"solver_type": "heun"}, 10),
        ("dpmpp_first_order", "dpmpp-2m", {"solver_order": 1}, 10),
        ("dpmpp_no_lower_order_final_sigma_min", "dpmpp-2m",
         {"lower_order_final": False, "final_sigmas_type": "sigma_min"}, 10),
        ("dpmpp_euler_at_final_sigma_min", "dpmpp-2m",
         {"euler_at_final": True, "final_sigmas_type": "sigma_min"}, 10),
        ("dpmpp_lambda_min_clipped", "dpmpp-2m", {"lambda_min_clipped": -2.5}, 10),
        # A key DPMSolverMultistep does not declare still reaches its config (diffusers
        # keeps the file's other keys) and bounds its Karras sigmas.
        ("dpmpp_karras_sigma_bounds_from_file", "dpmpp-2m",
         {"use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0}, 10),
    ]


SPACING_STEPS = [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 13, 15, 20, 25, 30, 50, 61, 100]
# More steps than training timesteps, or an offset past the end: checked on DDIM only
# (the tables are long); the Rust code refuses such counts for every scheduler.
LARGE_STEPS = [999, 1000, 1001]


def spacing_groups(base):
    """Timesteps of many step counts per (scheduler, config); `error` where diffusers refuses."""
    groups = []
    for kind in CLASSES:
        for spacing in ("leading", "linspace", "trailing"):
            changes = {"timestep_spacing": spacing}
            if kind == "pndm":
                for skip in (True, False):
                    groups.append((kind, dict(changes, skip_prk_steps=skip)))
            else:
                groups.append((kind, changes))
        if kind in ("euler", "dpmpp-2m"):
            groups.append((kind, {"use_karras_sigmas": True}))
    out = []
    for kind, changes in groups:
        cfg = make_config(base, changes)
        steps_list = SPACING_STEPS + (LARGE_STEPS if kind == "ddim" else [])
        tables = []
        for steps in steps_list:
            entry = dict(steps=steps)
            try:
                sched = CLASSES[kind].from_config(cfg)
                sched.set_timesteps(steps)
                entry["timesteps"] = times(sched.timesteps)
            except Exception as e:  # diffusers refuses: the Rust code must refuse too
                entry["error"] = f"{type(e).__name__}: {e}"
            tables.append(entry)
        out.append(dict(kind=kind, config=cfg, tables=tables))
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", default=os.path.join(repo, "tests", "fixtures", "tiny-sd"))
    ap.add_argument("--out", default=os.path.join(repo, "crates", "engine", "tests", "data",
                                                  "scheduler_reference.json"))
    args = ap.parse_args()

    with open(os.path.join(args.fixture, "scheduler", "scheduler_config.json")) as f:
        base = json.load(f)
    cases = []
    for name, kind, changes, steps in trajectory_cases(base):
        cfg = make_config(base, changes)
        cases.append(dict(name=name, kind=kind, config=cfg, steps=steps, **trajectory(kind, cfg, steps)))
    doc = dict(
        generator="tools/scheduler_reference.py",
        diffusers_version=diffusers.__version__,
        torch_version=torch.__version__,
        fake_model=FAKE_MODEL,
        base_sample_shape=[1, 1, 2, 2],
        base_sample=[v for row in BASE_SAMPLE[0][0] for v in row],
        trajectories=cases,
        spacing=spacing_groups(base),
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} trajectories and {len(doc['spacing'])} timestep table groups to {args.out}")


if __name__ == "__main__":
    main()
