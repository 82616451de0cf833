//! Image bytes -> pixels -> the image tower's input: what an image comes as ([`input`]),
//! decoding as Pillow does ([`decode`], DICOM in [`dicom`] with the `dicom` feature),
//! bringing medical images to 8 bits ([`render`]), Pillow's resampling ([`resample`]) and
//! the reference's resize, crop and normalisation ([`preprocess`]).

pub mod decode;
#[cfg(feature = "dicom")]
pub mod dicom;
#[cfg(feature = "dicom")]
mod dicom_lengths;
pub mod input;
mod jpeg;
pub mod limits;
mod palette;
pub mod pixels;
pub mod preprocess;
pub mod render;
pub mod resample;

pub use input::ImageInput;
pub use limits::{Limits, MAX_IMAGE_PIXELS, MAX_INPUT_BYTES};
pub use render::{HighBitDepth, Rendering, Window, WindowFunction, WINDOW_PRESETS};
