//! The UNet against diffusers on the fixture, other sizes from a config, and refusals.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use refact_engine::unet::{UNet2DConditionModel, UNetConfig};
use refact_engine::EngineError;

#[test]
fn unet_matches_diffusers_on_the_fixture() {
    let g = refact_testkit::goldens();
    let unet = UNet2DConditionModel::load(&refact_testkit::fixture_dir(), &Device::Cpu, DType::F32)
        .unwrap();
    let timestep = g["unet.timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let out = unet
        .forward(&g["unet.sample"], timestep, &g["unet.context"])
        .unwrap();
    let expected = &g["unet.out"];
    let abs = refact_testkit::max_abs_diff(&out, expected);
    let scaled = refact_testkit::max_scaled_diff(&out, expected);
    println!("unet.out: max abs error {abs:.3e}, max scaled error {scaled:.3e}");
    assert!(scaled < 1e-4, "UNet differs from diffusers by {scaled:.3e}");
}

#[test]
fn unet_takes_a_batch_of_one_and_gives_the_same_rows() {
    // Each batch row is independent: row 1 alone equals row 1 of the batch of two.
    let g = refact_testkit::goldens();
    let unet = UNet2DConditionModel::load(&refact_testkit::fixture_dir(), &Device::Cpu, DType::F32)
        .unwrap();
    let sample = g["unet.sample"].narrow(0, 1, 1).unwrap();
    let context = g["unet.context"].narrow(0, 1, 1).unwrap();
    let out = unet.forward(&sample, 981.0, &context).unwrap();
    let expected = g["unet.out"].narrow(0, 1, 1).unwrap();
    assert!(refact_testkit::max_scaled_diff(&out, &expected) < 1e-4);
}

fn other_sizes_config() -> UNetConfig {
    // Three blocks, other channels, groups, heads per block, two transformer layers,
    // linear projections, a cross-attention width unlike the channels, odd latent size.
    serde_json::from_str(
        r#"{
            "in_channels": 3,
            "out_channels": 5,
            "block_out_channels": [24, 48, 48],
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "attention_head_dim": [2, 4, 6],
            "transformer_layers_per_block": 2,
            "cross_attention_dim": 20,
            "use_linear_projection": true,
            "only_cross_attention": [true, false, false],
            "upcast_attention": true
        }"#,
    )
    .unwrap()
}

#[test]
fn a_config_with_other_sizes_builds_and_runs() {
    let config = other_sizes_config();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let unet = UNet2DConditionModel::new(vb, &config).unwrap();
    // Linear proj_in/proj_out are [channels, channels] matrices, not 1×1 convolutions.
    let data = varmap.data().lock().unwrap();
    let proj_out = data
        .get("down_blocks.1.attentions.0.proj_out.weight")
        .expect("linear proj_out");
    assert_eq!(proj_out.as_tensor().dims(), &[48, 48]);
    let to_k = data
        .get("down_blocks.0.attentions.0.transformer_blocks.1.attn1.to_k.weight")
        .expect("only-cross attn1 reads the context");
    assert_eq!(to_k.as_tensor().dims(), &[24, 20]);
    drop(data);

    // 7×5 latents are not multiples of 4: the upsamplers must follow the skip sizes.
    let sample = Tensor::randn(0f32, 1.0, (2, 3, 7, 5), &Device::Cpu).unwrap();
    let context = Tensor::randn(0f32, 1.0, (2, 9, 20), &Device::Cpu).unwrap();
    let out = unet.forward(&sample, 500.0, &context).unwrap();
    assert_eq!(out.dims(), &[2, 5, 7, 5]);
    let finite = out
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(finite.is_finite());
}

#[test]
fn unsupported_configs_are_refused() {
    for (key, value) in [
        ("addition_embed_type", r#""text_time""#),
        ("class_embed_type", r#""timestep""#),
        ("mid_block_type", r#""UNetMidBlock2DSimpleCrossAttn""#),
        ("time_embedding_type", r#""fourier""#),
        (
            "down_block_types",
            r#"["AttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]"#,
        ),
        (
            "up_block_types",
            r#"["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "AttnUpBlock2D"]"#,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(refact_testkit::fixture_dir().join("unet/config.json"))
                .unwrap(),
        )
        .unwrap();
        json[key] = serde_json::from_str(value).unwrap();
        std::fs::write(&path, json.to_string()).unwrap();
        match UNetConfig::from_file(&path) {
            Err(EngineError::Config { message, .. }) => {
                assert!(message.contains(key), "{key}: message `{message}`")
            }
            other => panic!("{key} = {value}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn weights_that_do_not_match_the_config_are_refused() {
    // The fixture's weights with a config asking for wider blocks.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("unet")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(refact_testkit::fixture_dir().join("unet/config.json")).unwrap(),
    )
    .unwrap();
    json["block_out_channels"] = serde_json::json!([64, 64, 64, 64]);
    std::fs::write(dir.path().join("unet/config.json"), json.to_string()).unwrap();
    std::fs::copy(
        refact_testkit::fixture_dir().join("unet/diffusion_pytorch_model.safetensors"),
        dir.path().join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let err = UNet2DConditionModel::load(dir.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, EngineError::Weights(_)), "{err}");
}
