//! Banded VAE decoding: a large image decoded in bands of rows, equal to the whole-image
//! decode (to float rounding) while holding far less memory.
//!
//! What makes a decoder hard to split is its group norms: each normalises over the whole
//! image. So the decoder runs one stage at a time ([`UpperStage`]), each stage over the
//! image band by band, and every norm gets the whole image's statistics before any band
//! is normalised:
//! - a norm that reads a stage's input takes them from that input, which is held (in
//!   bands) when the stage starts;
//! - a resnet's second norm reads `conv1`'s output, which is never held: a first pass
//!   over the bands computes it and only sums it, the second pass computes it again and
//!   goes on through the block. `conv1` runs twice; nothing of full size is added.
//!
//! A 3×3 convolution reads one row above and below its output row, so each band is
//! computed from its input rows plus that many halo rows (two for a resnet, which has two
//! convolutions) and the halo's outputs are dropped. No band sees a zero the whole image
//! would not see: the result is the whole decode, not a blend of tiles.
//!
//! Memory: a stage holds its input and its output, and releases input bands as soon as
//! no later band reads them, so the peak is about the largest activation of the decoder
//! (at full resolution) plus one band's intermediates. The whole-image decode also holds
//! each resnet's normalised input and `conv1` output, and the upsampled tensor.
//!
//! The front (`conv_in` and the mid block, whose attention reads every position) runs on
//! the whole latent: it is at latent resolution, 1/64 of the pixels.
//!
//! Measured at 1024 px with SD v1.5's VAE sizes on 2 CPU cores: 0.43–0.48× the whole
//! decode's peak memory for 1.33–1.35× its time (docs/PERFORMANCE.md).

use super::decoder::{Decoder, UpperStage};
use crate::layers::{
    Conv2d, GivenStatistics, GroupNorm, GroupStatistics, GroupSums, ResnetBlock2D,
};
use candle_core::{Module, Result, Tensor};
use std::collections::VecDeque;

/// At most this many values (images × channels × rows × width) in one band of a stage's
/// widest activation: 8 Mi f32 values, 32 MiB, so a band's intermediates stay well below
/// the activations at 512 px and above, while bands at 1024 px are 32–64 rows (a band
/// recomputes 2–4 halo rows).
pub const DEFAULT_BAND_VALUES: usize = 8 << 20;

/// When and how to decode in bands; smaller latents are decoded whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaeTiling {
    /// Latents with a side longer than this many cells are decoded in bands (64 = 512 px
    /// on SD).
    pub tile: usize,
    /// The most values one band of an activation holds (see [`DEFAULT_BAND_VALUES`]);
    /// a band is at least one row.
    pub band_values: usize,
}

impl VaeTiling {
    /// Bands for latents above `tile` cells per side; `None` for 0 (never).
    pub fn with_tile(tile: usize) -> Option<Self> {
        (tile > 0).then_some(Self {
            tile,
            band_values: DEFAULT_BAND_VALUES,
        })
    }

    /// Whether a latent of `h × w` cells is decoded in bands.
    pub fn applies_to(&self, h: usize, w: usize) -> bool {
        h > self.tile || w > self.tile
    }

    /// Rows per band of an activation whose rows hold `values_per_row` values.
    fn band_rows(&self, values_per_row: usize) -> usize {
        (self.band_values / values_per_row.max(1)).max(1)
    }
}

/// An activation [b, c, height, w] held as bands of rows, top to bottom, from which the
/// rows no later band needs are released.
struct Bands {
    height: usize,
    /// (first row, rows [b, c, n, w], contiguous), in order, covering `released..height`.
    bands: VecDeque<(usize, Tensor)>,
}

impl Bands {
    fn new(height: usize) -> Self {
        Self {
            height,
            bands: VecDeque::new(),
        }
    }

    fn whole(xs: Tensor) -> Result<Self> {
        let mut bands = Self::new(xs.dim(2)?);
        bands.bands.push_back((0, xs));
        Ok(bands)
    }

    /// Appends the next band (the rows after the last band's).
    fn push(&mut self, rows: Tensor) -> Result<()> {
        let top = self
            .bands
            .back()
            .map(|(top, band)| top + band.dim(2).unwrap_or(0))
            .unwrap_or(0);
        self.bands.push_back((top, rows.contiguous()?));
        Ok(())
    }

