//! Images as the native layer takes them: a path, the bytes of a file, or decoded 8-bit RGB
//! pixels (`(height, width, 3)` uint8). Extracted while holding the GIL into owned values
//! the engine can use after releasing it.

use std::path::PathBuf;

use biomedclip::ImageInput;
use numpy::{PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyString;

/// One image, owned.
pub enum Image {
    /// A file (`scan.dcm#frame=N` takes a DICOM frame).
    Path(PathBuf),
    /// An encoded file in memory (kept alive by reference, not copied).
    Bytes { name: String, data: PyBackedBytes },
    /// Decoded interleaved RGB.
    Pixels {
        width: usize,
        height: usize,
        data: Vec<u8>,
    },
}

impl Image {
    /// Reads `images[index]` from a Python object.
    pub fn extract(item: &Bound<'_, PyAny>, index: usize) -> PyResult<Image> {
        if let Ok(s) = item.cast::<PyString>() {
            return Ok(Image::Path(PathBuf::from(s.to_cow()?.as_ref())));
        }
        if let Ok(data) = item.extract::<PyBackedBytes>() {
            return Ok(Image::Bytes {
                name: format!("images[{index}]"),
                data,
            });
        }
        if let Ok(array) = item.extract::<PyReadonlyArray3<'_, u8>>() {
            let shape = array.shape();
            if shape[2] != 3 {
                return Err(PyTypeError::new_err(format!(
                    "images[{index}]: an array must be (height, width, 3) uint8 RGB, got shape {shape:?}"
                )));
            }
            let (height, width) = (shape[0], shape[1]);
            // `as_slice` also accepts Fortran order, whose memory is not row by row.
            let data = match array.as_slice() {
                Ok(s) if array.is_c_contiguous() => s.to_vec(),
                _ => array.as_array().iter().copied().collect(),
            };
            return Ok(Image::Pixels {
                width,
                height,
                data,
            });
        }
        Err(PyTypeError::new_err(format!(
            "images[{index}]: expected a path, bytes, a PIL image or a (height, width, 3) uint8 \
             array, got {}",
            item.get_type().name()?
        )))
    }

    /// The library's view of it.
    pub fn input(&self) -> ImageInput<'_> {
        match self {
            Image::Path(p) => ImageInput::path(p),
            Image::Bytes { name, data } => ImageInput::bytes(name, data),
            Image::Pixels {
                width,
                height,
                data,
            } => ImageInput::rgb8(*width, *height, data),
        }
    }

    /// What messages and results call it.
    pub fn name(&self, index: usize) -> String {
        match self {
            Image::Path(p) => p.display().to_string(),
            _ => format!("images[{index}]"),
        }
    }
}

/// Extracts every image of a sequence.
pub fn extract_all(images: &Bound<'_, PyAny>) -> PyResult<Vec<Image>> {
    images
        .try_iter()?
        .enumerate()
        .map(|(i, item)| Image::extract(&item?, i))
        .collect()
}
