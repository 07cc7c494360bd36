//! 2-D convolution for the UNet and the VAE, with a CPU path of our own.
//!
//! candle 0.11 runs a 3×3 convolution on the CPU through a tiled im2col whose per-tile
//! bookkeeping (element-by-element gathers with bounds checks, strided scatters of the
//! result) costs more than the matrix product inside it: a `perf` profile of the VAE
//! decode at 256 px put 81% of all samples in that convolution and only 31 points of it
//! in the gemm microkernel (docs/PERFORMANCE.md). Here the input stays NCHW, im2col
//! copies whole shifted rows (memcpy), the weight is used as it is stored
//! ([c_out, c_in·k·k] is already the gemm's left operand), and gemm writes straight into
//! the NCHW output, on top of the bias (and, for a resnet, of the shortcut) it was filled
//! with. Other devices and dtypes use candle's convolution.

use super::cpu::{self, f32_slice, Strided};
use super::im2col::{im2col_rows, Geometry};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Most f32 elements one im2col chunk holds (32 MiB): bounds the extra memory at any
/// image size while keeping each gemm wide enough to run at full speed.
const MAX_CHUNK_ELEMENTS: usize = 8 << 20;

/// A convolution with a square kernel, equal stride and padding on both axes, and a bias.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// [c_out, c_in, k, k], contiguous.
    weight: Tensor,
    /// [c_out].
    bias: Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads `weight` [c_out, c_in, k, k] and `bias` [c_out] from `vb` (PyTorch's names).
    pub fn load(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = vb.get((out_channels, in_channels, kernel, kernel), "weight")?;
        let bias = vb.get(out_channels, "bias")?;
        Self::new(weight, bias, stride, padding)
    }

    /// A convolution from its tensors; `weight` is [c_out, c_in, k, k] with k × k square.
    pub fn new(weight: Tensor, bias: Tensor, stride: usize, padding: usize) -> Result<Self> {
        let (out_channels, _, kh, kw) = weight.dims4()?;
        if kh != kw || stride == 0 {
            candle_core::bail!("conv2d: kernel {kh}×{kw}, stride {stride} not supported")
        }
        if bias.dims1()? != out_channels {
            candle_core::bail!(
                "conv2d: bias of {} for {out_channels} channels",
                bias.dims1()?
            )
        }
        Ok(Self {
            weight: weight.contiguous()?,
            bias: bias.contiguous()?,
            kernel: kh,
            stride,
            padding,
        })
    }

    /// `conv(xs) + residual`, with the addition done inside the matrix product on the CPU
    /// path (the resnets' shortcut): `residual` has the output's shape.
    pub fn forward_add(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if self.uses_own_kernel(xs) && residual.dtype() == DType::F32 {
            let op = OwnConv {
                conv: self,
                accumulate_onto_residual: true,
            };
            xs.contiguous()?
                .apply_op3_no_bwd(&self.weight, &residual.contiguous()?, &op)
        } else {
            self.forward(xs)? + residual
        }
    }

    fn uses_own_kernel(&self, xs: &Tensor) -> bool {
        xs.device().is_cpu() && xs.dtype() == DType::F32 && self.weight.dtype() == DType::F32
    }

    fn candle_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let out = xs.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        out.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }

    fn geometry(&self, input: &Layout, weight: &Layout) -> Result<Geometry> {
        let (batch, in_channels, height, width) = input.shape().dims4()?;
        let (out_channels, weight_in, _, _) = weight.shape().dims4()?;
        if weight_in != in_channels {
            candle_core::bail!(
                "conv2d: {in_channels} input channels for a {weight_in}-channel kernel"
            )
        }
        Geometry::new(
            batch,
            in_channels,
            out_channels,
            (height, width),
            self.kernel,
            self.stride,
            self.padding,
        )
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.uses_own_kernel(xs) {
            let op = OwnConv {
                conv: self,
                accumulate_onto_residual: false,
            };
            // The third operand is the bias, broadcast inside the kernel.
            xs.contiguous()?
                .apply_op3_no_bwd(&self.weight, &self.bias, &op)
        } else {
            self.candle_forward(xs)
        }
    }
}

