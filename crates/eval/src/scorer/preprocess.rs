//! CLIP image preprocessing from `preprocessor_config.json`, in transformers'
//! CLIPImageProcessor order: resize (shortest side, Pillow-style), centre crop, rescale,
//! normalise. Both the newer (`{"shortest_edge": 224}`) and the older (`224`) forms of
//! `size` and `crop_size` are read.

use super::resample::{resize_rgb, Filter};
use crate::error::{EvalError, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::Deserialize;
use std::path::Path;

/// The target of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// Scale so the shorter side has this length, keeping the aspect ratio.
    ShortestEdge(usize),
    /// Exactly this height and width.
    Exact { height: usize, width: usize },
}

/// The parsed preprocessing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePreprocessor {
    pub resize: Option<ResizeTo>,
    pub filter: Filter,
    pub crop: Option<(usize, usize)>,
    pub rescale_factor: Option<f64>,
    pub mean_std: Option<([f64; 3], [f64; 3])>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Square(usize),
    Dict {
        shortest_edge: Option<usize>,
        height: Option<usize>,
        width: Option<usize>,
    },
}

#[derive(Deserialize)]
struct RawPreprocessor {
    do_resize: Option<bool>,
    size: Option<RawSize>,
    resample: Option<u32>,
    do_center_crop: Option<bool>,
    crop_size: Option<RawSize>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<Vec<f64>>,
    image_std: Option<Vec<f64>>,
}

/// transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, the defaults of CLIPImageProcessor.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

