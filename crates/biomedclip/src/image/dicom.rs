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
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    ConvertOptions, DecodedPixelData, PhotometricInterpretation, PixelDecoder, PixelRepresentation,
    VoiLutFunction, VoiLutOption,
};

use super::dicom_lengths::check_lengths;
use super::limits::Limits;
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
    limits: &Limits,
) -> Result<Decoded> {
    // dicom-rs's pixel codecs can panic on corrupt data (an RLE segment or a JPEG 2000 tile
    // overrunning its buffer, found by fuzzing); such a file must fail alone, with its name.
    std::panic::catch_unwind(|| decode_checked(bytes, path, frame, window, limits)).unwrap_or_else(
        |panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(Error::Image {
                path: path.into(),
                reason: format!("corrupt DICOM data (the decoder failed: {what})"),
            })
        },
    )
}

fn decode_checked(
    bytes: &[u8],
    path: &Path,
    frame: Option<u32>,
    window: Option<Window>,
    limits: &Limits,
) -> Result<Decoded> {
    let fail = |reason: String| Error::Image {
        path: path.into(),
        reason,
    };
    let obj = open_data_set(bytes, path, None)?;
    let syntax = transfer_syntax_name(&obj);
    let Some(pixel_data) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        for (tag, name) in [
            (tags::FLOAT_PIXEL_DATA, "Float Pixel Data (7FE0,0008)"),
            (
                tags::DOUBLE_FLOAT_PIXEL_DATA,
                "Double Float Pixel Data (7FE0,0009)",
            ),
        ] {
            if obj.element_opt(tag).ok().flatten().is_some() {
                return Err(fail(format!(
                    "the image is stored as {name}, which is not supported \
                     (integer Pixel Data (7FE0,0010) only)"
                )));
            }
        }
        return Err(fail("DICOM file has no Pixel Data (7FE0,0010)".into()));
    };
    let frames = int_value(&obj, tags::NUMBER_OF_FRAMES)
        .unwrap_or(1)
        .clamp(1, u32::MAX.into()) as u32;
    let frame = frame.unwrap_or(frames / 2);
    if frame >= frames {
        return Err(fail(format!(
            "frame {frame} does not exist: the file has {frames} frame(s), numbered from 0"
        )));
    }
    check_geometry(&obj, pixel_data, frames, limits).map_err(fail)?;
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
            // dicom-pixeldata drops a window it cannot use; the raw values are then read so
            // that an invalid one is reported rather than silently replaced.
            let file_window = pixels
                .window()
                .ok()
                .flatten()
                .and_then(|w| w.first().map(|w| Window::new(w.center, w.width)))
                .or_else(|| {
                    Some(Window::new(
                        first_float(&obj, tags::WINDOW_CENTER)?,
                        first_float(&obj, tags::WINDOW_WIDTH)?,
                    ))
                });
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
            let window = match window {
                Some(given) => Some(given),
                None => file_window
                    .map(|w| check_window(w, function))
                    .transpose()
                    .map_err(fail)?,
            };
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