/// The CPU kernel as a candle op over (input, weight, bias or residual).
struct OwnConv<'a> {
    conv: &'a Conv2d,
    /// The third operand is a residual of the output's shape (the bias is added too),
    /// rather than the bias itself.
    accumulate_onto_residual: bool,
}

impl CustomOp3 for OwnConv<'_> {
    fn name(&self) -> &'static str {
        "refact-conv2d"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        third: &CpuStorage,
        third_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let geometry = self.conv.geometry(input_layout, weight_layout)?;
        let input = f32_slice(input, input_layout, "conv2d")?;
        let weight = f32_slice(weight, weight_layout, "conv2d")?;
        let third = f32_slice(third, third_layout, "conv2d")?;
        let mut out = if self.accumulate_onto_residual {
            if third.len() != geometry.output_len() {
                candle_core::bail!(
                    "conv2d: residual of {} elements for an output of {}",
                    third.len(),
                    geometry.output_len()
                )
            }
            let (bias_storage, bias_layout) = self.conv.bias.storage_and_layout();
            let candle_core::Storage::Cpu(bias_storage) = &*bias_storage else {
                candle_core::bail!("conv2d: bias is not on the CPU")
            };
            let bias = f32_slice(bias_storage, bias_layout, "conv2d")?;
            let mut out = third.to_vec();
            add_per_channel(&mut out, bias, geometry.output_plane());
            out
        } else {
            let mut out = vec![0f32; geometry.output_len()];
            add_per_channel(&mut out, third, geometry.output_plane());
            out
        };
        convolve_onto(&geometry, input, weight, &mut out);
        Ok((CpuStorage::F32(out), geometry.output_shape()))
    }
}

/// Adds `per_channel[c]` to every element of channel c; `out` is [batch, c, plane].
fn add_per_channel(out: &mut [f32], per_channel: &[f32], plane: usize) {
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(i, channel)| {
            let value = per_channel[i % per_channel.len()];
            channel.iter_mut().for_each(|x| *x += value);
        });
}

/// `out += conv(input)` without bias: `out` is [batch, c_out, out_h, out_w].
fn convolve_onto(geometry: &Geometry, input: &[f32], weight: &[f32], out: &mut [f32]) {
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let g = geometry;
    let plane = g.output_plane();
    if g.kernel == 1 && g.stride == 1 && g.padding == 0 {
        for b in 0..g.batch {
            let image = &input[b * g.input_image_len()..(b + 1) * g.input_image_len()];
            let out_image = &mut out[b * g.c_out * plane..(b + 1) * g.c_out * plane];
            // A 1×1 convolution is the product itself: [c_out, c_in] @ [c_in, h·w].
            gemm_onto(
                out_image,
                plane,
                weight,
                image,
                g.c_out,
                plane,
                g.c_in,
                parallelism,
            );
        }
        return;
    }
    let rows_per_band = (MAX_CHUNK_ELEMENTS / (g.patch_len() * g.out_w).max(1)).clamp(1, g.out_h);
    let needed = g.patch_len() * rows_per_band * g.out_w;
    COLUMNS.with_borrow_mut(|columns| {
        // im2col writes every element it hands to gemm: growing the buffer is enough.
        if columns.len() < needed {
            *columns = vec![0f32; needed];
        }
        convolve_bands(
            g,
            input,
            weight,
            out,
            &mut columns[..needed],
            rows_per_band,
            parallelism,
        );
    });
}

