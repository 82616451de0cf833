//! A walk over a DICOM file's element headers that refuses any declared length running past
//! the end of the file, before dicom-rs parses it.
//!
//! dicom-rs reserves and zero-fills an element's declared length before reading its value
//! (`dicom-parser`'s `read_value_ob`, `read_value_strs`, the meta group's `read_str_body`),
//! so a few bytes claiming a 4 GB value cost 4 GB of memory and seconds of filling; it offers
//! no bound. The whole file is in memory here, so a length larger than what remains is always
//! a lie. The walk follows dicom-rs's own reading: the file meta group delimited by its group
//! length, then the data set in its transfer syntax (explicit or implicit VR, little or big
//! endian) as dicom-rs's `DataSetReader` reads it: in element position only the item
//! delimiter is special, any undefined length opens a sequence (of fragments for Pixel Data),
//! in item position items open and the sequence delimiter closes. Deflated syntaxes are
//! refused: their declared lengths could only be checked after inflating.

use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Offset of the file meta group: 128-byte preamble and `DICM`.
const META_AT: usize = 132;
const UNDEFINED: u32 = u32::MAX;
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);

/// What encloses the headers being read.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// A sequence: items come next. `fragments` for encapsulated Pixel Data.
    Sequence { end: Option<usize>, fragments: bool },
    /// An item of a sequence: elements come next.
    Item { end: Option<usize> },
}

impl Frame {
    fn end(&self) -> Option<usize> {
        match *self {
            Frame::Sequence { end, .. } | Frame::Item { end } => end,
        }
    }
}

/// Refuses a DICOM Part 10 file (preamble included) in which a declared length runs past the
/// end of the file, or whose transfer syntax is deflated; the reason names the element.
pub(crate) fn check_lengths(file: &[u8]) -> Result<(), String> {
    let mut walk = Walk {
        file,
        pos: META_AT,
        explicit: true,
        big_endian: false,
        frames: Vec::new(),
    };
    let Some(syntax) = walk.meta_group()? else {
        // Not a meta group dicom-rs accepts: it refuses the file before reading values.
        return Ok(());
    };
    match syntax.as_str() {
        "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" | "1.2.840.10008.1.2.4.205" => {
            return Err(format!(
                "deflated transfer syntax {syntax} is not supported (its element lengths \
                 cannot be checked before inflating)"
            ))
        }
        "1.2.840.10008.1.2" => walk.explicit = false,
        "1.2.840.10008.1.2.2" => walk.big_endian = true,
        _ => {}
    }
    walk.data_set()
}

struct Walk<'a> {
    file: &'a [u8],
    pos: usize,
    explicit: bool,
    big_endian: bool,
    frames: Vec<Frame>,
}

struct Header {
    tag: Tag,
    vr: VR,
    len: u32,
}