    /// Rows `start..end`, which must not have been released.
    fn rows(&self, start: usize, end: usize) -> Result<Tensor> {
        let mut pieces = Vec::new();
        for (top, band) in &self.bands {
            let bottom = top + band.dim(2)?;
            let (from, to) = (start.max(*top), end.min(bottom));
            if from < to {
                pieces.push(band.narrow(2, from - top, to - from)?);
            }
        }
        let found: usize = pieces.iter().map(|p| p.dim(2).unwrap_or(0)).sum();
        if found != end - start {
            candle_core::bail!("banded decode: rows {start}..{end} are no longer held")
        }
        match pieces.len() {
            1 => Ok(pieces.remove(0)),
            _ => Tensor::cat(&pieces, 2),
        }
    }

    /// Drops the bands that lie wholly above `row`.
    fn release_above(&mut self, row: usize) -> Result<()> {
        while let Some((top, band)) = self.bands.front() {
            if top + band.dim(2)? > row {
                break;
            }
            self.bands.pop_front();
        }
        Ok(())
    }

    /// `norm`'s statistics of the whole activation.
    fn statistics(&self, norm: &GroupNorm) -> Result<GroupStatistics> {
        let mut sums = SumsOverBands::default();
        for (_, band) in &self.bands {
            sums.add(norm.group_sums(band)?);
        }
        sums.statistics()
    }

    /// The whole activation as one tensor.
    fn join(self) -> Result<Tensor> {
        let bands: Vec<Tensor> = self.bands.into_iter().map(|(_, band)| band).collect();
        Tensor::cat(&bands, 2)
    }

    /// Values in one row: images × channels × width.
    fn values_per_row(&self) -> Result<usize> {
        let (b, c, _, w) = self
            .bands
            .front()
            .map_or(Ok((0, 0, 0, 0)), |(_, t)| t.dims4())?;
        Ok(b * c * w)
    }
}

/// One norm's group sums, added up band by band.
#[derive(Default)]
struct SumsOverBands(Option<GroupSums>);

impl SumsOverBands {
    fn add(&mut self, part: GroupSums) {
        match &mut self.0 {
            Some(total) => total.add(&part),
            None => self.0 = Some(part),
        }
    }

    /// The statistics of everything added.
    fn statistics(self) -> Result<GroupStatistics> {
        match self.0 {
            Some(sums) => Ok(sums.statistics()),
            None => candle_core::bail!("banded decode: statistics of an empty activation"),
        }
    }
}

/// The input rows `start..end` grown by `halo` rows each side, within `0..height`: what
/// a map reading `halo` rows around each output row needs for output rows `start..end`.
fn with_halo(start: usize, end: usize, halo: usize, height: usize) -> (usize, usize) {
    (start.saturating_sub(halo), (end + halo).min(height))
}

/// Runs `map` (same height in and out, reading `halo` rows above and below each output
/// row) over `input` in bands of `rows_per_band`; `keep` gets each band's own output
/// rows, top to bottom. With `release`, input rows no later band reads are dropped.
fn for_each_band(
    input: &mut Bands,
    halo: usize,
    rows_per_band: usize,
    release: bool,
    mut map: impl FnMut(&Tensor) -> Result<Tensor>,
    mut keep: impl FnMut(Tensor) -> Result<()>,
) -> Result<()> {
    let height = input.height;
    let mut start = 0;
    while start < height {
        let end = (start + rows_per_band).min(height);
        let (from, to) = with_halo(start, end, halo, height);
        // The halo's own outputs saw zeros past the band where the image has rows: dropped.
        let out = map(&input.rows(from, to)?)?;
        keep(out.narrow(2, start - from, end - start)?)?;
        if release {
            // The next band reads from `end - halo` on.
            input.release_above(end.saturating_sub(halo))?;
        }
        start = end;
    }
    Ok(())
}

/// Decodes the front's output in bands: every stage of [`Decoder::upper_stages`] over
/// the whole image, one band at a time.
pub(super) fn decode_banded(
    decoder: &Decoder,
    latents: &Tensor,
    tiling: VaeTiling,
) -> Result<Tensor> {
    let mut xs = Bands::whole(decoder.front(latents)?)?;
    for stage in decoder.upper_stages() {
        xs = match stage {
            UpperStage::Resnet(resnet) => resnet_stage(&mut xs, tiling, resnet)?,
            UpperStage::Upsample(conv) => upsample_stage(&mut xs, tiling, conv)?,
            UpperStage::Output { norm, conv } => output_stage(&mut xs, tiling, norm, conv)?,
        };
    }
    xs.join()
}

