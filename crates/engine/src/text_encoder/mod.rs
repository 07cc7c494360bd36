//! The CLIP text transformer of Stable Diffusion, owned by the project because ReFACT
//! needs what candle-transformers' CLIP keeps private: every layer's MLP, the residual
//! stream after any layer, running the upper layers from a cached state, low-rank
//! deltas on `fc2`, and a differentiable path.
//!
//! Tensor names are transformers' (`text_model.encoder.layers.N.mlp.fc2.weight`, ...),
//! with or without the `text_model.` prefix.

pub mod config;
pub(crate) mod frozen_matmul;
pub mod layer;

use crate::deltas::{DeltaSet, PreparedDeltas, TextEncoderId};
use crate::error::{EngineError, Result};
use crate::tokenizer::ClipTokenizer;
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
pub use config::{Activation, ClipTextConfig};
use layer::{causal_mask, EncoderLayer, Norm};
pub use layer::{Fc2Hook, Mode};
use std::ops::Range;
use std::path::Path;

/// What the encoder returns for a batch of token ids.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// Final-layer-norm states of every position [b, t, d]: the UNet's context.
    pub last_hidden_state: Tensor,
    /// The state at each row's first EOS token [b, d] (SD's text encoder has no projection).
    pub pooler_output: Tensor,
}

/// An encoder's outputs with the states SDXL conditions on.
#[derive(Debug, Clone)]
pub struct EncoderStates {
    /// The residual stream after the second-to-last layer, without the final norm
    /// (transformers' `hidden_states[-2]`) [b, t, d].
    pub penultimate: Tensor,
    pub output: EncoderOutput,
}

/// What a pipeline reads of an encoder at a prompt's first EOS token, and so what
/// ReFACT's objective compares: the representation the images are conditioned on.
#[derive(Debug, Clone)]
pub enum Readout {
    /// The final-norm state (the pooler output): SD v1.x/2.x, whose context is the last
    /// hidden state.
    Pooled,
    /// The state after the second-to-last layer, no final norm: SDXL's first encoder,
    /// whose penultimate states are the context.
    Penultimate,
    /// SDXL's second encoder: its penultimate state and its projected pooled state
    /// (`text_projection` [projection, hidden]), concatenated; the pipeline uses both.
    PenultimateAndProjection(Tensor),
}

/// CLIP text transformer with weights shared by every version of the model.
#[derive(Debug, Clone)]
pub struct ClipTextEncoder {
    /// Which encoder of its pipeline this is: it applies only its own deltas.
    id: TextEncoderId,
    readout: Readout,
    config: ClipTextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: Norm,
    eos_id: u32,
    device: Device,
    dtype: DType,
}

impl ClipTextEncoder {
    /// Loads `config.json` + `model.safetensors` from a diffusers `text_encoder/` folder.
    /// `eos_id` is the tokenizer's end-of-text id (pooling reads the first one).
    pub fn load(dir: &Path, eos_id: u32, device: &Device) -> Result<Self> {
        let config = ClipTextConfig::from_file(&dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(EngineError::ModelNotFound(format!(
                "missing {} (only safetensors weights are read)",
                weights.display()
            )));
        }
        let prefixed = has_text_model_prefix(&weights)?;
        // SAFETY: the file is memory-mapped read-only; candle copies what it needs to the device.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
        let vb = if prefixed { vb.pp("text_model") } else { vb };
        Self::new(vb, config, eos_id).map_err(|e| match e {
            EngineError::Candle(e) => EngineError::Weights(format!("{}: {e}", weights.display())),
            other => other,
        })
    }

