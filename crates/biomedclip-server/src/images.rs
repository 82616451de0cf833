//! Images from requests -> the towers' input: base64 or data-URI strings decoded, then
//! decoded and preprocessed by the library off the async runtime, all of a request's images
//! checked before any is computed (one bad image fails the request, naming it).

use std::path::Path;

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use biomedclip::image::decode::decode_frame;
use biomedclip::image::Limits;
use biomedclip::BiomedClip;
use rayon::prelude::*;

use crate::error::{from_library, ApiError};
use crate::extract::Upload;

/// Standard base64, padding optional (clients differ).
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One image of a request: its name in messages and answers, and its encoded bytes.
#[derive(Debug)]
pub struct EncodedImage {
    /// `images[i]` for JSON fields, the file name for uploads.
    pub name: String,
    /// The file's bytes (PNG, JPEG, DICOM, ...).
    pub data: Vec<u8>,
}

/// A preprocessed image.
#[derive(Debug)]
pub struct Prepared {
    /// `3 * size * size` CHW floats.
    pub pixels: Vec<f32>,
    /// The image as the model saw it (after rendering, resizing and cropping), as a PNG
    /// data URI, when asked for.
    pub preview: Option<String>,
}

/// Decodes `data:<mime>;base64,<data>` or bare base64 into bytes; `param[index]` names it
/// in the error.
pub fn decode_base64(text: &str, param: &str, index: usize) -> Result<Vec<u8>, ApiError> {
    let payload = match text.strip_prefix("data:") {
        Some(uri) => {
            let (header, data) = uri.split_once(',').ok_or_else(|| {
                ApiError::invalid(
                    param,
                    Some(index),
                    format!("{param}[{index}]: a data URI without a comma"),
                )
            })?;
            if !header.ends_with(";base64") {
                return Err(ApiError::invalid(
                    param,
                    Some(index),
                    format!("{param}[{index}]: data URI is not base64 (`data:<type>;base64,...`)"),
                ));
            }
            data
        }
        None => text,
    };
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    BASE64.decode(compact.as_bytes()).map_err(|e| {
        ApiError::invalid(
            param,
            Some(index),
            format!("{param}[{index}]: not base64 or a base64 data URI: {e}"),
        )
    })
}

/// The images of a request: base64 strings of field `param` first, then uploads.
pub fn collect(
    texts: &[String],
    uploads: Vec<Upload>,
    param: &str,
) -> Result<Vec<EncodedImage>, ApiError> {
    let mut images = Vec::with_capacity(texts.len() + uploads.len());
    for (i, text) in texts.iter().enumerate() {
        images.push(EncodedImage {
            name: format!("{param}[{i}]"),
            data: decode_base64(text, param, i)?,
        });
    }
    images.extend(uploads.into_iter().map(|u| EncodedImage {
        name: u.name,
        data: u.data,
    }));
    Ok(images)
}

/// Decodes and preprocesses every image on the blocking pool; the first in input order
/// that fails fails the request (422 naming it and why).
pub async fn prepare(
    model: std::sync::Arc<BiomedClip>,
    images: Vec<EncodedImage>,
    limits: Limits,
    preview: bool,
    param: &'static str,
) -> Result<Vec<Prepared>, ApiError> {
    // Dropped with this future (a timeout, a client gone): the images not yet started are
    // then skipped instead of decoded for nobody.
    let wanted = std::sync::Arc::new(());
    let still_wanted = std::sync::Arc::downgrade(&wanted);
    let work = tokio::task::spawn_blocking(move || {
        let results: Vec<Option<biomedclip::Result<Prepared>>> = images
            .par_iter()
            .map(|image| {
                (still_wanted.strong_count() > 0)
                    .then(|| prepare_one(&model, image, &limits, preview))
            })
            .collect();
        results
    });
    let results = work
        .await
        .map_err(|e| ApiError::Internal(format!("image preprocessing failed: {e}")))?;
    drop(wanted);
    // Whichever thread met a failure first, the answer names the first in input order.
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(r) => r.map_err(|e| from_library(param, i, &e)),
            None => Err(ApiError::Internal("the request was dropped".into())),
        })
        .collect()
}

fn prepare_one(
    model: &BiomedClip,
    image: &EncodedImage,
    limits: &Limits,
    preview: bool,
) -> biomedclip::Result<Prepared> {
    let pre = model.preprocessor();
    let name = Path::new(&image.name);
    let decoded = decode_frame(&image.data, name, None, pre.rendering().window, limits)?;
    let rgb = pre.model_view(&decoded, name)?;
    let preview = preview.then(|| png_data_uri(rgb.width, rgb.height, &rgb.data));
    Ok(Prepared {
        pixels: pre.normalize(&rgb),
        preview,
    })
}

/// An 8-bit RGB image as a `data:image/png;base64,` URI.
fn png_data_uri(width: usize, height: usize, rgb: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        BASE64.encode(png_bytes(width, height, rgb))
    )
}

/// An 8-bit RGB image as PNG.
pub fn png_bytes(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("PNG header into memory");
        writer.write_image_data(rgb).expect("PNG data into memory");
    }
    png
}
