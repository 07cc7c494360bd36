//! The VAE decoder against diffusers on both fixtures (tiny-sd, tiny-sd-48).

use candle_core::{DType, Device};
use refact_engine::vae::{Vae, VaeConfig};
use refact_engine::EngineError;
use std::path::Path;

fn vae_decode_matches_diffusers(fixture: &Path) {
    let name = refact_testkit::fixture_name(fixture);
    let g = refact_testkit::goldens_in(fixture);
    let vae = Vae::load(fixture, &Device::Cpu, DType::F32).unwrap();
    // The golden is diffusers' decode of `latent / scaling_factor`; our decode divides
    // by the scaling factor itself, so it takes the raw latent.
    let decoded = vae.decode(&g["vae.latent"]).unwrap();
    let expected = &g["vae.decoded"];
    let abs = refact_testkit::max_abs_diff(&decoded, expected);
    let scaled = refact_testkit::max_scaled_diff(&decoded, expected);
    println!(
        "{name} vae.decoded: max abs error {abs:.3e}, max scaled error {scaled:.3e} (max |out| {:.3})",
        refact_testkit::max_abs(expected)
    );
    assert!(
        scaled < 1e-4,
        "{name}: VAE differs from diffusers by {scaled:.3e}"
    );
}

/// A batch decodes each row as if it were alone (candle-transformers' `AutoEncoderKL`,
/// used before, mixed rows: 0.15 off on the fixture), so the pipeline can decode a whole
/// batch in one call.
fn a_batch_decodes_each_row_as_alone(fixture: &Path) {
    let name = refact_testkit::fixture_name(fixture);
    let g = refact_testkit::goldens_in(fixture);
    let vae = Vae::load(fixture, &Device::Cpu, DType::F32).unwrap();
    let latent = &g["vae.latent"];
    let other = (latent.flip(&[3]).unwrap() * 0.7).unwrap();
    let batch = candle_core::Tensor::cat(&[latent, &other, latent], 0).unwrap();
    let decoded = vae.decode(&batch).unwrap();
    for (row, alone) in [latent, &other, latent].into_iter().enumerate() {
        let alone = vae.decode(alone).unwrap();
        let row_out = decoded.narrow(0, row, 1).unwrap();
        let diff = refact_testkit::max_abs_diff(&row_out, &alone);
        assert!(
            diff < 1e-5,
            "{name}: row {row} of the batch is {diff:.3e} off"
        );
    }
}

/// The sizes come from the fixture's own vae/config.json (tiny-sd [32, 32, 64, 64],
/// tiny-sd-48 [32, 64, 64, 64]).
fn the_fixture_vae_config_is_read_from_the_file(fixture: &Path) {
    let config = VaeConfig::from_file(&fixture.join("vae/config.json")).unwrap();
    let json = refact_testkit::fixture_json(fixture, "vae/config.json");
    let usizes = |key: &str| -> Vec<usize> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    };
    let usize_of = |key: &str| json[key].as_u64().unwrap() as usize;
    assert_eq!(config.block_out_channels, usizes("block_out_channels"));
    assert_eq!(config.layers_per_block, usize_of("layers_per_block"));
    assert_eq!(config.latent_channels, usize_of("latent_channels"));
    assert_eq!(config.norm_num_groups, usize_of("norm_num_groups"));
    assert_eq!(
        config.downsampling_factor(),
        1 << (config.block_out_channels.len() - 1)
    );
    assert_eq!(config.downsampling_factor(), 8);
    assert!((config.scaling_factor - json["scaling_factor"].as_f64().unwrap()).abs() < 1e-12);
}

refact_testkit::test_each_fixture!(
    vae_decode_matches_diffusers,
    a_batch_decodes_each_row_as_alone,
    the_fixture_vae_config_is_read_from_the_file,
);

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
