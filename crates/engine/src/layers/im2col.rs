//! im2col for NCHW images: the patch matrix of a band of output rows.
//!
//! Row `(c, ky, kx)` of the matrix holds, for every output position of the band, the
//! input value under kernel tap (ky, kx) of channel c, or 0 in the padding. With
//! stride 1 that row is a shifted copy of input rows, so it is built by `copy_from_slice`
//! rather than element by element. The row order (c, ky, kx) is the order of a PyTorch
//! kernel [c_out, c_in, k, k] flattened, so the weight needs no reordering.

use candle_core::{Result, Shape};
use rayon::prelude::*;
use std::ops::Range;

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Geometry {
    /// The geometry of a convolution, refused when the kernel does not fit the padded input.
    pub fn new(
        batch: usize,
        c_in: usize,
        c_out: usize,
        (in_h, in_w): (usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let out = |size: usize| {
            (size + 2 * padding)
                .checked_sub(kernel)
                .map(|span| span / stride + 1)
        };
        let (Some(out_h), Some(out_w)) = (out(in_h), out(in_w)) else {
            candle_core::bail!("conv2d: a {kernel}×{kernel} kernel does not fit a {in_h}×{in_w} input padded by {padding}")
        };
        Ok(Self {
            batch,
            c_in,
            c_out,
            in_h,
            in_w,
            out_h,
            out_w,
            kernel,
            stride,
            padding,
        })
    }

    /// Values per patch: the gemm's inner dimension.
    pub fn patch_len(&self) -> usize {
        self.c_in * self.kernel * self.kernel
    }

    pub fn output_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    pub fn input_image_len(&self) -> usize {
        self.c_in * self.in_h * self.in_w
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.c_out * self.output_plane()
    }

    pub fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.c_out, self.out_h, self.out_w))
    }

    /// The input column read by output column `x` at kernel tap `kx`, if not padding.
    fn input_column(&self, x: usize, kx: usize) -> Option<usize> {
        (x * self.stride + kx)
            .checked_sub(self.padding)
            .filter(|&column| column < self.in_w)
    }
}

/// Writes the patch matrix of output rows `rows` of one image into `columns`
/// ([patch_len, rows.len() · out_w], row-major). `image` is [c_in, in_h, in_w].
pub fn im2col_rows(g: &Geometry, image: &[f32], rows: Range<usize>, columns: &mut [f32]) {
    let band = rows.len() * g.out_w;
    debug_assert_eq!(columns.len(), g.patch_len() * band);
    let taps = g.kernel * g.kernel;
    columns
        .par_chunks_mut(band)
        .enumerate()
        .for_each(|(patch_row, out)| {
            let channel = patch_row / taps;
            let (ky, kx) = ((patch_row % taps) / g.kernel, patch_row % g.kernel);
            let plane = &image[channel * g.in_h * g.in_w..(channel + 1) * g.in_h * g.in_w];
            for (y, out_row) in rows.clone().zip(out.chunks_exact_mut(g.out_w)) {
                let input_row = (y * g.stride + ky)
                    .checked_sub(g.padding)
                    .filter(|&row| row < g.in_h)
                    .map(|row| &plane[row * g.in_w..(row + 1) * g.in_w]);
                match input_row {
                    None => out_row.fill(0.0),
                    Some(input_row) => copy_tap_row(g, input_row, kx, out_row),
                }
            }
        });
}

/// One output row's values under tap column `kx`: a shifted slice of `input_row`.
fn copy_tap_row(g: &Geometry, input_row: &[f32], kx: usize, out_row: &mut [f32]) {
    if g.stride != 1 {
        for (x, value) in out_row.iter_mut().enumerate() {
            *value = g
                .input_column(x, kx)
                .map_or(0.0, |column| input_row[column]);
        }
        return;
    }
    // Output columns [first, last) read input columns [first + kx − padding, …).
    let first = g.padding.saturating_sub(kx).min(g.out_w);
    let last = (g.in_w + g.padding)
        .saturating_sub(kx)
        .clamp(first, g.out_w);
    out_row[..first].fill(0.0);
    out_row[last..].fill(0.0);
    let start = first + kx - g.padding;
    out_row[first..last].copy_from_slice(&input_row[start..start + (last - first)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patch matrix by its definition, one element at a time.
    fn naive(g: &Geometry, image: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for c in 0..g.c_in {
            for ky in 0..g.kernel {
                for kx in 0..g.kernel {
                    for y in 0..g.out_h {
                        for x in 0..g.out_w {
                            let iy = (y * g.stride + ky) as isize - g.padding as isize;
                            let ix = (x * g.stride + kx) as isize - g.padding as isize;
                            let inside = (0..g.in_h as isize).contains(&iy)
                                && (0..g.in_w as isize).contains(&ix);
                            out.push(if inside {
                                image[c * g.in_h * g.in_w + iy as usize * g.in_w + ix as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_for_every_kernel_stride_and_padding_used() {
        for (kernel, stride, padding, (h, w)) in [
            (3, 1, 1, (5, 7)),
            (3, 2, 1, (6, 5)),
            (3, 2, 0, (7, 7)),
            (1, 1, 0, (3, 4)),
            (3, 1, 0, (4, 4)),
            (5, 1, 2, (3, 3)),
        ] {
            let g = Geometry::new(1, 2, 1, (h, w), kernel, stride, padding).unwrap();
            let image: Vec<f32> = (0..g.input_image_len()).map(|i| i as f32 + 1.0).collect();
            let mut whole = vec![f32::NAN; g.patch_len() * g.output_plane()];
            im2col_rows(&g, &image, 0..g.out_h, &mut whole);
            // The same matrix built in bands of two rows, as the convolution chunks it.
            let expected = naive(&g, &image);
            assert_eq!(whole, expected, "k{kernel} s{stride} p{padding} {h}×{w}");
            for start in (0..g.out_h).step_by(2) {
                let rows = start..(start + 2).min(g.out_h);
                let band = rows.len() * g.out_w;
                let mut part = vec![f32::NAN; g.patch_len() * band];
                im2col_rows(&g, &image, rows.clone(), &mut part);
                for patch_row in 0..g.patch_len() {
                    let from = patch_row * g.output_plane() + start * g.out_w;
                    assert_eq!(
                        part[patch_row * band..(patch_row + 1) * band],
                        expected[from..from + band]
                    );
                }
            }
        }
    }

    #[test]
    fn a_kernel_larger_than_the_padded_input_is_refused() {
        assert!(Geometry::new(1, 1, 1, (2, 2), 5, 1, 1).is_err());
    }
}
