//! Tiled VAE decoding: a large image decoded one tile at a time, so the decoder's
//! full-resolution activations never exist for the whole image at once (only the front
//! at latent resolution and the finished pixels do).
//!
//! A tile decoded on its own differs from the same region of the whole image in two ways:
//! - **Borders.** A tile's convolutions see zeros past its edge. Each tile is decoded with
//!   a margin around its own region as wide as the decoder's reach
//!   ([`Decoder::upper_reach`]) and only its own region is kept, so every kept pixel saw
//!   what it sees in the whole image. No blending is needed.
//! - **Group-norm statistics.** The decoder's group norms normalise over the whole image,
//!   which a tile cannot see. A first pass decodes the tiles (without margins), each
//!   normalised over itself as diffusers' tiles are, and sums every norm's input over all
//!   of them; the final pass normalises every tile with those shared sums. All tiles use
//!   the same statistics, so the image is seamless: it is exactly the whole-image decode
//!   with these statistics. They are not the whole image's own: on the random-weight
//!   fixtures the result is 0.02–0.03 from the untiled image on average (at most
//!   0.24–0.35, images in [-1, 1]), and iterating the passes diverged instead of
//!   converging (measured in docs/PERFORMANCE.md). Exact
//!   statistics would need one pass per group norm (25 on SD) or the whole activations.
//!
//! The front (`conv_in` and the mid block, whose attention reads every position) runs on
//! the whole latent: it is at latent resolution, 1/64 of the pixels.

use super::decoder::Decoder;
use crate::layers::{GroupNorm, GroupStatistics, GroupSums, Normalise};
use candle_core::{Result, Tensor};

/// How to decode in tiles; images whose latent fits in one tile are decoded whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaeTiling {
    /// Side of a tile's own region, in latent cells (64 = 512 px on SD).
    pub tile: usize,
}

impl VaeTiling {
    /// Tiles of `tile` latent cells; `None` for 0 (no tiling).
    pub fn with_tile(tile: usize) -> Option<Self> {
        (tile > 0).then_some(Self { tile })
    }

    /// Whether a latent of `h × w` cells is decoded in tiles.
    pub fn applies_to(&self, h: usize, w: usize) -> bool {
        h > self.tile || w > self.tile
    }
}

/// A rectangle of latent cells: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    top: usize,
    left: usize,
    height: usize,
    width: usize,
}

impl Region {
    /// This region of a [b, c, h, w] tensor whose cells are `scale` × `scale` pixels of
    /// `self`'s units.
    fn of(&self, xs: &Tensor, scale: usize) -> Result<Tensor> {
        xs.narrow(2, self.top * scale, self.height * scale)?.narrow(
            3,
            self.left * scale,
            self.width * scale,
        )
    }

    /// Grown by `margin` cells on each side, within an `h × w` image.
    fn grown(&self, margin: usize, h: usize, w: usize) -> Region {
        let top = self.top.saturating_sub(margin);
        let left = self.left.saturating_sub(margin);
        Region {
            top,
            left,
            height: (self.top + self.height + margin).min(h) - top,
            width: (self.left + self.width + margin).min(w) - left,
        }
    }

    /// `inner`'s position inside `self` (which holds it).
    fn locate(&self, inner: &Region) -> Region {
        Region {
            top: inner.top - self.top,
            left: inner.left - self.left,
            ..*inner
        }
    }
}

/// The tiles' own regions, row by row: `tile`-sided squares covering `h × w`, smaller at
/// the right and bottom edges.
fn tile_rows(h: usize, w: usize, tile: usize) -> Vec<Vec<Region>> {
    (0..h)
        .step_by(tile)
        .map(|top| {
            (0..w)
                .step_by(tile)
                .map(|left| Region {
                    top,
                    left,
                    height: tile.min(h - top),
                    width: tile.min(w - left),
                })
                .collect()
        })
        .collect()
}

