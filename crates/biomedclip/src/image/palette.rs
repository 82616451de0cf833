//! Palette BMP and TIFF files as Pillow opens them: mode `P` (or `1`), which its resize
//! samples with NEAREST, where the `image` crate hands back expanded RGB without saying the
//! file had a palette.

use std::io::Cursor;

use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::Tag;

use super::limits::Limits;
use super::pixels::{Decoded, Pixels};

fn u16_at(b: &[u8], i: usize, le: bool) -> Option<u16> {
    let v: [u8; 2] = b.get(i..i + 2)?.try_into().ok()?;
    Some(if le {
        u16::from_le_bytes(v)
    } else {
        u16::from_be_bytes(v)
    })
}

fn u32_at(b: &[u8], i: usize, le: bool) -> Option<u32> {
    let v: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(v)
    } else {
        u32::from_be_bytes(v)
    })
}

/// Whether Pillow opens this BMP as `P` or `1` (resized with NEAREST) rather than `L` or
/// `RGB`: files of 8 bits or fewer per pixel are palette images unless every palette entry
/// is the grey of its own index (0 and 255 for two colours), which Pillow reads as `L` (or
/// `1`). Follows `PIL/BmpImagePlugin.py`.
pub(super) fn bmp_is_nearest(bytes: &[u8]) -> bool {
    let Some(header_size) = u32_at(bytes, 14, true) else {
        return false;
    };
    let (bits, colors, padding) = if header_size == 12 {
        let bits = u16_at(bytes, 24, true).unwrap_or(0);
        (bits, 0, 3)
    } else {
        let bits = u16_at(bytes, 28, true).unwrap_or(0);
        (bits, u32_at(bytes, 46, true).unwrap_or(0), 4)
    };
    if !(1..=8).contains(&bits) {
        return false;
    }
    let colors = if colors == 0 { 1 << bits } else { colors } as usize;
    let palette_start = 14 + header_size as usize;
    let grey_index = |index: usize, value: u8| {
        let at = palette_start + index * padding;
        bytes.get(at..at + 3) == Some(&[value; 3][..])
    };
    let greyscale = if colors == 2 {
        grey_index(0, 0) && grey_index(1, 255)
    } else {
        (0..colors).all(|i| u8::try_from(i).is_ok_and(|v| grey_index(i, v)))
    };
    !greyscale || colors <= 2
}

/// A TIFF with `PhotometricInterpretation` 3 (RGB palette): the `tiff` crate refuses those,
/// so the indices are read as greyscale from a copy whose tag says so, and expanded through
/// the `ColorMap` as Pillow does (16-bit entries, high byte). `None` when the file is not a
/// palette TIFF.
pub(super) fn decode_palette_tiff(
    bytes: &[u8],
    limits: &Limits,
) -> Option<Result<Decoded, String>> {
    let mut decoder = Decoder::new(Cursor::new(bytes)).ok()?;
    let photometric = decoder
        .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
        .ok()??;
    if photometric != 3 {
        return None;
    }
    Some(read_palette_tiff(bytes, decoder, limits))
}

fn read_palette_tiff(
    bytes: &[u8],
    mut decoder: Decoder<Cursor<&[u8]>>,
    limits: &Limits,
) -> Result<Decoded, String> {
    let err = |e: tiff::TiffError| e.to_string();
    let (width, height) = decoder.dimensions().map_err(err)?;
    limits.check_pixels(width.into(), height.into())?;
    let bits = decoder
        .find_tag_unsigned::<u16>(Tag::BitsPerSample)
        .map_err(err)?
        .unwrap_or(1);
    if bits != 8 {
        return Err(format!(
            "palette TIFF with {bits} bits per sample is not supported (8 is)"
        ));
    }
    let map: Vec<u16> = decoder
        .find_tag_unsigned_vec(Tag::ColorMap)
        .map_err(err)?
        .ok_or("palette TIFF without a ColorMap")?;
    if map.len() != 3 * 256 {
        return Err(format!(
            "ColorMap holds {} entries, 768 expected",
            map.len()
        ));
    }
    let grey = as_greyscale(bytes).ok_or("unreadable TIFF directory")?;
    let mut decoder = Decoder::new(Cursor::new(&grey[..])).map_err(err)?;
    let DecodingResult::U8(indices) = decoder.read_image().map_err(err)? else {
        return Err("palette TIFF indices are not 8-bit".into());
    };
    let rgb = indices
        .iter()
        .flat_map(|&i| [0, 256, 512].map(|c| (map[c + i as usize] >> 8) as u8))
        .collect();
    Ok(Decoded {
        width: width as usize,
        height: height as usize,
        pixels: Pixels::Rgb(rgb),
        nearest: true,
    })
}

/// A copy of a (classic, not Big) TIFF whose first directory says `BlackIsZero` where it
/// said `RGBPalette`; the pixel data is untouched.
fn as_greyscale(bytes: &[u8]) -> Option<Vec<u8>> {
    let le = match bytes.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    if u16_at(bytes, 2, le)? != 42 {
        return None;
    }
    let ifd = u32_at(bytes, 4, le)? as usize;
    let entries = u16_at(bytes, ifd, le)? as usize;
    let entry = (0..entries)
        .map(|k| ifd + 2 + 12 * k)
        .find(|&e| u16_at(bytes, e, le) == Some(262))?;
    // A SHORT value sits left-justified in the entry's 4-byte value field.
    if u16_at(bytes, entry + 2, le)? != 3 {
        return None;
    }
    let mut copy = bytes.to_vec();
    let one = if le {
        1u16.to_le_bytes()
    } else {
        1u16.to_be_bytes()
    };
    copy[entry + 8..entry + 10].copy_from_slice(&one);
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn bmp_modes_as_pillow_reads_them() {
        assert!(bmp_is_nearest(&fixture("palette.bmp")), "P");
        assert!(bmp_is_nearest(&fixture("bilevel.bmp")), "1");
        assert!(!bmp_is_nearest(&fixture("gray.bmp")), "L");
        assert!(!bmp_is_nearest(&fixture("retina.bmp")), "RGB");
        assert!(!bmp_is_nearest(b"BM"), "truncated header");
    }

    #[test]
    fn only_palette_tiffs_take_the_palette_path() {
        let limits = Limits::default();
        assert!(decode_palette_tiff(&fixture("rgb.tif"), &limits).is_none());
        let decoded = decode_palette_tiff(&fixture("palette.tif"), &limits)
            .expect("a palette TIFF")
            .expect("decodes");
        assert_eq!(
            (decoded.width, decoded.height, decoded.nearest),
            (230, 190, true)
        );
        assert!(as_greyscale(b"not a tiff").is_none());
    }
}
