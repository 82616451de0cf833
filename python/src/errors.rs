//! The exceptions the package raises, carrying the library's messages.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    biomedclip,
    BiomedClipError,
    PyException,
    "Base class of the errors biomedclip raises."
);
create_exception!(
    biomedclip,
    ModelError,
    BiomedClipError,
    "The model could not be found, read or loaded."
);
create_exception!(
    biomedclip,
    ImageError,
    BiomedClipError,
    "One or more images could not be read. `failures` lists `(index, message)` for each; \
     `partial` holds what the call computed for the others."
);
create_exception!(
    biomedclip,
    TextError,
    BiomedClipError,
    "A text or label was refused."
);

/// A model error with the library's message and its causes.
pub fn model_error(context: &str, e: biomedclip::Error) -> PyErr {
    ModelError::new_err(format!("{context}: {}", chain(&e)))
}

/// The error and its sources, joined as `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// `ImageError` listing every failure, with `failures` and `partial` attached.
pub fn image_error(
    py: Python<'_>,
    failures: Vec<(usize, String)>,
    total: usize,
    partial: Py<PyAny>,
) -> PyErr {
    let lines: Vec<String> = failures
        .iter()
        .map(|(i, m)| format!("  images[{i}]: {m}"))
        .collect();
    let message = format!(
        "{} of {total} image(s) could not be read; the others were computed (see .partial):\n{}",
        failures.len(),
        lines.join("\n")
    );
    let err = ImageError::new_err(message);
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory.
    let _ = value.setattr("failures", failures);
    let _ = value.setattr("partial", partial);
    err
}