impl Walk<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.file.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.file.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn remaining(&self) -> usize {
        self.file.len().saturating_sub(self.pos)
    }

    /// Refuses `len` bytes at `pos` if they run past the end of the file.
    fn check(&self, tag: Tag, len: u32) -> Result<(), String> {
        if len as usize > self.remaining() {
            return Err(format!(
                "element ({:04X},{:04X}) declares {len} bytes, but only {} remain in the file",
                tag.0,
                tag.1,
                self.remaining()
            ));
        }
        Ok(())
    }

    /// Reads the header at `pos` in element position and moves past it; `None` at the end of
    /// the data. Item and delimiter tags carry no VR in any syntax.
    fn element_header(&mut self) -> Option<Header> {
        let p = self.pos;
        let tag = Tag(self.u16_at(p)?, self.u16_at(p + 2)?);
        if tag.0 == 0xFFFE || !self.explicit {
            let len = self.u32_at(p + 4)?;
            self.pos = p + 8;
            return Some(Header {
                tag,
                vr: implicit_vr(tag),
                len,
            });
        }
        let vr = self.file.get(p + 4..p + 6)?;
        // dicom-rs reads a VR it does not know as UN (a 4-byte length).
        let vr = VR::from_binary([vr[0], vr[1]]).unwrap_or(VR::UN);
        let short = matches!(
            vr,
            VR::AE
                | VR::AS
                | VR::AT
                | VR::CS
                | VR::DA
                | VR::DS
                | VR::DT
                | VR::FL
                | VR::FD
                | VR::IS
                | VR::LO
                | VR::LT
                | VR::PN
                | VR::SH
                | VR::SL
                | VR::SS
                | VR::ST
                | VR::TM
                | VR::UI
                | VR::UL
                | VR::US
        );
        let len = if short {
            self.pos = p + 8;
            u32::from(self.u16_at(p + 6)?)
        } else {
            self.pos = p + 12;
            self.u32_at(p + 8)?
        };
        Some(Header { tag, vr, len })
    }

    /// The file meta group, read as dicom-rs reads it: (0002,0000) first, then elements until
    /// its group length is used up. Returns the transfer syntax, or `None` where dicom-rs
    /// refuses the group.
    fn meta_group(&mut self) -> Result<Option<String>, String> {
        let Some(first) = self.element_header() else {
            return Ok(None);
        };
        if first.tag != Tag(0x0002, 0x0000) || first.len != 4 {
            return Ok(None);
        }
        let Some(group_length) = self.u32_at(self.pos) else {
            return Ok(None);
        };
        self.pos += 4;
        let start = self.pos;
        let mut syntax = None;
        while self.pos - start < group_length as usize {
            let Some(h) = self.element_header() else {
                return Ok(None);
            };
            if h.len == UNDEFINED {
                return Ok(None);
            }
            self.check(h.tag, h.len)?;
            if h.tag == Tag(0x0002, 0x0010) {
                let value = &self.file[self.pos..self.pos + h.len as usize];
                syntax = Some(
                    String::from_utf8_lossy(value)
                        .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
                        .to_string(),
                );
            }
            self.pos += h.len as usize;
        }
        Ok(Some(syntax.unwrap_or_default()))
    }

    fn data_set(&mut self) -> Result<(), String> {
        loop {
            // Leave the defined-length items and sequences that end here.
            while let Some(end) = self.frames.last().and_then(Frame::end) {
                if self.pos < end {
                    break;
                }
                self.frames.pop();
            }
            match self.frames.last().copied() {
                Some(Frame::Sequence { fragments, .. }) => {
                    // Item position: tag and length, no VR.
                    let p = self.pos;
                    let (Some(g), Some(e), Some(len)) =
                        (self.u16_at(p), self.u16_at(p + 2), self.u32_at(p + 4))
                    else {
                        return Ok(());
                    };
                    self.pos = p + 8;
                    let tag = Tag(g, e);
                    match tag {
                        ITEM if fragments => {
                            self.check(tag, len)?;
                            self.pos += len as usize;
                        }
                        ITEM => {
                            let end = if len == UNDEFINED {
                                None
                            } else {
                                self.check(tag, len)?;
                                Some(self.pos + len as usize)
                            };
                            self.frames.push(Frame::Item { end });
                        }
                        SEQUENCE_END => {
                            self.frames.pop();
                        }
                        // dicom-rs stops on anything else here.
                        _ => return Ok(()),
                    }
                }
                _ => {
                    // Element position: the data set or an item.
                    let Some(h) = self.element_header() else {
                        return Ok(());
                    };
                    if h.tag == ITEM_END {
                        if let Some(Frame::Item { end: None }) = self.frames.last() {
                            self.frames.pop();
                        }
                        continue;
                    }
                    if h.len == UNDEFINED {
                        self.frames.push(Frame::Sequence {
                            end: None,
                            fragments: h.tag == PIXEL_DATA,
                        });
                        continue;
                    }
                    self.check(h.tag, h.len)?;
                    if h.vr == VR::SQ {
                        self.frames.push(Frame::Sequence {
                            end: Some(self.pos + h.len as usize),
                            fragments: false,
                        });
                    } else {
                        self.pos += h.len as usize;
                    }
                }
            }
        }
    }
}

