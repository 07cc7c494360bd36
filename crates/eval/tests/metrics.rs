//! The paper's metrics on hand-built CLIP scores: each formula, ties, F1 and the spread.

use refact_eval::metrics::{f1, summarise, Comparison, SeedTests, Stat};

fn c(wanted: f32, other: f32) -> Comparison {
    Comparison::new(wanted, other)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// One row, one seed: efficacy passes, 3 of 5 positives (one tie), 4 of 5 negatives.
fn example(seed: u64) -> SeedTests {
    SeedTests {
        seed,
        efficacy: c(25.0, 21.0),
        generality: vec![
            c(30.0, 20.0),
            c(20.0, 20.0),
            c(19.0, 20.0),
            c(22.5, 22.4),
            c(18.0, 17.0),
        ],
        specificity: vec![
            c(24.0, 23.0),
            c(24.0, 23.0),
            c(24.0, 23.0),
            c(24.0, 23.0),
            c(23.0, 23.0),
        ],
    }
}

#[test]
fn each_formula_on_one_row_and_seed() {
    let m = example(0).metrics();
    assert_eq!(m.efficacy, 1.0);
    assert!(close(m.generality.unwrap(), 3.0 / 5.0));
    assert!(close(m.specificity.unwrap(), 4.0 / 5.0));
}

#[test]
fn ties_fail_every_metric() {
    let tied = SeedTests {
        seed: 0,
        efficacy: c(21.0, 21.0),
        generality: vec![c(20.0, 20.0)],
        specificity: vec![c(23.0, 23.0)],
    };
    let m = tied.metrics();
    assert_eq!(
        (m.efficacy, m.generality, m.specificity),
        (0.0, Some(0.0), Some(0.0))
    );
    let s = summarise(&[vec![tied]]);
    assert_eq!(s.f1.unwrap().mean, 0.0);
}

#[test]
fn specificity_passes_when_the_negative_keeps_winning() {
    // CLIP(img, negative_new) < CLIP(img, negative): wanted is the unchanged negative.
    let unchanged = SeedTests {
        seed: 0,
        efficacy: c(0.0, 1.0),
        generality: vec![],
        specificity: vec![c(26.0, 20.0), c(20.0, 26.0)],
    };
    let m = unchanged.metrics();
    assert_eq!(m.efficacy, 0.0);
    assert_eq!(m.generality, None);
    assert!(close(m.specificity.unwrap(), 0.5));
}

#[test]
fn f1_is_the_geometric_mean() {
    assert!(close(f1(0.64, 0.25), 0.4));
    assert!(close(f1(1.0, 1.0), 1.0));
    assert_eq!(f1(0.0, 0.9), 0.0);
}

#[test]
fn rows_are_averaged_per_seed_then_over_seeds_with_standard_error() {
    // Seed 0: row A (E 1, G .6, S .8) and row B (E 0, G 1, S .2) → E .5, G .8, S .5.
    // Seed 1: row A only passing generality fully, row B all failing.
    let row_b0 = SeedTests {
        seed: 0,
        efficacy: c(1.0, 2.0),
        generality: vec![c(2.0, 1.0); 5],
        specificity: vec![
            c(2.0, 1.0),
            c(1.0, 2.0),
            c(1.0, 2.0),
            c(1.0, 2.0),
            c(1.0, 1.0),
        ],
    };
    let row_a1 = SeedTests {
        seed: 1,
        efficacy: c(2.0, 1.0),
        generality: vec![c(2.0, 1.0); 5],
        specificity: vec![c(2.0, 1.0); 5],
    };
    let row_b1 = SeedTests {
        seed: 1,
        efficacy: c(1.0, 1.0),
        generality: vec![c(1.0, 1.0); 5],
        specificity: vec![c(1.0, 2.0); 5],
    };
    let s = summarise(&[vec![example(0), row_a1], vec![row_b0, row_b1]]);
    assert_eq!(s.rows, 2);
    // Per seed: E [0.5, 0.5], G [0.8, 0.5], S [0.5, 0.5].
    let e = s.efficacy.unwrap();
    assert!(close(e.mean, 0.5));
    assert!(close(e.se.unwrap(), 0.0));
    let g = s.generality.unwrap();
    assert!(close(g.mean, 0.65));
    // Sample std of [0.8, 0.5] = 0.3/√2; SE = that / √2 = 0.15. Population std = 0.15.
    assert!(close(g.se.unwrap(), 0.15));
    assert!(close(g.std, 0.15));
    assert_eq!(g.seeds, 2);
    let sp = s.specificity.unwrap();
    assert!(close(sp.mean, 0.5));
    // F1 per seed from that seed's means: √(0.8·0.5) and √(0.5·0.5).
    let f = s.f1.unwrap();
    let want = [(0.8f64 * 0.5).sqrt(), 0.5];
    assert!(close(f.mean, (want[0] + want[1]) / 2.0));
    let sd = ((want[0] - want[1]).powi(2) / 2.0).sqrt();
    assert!(close(f.se.unwrap(), sd / 2f64.sqrt()));
}

#[test]
fn standard_error_of_three_seeds_and_none_for_one() {
    let s = Stat::of(&[1.0, 0.0, 0.5]).unwrap();
    assert!(close(s.mean, 0.5));
    // Sample variance 0.25 → std 0.5 → SE 0.5/√3.
    assert!(close(s.se.unwrap(), 0.5 / 3f64.sqrt()));
    assert!(close(s.std, (0.5f64 / 3.0).sqrt()));
    let one = Stat::of(&[0.7]).unwrap();
    assert_eq!((one.mean, one.se, one.std), (0.7, None, 0.0));
    assert!(Stat::of(&[]).is_none());
}
