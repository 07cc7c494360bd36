//! Layer statistics: the uncentred second moment C = E[x xᵀ] of fc2's inputs at one
//! layer over a caption corpus, and solves with it (u = C⁻¹k*).
//!
//! C is computed once per (model fingerprint, layer, corpus, sample count), always on
//! the base model, and cached on disk. Accumulation is in f64.

use super::corpus::CaptionSample;
use crate::deltas::PreparedDeltas;
use crate::error::{EngineError, Result};
use crate::text_encoder::{ClipTextEncoder, Fc2Hook, Mode};
use crate::tokenizer::ClipTokenizer;
use candle_core::{DType, IndexOp, Tensor};
use faer::linalg::solvers::{PartialPivLu, Solve};
use faer::{Mat, Side};

/// Captions encoded together when accumulating statistics.
const BATCH: usize = 64;

/// C for one layer, with a factorisation ready for solves.
pub struct LayerStatistics {
    pub layer: usize,
    /// Size of fc2's input (the MLP's inner size).
    pub dim: usize,
    /// C in row-major order, dim × dim.
    pub mom2: Vec<f64>,
    /// Captions the mean was taken over.
    pub samples: usize,
    /// Tokens the mean was taken over (BOS..first EOS of every caption).
    pub tokens: usize,
    pub corpus_hash: String,
    pub model_fingerprint: String,
    factor: Factor,
}

impl std::fmt::Debug for LayerStatistics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStatistics")
            .field("layer", &self.layer)
            .field("dim", &self.dim)
            .field("samples", &self.samples)
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// Cholesky when C is positive definite (the normal case), partial-pivot LU otherwise.
enum Factor {
    Cholesky(faer::linalg::solvers::Llt<f64>),
    Lu(PartialPivLu<f64>),
}

/// Captures fc2's input at the hooked layer.
struct CaptureInput(Option<Tensor>);

impl Fc2Hook for CaptureInput {
    fn fc2(&mut self, input: &Tensor, output: Tensor) -> candle_core::Result<Tensor> {
        self.0 = Some(input.clone());
        Ok(output)
    }
}

