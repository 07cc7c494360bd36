//! Building blocks shared by the UNet and the VAE, with CPU kernels of our own where
//! candle's are the bottleneck (docs/PERFORMANCE.md).

pub mod conv;
mod cpu;
mod fast_exp;
pub mod fused_attention;
pub mod geglu;
pub mod group_norm;
mod im2col;
pub mod resnet;
pub mod softmax;

pub use conv::Conv2d;
pub use group_norm::{GroupNorm, GroupStatistics, GroupSums};
pub use resnet::{GivenStatistics, Normalise, OwnStatistics, ResnetBlock2D, ResnetSpec};
