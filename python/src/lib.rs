//! `biomedclip._native`: the engine behind the `biomedclip` Python package.
//!
//! The Python layer (`python/biomedclip/__init__.py`) turns what users hold (paths, bytes,
//! PIL images, arrays) into the three kinds this module takes, and documents the API; this
//! module loads the model, runs it with the GIL released and hands NumPy arrays back without
//! copying them.

mod errors;
mod inputs;
mod model;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<model::Model>()?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add("BiomedClipError", py.get_type::<errors::BiomedClipError>())?;
    m.add("ModelError", py.get_type::<errors::ModelError>())?;
    m.add("ImageError", py.get_type::<errors::ImageError>())?;
    m.add("TextError", py.get_type::<errors::TextError>())?;
    m.add("DEFAULT_MODEL", biomedclip::DEFAULT_MODEL)?;
    m.add("DEFAULT_TEMPLATE", biomedclip::DEFAULT_TEMPLATE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