/// The normalisation of one tile: statistics given (a previous pass's) or the tile's own,
/// and, in a statistics pass, each norm's input summed over the tile's own region.
struct TileNorms<'a> {
    given: Option<&'a [GroupStatistics]>,
    /// One entry per norm, in order; `None` when this pass does not gather.
    sums: Option<&'a mut Vec<GroupSums>>,
    /// The tile's own region inside its input, and the input's height in latent cells.
    own: Region,
    input_height: usize,
    next: usize,
}

impl Normalise for TileNorms<'_> {
    fn norm_silu(&mut self, norm: &GroupNorm, xs: &Tensor) -> Result<Tensor> {
        let index = self.next;
        self.next += 1;
        if let Some(sums) = self.sums.as_deref_mut() {
            let scale = xs.dim(2)? / self.input_height;
            let part = norm.group_sums(&self.own.of(xs, scale)?)?;
            match sums.get_mut(index) {
                Some(total) => total.add(&part),
                None => sums.push(part),
            }
        }
        match self.given {
            Some(all) => {
                let statistics = all.get(index).ok_or_else(|| {
                    candle_core::Error::Msg("tiled decode: more norms than statistics".into())
                })?;
                norm.forward_with_statistics(xs, statistics, true)
            }
            None => norm.forward_silu(xs),
        }
    }
}

/// Decodes `latents` (the decoder's input: scaled, after `post_quant_conv`) tile by tile.
pub(super) fn decode_tiled(
    decoder: &Decoder,
    latents: &Tensor,
    tiling: VaeTiling,
) -> Result<Tensor> {
    let front = decoder.front(latents)?;
    let (_, _, h, w) = front.dims4()?;
    let rows = tile_rows(h, w, tiling.tile.max(1));
    let shared = shared_statistics(decoder, &front, &rows)?;
    render(decoder, &front, &rows, &shared, decoder.upper_reach())
}

/// The statistics pass: every norm's input summed over the tiles, each tile decoded
/// without a margin and normalised over itself.
fn shared_statistics(
    decoder: &Decoder,
    front: &Tensor,
    rows: &[Vec<Region>],
) -> Result<Vec<GroupStatistics>> {
    let mut sums = Vec::new();
    for own in rows.iter().flatten() {
        let mut norms = TileNorms {
            given: None,
            sums: Some(&mut sums),
            own: Region {
                top: 0,
                left: 0,
                ..*own
            },
            input_height: own.height,
            next: 0,
        };
        decoder.upper(&own.of(front, 1)?.contiguous()?, &mut norms)?;
    }
    Ok(sums.iter().map(GroupSums::statistics).collect())
}