    /// Builds the encoder from a VarBuilder positioned at the `text_model` level
    /// (`embeddings.*`, `encoder.layers.N.*`, `final_layer_norm.*`).
    pub fn new(vb: VarBuilder, config: ClipTextConfig, eos_id: u32) -> Result<Self> {
        let d = config.hidden_size;
        let embeddings = vb.pp("embeddings");
        let token_embedding = embeddings.get((config.vocab_size, d), "token_embedding.weight")?;
        let position_embedding = embeddings.get(
            (config.max_position_embeddings, d),
            "position_embedding.weight",
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::load(vb.pp("encoder.layers").pp(i.to_string()), &config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_layer_norm = Norm::load(vb.pp("final_layer_norm"), d, config.layer_norm_eps)?;
        Ok(Self {
            id: TextEncoderId::Text,
            readout: Readout::Pooled,
            device: token_embedding.device().clone(),
            dtype: token_embedding.dtype(),
            config,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            eos_id,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// This encoder as encoder `id` of an SDXL pipeline, read out as `readout`.
    pub fn in_pipeline(mut self, id: TextEncoderId, readout: Readout) -> Self {
        self.id = id;
        self.readout = readout;
        self
    }

    /// Which encoder of its pipeline this is.
    pub fn id(&self) -> TextEncoderId {
        self.id
    }

    /// The version `deltas` prepared for this encoder: its own deltas as tensors on its
    /// device (built once per version and kept, see [`DeltaSet::prepare_for`]).
    pub fn prepare(&self, deltas: &DeltaSet) -> Result<PreparedDeltas> {
        deltas.prepare_for(self.id, self.num_layers(), &self.device)
    }

    pub fn readout(&self) -> &Readout {
        &self.readout
    }

    /// Layers an edit can be made at: an edit of the last layer never reaches the
    /// penultimate states SDXL conditions on.
    pub fn editable_layers(&self) -> usize {
        match self.readout {
            Readout::Pooled => self.num_layers(),
            Readout::Penultimate | Readout::PenultimateAndProjection(_) => {
                self.num_layers().saturating_sub(1)
            }
        }
    }

    /// Refuses an edit at `layer` when the pipeline never reads its effect (SDXL's last
    /// layer; see [`Self::editable_layers`]).
    pub fn check_edit_layer(&self, layer: usize) -> Result<()> {
        let editable = self.editable_layers();
        if layer < editable {
            return Ok(());
        }
        Err(EngineError::invalid(
            crate::InvalidKind::LayerOutOfRange,
            "layer",
            format!(
                "layer {layer}: the images read the {} encoder's states before layer \
                 {editable}, so edits go at layers 0..{}",
                self.id,
                editable.saturating_sub(1)
            ),
        ))
    }

    /// What the pipeline reads of each prompt of `ids` [b, t] at the version `deltas`
    /// ([`Readout`]) [b, r]: the vectors ReFACT's candidates and text check compare.
    pub fn representation(&self, ids: &Tensor, deltas: &DeltaSet) -> Result<Tensor> {
        match &self.readout {
            Readout::Pooled => Ok(self.forward(ids, deltas)?.pooler_output),
            Readout::Penultimate | Readout::PenultimateAndProjection(_) => {
                let states = self.forward_states(ids, deltas)?;
                let eos = self.first_eos_positions(ids)?;
                let penultimate = gather_rows(&states.penultimate, &eos)?;
                self.read_out(&penultimate, &states.output.pooler_output)
            }
        }
    }

    /// [`Self::representation`] of texts, tokenized and padded as the pipeline does.
    pub fn represent_texts(
        &self,
        tokenizer: &ClipTokenizer,
        texts: &[&str],
        deltas: &DeltaSet,
    ) -> Result<Tensor> {
        self.representation(&self.padded_ids(tokenizer, texts)?, deltas)
    }

    /// The representation from the EOS rows' penultimate [b, d] and final-norm [b, d]
    /// states (differentiable).
    pub(crate) fn read_out(&self, penultimate: &Tensor, pooled: &Tensor) -> Result<Tensor> {
        Ok(match &self.readout {
            Readout::Pooled => pooled.clone(),
            Readout::Penultimate => penultimate.clone(),
            Readout::PenultimateAndProjection(_) => {
                let projected = self
                    .project(pooled)?
                    .expect("this readout has a projection");
                Tensor::cat(&[penultimate, &projected], 1)?
            }
        })
    }

    /// The projected pooled state (SDXL's `text_embeds`) of final-norm EOS states [b, d];
    /// `None` for an encoder without a projection.
    pub fn project(&self, pooled: &Tensor) -> Result<Option<Tensor>> {
        match &self.readout {
            Readout::PenultimateAndProjection(projection) => {
                Ok(Some(pooled.matmul(&projection.t()?)?))
            }
            Readout::Pooled | Readout::Penultimate => Ok(None),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Encodes token ids [b, t] (u32) at the version given by `deltas`.
    pub fn forward(&self, ids: &Tensor, deltas: &DeltaSet) -> Result<EncoderOutput> {
        let prepared = self.prepare(deltas)?;
        let hidden = self.embed(ids)?;
        let hidden = self.run_layers(
            &hidden,
            0..self.num_layers(),
            &prepared,
            Mode::Inference,
            None,
        )?;
        let last_hidden_state = self.final_norm(&hidden, Mode::Inference)?;
        let eos = self.first_eos_positions(ids)?;
        let pooler_output = gather_rows(&last_hidden_state, &eos)?;
        Ok(EncoderOutput {
            last_hidden_state,
            pooler_output,
        })
    }

    /// [`Self::forward`], keeping the states after the second-to-last layer as well.
    pub fn forward_states(&self, ids: &Tensor, deltas: &DeltaSet) -> Result<EncoderStates> {
        let n = self.num_layers();
        if n < 2 {
            return Err(EngineError::Weights(format!(
                "the penultimate layer's states need two layers, the encoder has {n}"
            )));
        }
        let prepared = self.prepare(deltas)?;
        let hidden = self.embed(ids)?;
        let penultimate = self.run_layers(&hidden, 0..n - 1, &prepared, Mode::Inference, None)?;
        let last = self.run_layers(&penultimate, n - 1..n, &prepared, Mode::Inference, None)?;
        let last_hidden_state = self.final_norm(&last, Mode::Inference)?;
        let eos = self.first_eos_positions(ids)?;
        let pooler_output = gather_rows(&last_hidden_state, &eos)?;
        Ok(EncoderStates {
            penultimate,
            output: EncoderOutput {
                last_hidden_state,
                pooler_output,
            },
        })
    }

    /// Tokenizes `texts` (padded to the context length, as SD does) and encodes them.
    pub fn encode_texts(
        &self,
        tokenizer: &ClipTokenizer,
        texts: &[&str],
        deltas: &DeltaSet,
    ) -> Result<EncoderOutput> {
        let ids = self.padded_ids(tokenizer, texts)?;
        self.forward(&ids, deltas)
    }

    /// Token ids of `texts`, each padded to the context length, as a [b, 77] tensor.
    pub fn padded_ids(&self, tokenizer: &ClipTokenizer, texts: &[&str]) -> Result<Tensor> {
        let mut flat = Vec::with_capacity(texts.len() * tokenizer.max_length());
        for text in texts {
            flat.extend(tokenizer.encode_padded(text)?);
        }
        Ok(Tensor::from_vec(
            flat,
            (texts.len(), tokenizer.max_length()),
            &self.device,
        )?)
    }

    /// Token plus position embeddings of ids [b, t].
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.config.max_position_embeddings {
            return Err(EngineError::Weights(format!(
                "{t} tokens but the encoder has {} positions",
                self.config.max_position_embeddings
            )));
        }
        let tokens = self
            .token_embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        let positions = self.position_embedding.i(0..t)?;
        Ok(tokens.broadcast_add(&positions)?)
    }

    /// Runs the layers in `layers` on the residual stream `hidden` [b, t, d] (causal over
    /// all t rows). `hook` sees and may change fc2's output at its layer.
    pub fn run_layers(
        &self,
        hidden: &Tensor,
        layers: Range<usize>,
        deltas: &PreparedDeltas,
        mode: Mode,
        mut hook: Option<(usize, &mut dyn Fc2Hook)>,
    ) -> Result<Tensor> {
        let (_, t, _) = hidden.dims3()?;
        let mask = causal_mask(t, hidden.dtype(), &self.device)?;
        let mut hidden = hidden.clone();
        for index in layers {
            let layer_hook = match hook.as_mut() {
                Some((at, h)) if *at == index => Some(&mut **h as &mut dyn Fc2Hook),
                _ => None,
            };
            hidden =
                self.layers[index].forward(&hidden, &mask, deltas.at(index), mode, layer_hook)?;
        }
        Ok(hidden)
    }

    /// Final layer norm.
    pub fn final_norm(&self, hidden: &Tensor, mode: Mode) -> Result<Tensor> {
        Ok(self.final_layer_norm.forward(hidden, mode)?)
    }

    /// Index of each row's first EOS token (the last position when a row has none).
    pub fn first_eos_positions(&self, ids: &Tensor) -> Result<Vec<usize>> {
        let rows: Vec<Vec<u32>> = ids.to_dtype(DType::U32)?.to_vec2()?;
        Ok(rows
            .iter()
            .map(|row| {
                row.iter()
                    .position(|&id| id == self.eos_id)
                    .unwrap_or(row.len() - 1)
            })
            .collect())
    }

    /// fc2's weight [hidden, inner] at `layer`, as loaded (no deltas).
    pub fn fc2_weight(&self, layer: usize) -> Result<Tensor> {
        Ok(self.layers[layer].fc2.weight()?)
    }

    pub(crate) fn layer(&self, index: usize) -> &EncoderLayer {
        &self.layers[index]
    }

    pub(crate) fn final_layer_norm(&self) -> &Norm {
        &self.final_layer_norm
    }

    /// A copy of this encoder with fc2's weight at `layer` replaced: used by tests to check
    /// that deltas equal an in-place weight update.
    pub fn with_fc2_weight(&self, layer: usize, weight: Tensor) -> Result<Self> {
        let mut copy = self.clone();
        copy.layers[layer].fc2 = copy.layers[layer].fc2.with_weight(weight)?;
        Ok(copy)
    }

    /// The same encoder with every weight converted to `dtype` (f64 for gradient checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let mut copy = self.clone();
        copy.token_embedding = self.token_embedding.to_dtype(dtype)?;
        copy.position_embedding = self.position_embedding.to_dtype(dtype)?;
        copy.layers = self
            .layers
            .iter()
            .map(|l| l.to_dtype(dtype))
            .collect::<candle_core::Result<_>>()?;
        copy.final_layer_norm = self.final_layer_norm.to_dtype(dtype)?;
        if let Readout::PenultimateAndProjection(projection) = &self.readout {
            copy.readout = Readout::PenultimateAndProjection(projection.to_dtype(dtype)?);
        }
        copy.dtype = dtype;
        Ok(copy)
    }
}

/// Rows `positions[i]` of batch item i: [b, t, d] → [b, d].
pub fn gather_rows(states: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let rows = positions
        .iter()
        .enumerate()
        .map(|(b, &p)| states.i((b, p)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0)?)
}

/// Whether a safetensors file names its tensors `text_model.*` (transformers 4.x) or not.
fn has_text_model_prefix(path: &Path) -> Result<bool> {
    let names = crate::weights::tensor_names(path)?;
    Ok(names.iter().any(|n| n.starts_with("text_model.")))
}
