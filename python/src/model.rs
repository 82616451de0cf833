//! The loaded model: encode images and texts, classify, with the GIL released while the
//! engine works so Python threads calling one model at once share the cores.

use std::sync::Mutex;

use biomedclip::image::HighBitDepth;
use biomedclip::{BiomedClip, Device, ImageInput, ModelSource, Precision, Rendering, Window};
use numpy::{
    PyArray1, PyArray2, PyArray4, PyArrayMethods, PyReadonlyArray2, PyReadonlyArray4,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{chain, image_error, model_error, TextError};
use crate::inputs::{extract_all, Image};

/// The thread count the process's pool was built with by `load(threads=...)`.
static THREADS: Mutex<Option<usize>> = Mutex::new(None);

/// Sizes the engine's thread pool; only the first load in a process can.
fn configure_threads(threads: Option<usize>) -> PyResult<()> {
    let Some(n) = threads else {
        return Ok(());
    };
    if n == 0 {
        return Err(PyValueError::new_err("threads must be at least 1"));
    }
    let mut configured = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    match *configured {
        Some(m) if m == n => Ok(()),
        Some(m) => Err(PyValueError::new_err(format!(
            "threads={n}: the thread pool already runs {m} threads (the first load sizes it)"
        ))),
        None => {
            // candle sizes its matrix-multiply pool from RAYON_NUM_THREADS.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .map_err(|e| {
                    PyValueError::new_err(format!(
                        "threads={n}: the thread pool is already running ({e}); pass threads= \
                         to the first load in a process"
                    ))
                })?;
            *configured = Some(n);
            Ok(())
        }
    }
}

/// Loads a model: a local directory or `hf-hub:<repo-id>`.
#[pyfunction]
#[pyo3(signature = (source, precision = "f32", threads = None, window = None, reference_16bit = false))]
pub fn load(
    py: Python<'_>,
    source: &str,
    precision: &str,
    threads: Option<usize>,
    window: Option<&str>,
    reference_16bit: bool,
) -> PyResult<Model> {
    let precision: Precision = precision
        .parse()
        .map_err(|e: biomedclip::Error| PyValueError::new_err(format!("precision: {e}")))?;
    let window = window
        .map(|w| w.parse::<Window>())
        .transpose()
        .map_err(|e| PyValueError::new_err(format!("window: {e}")))?;
    if window.is_some() && reference_16bit {
        return Err(PyValueError::new_err(
            "window and reference_16bit exclude each other (the reference applies no window)",
        ));
    }
    let rendering = Rendering {
        window,
        high_bit_depth: if reference_16bit {
            HighBitDepth::Reference
        } else {
            HighBitDepth::FullRange
        },
    };
    configure_threads(threads)?;
    let model_source = ModelSource::parse(source);
    let mut inner = py
        .detach(|| {
            let files = model_source.resolve()?;
            BiomedClip::from_files_at(&files, &Device::Cpu, precision)
        })
        .map_err(|e| model_error(&format!("cannot load model {source}"), e))?;
    inner.set_rendering(rendering);
    Ok(Model {
        inner,
        source: source.to_string(),
    })
}

/// A loaded BiomedCLIP model.
#[derive(Debug)]
#[pyclass(frozen, module = "biomedclip._native")]
pub struct Model {
    inner: BiomedClip,
    source: String,
}

/// Rows of `dim` floats as a `(rows, dim)` float32 array that owns the buffer (no copy).
fn matrix<'py>(
    py: Python<'py>,
    data: Vec<f32>,
    rows: usize,
    dim: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    PyArray1::from_vec(py, data).reshape([rows, dim])
}

/// Per-image results flattened into rows of `width` floats, NaN rows for the failures, with
/// `(index, message)` for each failure.
fn rows_or_nan(
    results: &[biomedclip::Result<Vec<f32>>],
    width: usize,
) -> (Vec<f32>, Vec<(usize, String)>) {
    let mut data = Vec::with_capacity(results.len() * width);
    let mut failures = Vec::new();
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(row) => data.extend_from_slice(row),
            Err(e) => {
                data.extend(std::iter::repeat_n(f32::NAN, width));
                failures.push((i, chain(e)));
            }
        }
    }
    (data, failures)
}