/// The final pass: each tile with its margin, normalised with `given`, its own region
/// kept, the tiles joined.
fn render(
    decoder: &Decoder,
    front: &Tensor,
    rows: &[Vec<Region>],
    given: &[GroupStatistics],
    margin: usize,
) -> Result<Tensor> {
    let (_, _, h, w) = front.dims4()?;
    let mut joined_rows = Vec::with_capacity(rows.len());
    for row in rows {
        let mut tiles = Vec::with_capacity(row.len());
        for own in row {
            let input = own.grown(margin, h, w);
            let mut norms = TileNorms {
                given: Some(given),
                sums: None,
                own: input.locate(own),
                input_height: input.height,
                next: 0,
            };
            let decoded = decoder.upper(&input.of(front, 1)?.contiguous()?, &mut norms)?;
            let scale = decoded.dim(2)? / input.height;
            tiles.push(input.locate(own).of(&decoded, scale)?);
        }
        joined_rows.push(Tensor::cat(&tiles, 3)?);
    }
    Tensor::cat(&joined_rows, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vae::Vae;
    use candle_core::{DType, Device};

    /// The whole image's statistics of every norm of `upper`: the statistics pass with
    /// the image as its one tile.
    fn whole_image_statistics(decoder: &Decoder, front: &Tensor) -> Vec<GroupStatistics> {
        let (_, _, h, w) = front.dims4().unwrap();
        shared_statistics(decoder, front, &tile_rows(h, w, h.max(w))).unwrap()
    }

    /// With the whole image's statistics, tiles decoded with the decoder's reach as margin
    /// are the whole image to float rounding; with a margin short of it they are not.
    #[test]
    fn tiles_with_the_images_statistics_and_the_reach_as_margin_are_the_image() {
        let vae = Vae::load(
            &refact_testkit::fixture("tiny-sd"),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let latents = Tensor::randn(0f32, 1.0, (2, 4, 40, 24), &Device::Cpu).unwrap();
        let decoder = &vae.decoder;
        let front = decoder.front(&latents).unwrap();
        let whole = decoder
            .upper(&front, &mut crate::layers::OwnStatistics)
            .unwrap();
        let statistics = whole_image_statistics(decoder, &front);
        let rows = tile_rows(40, 24, 16);
        let reach = decoder.upper_reach();
        let diff = |margin| {
            let tiled = render(decoder, &front, &rows, &statistics, margin).unwrap();
            refact_testkit::max_abs_diff(&tiled, &whole)
        };
        let exact = diff(reach);
        assert!(exact < 1e-5, "margin {reach}: {exact:.3e}");
        let short = diff(reach / 2);
        assert!(short > 1e-3, "margin {}: {short:.3e}", reach / 2);
        eprintln!("reach {reach}: {exact:.3e}; half the reach: {short:.3e}");
    }

    /// The tiled decode is seamless: it equals the whole-image decode normalised with the
    /// same shared statistics, and those differ from the image's own.
    #[test]
    fn tiles_with_shared_statistics_are_one_image() {
        let vae = Vae::load(
            &refact_testkit::fixture("tiny-sd"),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let latents = Tensor::randn(0f32, 1.0, (1, 4, 36, 20), &Device::Cpu).unwrap();
        let decoder = &vae.decoder;
        let front = decoder.front(&latents).unwrap();
        let rows = tile_rows(36, 20, 16);
        let shared = shared_statistics(decoder, &front, &rows).unwrap();
        let tiled = decode_tiled(decoder, &latents, VaeTiling { tile: 16 }).unwrap();
        let whole_with_shared = render(
            decoder,
            &front,
            &[vec![Region {
                top: 0,
                left: 0,
                height: 36,
                width: 20,
            }]],
            &shared,
            0,
        )
        .unwrap();
        let seam = refact_testkit::max_abs_diff(&tiled, &whole_with_shared);
        assert!(seam < 1e-5, "{seam:.3e}");
        assert_ne!(shared, whole_image_statistics(decoder, &front));
    }

    #[test]
    fn tiles_cover_the_latent_once() {
        let rows = tile_rows(10, 7, 4);
        assert_eq!(rows.len(), 3);
        let mut covered = vec![0; 70];
        for r in rows.iter().flatten() {
            for y in r.top..r.top + r.height {
                for x in r.left..r.left + r.width {
                    covered[y * 7 + x] += 1;
                }
            }
        }
        assert!(covered.iter().all(|&c| c == 1), "{covered:?}");
        assert_eq!(
            rows[2][1],
            Region {
                top: 8,
                left: 4,
                height: 2,
                width: 3
            }
        );
    }

    #[test]
    fn margins_stop_at_the_image_edge() {
        let own = Region {
            top: 4,
            left: 0,
            height: 4,
            width: 4,
        };
        let grown = own.grown(3, 10, 7);
        assert_eq!(
            grown,
            Region {
                top: 1,
                left: 0,
                height: 9,
                width: 7
            }
        );
        assert_eq!(
            grown.locate(&own),
            Region {
                top: 3,
                left: 0,
                height: 4,
                width: 4
            }
        );
    }
}
