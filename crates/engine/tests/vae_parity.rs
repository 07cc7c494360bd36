//! The VAE decoder against diffusers on the fixture.

use candle_core::{DType, Device};
use refact_engine::vae::{Vae, VaeConfig};
use refact_engine::EngineError;

#[test]
fn vae_decode_matches_diffusers_on_the_fixture() {
    let g = refact_testkit::goldens();
    let vae = Vae::load(&refact_testkit::fixture_dir(), &Device::Cpu, DType::F32).unwrap();
    // The golden is diffusers' decode of `latent / scaling_factor`; our decode divides
    // by the scaling factor itself, so it takes the raw latent.
    let decoded = vae.decode(&g["vae.latent"]).unwrap();
    let expected = &g["vae.decoded"];
    let abs = refact_testkit::max_abs_diff(&decoded, expected);
    let scaled = refact_testkit::max_scaled_diff(&decoded, expected);
    println!("vae.decoded: max abs error {abs:.3e}, max scaled error {scaled:.3e}");
    assert!(scaled < 1e-4, "VAE differs from diffusers by {scaled:.3e}");
}

#[test]
fn the_fixture_vae_config_is_read_from_the_file() {
    let config =
        VaeConfig::from_file(&refact_testkit::fixture_dir().join("vae/config.json")).unwrap();
    assert_eq!(config.block_out_channels, vec![32, 32, 64, 64]);
    assert_eq!(config.downsampling_factor(), 8);
    assert!((config.scaling_factor - 0.18215).abs() < 1e-12);
}

#[test]
fn unsupported_vae_configs_are_refused() {
    for json in [
        r#"{"up_block_types": ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"], "block_out_channels": [32, 32], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"]}"#,
        r#"{"act_fn": "gelu"}"#,
        r#"{"mid_block_add_attention": false}"#,
        r#"{"latents_mean": [0.1, 0.2, 0.3, 0.4]}"#,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        let err = VaeConfig::from_file(&path).unwrap_err();
        assert!(matches!(err, EngineError::Config { .. }), "{json}: {err}");
    }
}