/// The VR of an implicit-VR element: a sequence if the dictionary says so, else opaque bytes
/// (only the length matters here; an undefined length opens a sequence whatever the VR).
fn implicit_vr(tag: Tag) -> VR {
    let is_sequence = tag.0 != 0xFFFE
        && StandardDataDictionary
            .by_tag(tag)
            .is_some_and(|e| matches!(e.vr, VirtualVr::Exact(VR::SQ)));
    if is_sequence {
        VR::SQ
    } else {
        VR::UN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Part 10 file: preamble, `DICM`, an explicit-VR meta group naming `syntax`, `body`.
    fn file(syntax: &str, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        // (0002,0000) UL group length, then (0002,0010) UI transfer syntax.
        f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        f.extend_from_slice(&(8 + uid.len() as u32).to_le_bytes());
        f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        f.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        f.extend_from_slice(&uid);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_length_past_the_end_is_refused_naming_the_element() {
        // (0009,0010) OB with 4 GB declared and 4 bytes present.
        let body = [
            0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4,
        ];
        let msg = check_lengths(&file("1.2.840.10008.1.2.1", &body)).unwrap_err();
        assert!(
            msg.contains("(0009,0010) declares 4294967280 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn lengths_inside_sequences_and_implicit_files_are_checked() {
        // Implicit VR: (0008,1140) is a sequence in the dictionary; inside its item, a
        // 1,000,000-byte value with 2 bytes present.
        let mut body = vec![0x08, 0x00, 0x40, 0x11, 18, 0, 0, 0];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 10, 0, 0, 0]);
        body.extend_from_slice(&[0x08, 0x00, 0x50, 0x11, 0x40, 0x42, 0x0F, 0x00, 1, 2]);
        let msg = check_lengths(&file("1.2.840.10008.1.2", &body)).unwrap_err();
        assert!(msg.contains("(0008,1150) declares 1000000 bytes"), "{msg}");

        // The same values within bounds pass.
        let mut ok = vec![0x08, 0x00, 0x40, 0x11, 18, 0, 0, 0];
        ok.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 10, 0, 0, 0]);
        ok.extend_from_slice(&[0x08, 0x00, 0x50, 0x11, 2, 0, 0, 0, 1, 2]);
        assert!(check_lengths(&file("1.2.840.10008.1.2", &ok)).is_ok());
    }

    #[test]
    fn item_tags_out_of_place_and_undefined_lengths_are_followed_as_dicom_rs_does() {
        // An item tag in element position is a value to dicom-rs: its length is checked.
        let body = [0xFE, 0xFF, 0x00, 0xE0, 0x00, 0x00, 0x00, 0xF0];
        let msg = check_lengths(&file("1.2.840.10008.1.2.1", &body)).unwrap_err();
        assert!(msg.contains("(FFFE,E000) declares"), "{msg}");

        // An undefined length on an OB element opens a sequence; its items are walked.
        let mut body = vec![
            0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        body.extend_from_slice(&[0x09, 0x00, 0x20, 0x00, b'U', b'N', 0, 0, 0, 0, 0, 0xF0]);
        let msg = check_lengths(&file("1.2.840.10008.1.2.1", &body)).unwrap_err();
        assert!(msg.contains("(0009,0020) declares"), "{msg}");

        // Deflated data cannot be walked: refused.
        let msg = check_lengths(&file("1.2.840.10008.1.2.1.99", &[1, 2, 3])).unwrap_err();
        assert!(msg.contains("deflated"), "{msg}");

        // Big endian: the same check with big-endian numbers.
        let body = [
            0x00, 0x09, 0x00, 0x10, b'O', b'B', 0, 0, 0xF0, 0, 0, 0, 1, 2,
        ];
        let msg = check_lengths(&file("1.2.840.10008.1.2.2", &body)).unwrap_err();
        assert!(msg.contains("(0009,0010) declares 4026531840"), "{msg}");
    }

    #[test]
    fn encapsulated_fragments_are_checked() {
        // Pixel Data, undefined length: an empty offset table, then a fragment claiming more
        // than the file holds.
        let mut body = vec![
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0x10, 9, 9]);
        let msg = check_lengths(&file("1.2.840.10008.1.2.4.50", &body)).unwrap_err();
        assert!(
            msg.contains("(FFFE,E000) declares 268435456 bytes"),
            "{msg}"
        );
    }
}
