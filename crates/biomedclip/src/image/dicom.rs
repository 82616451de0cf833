//! DICOM files -> 8-bit pixels, through dicom-rs.
//!
//! Grayscale: stored values -> Modality LUT (Rescale Slope/Intercept) -> VOI window (the one
//! given, else the file's first Window Center/Width with its VOI LUT Function, else the
//! frame's minimum..maximum) -> 0..255, inverted for MONOCHROME1. This is what pydicom's
//! `apply_modality_lut` then `apply_voi_lut` give, scaled to 8 bits. Colour (RGB, YBR_FULL,
//! YBR_FULL_422) becomes RGB. Multi-frame files give one frame, the middle one unless asked.
//! Compressed transfer syntaxes are decoded by dicom-pixeldata's built-in codecs (JPEG
//! baseline/extended/lossless, RLE, JPEG 2000, deflate); others fail naming the syntax.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    ConvertOptions, DecodedPixelData, PhotometricInterpretation, PixelDecoder, PixelRepresentation,
    VoiLutFunction, VoiLutOption,
};

use super::pixels::{Decoded, Pixels};
use super::render::{to_gray8, Window, WindowFunction};
use crate::error::{Error, Result};

/// Decodes one frame (default: the middle one) of a DICOM file to 8 bits; `window`
/// overrides the file's own. `path` is used for messages only.
pub fn decode_dicom(
    bytes: &[u8],
    path: &Path,
    frame: Option<u32>,
    window: Option<Window>,
) -> Result<Decoded> {
    let fail = |reason: String| Error::Image {
        path: path.into(),
        reason,
    };
    let obj = OpenFileOptions::new()
        .from_reader(&bytes[crate::image::decode::DICOM_MAGIC_AT..])
        .map_err(|e| fail(format!("cannot read DICOM data set: {}", chain(&e))))?;
    let syntax = transfer_syntax_name(&obj);
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(fail("DICOM file has no Pixel Data (7FE0,0010)".into()));
    }
    let frames = int_value(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32;
    let frame = frame.unwrap_or(frames / 2);
    if frame >= frames {
        return Err(fail(format!(
            "frame {frame} does not exist: the file has {frames} frame(s), numbered from 0"
        )));
    }
    let pixels = obj.decode_pixel_data_frame(frame).map_err(|e| {
        fail(format!(
            "cannot decode pixel data ({syntax}): {}",
            chain(&e)
        ))
    })?;
    let (width, height) = (pixels.columns() as usize, pixels.rows() as usize);
    let pi = pixels.photometric_interpretation().clone();
    let convert_err = |e: dicom_pixeldata::Error| {
        fail(format!(
            "cannot convert pixel data ({syntax}): {}",
            chain(&e)
        ))
    };
    let data = match (pixels.samples_per_pixel(), &pi) {
        (1, PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2) => {
            let values = modality_values(&pixels).map_err(convert_err)?;
            let file_window = pixels
                .window()
                .ok()
                .flatten()
                .and_then(|w| w.first().copied());
            let function = match pixels
                .voi_lut_function()
                .ok()
                .flatten()
                .and_then(|f| f.first().copied())
            {
                Some(VoiLutFunction::LinearExact) => WindowFunction::LinearExact,
                Some(VoiLutFunction::Sigmoid) => WindowFunction::Sigmoid,
                _ => WindowFunction::Linear,
            };
            let window = window.or(file_window.map(|w| Window::new(w.center, w.width)));
            let mut gray = to_gray8(&values, window, function);
            if pi == PhotometricInterpretation::Monochrome1 {
                gray.iter_mut().for_each(|v| *v = 255 - *v);
            }
            Pixels::Gray(gray)
        }
        (
            3,
            PhotometricInterpretation::Rgb
            | PhotometricInterpretation::YbrFull
            | PhotometricInterpretation::YbrFull422,
        ) => {
            let options = ConvertOptions::new().force_8bit();
            let img = pixels
                .to_dynamic_image_with_options(0, &options)
                .map_err(convert_err)?;
            Pixels::Rgb(img.into_rgb8().into_raw())
        }
        (n, pi) => {
            return Err(fail(format!(
                "unsupported DICOM photometric interpretation {pi} with {n} sample(s) per pixel"
            )))
        }
    };
    Ok(Decoded {
        width,
        height,
        pixels: data,
        nearest: false,
    })
}

/// Stored values through the Modality LUT (Rescale Slope/Intercept), as floats.
fn modality_values(pixels: &DecodedPixelData<'_>) -> dicom_pixeldata::Result<Vec<f64>> {
    if pixels.bits_allocated() != 32 {
        let options = ConvertOptions::new().with_voi_lut(VoiLutOption::Identity);
        return pixels.to_vec_frame_with_options(0, &options);
    }
    // dicom-pixeldata converts 1, 8 and 16-bit samples only; 32-bit ones (dose grids,
    // parametric maps) are read here from the native little-endian frame.
    let signed = pixels.pixel_representation() == PixelRepresentation::Signed;
    let rescale = pixels.rescale()?.first().copied();
    let (slope, intercept) = rescale.map_or((1.0, 0.0), |r| (r.slope, r.intercept));
    Ok(pixels
        .frame_data(0)?
        .chunks_exact(4)
        .map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            let v = if signed {
                i32::from_le_bytes(b) as f64
            } else {
                u32::from_le_bytes(b) as f64
            };
            v * slope + intercept
        })
        .collect())
}

fn transfer_syntax_name(obj: &DefaultDicomObject) -> String {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    let uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    match dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(&uid) {
        Some(ts) => format!("transfer syntax {} {uid}", ts.name()),
        None => format!("unknown transfer syntax {uid}"),
    }
}

fn int_value(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    obj.element_opt(tag).ok().flatten()?.to_int::<i64>().ok()
}

/// An error and its causes, `: `-separated (dicom-rs keeps the useful part in the causes).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}
