//! The part of the encoder that δ flows through: layers l+1..end and the final norm
//! (or, for SDXL's encoders, up to the penultimate state the pipeline reads).
//!
//! δ is added to fc2's output at layer l, i.e. to the residual stream right after layer
//! l, at each rewriting prompt's subject position s. Attention is causal, so rows before
//! s never change and rows after the first EOS e are never read: each step recomputes
//! only rows s..=e of each prompt ("active rows", packed together), with the keys and
//! values of the rows before s taken from a cache of the δ-free pass. In the last layer
//! only the EOS rows are computed, and positions past the last EOS are dropped. For the
//! paper's templates this is about a third of the rows a padded batch would run, and the
//! result is exactly the same.
//!
//! A batch edit runs the prompts of many facts together: each prompt belongs to one fact
//! (its `owner`) and receives that fact's δ. Prompts never attend to each other, so each
//! fact's result is the one it would have alone.

use crate::deltas::PreparedDeltas;
use crate::error::{EngineError, Result};
use crate::text_encoder::layer::PackedRows;
use crate::text_encoder::{ClipTextEncoder, Mode, Readout};
use candle_core::{DType, Device, Tensor};

/// Runs δ from the cached residual stream to pooled outputs, differentiably.
pub(crate) struct UpperLayers<'a> {
    encoder: &'a ClipTextEncoder,
    deltas: &'a PreparedDeltas,
    /// First layer above the edited one.
    start: usize,
    /// The active rows of the stream after the edited layer, without δ [n, d].
    active_base: Tensor,
    /// 1 at (prompt's subject row, prompt's fact) among the active rows [n, facts].
    subject_owner: Tensor,
    /// Keys and values of the δ-free stream, per layer from `start`, [b·t, d] each.
    kv_cache: Vec<(Tensor, Tensor)>,
    /// Layout for the layers below the last: every active row is a query and an output.
    all_rows: PackedRows,
    /// Layout for the last layer: only the EOS rows.
    eos_rows: PackedRows,
    /// The EOS rows among the active rows, for an edit at the last layer [b].
    eos_index: Tensor,
}

impl<'a> UpperLayers<'a> {
    /// `stream` is the δ-free residual stream after `edited_layer` [b, t, d];
    /// `subject_positions[i]` ≤ `eos_positions[i]` < t index prompt i's rows, and
    /// `owners[i]` is the fact (0-based) whose δ prompt i receives.
    pub(crate) fn new(
        encoder: &'a ClipTextEncoder,
        deltas: &'a PreparedDeltas,
        edited_layer: usize,
        stream: Tensor,
        subject_positions: &[usize],
        eos_positions: &[usize],
        owners: &[usize],
    ) -> Result<Self> {
        // Attention is causal, so positions past the last EOS never influence a row that
        // is read: drop them (77 → about 13 for the paper's templates) and every step's
        // keys, values and attention shrink with them. The result is exactly the same.
        let width = eos_positions.iter().max().map_or(0, |e| e + 1);
        let stream = stream
            .narrow(1, 0, width.min(stream.dim(1)?))?
            .contiguous()?;
        let (b, t, d) = stream.dims3()?;
        let dtype = stream.dtype();
        let device = stream.device().clone();
        let layout = ActiveLayout::new(subject_positions, eos_positions, t);

        let flat = stream.reshape((b * t, d))?;
        let active_index = u32_tensor(&layout.active_flat_rows(), &device)?;
        let active_base = flat.index_select(&active_index, 0)?;
        let facts = owners.iter().max().map_or(1, |f| f + 1);
        let mut onehot = vec![0f32; layout.total * facts];
        for (&first, &owner) in layout.offsets.iter().zip(owners) {
            onehot[first * facts + owner] = 1.0;
        }
        let subject_owner =
            Tensor::from_vec(onehot, (layout.total, facts), &device)?.to_dtype(dtype)?;

        // The δ-free pass through the upper layers, keeping each layer's keys and values.
        let start = edited_layer + 1;
        let mut kv_cache = Vec::new();
        let mut hidden = stream.clone();
        let causal = crate::text_encoder::layer::causal_mask(t, dtype, &device)?;
        for index in start..encoder.num_layers() {
            let layer = encoder.layer(index);
            let (k, v) = layer.project_kv(&hidden.reshape((b * t, d))?, Mode::Inference)?;
            kv_cache.push((k, v));
            if index + 1 < encoder.num_layers() {
                hidden =
                    layer.forward(&hidden, &causal, deltas.at(index), Mode::Inference, None)?;
            }
        }

        let eos_index = u32_tensor(&layout.eos_packed_rows(), &device)?;
        Ok(Self {
            encoder,
            deltas,
            start,
            all_rows: layout.all_rows_plan(dtype, &device)?,
            eos_rows: layout.eos_rows_plan(dtype, &device)?,
            active_base,
            subject_owner,
            kv_cache,
            eos_index,
        })
    }

