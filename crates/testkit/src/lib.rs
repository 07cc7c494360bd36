//! What the workspace's tests share: where the committed fixtures are, the goldens, and
//! tensor comparisons. Every path is inside the repository; no test reads anything
//! outside it.
//!
//! ```text
//! tests/fixtures/tiny-sd/      the tiny random-weight SD v1.5-shaped model (hidden 32),
//!                              golden.safetensors, golden.json, clip-scorer/
//! tests/fixtures/tiny-sd-48/   the same layout with hidden size 48
//! tests/fixtures/tiny-sd2/     an SD 2.x-shaped model (OpenCLIP-style encoder, v-prediction)
//! tests/fixtures/tiny-sdxl/    an SDXL-shaped model (two text encoders, size conditioning)
//! tests/fixtures/data/         road_sample.csv, timed_sample.csv (RoAD and TIMED layouts)
//! assets/coco_val2017_captions.txt   the caption corpus (also embedded in the engine)
//! ```

pub mod facts;

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root: where this crate was built (`crates/testkit/../..`), or, when the
/// test binaries were carried to another machine (scripts/gpu-check.sh), the nearest
/// ancestor of the working directory that holds `tests/fixtures`.
pub fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let is_root =
            |dir: &Path| dir.join("Cargo.toml").is_file() && dir.join("tests/fixtures").is_dir();
        let found = if is_root(&built) {
            Some(built.clone())
        } else {
            std::env::current_dir().ok().and_then(|cwd| {
                cwd.ancestors()
                    .find(|dir| is_root(dir))
                    .map(Path::to_path_buf)
            })
        };
        let root = found.unwrap_or(built);
        std::fs::canonicalize(&root).unwrap_or(root)
    })
}

/// `tests/fixtures` of the repository.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("tests/fixtures")
}

/// One fixture model by name: `tiny-sd`, `tiny-sd-48`.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// The tiny random-weight SD v1.5-shaped pipeline (hidden size 32), with its goldens and
/// `clip-scorer/`.
pub fn fixture_dir() -> PathBuf {
    fixture("tiny-sd")
}

/// The same pipeline with hidden size 48.
pub fn fixture_dir_48() -> PathBuf {
    fixture("tiny-sd-48")
}

/// Every fixture model with goldens, by name: `tiny-sd` (SD v1.5-shaped, hidden 32),
/// `tiny-sd-48` (hidden 48), `tiny-sd2` (SD 2.x-shaped) and `tiny-sdxl` (SDXL-shaped,
/// two text encoders). Parity checks run on each, so that a size mix-up shows.
pub const FIXTURES: [&str; 4] = ["tiny-sd", "tiny-sd-48", "tiny-sd2", "tiny-sdxl"];

/// The fixture's name (its folder's name), for messages.
pub fn fixture_name(fixture: &Path) -> String {
    fixture
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| fixture.display().to_string())
}

