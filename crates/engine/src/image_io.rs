//! From the pipeline's float image to bytes: 8-bit RGB and PNG.

use crate::error::{EngineError, InvalidKind, Result};
use candle_core::{DType, Tensor};
use image::{ImageFormat, RgbImage};
use std::io::Cursor;

fn bad_shape(message: impl Into<String>) -> EngineError {
    EngineError::invalid(InvalidKind::BadShape, "image", message)
}

/// Converts an image [H, W, 3] with values in [0, 1] to 8-bit RGB as diffusers does
/// (`round(x · 255)`, clamped to [0, 255]; numpy rounds halves to even, so do we).
pub fn to_rgb8(image: &Tensor) -> Result<RgbImage> {
    let (height, width, channels) = image
        .dims3()
        .map_err(|_| bad_shape(format!("expected [H, W, 3], got {:?}", image.dims())))?;
    if channels != 3 {
        return Err(bad_shape(format!("expected 3 channels, got {channels}")));
    }
    let values = image
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes = values
        .iter()
        .map(|v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
        .collect();
    RgbImage::from_raw(width as u32, height as u32, bytes)
        .ok_or_else(|| bad_shape("image buffer does not match its size"))
}

/// Encodes an RGB image as PNG bytes.
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| bad_shape(format!("cannot encode PNG: {e}")))?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn values_are_rounded_and_clamped() {
        let values = [0.0f32, 0.5, 1.0, -0.2, 1.7, 0.7 / 255.0];
        let image = Tensor::from_slice(&values, (1, 2, 3), &Device::Cpu).unwrap();
        let rgb = to_rgb8(&image).unwrap();
        assert_eq!(rgb.dimensions(), (2, 1));
        // 127.5 rounds to the even 128; out-of-range values clamp.
        assert_eq!(rgb.as_raw(), &vec![0, 128, 255, 0, 255, 1]);
    }

    #[test]
    fn png_bytes_decode_back_to_the_same_pixels() {
        let image = Tensor::rand(0f32, 1.0, (5, 7, 3), &Device::Cpu).unwrap();
        let rgb = to_rgb8(&image).unwrap();
        let png = encode_png(&rgb).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(decoded, rgb);
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let image = Tensor::zeros((4, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            to_rgb8(&image),
            Err(EngineError::Invalid {
                kind: InvalidKind::BadShape,
                ..
            })
        ));
    }
}