/// Refuses a frame larger than `limits` allow, bit depths the decoder cannot take, and
/// (for native, uncompressed data) Pixel Data shorter than Rows x Columns x frames needs,
/// before any pixel is decoded.
fn check_geometry(
    obj: &DefaultDicomObject,
    pixel_data: &dicom_object::mem::InMemElement,
    frames: u32,
    limits: &Limits,
) -> std::result::Result<(), String> {
    let rows = int_value(obj, tags::ROWS).ok_or("Rows (0028,0010) is missing")?;
    let columns = int_value(obj, tags::COLUMNS).ok_or("Columns (0028,0011) is missing")?;
    if rows <= 0 || columns <= 0 {
        return Err(format!("Rows x Columns is {rows} x {columns}"));
    }
    limits.check_pixels(columns as u64, rows as u64)?;
    let bits =
        int_value(obj, tags::BITS_ALLOCATED).ok_or("Bits Allocated (0028,0100) is missing")?;
    if ![8, 16, 32].contains(&bits) {
        return Err(format!(
            "Bits Allocated (0028,0100) is {bits}; images of 8, 16 or 32 bits are supported"
        ));
    }
    let samples = int_value(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1).max(1);
    // Chroma-subsampled colour (YBR_*_422/420) stores fewer samples than Rows x Columns x 3.
    let subsampled = text_value(obj, tags::PHOTOMETRIC_INTERPRETATION)
        .is_some_and(|pi| pi.ends_with("_422") || pi.ends_with("_420"));
    // Encapsulated (compressed) data comes as fragments; only native data has a known size.
    if let (false, dicom_core::value::Value::Primitive(value)) = (subsampled, pixel_data.value()) {
        let have = value.calculate_byte_len() as u64;
        let need = (rows as u64 * columns as u64)
            .saturating_mul((samples as u64).saturating_mul(bits as u64) / 8)
            .saturating_mul(frames as u64);
        if have < need {
            return Err(format!(
                "Pixel Data holds {have} bytes, but Rows x Columns x Samples x Bits Allocated x \
                 Frames ({rows} x {columns} x {samples} x {bits} bits x {frames}) needs {need}"
            ));
        }
    }
    Ok(())
}

/// Refuses a file's VOI window that the standard (and pydicom's `apply_voi_lut`) refuses:
/// width below 1 for LINEAR, not above 0 for LINEAR_EXACT and SIGMOID.
fn check_window(w: Window, function: WindowFunction) -> std::result::Result<Window, String> {
    let least_linear = matches!(function, WindowFunction::Linear);
    let ok = if least_linear {
        w.width >= 1.0
    } else {
        w.width > 0.0
    };
    if ok && w.center.is_finite() && w.width.is_finite() {
        return Ok(w);
    }
    let rule = if least_linear { ">= 1" } else { "> 0" };
    Err(format!(
        "the file's Window Width (0028,1051) is {} (centre {}); it must be {rule} \
         (give a window with --window to override it)",
        w.width, w.center
    ))
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

fn first_float(obj: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    let values = obj
        .element_opt(tag)
        .ok()
        .flatten()?
        .to_multi_float64()
        .ok()?;
    values.first().copied()
}

/// A text attribute, trimmed.
fn text_value(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
}

/// Checks the element lengths, then parses the data set (up to `until`, if given), after the
/// preamble.
fn open_data_set(bytes: &[u8], path: &Path, until: Option<Tag>) -> Result<DefaultDicomObject> {
    let fail = |reason: String| Error::Image {
        path: path.into(),
        reason,
    };
    check_lengths(bytes).map_err(fail)?;
    // The preamble is skipped here; dicom-rs must not look for a second one (it would start
    // reading 128 bytes later than the length walk did).
    let options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    let options = match until {
        Some(tag) => options.read_until(tag),
        None => options,
    };
    options
        .from_reader(&bytes[crate::image::decode::DICOM_MAGIC_AT..])
        .map_err(|e| fail(format!("cannot read DICOM data set: {}", chain(&e))))
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

/// The DICOM attributes a collection keeps per file to filter on: what was imaged and how,
/// never who (no patient name, ID or birth date).
pub const COLLECTION_TAGS: [(Tag, &str); 6] = [
    (tags::MODALITY, "modality"),
    (tags::BODY_PART_EXAMINED, "body_part_examined"),
    (tags::STUDY_DATE, "study_date"),
    (tags::STUDY_DESCRIPTION, "study_description"),
    (tags::SERIES_DESCRIPTION, "series_description"),
    (tags::MANUFACTURER, "manufacturer"),
];

/// Reads [`COLLECTION_TAGS`] from a DICOM file's bytes (the data set up to the pixel data;
/// the pixels are not decoded): one value per tag, `None` where the file lacks it.
pub fn collection_tags(bytes: &[u8], path: &Path) -> Result<Vec<Option<String>>> {
    let obj = open_data_set(bytes, path, Some(tags::PIXEL_DATA))?;
    Ok(COLLECTION_TAGS
        .iter()
        .map(|(tag, _)| text_value(&obj, *tag).filter(|s| !s.is_empty()))
        .collect())
}
