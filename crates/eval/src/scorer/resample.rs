//! Image resizing that matches Pillow's `Image.resize` for 8-bit RGB images, which is what
//! transformers' CLIP preprocessing calls. Pillow resizes in two separable passes
//! (horizontal, then vertical) with a convolution whose support widens by the scale
//! factor when downscaling (antialiasing), and rounds the intermediate image to bytes.
//!
//! Measured against Pillow 13.0 through transformers' CLIPImageProcessorPil: square and
//! landscape inputs (512² and 640×480 → 224, 300×200 upscaled) match to within one byte
//! level on a handful of pixels (fixed-point rounding). For some portrait shapes Pillow
//! 13 runs the vertical pass first, which moves about a quarter of the pixels by one or
//! two byte levels; Pillow ≤ 12's source always runs the horizontal pass first, as here.

/// The resampling filters of `preprocessor_config.json`'s `resample` (Pillow's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// 0: nearest neighbour: the input pixel under each output pixel's centre.
    Nearest,
    /// 2: bilinear (triangle).
    Bilinear,
    /// 3: bicubic with a = -0.5, CLIP's choice.
    Bicubic,
    /// 1: Lanczos with three lobes.
    Lanczos,
    /// 4: box.
    Box,
    /// 5: Hamming.
    Hamming,
}

impl Filter {
    /// Pillow's integer code for the filter, or `None` for an unknown code.
    pub fn from_pil_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Filter::Nearest),
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => {
                // Nearest never reaches here (see `coefficients`); the box is its fallback.
                if (-0.5..0.5).contains(&x) {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => (1.0 - x.abs()).max(0.0),
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let px = x * std::f64::consts::PI;
                    px.sin() / px * (0.54 + 0.46 * px.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px
    }
}

/// For each output index: the first input index and the normalised weights from there.
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    if filter == Filter::Nearest {
        return (0..out_size)
            .map(|xx| {
                (
                    (((xx as f64 + 0.5) * scale) as usize).min(in_size - 1),
                    vec![1.0],
                )
            })
            .collect();
    }
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // Pillow truncates these toward zero before clamping.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut weights: Vec<f64> = (xmin..xmax)
                .map(|x| filter.weight((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (xmin, weights)
        })
        .collect()
}

fn to_byte(v: f64) -> u8 {
    // Pillow adds one half and truncates (fixed point), then clamps.
    (v + 0.5).floor().clamp(0.0, 255.0) as u8
}

/// Resizes an interleaved RGB byte image (`width` × `height` × 3) to `new_w` × `new_h`.
pub fn resize_rgb(
    pixels: &[u8],
    width: usize,
    height: usize,
    new_w: usize,
    new_h: usize,
    filter: Filter,
) -> Vec<u8> {
    let mut current = pixels.to_vec();
    let mut cur_w = width;
    if new_w != width {
        let coeffs = coefficients(width, new_w, filter);
        let mut out = vec![0u8; new_w * height * 3];
        for y in 0..height {
            for (x, (start, weights)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let sum: f64 = weights
                        .iter()
                        .enumerate()
                        .map(|(k, w)| w * current[(y * cur_w + start + k) * 3 + c] as f64)
                        .sum();
                    out[(y * new_w + x) * 3 + c] = to_byte(sum);
                }
            }
        }
        current = out;
        cur_w = new_w;
    }
    if new_h != height {
        let coeffs = coefficients(height, new_h, filter);
        let mut out = vec![0u8; cur_w * new_h * 3];
        for (y, (start, weights)) in coeffs.iter().enumerate() {
            for x in 0..cur_w {
                for c in 0..3 {
                    let sum: f64 = weights
                        .iter()
                        .enumerate()
                        .map(|(k, w)| w * current[((start + k) * cur_w + x) * 3 + c] as f64)
                        .sum();
                    out[(y * cur_w + x) * 3 + c] = to_byte(sum);
                }
            }
        }
        current = out;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_widen_when_downscaling() {
        let down = coefficients(64, 32, Filter::Bicubic);
        let up = coefficients(32, 64, Filter::Bicubic);
        for (_, w) in down.iter().chain(up.iter()) {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        // Interior taps: support 2 × scale 2 → 8 taps down; 4 taps up.
        assert_eq!(down[8].1.len(), 8);
        assert_eq!(up[16].1.len(), 4);
    }

    #[test]
    fn a_flat_image_stays_flat_and_same_size_is_identity() {
        let flat = vec![77u8; 10 * 6 * 3];
        assert!(resize_rgb(&flat, 10, 6, 4, 3, Filter::Bicubic)
            .iter()
            .all(|&v| v == 77));
        let ramp: Vec<u8> = (0..5 * 4 * 3).map(|i| i as u8).collect();
        assert_eq!(resize_rgb(&ramp, 5, 4, 5, 4, Filter::Bicubic), ramp);
    }

    #[test]
    fn halving_a_box_filtered_image_averages_pairs() {
        // One row [0, 100, 200, 250] halved with a box filter: (0+100)/2, (200+250)/2.
        let row: Vec<u8> = [0u8, 100, 200, 250]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let out = resize_rgb(&row, 4, 1, 2, 1, Filter::Box);
        assert_eq!(out, vec![50, 50, 50, 225, 225, 225]);
    }
}
