//! JPEG through libjpeg-turbo (the `mozjpeg` crate): the same integer IDCT, fancy
//! upsampling and colour conversion as the libjpeg-turbo inside Pillow, so pixels match
//! exactly; and the same refusal of a cut-off file.
//!
//! libjpeg does not fail on a file that ends early: it warns (`JWRN_JPEG_EOF`), fakes an
//! end-of-image marker and fills the rest with grey. Pillow turns that into "image file is
//! truncated" unless `LOAD_TRUNCATED_IMAGES` is set, so the warning is caught here by an
//! error manager of our own (the crate's keeps warnings silent) and the image refused.

use std::cell::Cell;
use std::os::raw::c_int;

use mozjpeg::ColorSpace;
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error, JWRN_JPEG_EOF};

use super::limits::Limits;
use super::pixels::{Decoded, Pixels};

thread_local! {
    /// Set when libjpeg ran out of data on this thread. A flag, because libjpeg's callbacks
    /// carry no user pointer the `mozjpeg` crate leaves free.
    static RAN_OUT: Cell<bool> = const { Cell::new(false) };
}

/// libjpeg's warning hook: remembers running out of data, ignores the rest (Pillow ignores
/// warnings such as extraneous bytes before a marker).
unsafe extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // SAFETY: libjpeg calls this hook with the `cinfo` whose `err` it was installed in.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == JWRN_JPEG_EOF as c_int {
        RAN_OUT.with(|f| f.set(true));
    }
}

/// libjpeg's fatal-error hook: unwinds with the formatted message (libjpeg's C code is built
/// with unwinding support, and `decode_jpeg` catches the unwind).
unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let mut buffer = [0u8; 80];
    // SAFETY: as above; `format_message` writes at most 80 bytes (JMSG_LENGTH_MAX) into the
    // buffer. The binding declares the buffer as a shared reference, so the function is
    // called through a pointer type that says it writes.
    unsafe {
        if let Some(format) = (*cinfo.err).format_message {
            type Format = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut u8);
            let format: Format = std::mem::transmute(format);
            format(cinfo, buffer.as_mut_ptr());
        }
    }
    let text = buffer.split(|&b| b == 0).next().unwrap_or_default();
    let message = String::from_utf8_lossy(text).into_owned();
    std::panic::resume_unwind(Box::new(message));
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a C struct of integers, pointers and optional function
    // pointers, for which all-zero is valid; `jpeg_std_error` then fills in the defaults.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    // SAFETY: `err` is a valid, exclusively borrowed error manager.
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

/// Decodes a JPEG file's bytes to 8-bit gray or RGB, refusing images over `limits` (checked
/// on the header, before the pixels are allocated) and files cut short.
pub(crate) fn decode_jpeg(bytes: &[u8], limits: &Limits) -> Result<Decoded, String> {
    RAN_OUT.with(|f| f.set(false));
    let truncated = || RAN_OUT.with(|f| f.get());
    let result = std::panic::catch_unwind(|| -> Result<Decoded, String> {
        let io = |e: std::io::Error| e.to_string();
        let d = mozjpeg::Decompress::with_err(error_manager())
            .from_mem(bytes)
            .map_err(io)?;
        let (width, height) = (d.width(), d.height());
        limits.check_pixels(width as u64, height as u64)?;
        // The pixels are complete once the last scanline is read; `finish` then looks for
        // the end-of-image marker, whose absence Pillow forgives, so it is not checked.
        let read_all =
            |mut s: mozjpeg::decompress::DecompressStarted<&[u8]>| -> Result<Vec<u8>, String> {
                let data: Vec<u8> = s.read_scanlines().map_err(io)?;
                if truncated() {
                    return Err("image file is truncated (the JPEG data ends early)".into());
                }
                s.finish().map_err(io)?;
                Ok(data)
            };
        let pixels = match d.color_space() {
            ColorSpace::JCS_GRAYSCALE => {
                let data = read_all(d.grayscale().map_err(io)?)?;
                Pixels::Gray(data)
            }
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
                // Pillow reads CMYK JPEGs as Adobe writes them, inverted ("CMYK;I"), keeps
                // them in CMYK through the resize and converts to RGB at the end.
                let data = read_all(d.to_colorspace(ColorSpace::JCS_CMYK).map_err(io)?)?;
                Pixels::Cmyk(data.into_iter().map(|v| 255 - v).collect())
            }
            _ => {
                let data = read_all(d.rgb().map_err(io)?)?;
                Pixels::Rgb(data)
            }
        };
        Ok(Decoded {
            width,
            height,
            pixels,
            nearest: false,
        })
    });
    match result {
        Ok(decoded) => decoded,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .map(|m| format!("corrupt JPEG data: {m}"))
            .unwrap_or_else(|| "corrupt JPEG data".into())),
    }
}
