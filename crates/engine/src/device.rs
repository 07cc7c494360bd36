//! Choosing where the model runs and in which precision.

use crate::error::{EngineError, InvalidKind, Result};
use candle_core::{DType, Device};

/// Parses a device name: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when built with the
/// `cuda` feature and a GPU answers, else the CPU).
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto_device()),
        "cuda" | "gpu" => cuda_device(0),
        other => match other.strip_prefix("cuda:") {
            Some(index) => {
                let ordinal = index.parse::<usize>().map_err(|_| {
                    EngineError::invalid(
                        InvalidKind::UnknownName,
                        "device",
                        format!("`{other}` is not cuda:N"),
                    )
                })?;
                cuda_device(ordinal)
            }
            None => Err(EngineError::invalid(
                InvalidKind::UnknownName,
                "device",
                format!("unknown device `{other}` (expected cpu, cuda, cuda:N or auto)"),
            )),
        },
    }
}

fn auto_device() -> Device {
    if cfg!(feature = "cuda") {
        if let Ok(device) = Device::new_cuda(0) {
            return device;
        }
    }
    Device::Cpu
}

fn cuda_device(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(EngineError::invalid(
            InvalidKind::UnknownName,
            "device",
            "this build has no CUDA support; rebuild with `--features cuda`",
        ));
    }
    Ok(Device::new_cuda(ordinal)?)
}

/// Parses a dtype name for the UNet and VAE (`f32`, `f16`, `bf16`, or `auto`: f16 on
/// CUDA, f32 on the CPU). Half precision is refused on the CPU, where candle has no
/// fast kernels for it. The text encoder always runs in f32: ReFACT's optimisation and
/// the stored deltas need the precision, and it costs almost nothing.
pub fn parse_dtype(name: &str, device: &Device) -> Result<DType> {
    let dtype = match name.trim().to_ascii_lowercase().as_str() {
        "auto" => {
            if device.is_cuda() {
                DType::F16
            } else {
                DType::F32
            }
        }
        "f32" | "float32" => DType::F32,
        "f16" | "float16" | "half" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        other => {
            return Err(EngineError::invalid(
                InvalidKind::UnknownName,
                "dtype",
                format!("unknown dtype `{other}` (expected f32, f16, bf16 or auto)"),
            ))
        }
    };
    if dtype != DType::F32 && device.is_cpu() {
        return Err(EngineError::invalid(
            InvalidKind::UnknownName,
            "dtype",
            "half precision needs a CUDA device; use f32 on the CPU",
        ));
    }
    Ok(dtype)
}

/// Makes candle run elementwise CPU ops on the calling thread unless the user chose
/// otherwise (`CANDLE_NUM_THREADS`). Call first thing in `main`, before any other thread
/// exists: candle reads the variable once.
///
/// Why: candle 0.11 runs elementwise ops on a spinning barrier pool while matrix
/// products run on rayon's threads; on a small machine the two pools fight for the same
/// cores. Measured on the 2-core CI machine, release, ViT-L/14 sizes: a 100-step ReFACT
/// edit 11.1 s → 9.7 s, text encoder (10 × 12 tokens) 0.18–0.21 → 0.15 s, UNet step
/// unchanged, VAE decode 4% slower. Matrix products keep every core either way.
pub fn prefer_single_threaded_elementwise_ops() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Safe in edition 2021; sound here because no other thread runs yet.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Fixes, once, the thread count candle's matrix products use, unless the user chose it
/// (`RAYON_NUM_THREADS`). Call first thing in `main`, with
/// [`prefer_single_threaded_elementwise_ops`].
///
/// Why: candle 0.11 asks for the count on every matmul and, without the variable, works
/// it out again each time by reading /proc/cpuinfo (`num_cpus::get_physical`). A profile
/// of the serving benchmark on the fixture (perf, 2-core machine) spent 7% of all samples
/// formatting /proc/cpuinfo in the kernel for it. The value set is candle's own default,
/// computed once, so the thread count does not change. (Rayon's global pool also reads
/// the variable: it gets candle's count, the physical cores, instead of the logical ones.)
pub fn pin_matmul_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        // Safe in edition 2021; sound here because no other thread runs yet.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// Tells mimalloc to keep memory it has freed mapped instead of returning it to the OS
/// after its `purge_delay` (1 s in mimalloc v3, the version the bindings build). Call
/// first thing in `main` of binaries whose global allocator is mimalloc (the `refact`
/// binary, the benchmarks); elsewhere it sets an option of an allocator nobody uses.
///
/// Why: every UNet step and VAE decode frees and reallocates the same large activations.
/// With purging, reallocations faulted fresh pages in and the kernel cleared them: 11%
/// of a 256 px VAE decode's samples (perf, 2-core machine); without it the decode is
/// 8–10% faster, with the same peak resident memory (the pages are reused, not added).
pub fn keep_freed_memory_mapped() {
    // `mi_option_purge_delay` is entry 15 of `mi_option_t` in mimalloc v2 and v3 (after
    // `…eager_commit_delay` = 14, which the bindings name); the bindings leave it unnamed.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // Its documented defaults, in milliseconds: v3, v2.
    const DEFAULTS_MS: [std::os::raw::c_long; 2] = [1000, 10];
    // SAFETY: reading and setting an option is thread-safe in mimalloc; the option is
    // only set when it holds a documented default, i.e. when 15 is the option we mean.
    unsafe {
        if DEFAULTS_MS.contains(&libmimalloc_sys::mi_option_get(PURGE_DELAY)) {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mimalloc_is_told_to_keep_freed_memory() {
        keep_freed_memory_mapped();
        // SAFETY: reading an option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(15) };
        assert_eq!(
            delay, -1,
            "option 15 is not mimalloc's purge delay any more"
        );
    }

    #[test]
    fn cpu_and_auto_parse_without_a_gpu_build() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("CPU").unwrap().is_cpu());
        if !cfg!(feature = "cuda") {
            assert!(parse_device("auto").unwrap().is_cpu());
            assert!(parse_device("cuda").is_err());
        }
    }

    #[test]
    fn unknown_device_and_dtype_are_refused() {
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_dtype("f8", &Device::Cpu).is_err());
    }

    #[test]
    fn half_precision_is_refused_on_cpu() {
        assert_eq!(parse_dtype("auto", &Device::Cpu).unwrap(), DType::F32);
        assert!(parse_dtype("f16", &Device::Cpu).is_err());
        assert!(parse_dtype("bf16", &Device::Cpu).is_err());
    }
}
