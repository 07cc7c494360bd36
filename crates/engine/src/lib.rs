//! refact-engine: Stable Diffusion v1.x on candle, with a CLIP text encoder that
//! ReFACT can edit (hooks, low-rank deltas, differentiable), the UNet, VAE and
//! schedulers needed to render at any version, and the ReFACT method itself.
//!
//! The engine knows nothing about HTTP or databases: the server drives it.

pub mod config_file;
pub mod delta_file;
pub mod deltas;
pub mod device;
pub mod error;
pub mod image_io;
pub mod layers;
pub mod model;
pub mod pipeline;
pub mod refact;
pub mod scheduler;
pub mod text_encoder;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;

pub use error::{EngineError, InvalidKind, Result};