impl LayerStatistics {
    /// Computes C at `layer` of the base encoder over `sample`; `progress(done, total)` is
    /// called after each batch of captions and may return false to stop (→ Cancelled).
    pub fn compute(
        encoder: &ClipTextEncoder,
        tokenizer: &ClipTokenizer,
        layer: usize,
        sample: &CaptionSample,
        model_fingerprint: &str,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Self> {
        let dim = encoder.config().intermediate_size;
        let no_deltas = PreparedDeltas::none(encoder.num_layers());
        let mut acc = vec![0f64; dim * dim];
        let mut tokens = 0usize;
        let total = sample.captions.len();
        for (batch_index, batch) in sample.captions.chunks(BATCH).enumerate() {
            let texts: Vec<&str> = batch.iter().map(String::as_str).collect();
            let ids = encoder.padded_ids(tokenizer, &texts)?;
            let eos = encoder.first_eos_positions(&ids)?;
            // Rows after a caption's EOS never influence rows before it (causal
            // attention), so the batch only needs to run up to the longest caption.
            let width = eos.iter().max().copied().unwrap_or(0) + 1;
            let ids = ids.narrow(1, 0, width)?;
            let hidden = encoder.embed(&ids)?;
            let mut capture = CaptureInput(None);
            encoder.run_layers(
                &hidden,
                0..layer + 1,
                &no_deltas,
                Mode::Inference,
                Some((layer, &mut capture)),
            )?;
            let inputs = capture.0.expect("the hook runs at the statistics layer");
            let rows = eos
                .iter()
                .enumerate()
                .map(|(b, &e)| inputs.i((b, 0..e + 1)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let xs = Tensor::cat(&rows, 0)?;
            tokens += xs.dim(0)?;
            // One batch's xᵀx in f32 is exact enough (hundreds of rows); the running sum
            // over the whole corpus is kept in f64.
            let gram: Vec<f32> = xs
                .t()?
                .matmul(&xs)?
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1()?;
            for (a, g) in acc.iter_mut().zip(gram) {
                *a += g as f64;
            }
            let done = ((batch_index + 1) * BATCH).min(total);
            if !progress(done, total) {
                return Err(EngineError::Cancelled);
            }
        }
        let scale = 1.0 / tokens as f64;
        acc.iter_mut().for_each(|a| *a *= scale);
        Self::from_moment(
            layer,
            dim,
            acc,
            total,
            tokens,
            &sample.hash,
            model_fingerprint,
        )
    }

    /// Wraps a precomputed C (from the cache) and factorises it.
    pub fn from_moment(
        layer: usize,
        dim: usize,
        mom2: Vec<f64>,
        samples: usize,
        tokens: usize,
        corpus_hash: &str,
        model_fingerprint: &str,
    ) -> Result<Self> {
        if mom2.len() != dim * dim || !mom2.iter().all(|x| x.is_finite()) {
            return Err(EngineError::Numerical(format!(
                "second moment of layer {layer} is not a finite {dim}x{dim} matrix"
            )));
        }
        let factor = factorise(&mom2, dim);
        Ok(Self {
            layer,
            dim,
            mom2,
            samples,
            tokens,
            corpus_hash: corpus_hash.to_string(),
            model_fingerprint: model_fingerprint.to_string(),
            factor,
        })
    }

    /// Solves C x = k.
    pub fn solve(&self, k: &[f64]) -> Result<Vec<f64>> {
        if k.len() != self.dim {
            return Err(EngineError::Numerical(format!(
                "key of size {} for statistics of size {}",
                k.len(),
                self.dim
            )));
        }
        let mut rhs = Mat::from_fn(self.dim, 1, |i, _| k[i]);
        match &self.factor {
            Factor::Cholesky(llt) => llt.solve_in_place(&mut rhs),
            Factor::Lu(lu) => lu.solve_in_place(&mut rhs),
        }
        let x: Vec<f64> = (0..self.dim).map(|i| rhs[(i, 0)]).collect();
        if !x.iter().all(|v| v.is_finite()) {
            return Err(EngineError::Numerical(format!(
                "the second moment of layer {} is singular: C⁻¹k is not finite",
                self.layer
            )));
        }
        Ok(x)
    }

    /// C as a [dim, dim] f64 tensor on the CPU.
    pub fn mom2_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.mom2.clone(),
            (self.dim, self.dim),
            &candle_core::Device::Cpu,
        )?)
    }
}

fn factorise(mom2: &[f64], dim: usize) -> Factor {
    let matrix = Mat::from_fn(dim, dim, |i, j| mom2[i * dim + j]);
    match matrix.llt(Side::Lower) {
        Ok(llt) => Factor::Cholesky(llt),
        Err(_) => {
            tracing::warn!("second moment is not positive definite; solving with LU");
            Factor::Lu(matrix.partial_piv_lu())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_inverts_a_known_matrix() {
        // C = [[4, 2], [2, 3]], k = [2, 1] → x = [0.5, 0]
        let stats =
            LayerStatistics::from_moment(0, 2, vec![4.0, 2.0, 2.0, 3.0], 1, 1, "h", "f").unwrap();
        let x = stats.solve(&[2.0, 1.0]).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
    }

    #[test]
    fn an_indefinite_matrix_falls_back_to_lu() {
        let stats =
            LayerStatistics::from_moment(0, 2, vec![0.0, 1.0, 1.0, 0.0], 1, 1, "h", "f").unwrap();
        let x = stats.solve(&[3.0, 5.0]).unwrap();
        assert!(
            (x[0] - 5.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12,
            "{x:?}"
        );
    }

    #[test]
    fn a_singular_matrix_gives_a_numerical_error_not_garbage() {
        let stats =
            LayerStatistics::from_moment(0, 2, vec![1.0, 1.0, 1.0, 1.0], 1, 1, "h", "f").unwrap();
        assert!(stats.solve(&[1.0, 2.0]).is_err());
    }
}