#[pymethods]
impl Model {
    /// Embeds images into a `(n, embed_dim)` float32 array of L2-normalised rows.
    fn encode_images<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let images = extract_all(images)?;
        let dim = self.inner.embed_dim();
        let results = py.detach(|| {
            let inputs: Vec<ImageInput<'_>> = images.iter().map(Image::input).collect();
            self.inner.encode_images(&inputs)
        });
        let (data, failures) = rows_or_nan(&results, dim);
        let array = matrix(py, data, results.len(), dim)?;
        if failures.is_empty() {
            Ok(array)
        } else {
            Err(image_error(
                py,
                failures,
                results.len(),
                array.into_any().unbind(),
            ))
        }
    }

    /// Embeds texts into a `(n, embed_dim)` float32 array of L2-normalised rows.
    fn encode_texts<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let dim = self.inner.embed_dim();
        let rows = py
            .detach(|| self.inner.encode_texts(&texts))
            .map_err(|e| TextError::new_err(chain(&e)))?;
        let n = rows.len();
        matrix(py, rows.concat(), n, dim)
    }

    /// Zero-shot classification: for each image, the labels ranked by probability.
    #[pyo3(signature = (images, labels, template = biomedclip::DEFAULT_TEMPLATE, top_k = None))]
    fn classify<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        labels: Vec<String>,
        template: &str,
        top_k: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let images = extract_all(images)?;
        let ranked = py
            .detach(|| {
                let inputs: Vec<ImageInput<'_>> = images.iter().map(Image::input).collect();
                self.inner.classify(&inputs, &labels, template)
            })
            .map_err(|e| TextError::new_err(chain(&e)))?;
        let out = PyList::empty(py);
        let mut failures = Vec::new();
        for (i, (image, scores)) in images.iter().zip(&ranked).enumerate() {
            let scores = match scores {
                Ok(s) => s,
                Err(e) => {
                    failures.push((i, chain(e)));
                    out.append(py.None())?;
                    continue;
                }
            };
            let k = top_k.unwrap_or(scores.len()).min(scores.len());
            let list = PyList::empty(py);
            for s in &scores[..k] {
                let d = PyDict::new(py);
                d.set_item("label", &s.label)?;
                d.set_item("probability", s.probability)?;
                list.append(d)?;
            }
            let entry = PyDict::new(py);
            entry.set_item("image", image.name(i))?;
            entry.set_item("scores", list)?;
            out.append(entry)?;
        }
        if failures.is_empty() {
            Ok(out)
        } else {
            Err(image_error(
                py,
                failures,
                ranked.len(),
                out.into_any().unbind(),
            ))
        }
    }

    /// The reference's preprocessing: a `(n, 3, size, size)` float32 array of normalised
    /// pixels, as open_clip's `preprocess` gives for each image.
    fn preprocess<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let images = extract_all(images)?;
        let size = self.inner.preprocessor().size();
        let results: Vec<biomedclip::Result<Vec<f32>>> = py.detach(|| {
            images
                .iter()
                .map(|image| self.inner.preprocessor().process(&image.input()))
                .collect()
        });
        let n = results.len();
        let (data, failures) = rows_or_nan(&results, 3 * size * size);
        let array = PyArray1::from_vec(py, data).reshape([n, 3, size, size])?;
        if failures.is_empty() {
            Ok(array)
        } else {
            Err(image_error(py, failures, n, array.into_any().unbind()))
        }
    }

    /// Embeds preprocessed pixels, a `(n, 3, size, size)` float32 array.
    fn encode_pixels<'py>(
        &self,
        py: Python<'py>,
        pixels: PyReadonlyArray4<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let size = self.inner.preprocessor().size();
        let shape = pixels.shape().to_vec();
        if shape[1..] != [3, size, size] {
            return Err(PyValueError::new_err(format!(
                "pixels: expected shape (n, 3, {size}, {size}), got {shape:?}"
            )));
        }
        let flat: Vec<f32> = pixels.as_array().iter().copied().collect();
        let per = 3 * size * size;
        let images: Vec<Vec<f32>> = flat.chunks(per).map(<[f32]>::to_vec).collect();
        let dim = self.inner.embed_dim();
        let rows = py
            .detach(|| self.inner.encode_pixels(&images))
            .map_err(|e| PyValueError::new_err(chain(&e)))?;
        let n = rows.len();
        matrix(py, rows.concat(), n, dim)
    }

    /// Token ids as the reference's tokenizer gives them: `(n, context_length)` int64,
    /// `[CLS] ... [SEP]` then padding.
    #[pyo3(signature = (texts, context_length = 256))]
    fn tokenize<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        context_length: usize,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let tokenizer = self.inner.tokenizer();
        let pad = i64::from(tokenizer.pad_id());
        let mut data = Vec::with_capacity(texts.len() * context_length);
        for (i, text) in texts.iter().enumerate() {
            let ids = tokenizer
                .encode(text)
                .map_err(|e| TextError::new_err(format!("texts[{i}]: {}", chain(&e))))?;
            let kept = ids.len().min(context_length);
            data.extend(ids[..kept].iter().map(|&id| i64::from(id)));
            data.extend(std::iter::repeat_n(pad, context_length - kept));
        }
        let n = texts.len();
        PyArray1::from_vec(py, data).reshape([n, context_length])
    }

    /// Embeds token ids, a `(n, length)` integer array padded with the pad id.
    fn encode_token_ids<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray2<'py, i64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let pad = i64::from(self.inner.tokenizer().pad_id());
        let max = i64::from(self.inner.tokenizer().max_id());
        let mut rows = Vec::new();
        for (i, row) in ids.as_array().rows().into_iter().enumerate() {
            let len = row.len() - row.iter().rev().take_while(|&&id| id == pad).count();
            let seq = row.iter().take(len).map(|&id| {
                u32::try_from(id).ok().filter(|_| id <= max).ok_or_else(|| {
                    PyValueError::new_err(format!("ids[{i}]: {id} is not in the vocabulary"))
                })
            });
            rows.push(seq.collect::<PyResult<Vec<u32>>>()?);
        }
        let dim = self.inner.embed_dim();
        let out = py
            .detach(|| self.inner.encode_token_ids(&rows))
            .map_err(|e| TextError::new_err(chain(&e)))?;
        let n = out.len();
        matrix(py, out.concat(), n, dim)
    }

    /// `exp` of the learned temperature: zero-shot logits are `logit_scale * image . text`.
    #[getter]
    fn logit_scale(&self) -> f32 {
        self.inner.logit_scale()
    }

    /// Length of the embeddings.
    #[getter]
    fn embed_dim(&self) -> usize {
        self.inner.embed_dim()
    }

    /// Side of the square image the model sees.
    #[getter]
    fn image_size(&self) -> usize {
        self.inner.preprocessor().size()
    }

    /// Arithmetic of the image tower: "f32", "int8" or "bf16".
    #[getter]
    fn precision(&self) -> String {
        self.inner.precision().to_string()
    }

    /// Where the model came from.
    #[getter]
    fn source(&self) -> &str {
        &self.source
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(source={:?}, precision={:?}, embed_dim={})",
            self.source,
            self.inner.precision().to_string(),
            self.inner.embed_dim()
        )
    }
}