/// A resnet block over the bands of `xs`: a pass that only sums `conv1`'s output (for
/// `norm2`'s statistics), then the block, with `conv1` computed again.
fn resnet_stage(xs: &mut Bands, tiling: VaeTiling, resnet: &ResnetBlock2D) -> Result<Bands> {
    let first = xs.statistics(resnet.norm1())?;
    let widest = resnet.norm1().channels().max(resnet.norm2().channels());
    let rows = tiling.band_rows(xs.values_per_row()? / resnet.norm1().channels() * widest);
    let mut sums = SumsOverBands::default();
    for_each_band(
        xs,
        1,
        rows,
        false,
        |band| resnet.first_half(band, None, &GivenStatistics(&first)),
        |hidden| {
            sums.add(resnet.norm2().group_sums(&hidden)?);
            Ok(())
        },
    )?;
    let second = sums.statistics()?;
    let mut out = Bands::new(xs.height);
    for_each_band(
        xs,
        2,
        rows,
        true,
        |band| {
            let hidden = resnet.first_half(band, None, &GivenStatistics(&first))?;
            resnet.second_half(band, &hidden, &GivenStatistics(&second))
        },
        |rows| out.push(rows),
    )?;
    Ok(out)
}

/// Nearest ×2 and `conv` over the bands of `xs`, each band upsampling only the input
/// rows its output rows (and their halo) come from.
fn upsample_stage(xs: &mut Bands, tiling: VaeTiling, conv: &Conv2d) -> Result<Bands> {
    let height = 2 * xs.height;
    // An output row is twice as wide as an input row (the channels stay).
    let rows = tiling.band_rows(2 * xs.values_per_row()?);
    let mut out = Bands::new(height);
    let mut start = 0;
    while start < height {
        let end = (start + rows).min(height);
        let (from, to) = with_halo(start, end, 1, height);
        // Upsampled row r is input row r / 2.
        let (source_from, source_to) = (from / 2, (to - 1) / 2 + 1);
        let source = xs.rows(source_from, source_to)?;
        let (_, _, n, w) = source.dims4()?;
        let upsampled = source.upsample_nearest2d(2 * n, 2 * w)?.narrow(
            2,
            from - 2 * source_from,
            to - from,
        )?;
        let band = conv.forward(&upsampled)?;
        out.push(band.narrow(2, start - from, end - start)?)?;
        // The next band reads from upsampled row `end - 1`, input row `(end - 1) / 2`.
        xs.release_above(end.saturating_sub(1) / 2)?;
        start = end;
    }
    Ok(out)
}

/// The decoder's last norm, SiLU and `conv_out` over the bands of `xs`.
fn output_stage(
    xs: &mut Bands,
    tiling: VaeTiling,
    norm: &GroupNorm,
    conv: &Conv2d,
) -> Result<Bands> {
    let statistics = xs.statistics(norm)?;
    let rows = tiling.band_rows(xs.values_per_row()?);
    let mut out = Bands::new(xs.height);
    for_each_band(
        xs,
        1,
        rows,
        true,
        |band| conv.forward(&norm.forward_with_statistics(band, &statistics, true)?),
        |rows| out.push(rows),
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// [1, 1, height, 2] with row r holding r, r.
    fn numbered_rows(height: usize) -> Tensor {
        Tensor::arange(0f32, height as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, height, 1))
            .unwrap()
            .repeat((1, 1, 1, 2))
            .unwrap()
    }

    fn first_column(xs: &Tensor) -> Vec<f32> {
        xs.narrow(3, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn rows_are_read_across_bands_until_released() {
        let all = numbered_rows(7);
        let mut bands = Bands::new(7);
        for (start, len) in [(0, 3), (3, 3), (6, 1)] {
            bands.push(all.narrow(2, start, len).unwrap()).unwrap();
        }
        assert_eq!(
            first_column(&bands.rows(2, 7).unwrap()),
            [2., 3., 4., 5., 6.]
        );
        // Rows 0..3 are one band: releasing above row 4 drops it and keeps 3..6.
        bands.release_above(4).unwrap();
        assert_eq!(first_column(&bands.rows(3, 5).unwrap()), [3., 4.]);
        assert!(bands.rows(2, 4).is_err(), "row 2 was released");
        assert_eq!(first_column(&bands.join().unwrap()), [3., 4., 5., 6.]);
    }

    #[test]
    fn halos_stop_at_the_image_edges() {
        assert_eq!(with_halo(0, 4, 2, 10), (0, 6));
        assert_eq!(with_halo(4, 8, 2, 10), (2, 10));
        assert_eq!(with_halo(9, 10, 1, 10), (8, 10));
    }

    #[test]
    fn a_band_is_at_least_one_row() {
        let tiling = VaeTiling {
            tile: 1,
            band_values: 100,
        };
        assert_eq!(tiling.band_rows(30), 3);
        assert_eq!(tiling.band_rows(1000), 1);
        assert!(!tiling.applies_to(1, 1) && tiling.applies_to(2, 1));
    }
}