fn three(values: Option<Vec<f64>>, default: [f64; 3], key: &str, path: &Path) -> Result<[f64; 3]> {
    match values {
        None => Ok(default),
        Some(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
        Some(v) if v.len() == 1 => Ok([v[0]; 3]),
        Some(v) => Err(EvalError::config(
            path,
            format!("{key} has {} values, expected 3", v.len()),
        )),
    }
}

impl ImagePreprocessor {
    /// Reads `preprocessor_config.json`; absent keys take CLIPImageProcessor's defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses the JSON text; `path` only names the file in errors.
    pub fn from_json(json: &str, path: &Path) -> Result<Self> {
        let raw: RawPreprocessor =
            serde_json::from_str(json).map_err(|e| EvalError::config(path, e.to_string()))?;
        let resize = match (raw.do_resize.unwrap_or(true), raw.size) {
            (false, _) => None,
            (true, None) => Some(ResizeTo::ShortestEdge(224)),
            (true, Some(RawSize::Square(s))) => Some(ResizeTo::ShortestEdge(s)),
            (
                true,
                Some(RawSize::Dict {
                    shortest_edge: Some(s),
                    ..
                }),
            ) => Some(ResizeTo::ShortestEdge(s)),
            (
                true,
                Some(RawSize::Dict {
                    height: Some(height),
                    width: Some(width),
                    ..
                }),
            ) => Some(ResizeTo::Exact { height, width }),
            (true, Some(_)) => {
                return Err(EvalError::config(
                    path,
                    "size needs shortest_edge or height and width",
                ))
            }
        };
        let crop = match (raw.do_center_crop.unwrap_or(true), raw.crop_size) {
            (false, _) => None,
            (true, None) => Some((224, 224)),
            (true, Some(RawSize::Square(s))) => Some((s, s)),
            (
                true,
                Some(RawSize::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                }),
            ) => Some((h, w)),
            (true, Some(_)) => {
                return Err(EvalError::config(path, "crop_size needs height and width"))
            }
        };
        let filter_code = raw.resample.unwrap_or(3);
        let filter = Filter::from_pil_code(filter_code)
            .ok_or_else(|| EvalError::config(path, format!("unknown resample {filter_code}")))?;
        let rescale_factor = raw
            .do_rescale
            .unwrap_or(true)
            .then(|| raw.rescale_factor.unwrap_or(1.0 / 255.0));
        let mean_std = if raw.do_normalize.unwrap_or(true) {
            let mean = three(raw.image_mean, CLIP_MEAN, "image_mean", path)?;
            let std = three(raw.image_std, CLIP_STD, "image_std", path)?;
            if std.contains(&0.0) {
                return Err(EvalError::config(path, "image_std has a zero"));
            }
            Some((mean, std))
        } else {
            None
        };
        Ok(Self {
            resize,
            filter,
            crop,
            rescale_factor,
            mean_std,
        })
    }

    /// The (height, width) the resize step produces for an input of that size.
    pub fn resized_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self.resize {
            None => (height, width),
            Some(ResizeTo::Exact { height, width }) => (height, width),
            // transformers' get_resize_output_image_size: the long side is truncated.
            Some(ResizeTo::ShortestEdge(s)) if width <= height => (s * height / width, s),
            Some(ResizeTo::ShortestEdge(s)) => (s, s * width / height),
        }
    }

    /// Pixel values [1, 3, H, W] (f32, on `device`) for one RGB image.
    pub fn preprocess(&self, image: &RgbImage, device: &Device) -> Result<Tensor> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w == 0 || h == 0 {
            return Err(EvalError::Invalid("the image is empty".into()));
        }
        let (rh, rw) = self.resized_size(h, w);
        let resized = resize_rgb(image.as_raw(), w, h, rw, rh, self.filter);
        let (ch, cw) = self.crop.unwrap_or((rh, rw));
        // Centre crop with Python's floor division; a crop larger than the image pads
        // with zeros, as transformers' numpy centre crop does.
        let top = (rh as i64 - ch as i64).div_euclid(2);
        let left = (rw as i64 - cw as i64).div_euclid(2);
        let scale = self.rescale_factor.unwrap_or(1.0);
        let mut out = vec![0f32; 3 * ch * cw];
        for c in 0..3 {
            for y in 0..ch {
                for x in 0..cw {
                    let (sy, sx) = (y as i64 + top, x as i64 + left);
                    let raw = if (0..rh as i64).contains(&sy) && (0..rw as i64).contains(&sx) {
                        resized[(sy as usize * rw + sx as usize) * 3 + c] as f64
                    } else {
                        0.0
                    };
                    let mut v = raw * scale;
                    if let Some((mean, std)) = &self.mean_std {
                        v = (v - mean[c]) / std[c];
                    }
                    out[(c * ch + y) * cw + x] = v as f32;
                }
            }
        }
        Ok(Tensor::from_vec(out, (1, 3, ch, cw), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_integer_sizes_and_new_dicts_mean_the_same() {
        let old = r#"{"size": 224, "crop_size": 224, "resample": 3}"#;
        let new = r#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}"#;
        let p = Path::new("preprocessor_config.json");
        assert_eq!(
            ImagePreprocessor::from_json(old, p).unwrap(),
            ImagePreprocessor::from_json(new, p).unwrap()
        );
    }

    #[test]
    fn shortest_edge_keeps_aspect_and_truncates_the_long_side() {
        let p = ImagePreprocessor::from_json(r#"{"size": 32}"#, Path::new("x")).unwrap();
        assert_eq!(p.resized_size(64, 64), (32, 32));
        assert_eq!(p.resized_size(100, 30), (106, 32));
        assert_eq!(p.resized_size(30, 100), (32, 106));
    }

    #[test]
    fn a_grey_image_normalises_to_known_values() {
        let p =
            ImagePreprocessor::from_json(r#"{"size": 4, "crop_size": 2}"#, Path::new("x")).unwrap();
        let img = RgbImage::from_pixel(8, 6, image::Rgb([128, 128, 128]));
        let t = p.preprocess(&img, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 2, 2]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for c in 0..3 {
            let want = ((128.0 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]) as f32;
            assert!(v[c * 4..c * 4 + 4].iter().all(|x| (x - want).abs() < 1e-6));
        }
    }

    #[test]
    fn a_crop_larger_than_the_image_pads_with_zero() {
        let json = r#"{"do_resize": false, "crop_size": 4, "do_normalize": false}"#;
        let p = ImagePreprocessor::from_json(json, Path::new("x")).unwrap();
        let img = RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 255]));
        let v = p
            .preprocess(&img, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap();
        let v = v.to_vec1::<f32>().unwrap();
        // Channel 0, rows 1..3 and columns 1..3 hold the image; the border is zero.
        assert_eq!(&v[0..4], &[0.0, 0.0, 0.0, 0.0]);
        assert_eq!(&v[4..8], &[0.0, 1.0, 1.0, 0.0]);
    }
}