thread_local! {
    /// The im2col buffer, kept between calls (at most 32 MiB per thread that convolves):
    /// allocating it afresh for every convolution had the kernel clearing new pages for
    /// 11% of a VAE decode (perf, 256 px).
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The k×k case: for each image, bands of `rows_per_band` output rows, each through
/// im2col into `columns` and then one gemm into the output.
fn convolve_bands(
    g: &Geometry,
    input: &[f32],
    weight: &[f32],
    out: &mut [f32],
    columns: &mut [f32],
    rows_per_band: usize,
    parallelism: gemm::Parallelism,
) {
    let k = g.patch_len();
    let plane = g.output_plane();
    for b in 0..g.batch {
        let image = &input[b * g.input_image_len()..(b + 1) * g.input_image_len()];
        let out_image = &mut out[b * g.c_out * plane..(b + 1) * g.c_out * plane];
        let mut row = 0;
        while row < g.out_h {
            let rows = rows_per_band.min(g.out_h - row);
            let n = rows * g.out_w;
            let band = &mut columns[..k * n];
            im2col_rows(g, image, row..row + rows, band);
            let dst = &mut out_image[row * g.out_w..];
            // Output row c of the band starts at c·plane: n ≤ plane − row·out_w elements.
            gemm_onto(dst, plane, weight, band, g.c_out, n, k, parallelism);
            row += rows;
        }
    }
}

/// `dst[i, j] += Σ_l lhs[i, l] · rhs[l, j]` for an [m, n] window of `dst` whose rows are
/// `dst_row_stride` apart; `lhs` is [m, k] and `rhs` [k, n], both contiguous.
#[allow(clippy::too_many_arguments)]
fn gemm_onto(
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: &[f32],
    rhs: &[f32],
    m: usize,
    n: usize,
    k: usize,
    parallelism: gemm::Parallelism,
) {
    // Checked, not assumed: the product below reads and writes exactly these extents.
    assert!(m == 0 || dst.len() >= (m - 1) * dst_row_stride + n);
    assert!(lhs.len() >= m * k && rhs.len() >= k * n);
    // SAFETY: the asserts above bound every element the strides reach; `dst` is a
    // mutable borrow, so it overlaps neither operand.
    unsafe {
        cpu::gemm(
            (m, n, k),
            Strided::rows(dst.as_mut_ptr(), dst_row_stride),
            true,
            Strided::rows(lhs.as_ptr(), k),
            Strided::rows(rhs.as_ptr(), n),
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use refact_testkit::max_abs_diff;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        // A fixed-seed pattern: deterministic without an RNG dependency in the test.
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_cpu_kernel_matches_candles_convolution() {
        // (batch, c_in, c_out, h, w, kernel, stride, padding): the UNet's and VAE's shapes,
        // odd sizes, and a 1×1 projection.
        for (batch, c_in, c_out, h, w, kernel, stride, padding) in [
            (2, 8, 16, 9, 7, 3, 1, 1),
            (1, 4, 8, 8, 8, 3, 2, 1),
            (1, 4, 4, 9, 9, 3, 2, 0),
            (3, 16, 8, 5, 6, 1, 1, 0),
            (1, 3, 5, 4, 11, 3, 1, 1),
        ] {
            let x = random(&[batch, c_in, h, w], 1);
            let weight = random(&[c_out, c_in, kernel, kernel], 2);
            let bias = random(&[c_out], 3);
            let conv = Conv2d::new(weight.clone(), bias.clone(), stride, padding).unwrap();
            let ours = conv.forward(&x).unwrap();
            let theirs = conv.candle_forward(&x).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let diff = max_abs_diff(&ours, &theirs);
            assert!(
                diff < 1e-4,
                "{batch}×{c_in}→{c_out} {h}×{w} k{kernel} s{stride}: {diff}"
            );

            let residual = random(theirs.dims(), 4);
            let fused = conv.forward_add(&x, &residual).unwrap();
            let diff = max_abs_diff(&fused, &(theirs + &residual).unwrap());
            assert!(diff < 1e-4, "with a residual: {diff}");
        }
    }

    #[test]
    fn chunked_bands_give_the_whole_image() {
        // Enough patch values that one band cannot hold the image: several gemm calls.
        let (c_in, h, w) = (512, 40, 130);
        assert!(c_in * 9 * w * h > MAX_CHUNK_ELEMENTS);
        let x = random(&[1, c_in, h, w], 5);
        let conv = Conv2d::new(random(&[4, c_in, 3, 3], 6), random(&[4], 7), 1, 1).unwrap();
        let diff = max_abs_diff(
            &conv.forward(&x).unwrap(),
            &conv.candle_forward(&x).unwrap(),
        );
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn a_non_contiguous_input_is_read_as_its_values() {
        let x = random(&[1, 6, 5, 4], 8).transpose(2, 3).unwrap();
        let conv = Conv2d::new(random(&[3, 6, 3, 3], 9), random(&[3], 10), 1, 1).unwrap();
        let diff = max_abs_diff(
            &conv.forward(&x).unwrap(),
            &conv.candle_forward(&x).unwrap(),
        );
        assert!(diff < 1e-4, "{diff}");
    }
}
