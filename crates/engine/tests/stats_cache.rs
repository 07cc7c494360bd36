//! The statistics cache reuses a valid file and recomputes a corrupt or mismatched one.

use candle_core::Device;
use refact_engine::model::TextModel;
use refact_engine::refact::{Corpus, StatsCache, StatsOrigin};

#[test]
fn cache_is_reused_and_corruption_is_detected() {
    let model = TextModel::load(&refact_testkit::fixture_dir(), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = StatsCache::new(dir.path());
    let mut batches = 0;
    let mut count = |_: usize, _: usize| {
        batches += 1;
        true
    };
    let (first, origin) = cache
        .load_or_compute(
            &model.encoder,
            &model.tokenizer,
            &model.fingerprint,
            7,
            &Corpus::Builtin,
            200,
            &mut count,
        )
        .unwrap();
    assert_eq!(origin, StatsOrigin::Computed);
    assert!(batches > 0);

    let (again, origin) = cache
        .load_or_compute(
            &model.encoder,
            &model.tokenizer,
            &model.fingerprint,
            7,
            &Corpus::Builtin,
            200,
            &mut |_, _| panic!("a valid cache must not be recomputed"),
        )
        .unwrap();
    assert_eq!(origin, StatsOrigin::Cached);
    assert_eq!(again.mom2, first.mom2);
    assert_eq!(again.tokens, first.tokens);

    // Flip one byte of the matrix: the checksum catches it and the file is recomputed.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&files[0], &bytes).unwrap();
    let (recomputed, origin) = cache
        .load_or_compute(
            &model.encoder,
            &model.tokenizer,
            &model.fingerprint,
            7,
            &Corpus::Builtin,
            200,
            &mut |_, _| true,
        )
        .unwrap();
    assert_eq!(origin, StatsOrigin::Computed);
    assert_eq!(recomputed.mom2, first.mom2);

    // Another layer or sample count is another file, not a reuse.
    let (_, origin) = cache
        .load_or_compute(
            &model.encoder,
            &model.tokenizer,
            &model.fingerprint,
            7,
            &Corpus::Builtin,
            100,
            &mut |_, _| true,
        )
        .unwrap();
    assert_eq!(origin, StatsOrigin::Computed);
    let (_, origin) = cache
        .load_or_compute(
            &model.encoder,
            &model.tokenizer,
            "another-model",
            7,
            &Corpus::Builtin,
            200,
            &mut |_, _| true,
        )
        .unwrap();
    assert_eq!(origin, StatsOrigin::Computed);
}

#[test]
fn a_file_with_the_wrong_key_inside_is_not_used() {
    let model = TextModel::load(&refact_testkit::fixture_dir(), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = StatsCache::new(dir.path());
    cache
        .load_or_compute(
            &model.encoder,
            &model.tokenizer,
            &model.fingerprint,
            7,
            &Corpus::Builtin,
            100,
            &mut |_, _| true,
        )
        .unwrap();
    // Rename the layer-7 file to where layer 8's would be: its metadata still says 7.
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let renamed = file.to_str().unwrap().replace("layer7", "layer8");
    std::fs::rename(&file, &renamed).unwrap();
    let (stats, origin) = cache
        .load_or_compute(
            &model.encoder,
            &model.tokenizer,
            &model.fingerprint,
            8,
            &Corpus::Builtin,
            100,
            &mut |_, _| true,
        )
        .unwrap();
    assert_eq!(origin, StatsOrigin::Computed);
    assert_eq!(stats.layer, 8);
}
