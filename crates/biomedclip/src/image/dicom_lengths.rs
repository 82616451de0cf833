//! A walk over a DICOM file's element headers that refuses any declared length running past
//! the end of the file, before dicom-rs parses it.
//!
//! dicom-rs reserves and zero-fills an element's declared length before reading its value
//! (`dicom-parser`'s `read_value_ob`), so a few bytes claiming a 4 GB value cost 4 GB of
//! memory and seconds of filling; it offers no bound. The whole file is in memory here, so a
//! length larger than what remains is always a lie, and checking every header (nested
//! sequences, items and encapsulated fragments included) makes the parse that follows bounded
//! by the file's size. Explicit and implicit VR little endian are walked; the rare deflated and
//! retired big-endian syntaxes are left to dicom-rs.

use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Offset of the file meta group: 128-byte preamble and `DICM`.
const META_AT: usize = 132;
const UNDEFINED: u32 = u32::MAX;
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// What encloses the headers being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Values in this frame are explicit VR.
    explicit: bool,
    /// Where a defined-length sequence ends; `None` until its delimitation item.
    end: Option<usize>,
    /// Items of encapsulated pixel data (opaque fragments), not elements.
    fragments: bool,
}

/// Refuses a DICOM Part 10 file (preamble included) in which a declared length runs past the
/// end of the file; the reason names the element.
pub(crate) fn check_lengths(file: &[u8]) -> Result<(), String> {
    let mut walk = Walk {
        file,
        pos: META_AT,
        frames: vec![Frame {
            explicit: true,
            end: None,
            fragments: false,
        }],
    };
    // The file meta group (0002,xxxx) is always explicit VR little endian.
    let mut syntax = String::new();
    while walk.peek_group() == Some(0x0002) {
        let Some(h) = walk.header()? else {
            return Ok(());
        };
        if h.tag == Tag(0x0002, 0x0010) {
            let end = (walk.pos + h.len as usize).min(file.len());
            syntax = String::from_utf8_lossy(&file[walk.pos..end])
                .trim_end_matches(['\0', ' '])
                .to_string();
        }
        walk.skip(&h)?;
    }
    match syntax.as_str() {
        DEFLATED_LE | EXPLICIT_BE => return Ok(()),
        IMPLICIT_LE => walk.frames[0].explicit = false,
        _ => {}
    }
    walk.run()
}

struct Walk<'a> {
    file: &'a [u8],
    pos: usize,
    frames: Vec<Frame>,
}

struct Header {
    tag: Tag,
    vr: Option<VR>,
    len: u32,
}

impl Walk<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.file.get(at..at + 2)?.try_into().ok()?,
        ))
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.file.get(at..at + 4)?.try_into().ok()?,
        ))
    }

    fn peek_group(&self) -> Option<u16> {
        self.u16_at(self.pos)
    }

    fn frame(&self) -> Frame {
        *self
            .frames
            .last()
            .expect("the data set frame is never popped")
    }

    /// Reads the header at `pos` and moves past it; `None` at the end of the data or where
    /// the bytes do not look like a header (dicom-rs then reports the file in its words).
    fn header(&mut self) -> Result<Option<Header>, String> {
        let p = self.pos;
        let (Some(group), Some(element)) = (self.u16_at(p), self.u16_at(p + 2)) else {
            return Ok(None);
        };
        let tag = Tag(group, element);
        // Items and delimiters carry no VR in any syntax.
        if group == 0xFFFE || !self.frame().explicit {
            let Some(len) = self.u32_at(p + 4) else {
                return Ok(None);
            };
            self.pos = p + 8;
            let vr = (group != 0xFFFE).then(|| implicit_vr(tag, len));
            return Ok(Some(Header { tag, vr, len }));
        }
        let Some(vr) = self.file.get(p + 4..p + 6) else {
            return Ok(None);
        };
        // dicom-rs reads a VR it does not know as UN (a 4-byte length); so does this walk.
        let vr = VR::from_binary([vr[0], vr[1]]).unwrap_or(VR::UN);
        let long = matches!(
            vr,
            VR::OB
                | VR::OD
                | VR::OF
                | VR::OL
                | VR::OV
                | VR::OW
                | VR::SQ
                | VR::UC
                | VR::UN
                | VR::UR
                | VR::UT
                | VR::SV
                | VR::UV
        );
        let len = if long {
            self.pos = p + 12;
            self.u32_at(p + 8)
        } else {
            self.pos = p + 8;
            self.u16_at(p + 6).map(u32::from)
        };
        Ok(len.map(|len| Header {
            tag,
            vr: Some(vr),
            len,
        }))
    }

    /// Moves past a defined-length value, refusing one longer than what remains.
    fn skip(&mut self, h: &Header) -> Result<(), String> {
        let remaining = self.file.len().saturating_sub(self.pos);
        if h.len as usize > remaining {
            return Err(format!(
                "element ({:04X},{:04X}) declares {} bytes, but only {remaining} remain in the file",
                h.tag.0, h.tag.1, h.len
            ));
        }
        self.pos += h.len as usize;
        Ok(())
    }

    fn run(&mut self) -> Result<(), String> {
        loop {
            // Leave the defined-length sequences that end here.
            while let Some(end) = self.frame().end {
                if self.pos < end || self.frames.len() == 1 {
                    break;
                }
                self.frames.pop();
            }
            let Some(h) = self.header()? else {
                return Ok(());
            };
            let frame = self.frame();
            match (h.tag, h.vr) {
                // Sequence delimitation: the innermost undefined-length sequence ends.
                (Tag(0xFFFE, 0xE0DD), _) => {
                    if self.frames.len() > 1 && frame.end.is_none() {
                        self.frames.pop();
                    }
                }
                // An item: a fragment is skipped; an item of a sequence holds elements.
                (Tag(0xFFFE, 0xE000), _) if frame.fragments => self.skip(&h)?,
                (Tag(0xFFFE, _), _) => {}
                (_, Some(vr)) if h.len == UNDEFINED => {
                    let fragments = h.tag == Tag(0x7FE0, 0x0010);
                    if vr != VR::SQ && vr != VR::UN && !fragments {
                        // Not valid DICOM; dicom-rs will say so.
                        return Ok(());
                    }
                    // A sequence of VR UN is encoded in implicit VR (PS3.5 6.2.2).
                    let explicit = frame.explicit && vr != VR::UN;
                    self.frames.push(Frame {
                        explicit,
                        end: None,
                        fragments,
                    });
                }
                (_, Some(VR::SQ)) => {
                    let start = self.pos;
                    self.skip(&h)?;
                    self.pos = start;
                    self.frames.push(Frame {
                        explicit: frame.explicit,
                        end: Some(start + h.len as usize),
                        fragments: false,
                    });
                }
                _ => self.skip(&h)?,
            }
        }
    }
}

/// The VR of an implicit-VR element: a sequence if its length is undefined or the dictionary
/// says so, else opaque bytes (only the length matters here).
fn implicit_vr(tag: Tag, len: u32) -> VR {
    let is_sequence = len == UNDEFINED
        || StandardDataDictionary
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