    /// Each prompt's representation ([`Readout`]: the pooled output for SD v1.x/2.x,
    /// SDXL's penultimate state, with its projection for the second encoder) [b, r],
    /// with each fact's row of `deltas` [facts, d] added at the subject positions of its
    /// prompts.
    pub(crate) fn representation(&self, deltas: &Tensor) -> Result<Tensor> {
        let mode = Mode::Differentiable;
        // One product places every δ: each row of `subject_owner` has at most one 1, so
        // every sum has one term and the values are exact.
        let mut x = (&self.active_base + self.subject_owner.matmul(deltas)?)?;
        let layers = self.encoder.num_layers();
        let readout = self.encoder.readout();
        let pooled_only = matches!(readout, Readout::Pooled);
        if self.start >= layers && !pooled_only {
            return Err(EngineError::Numerical(
                "an edit of the last layer does not reach the penultimate states".into(),
            ));
        }
        // Every active row through the layers below the last: x is then the stream after
        // the second-to-last layer (or after the edited one, when that is higher).
        for index in self.start..layers.saturating_sub(1) {
            x = self.encoder.layer(index).forward_packed(
                &x,
                &self.kv_cache[index - self.start],
                &self.all_rows,
                self.deltas.at(index),
                mode,
            )?;
        }
        let penultimate = x.index_select(&self.eos_index, 0)?;
        if matches!(readout, Readout::Penultimate) {
            // Nothing above is read: the last layer is not run.
            return Ok(penultimate);
        }
        let last_state = if self.start < layers {
            // Only the EOS rows are needed of the last layer.
            let last = layers - 1;
            self.encoder.layer(last).forward_packed(
                &x,
                &self.kv_cache[last - self.start],
                &self.eos_rows,
                self.deltas.at(last),
                mode,
            )?
        } else {
            penultimate.clone()
        };
        let pooled = self.encoder.final_layer_norm().forward(&last_state, mode)?;
        self.encoder.read_out(&penultimate, &pooled)
    }
}

/// Which rows of each prompt are active (subject..=EOS) and where they sit when packed.
struct ActiveLayout {
    batch: usize,
    width: usize,
    subjects: Vec<usize>,
    eos: Vec<usize>,
    /// First packed row of each prompt.
    offsets: Vec<usize>,
    total: usize,
    /// Most active rows of any prompt.
    widest: usize,
}

impl ActiveLayout {
    fn new(subjects: &[usize], eos: &[usize], width: usize) -> Self {
        let mut offsets = Vec::with_capacity(subjects.len());
        let mut total = 0;
        let mut widest = 0;
        for (&s, &e) in subjects.iter().zip(eos) {
            assert!(
                s <= e && e < width,
                "subject {s} must not follow EOS {e} (width {width})"
            );
            offsets.push(total);
            total += e - s + 1;
            widest = widest.max(e - s + 1);
        }
        Self {
            batch: subjects.len(),
            width,
            subjects: subjects.to_vec(),
            eos: eos.to_vec(),
            offsets,
            total,
            widest,
        }
    }