/// A JSON file of a fixture folder, e.g. `vae/config.json`.
pub fn fixture_json(fixture: &Path, file: &str) -> serde_json::Value {
    let path = fixture.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Defines, for each named check `fn check(fixture: &Path)` of the calling file, one
/// `#[test]` per fixture model: `tiny_sd::check`, `tiny_sd_48::check`, `tiny_sd2::check`
/// and `tiny_sdxl::check`, so a failure names the fixture. Call it once per test file;
/// [`test_fixtures!`] takes an explicit list instead.
///
/// ```ignore
/// fn vae_matches_diffusers(fixture: &std::path::Path) { /* ... */ }
/// refact_testkit::test_each_fixture!(vae_matches_diffusers);
/// ```
#[macro_export]
macro_rules! test_each_fixture {
    ($($check:ident),+ $(,)?) => {
        $crate::test_fixtures!(
            [tiny_sd = "tiny-sd", tiny_sd_48 = "tiny-sd-48", tiny_sd2 = "tiny-sd2",
             tiny_sdxl = "tiny-sdxl"];
            $($check),+
        );
    };
}

/// [`test_each_fixture!`] for the fixtures listed as `module = "folder"`:
///
/// ```ignore
/// refact_testkit::test_fixtures!([tiny_sd = "tiny-sd", tiny_sd2 = "tiny-sd2"]; unet_matches);
/// ```
#[macro_export]
macro_rules! test_fixtures {
    ([$($module:ident = $name:literal),+ $(,)?]; $($check:ident),+ $(,)?) => {
        // The checks travel as one token tree, so that they can repeat inside each module.
        $crate::test_fixtures!(@each [$($module = $name),+] [$($check),+]);
    };
    (@each [$($module:ident = $name:literal),+] $checks:tt) => {
        $( $crate::fixture_test_module!($module, $name, $checks); )+
    };
}

/// One fixture's module of tests; used by [`test_fixtures!`].
#[doc(hidden)]
#[macro_export]
macro_rules! fixture_test_module {
    ($module:ident, $name:literal, [$($check:ident),+]) => {
        mod $module {
            $(
                #[test]
                fn $check() {
                    super::$check(&$crate::fixture($name))
                }
            )+
        }
    };
}

/// The fixture's CLIP scorer (transformers' CLIPModel layout).
pub fn scorer_dir() -> PathBuf {
    fixture_dir().join("clip-scorer")
}

/// `tests/fixtures/data`: the RoAD and TIMED validation files.
pub fn data_dir() -> PathBuf {
    fixtures_dir().join("data")
}

/// A file of [`data_dir`], e.g. `road_sample.csv`.
pub fn data_file(name: &str) -> PathBuf {
    data_dir().join(name)
}

/// The caption corpus for layer statistics (the file the engine's builtin corpus embeds).
pub fn captions() -> PathBuf {
    workspace_root().join("assets/coco_val2017_captions.txt")
}

/// Every tensor of `golden.safetensors` of the `tiny-sd` fixture, on the CPU.
pub fn goldens() -> HashMap<String, Tensor> {
    goldens_in(&fixture_dir())
}

/// Every tensor of `golden.safetensors` in a fixture folder, on the CPU.
pub fn goldens_in(fixture: &Path) -> HashMap<String, Tensor> {
    let path = fixture.join("golden.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("goldens at {}: {e}", path.display()))
}

/// One golden tensor of the `tiny-sd` fixture.
pub fn golden(key: &str) -> Tensor {
    goldens()
        .remove(key)
        .unwrap_or_else(|| panic!("golden `{key}` missing"))
}

/// `golden.json` of the `tiny-sd` fixture: the inputs and scalar results.
pub fn golden_json() -> serde_json::Value {
    golden_json_in(&fixture_dir())
}

/// `golden.json` of a fixture folder.
pub fn golden_json_in(fixture: &Path) -> serde_json::Value {
    let path = fixture.join("golden.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The prompts of the `tiny-sd` fixture's `golden.json`.
pub fn golden_prompts() -> Vec<String> {
    golden_json()["prompts"]
        .as_array()
        .expect("golden.json has `prompts`")
        .iter()
        .map(|p| p.as_str().expect("prompts are strings").to_string())
        .collect()
}

/// The prompts of a fixture's `golden.json`.
pub fn golden_prompts_in(fixture: &Path) -> Vec<String> {
    golden_json_in(fixture)["prompts"]
        .as_array()
        .expect("golden.json has `prompts`")
        .iter()
        .map(|p| p.as_str().expect("prompts are strings").to_string())
        .collect()
}

/// The fixture's main ReFACT layer (`golden.json:main_layer`).
pub fn main_layer_in(fixture: &Path) -> usize {
    golden_json_in(fixture)["main_layer"]
        .as_u64()
        .expect("golden.json has `main_layer`") as usize
}

/// Largest |a − b| over the tensor, divided by the largest |b|: the error relative to
/// the output's own scale (one number for the whole tensor, unlike [`max_scaled_diff`],
/// which scales each element by max(1, |b|)).
pub fn max_diff_relative_to_scale(a: &Tensor, b: &Tensor) -> f32 {
    max_abs_diff(a, b) / max_abs(b)
}

/// A deterministic f32 tensor of `shape` on the CPU with values spread over [−0.5, 0.5),
/// different for each `seed`: operands for kernel tests, without a random generator.
pub fn pattern(shape: impl Into<candle_core::Shape>, seed: usize) -> Tensor {
    let shape = shape.into();
    let values: Vec<f32> = (0..shape.elem_count())
        .map(|i| (((i * 7919 + seed * 104_729) % 1999) as f32 / 999.5 - 1.0) * 0.5)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("pattern tensor")
}

/// Largest |x| of a tensor (NaN if any element is NaN).
pub fn max_abs(t: &Tensor) -> f32 {
    values(t).iter().map(|x| x.abs()).fold(0.0, nan_max)
}

/// The values of a tensor of any shape, device and float dtype, as f32.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("tensor values as f32")
}

/// Largest absolute difference between two tensors of the same shape (compared in f32
/// on the CPU).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    values(a)
        .iter()
        .zip(&values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, nan_max)
}

/// Mean |a − b| over all elements.
pub fn mean_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (values(a), values(b));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len().max(1) as f32
}

/// Largest |a − b| / max(1, |b|): absolute for small values, relative for large ones
/// (FIXTURE.md's measure for encoder, UNet and VAE outputs).
pub fn max_scaled_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    values(a)
        .iter()
        .zip(&values(b))
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, nan_max)
}

/// Cosine similarity of two tensors (any shape, flattened), accumulated in f64.
pub fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (values(a), values(b));
    assert_eq!(a.len(), b.len(), "sizes differ");
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb)) as f32
}

/// `max` that keeps a NaN (`f32::max` drops it, which would hide a NaN output).
fn nan_max(acc: f32, x: f32) -> f32 {
    if acc.is_nan() || x.is_nan() {
        f32::NAN
    } else {
        acc.max(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons() {
        let a = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1.0f32, 2.5, 1.0], &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 2.0);
        assert_eq!(max_scaled_diff(&a, &b), 2.0);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-6);
        let nan = Tensor::new(&[1.0f32, f32::NAN, 3.0], &Device::Cpu).unwrap();
        assert!(max_abs_diff(&nan, &a).is_nan(), "a NaN is never hidden");
        assert_eq!(max_abs(&b), 2.5);
        assert_eq!(max_diff_relative_to_scale(&a, &b), 0.8);
        assert!(max_diff_relative_to_scale(&a, &nan).is_nan());
    }

    #[test]
    fn paths_are_inside_the_repository() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
        assert!(captions().is_file());
        for path in [fixture_dir(), fixture_dir_48(), data_dir()] {
            assert!(path.starts_with(root), "{}", path.display());
        }
        for name in FIXTURES {
            assert!(fixture(name).join("golden.json").is_file(), "{name}");
            assert_eq!(fixture_name(&fixture(name)), name);
        }
    }
}
