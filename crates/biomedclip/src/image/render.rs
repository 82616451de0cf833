//! High-bit-depth samples (DICOM, 16-bit PNG/TIFF) -> 8-bit gray levels.
//!
//! The reference (Pillow's `convert("RGB")`) clamps 16-bit grayscale at 255, which turns most
//! medical images white. By default we map instead: through a window (`--window C,W`, a named
//! preset, or the one stored in a DICOM file) or, without one, the image's own minimum..maximum
//! onto 0..255. [`HighBitDepth::Reference`] keeps the reference's clamp for exact parity.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A VOI window: values in `center ± width / 2` are spread over the 8-bit range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Window Center (0028,1050), in output units of the modality LUT (e.g. Hounsfield units).
    pub center: f64,
    /// Window Width (0028,1051); at least 1.
    pub width: f64,
}

/// Named windows (centre, width) in Hounsfield units, as radiology viewers ship them.
pub const WINDOW_PRESETS: &[(&str, Window)] = &[
    ("lung", Window::new(-600.0, 1500.0)),
    ("mediastinum", Window::new(50.0, 350.0)),
    ("bone", Window::new(400.0, 1800.0)),
    ("brain", Window::new(40.0, 80.0)),
    ("abdomen", Window::new(40.0, 400.0)),
    ("liver", Window::new(60.0, 160.0)),
    ("stroke", Window::new(40.0, 40.0)),
    ("subdural", Window::new(75.0, 215.0)),
];

impl Window {
    /// A window of the given centre and width.
    pub const fn new(center: f64, width: f64) -> Self {
        Self { center, width }
    }
}

impl FromStr for Window {
    type Err = Error;

    /// Parses `C,W` (e.g. `-600,1500`) or a preset name from [`WINDOW_PRESETS`].
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some((_, w)) = WINDOW_PRESETS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
        {
            return Ok(*w);
        }
        let bad = || {
            let names: Vec<&str> = WINDOW_PRESETS.iter().map(|(n, _)| *n).collect();
            Error::InvalidInput(format!(
                "window {s:?}: expected CENTER,WIDTH (e.g. -600,1500) or one of {}",
                names.join(", ")
            ))
        };
        let (c, w) = s.split_once(',').ok_or_else(bad)?;
        let center: f64 = c.trim().parse().map_err(|_| bad())?;
        let width: f64 = w.trim().parse().map_err(|_| bad())?;
        if !center.is_finite() || !width.is_finite() || width < 1.0 {
            return Err(Error::InvalidInput(format!(
                "window {s:?}: the width must be a number >= 1"
            )));
        }
        Ok(Window { center, width })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.center, self.width)
    }
}

/// The VOI LUT Function (0028,1056) a window is applied with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WindowFunction {
    /// `LINEAR` (the default): DICOM PS3.3 C.11.2.1.2.1.
    #[default]
    Linear,
    /// `LINEAR_EXACT`: C.11.2.1.3.2.
    LinearExact,
    /// `SIGMOID`: C.11.2.1.3.1.
    Sigmoid,
}

/// How 16-bit grayscale images that are not DICOM become 8 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HighBitDepth {
    /// Map the image's minimum..maximum (or the given window) onto 0..255.
    #[default]
    FullRange,
    /// Clamp at 255 after resizing in 16 bits, exactly as the reference does.
    Reference,
}

/// Options that decide how an image file becomes the model's 8-bit input.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rendering {
    /// A window that overrides the one stored in DICOM files and the full-range mapping of
    /// 16-bit images.
    pub window: Option<Window>,
    /// How 16-bit PNG/TIFF grayscale is brought to 8 bits.
    pub high_bit_depth: HighBitDepth,
}

impl Rendering {
    /// The reference's behaviour for every input (16-bit grayscale clamped at 255).
    pub fn reference() -> Self {
        Self {
            window: None,
            high_bit_depth: HighBitDepth::Reference,
        }
    }

    /// A short description, used to key cached embeddings.
    pub fn cache_tag(&self) -> String {
        let window = self.window.map(|w| w.to_string()).unwrap_or_default();
        format!("window={window};16bit={:?}", self.high_bit_depth)
    }
}