    fn count(&self, i: usize) -> usize {
        self.eos[i] - self.subjects[i] + 1
    }

    /// Rows of the flattened [b·t] stream that are active, in packed order.
    fn active_flat_rows(&self) -> Vec<u32> {
        (0..self.batch)
            .flat_map(|i| {
                (self.subjects[i]..=self.eos[i]).map(move |p| (i * self.width + p) as u32)
            })
            .collect()
    }

    /// The EOS row of each prompt among the packed rows.
    fn eos_packed_rows(&self) -> Vec<u32> {
        (0..self.batch)
            .map(|i| (self.offsets[i] + self.count(i) - 1) as u32)
            .collect()
    }

    /// Per prompt and position: the cache row (before the subject, or past EOS where it
    /// is masked anyway) or the packed row (`b·t` + index) for active positions.
    fn kv_rows(&self) -> Vec<u32> {
        let cache_rows = self.batch * self.width;
        (0..self.batch)
            .flat_map(|i| {
                (0..self.width).map(move |p| {
                    if p >= self.subjects[i] && p <= self.eos[i] {
                        (cache_rows + self.offsets[i] + p - self.subjects[i]) as u32
                    } else {
                        (i * self.width + p) as u32
                    }
                })
            })
            .collect()
    }

    /// Mask for queries at `positions[i][r]`: they see positions ≤ their own.
    fn mask(
        &self,
        positions: &[Vec<usize>],
        per_item: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let mut mask = vec![0f32; self.batch * per_item * self.width];
        for (i, rows) in positions.iter().enumerate() {
            for r in 0..per_item {
                // Padding queries repeat the prompt's last real query.
                let at = rows[r.min(rows.len() - 1)];
                for p in at + 1..self.width {
                    mask[(i * per_item + r) * self.width + p] = f32::MIN;
                }
            }
        }
        Ok(
            Tensor::from_vec(mask, (self.batch, 1, per_item, self.width), device)?
                .to_dtype(dtype)?,
        )
    }

    /// Every active row queries and is output (layers below the last).
    fn all_rows_plan(&self, dtype: DType, device: &Device) -> Result<PackedRows> {
        let a = self.widest;
        let mut query_rows = Vec::with_capacity(self.batch * a);
        let mut output_rows = Vec::with_capacity(self.total);
        let mut positions = Vec::with_capacity(self.batch);
        for i in 0..self.batch {
            let n = self.count(i);
            for r in 0..a {
                query_rows.push((self.offsets[i] + r.min(n - 1)) as u32);
            }
            for r in 0..n {
                output_rows.push((i * a + r) as u32);
            }
            positions.push((self.subjects[i]..=self.eos[i]).collect::<Vec<_>>());
        }
        Ok(PackedRows {
            batch: self.batch,
            width: self.width,
            queries_per_item: a,
            kv_rows: u32_tensor(&self.kv_rows(), device)?,
            query_rows: u32_tensor(&query_rows, device)?,
            output_rows: u32_tensor(&output_rows, device)?,
            residual_rows: None,
            mask: self.mask(&positions, a, dtype, device)?,
        })
    }

    /// Only each prompt's EOS row queries and is output (the last layer).
    fn eos_rows_plan(&self, dtype: DType, device: &Device) -> Result<PackedRows> {
        let eos_rows = u32_tensor(&self.eos_packed_rows(), device)?;
        let positions: Vec<Vec<usize>> = self.eos.iter().map(|&e| vec![e]).collect();
        let identity: Vec<u32> = (0..self.batch as u32).collect();
        Ok(PackedRows {
            batch: self.batch,
            width: self.width,
            queries_per_item: 1,
            kv_rows: u32_tensor(&self.kv_rows(), device)?,
            query_rows: eos_rows.clone(),
            output_rows: u32_tensor(&identity, device)?,
            residual_rows: Some(eos_rows),
            mask: self.mask(&positions, 1, dtype, device)?,
        })
    }
}

fn u32_tensor(values: &[u32], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(values, values.len(), device)?)
}