/// Applies `window` with `function` to `values`, giving 8-bit levels. The linear functions
/// follow DICOM PS3.3 C.11.2.1.2 (as pydicom's `apply_voi_lut` does), scaled to 0..255 and
/// rounded to the nearest level.
pub fn apply_window(values: &[f64], window: Window, function: WindowFunction) -> Vec<u8> {
    let Window { center, width } = window;
    let level = |y: f64| (y * 255.0).round().clamp(0.0, 255.0) as u8;
    match function {
        WindowFunction::Linear => {
            let width = width.max(1.0);
            let (lo, hi) = (
                center - 0.5 - (width - 1.0) / 2.0,
                center - 0.5 + (width - 1.0) / 2.0,
            );
            values
                .iter()
                .map(|&x| {
                    if x <= lo {
                        0
                    } else if x > hi {
                        255
                    } else {
                        level((x - (center - 0.5)) / (width - 1.0) + 0.5)
                    }
                })
                .collect()
        }
        WindowFunction::LinearExact => {
            let width = width.max(f64::MIN_POSITIVE);
            values
                .iter()
                .map(|&x| level((x - center) / width + 0.5))
                .collect()
        }
        WindowFunction::Sigmoid => {
            let width = width.max(f64::MIN_POSITIVE);
            values
                .iter()
                .map(|&x| level(1.0 / (1.0 + (-4.0 * (x - center) / width).exp())))
                .collect()
        }
    }
}

/// Maps `values` linearly so that their minimum becomes 0 and their maximum 255 (a constant
/// image becomes 0).
pub fn stretch_full_range(values: &[f64]) -> Vec<u8> {
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if values.is_empty() || max <= min {
        return vec![0; values.len()];
    }
    let scale = 255.0 / (max - min);
    values
        .iter()
        .map(|&v| ((v - min) * scale).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Brings modality values to 8 bits: through `window` when there is one, else the full range.
pub fn to_gray8(values: &[f64], window: Option<Window>, function: WindowFunction) -> Vec<u8> {
    match window {
        Some(w) => apply_window(values, w, function),
        None => stretch_full_range(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_from_numbers_and_presets() {
        assert_eq!(
            "-600,1500".parse::<Window>().unwrap(),
            Window::new(-600.0, 1500.0)
        );
        assert_eq!(
            "Lung".parse::<Window>().unwrap(),
            Window::new(-600.0, 1500.0)
        );
        assert!("40".parse::<Window>().is_err());
        assert!("40,0".parse::<Window>().is_err());
        let msg = "spleen".parse::<Window>().unwrap_err().to_string();
        assert!(msg.contains("mediastinum"), "{msg}");
    }

    #[test]
    fn linear_window_matches_the_dicom_formula() {
        // C = 40, W = 400: [-160, 240) spans the output; the DICOM breakpoints are
        // x <= c - 0.5 - (w-1)/2 -> 0 and x > c - 0.5 + (w-1)/2 -> max.
        let w = Window::new(40.0, 400.0);
        let out = apply_window(
            &[-1000.0, -160.0, 39.5, 240.0, 3000.0],
            w,
            WindowFunction::Linear,
        );
        assert_eq!(out, vec![0, 0, 128, 255, 255]);
        // Halfway through the window: ((40 - 39.5) / 399 + 0.5) * 255 = 127.82 -> 128.
        assert_eq!(apply_window(&[40.0], w, WindowFunction::Linear), vec![128]);
    }

    #[test]
    fn exact_and_sigmoid_windows_are_centred() {
        let w = Window::new(100.0, 50.0);
        assert_eq!(
            apply_window(&[75.0, 100.0, 125.0], w, WindowFunction::LinearExact),
            vec![0, 128, 255]
        );
        let s = apply_window(&[-1e9, 100.0, 1e9], w, WindowFunction::Sigmoid);
        assert_eq!(s, vec![0, 128, 255]);
    }

    #[test]
    fn full_range_maps_min_to_0_and_max_to_255() {
        assert_eq!(
            stretch_full_range(&[1000.0, 1500.0, 2000.0]),
            vec![0, 128, 255]
        );
        assert_eq!(stretch_full_range(&[7.0, 7.0]), vec![0, 0]);
    }
}
