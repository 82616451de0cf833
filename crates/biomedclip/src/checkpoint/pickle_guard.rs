//! A dry run of a PyTorch checkpoint's pickle before candle's reader builds it, refusing
//! files whose objects would cost far more memory or recursion than their size suggests.
//!
//! candle's reader (`candle_core::pickle`) interprets opcodes as data, never as code, but it
//! clones an object (strings included) each time the memo is read (`BINGET`), so a few hundred
//! bytes of memo references ("billion laughs") expand to gigabytes, and a deeply nested pickle
//! overflows the stack when the objects are dropped. No crate bounds this, so the opcodes
//! candle knows are replayed here with candle's stack effects on sizes alone: each stack and
//! memo slot holds the bytes its value would occupy (a fixed cost per object plus its strings)
//! and its nesting depth. Limits: bytes materialised in all (every push, every memo clone), at
//! most [`BYTES_PER_PICKLE_BYTE`] per byte of pickle plus [`BASE_BUDGET`] (a real state dict
//! costs about a tenth of that); nesting, at most [`MAX_DEPTH`]; the pickle itself, at most
//! [`MAX_PICKLE_BYTES`].

use std::collections::HashMap;
use std::io::Read;

/// Deepest nesting accepted (a state dict's tensors sit about six levels down).
pub const MAX_DEPTH: u32 = 100;

/// Largest `data.pkl` read (BiomedCLIP's is 46 KB, about 130 bytes per tensor; the tensor
/// data lies elsewhere in the zip).
pub const MAX_PICKLE_BYTES: u64 = 4 << 20;

/// Bytes of objects a pickle may materialise per byte of its own.
pub const BYTES_PER_PICKLE_BYTE: u64 = 256;

/// Bytes of objects any pickle may materialise.
pub const BASE_BUDGET: u64 = 16 << 20;

/// Bytes charged for one object: about what candle's `Object` and its container slot occupy.
const OBJECT: u64 = 64;

/// Checks a PyTorch checkpoint's bytes: a zip (PyTorch >= 1.6) whose `data.pkl` entries
/// replay within the limits. The error is a sentence about the file's content.
pub fn check_checkpoint(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(if bytes.first() == Some(&0x80) {
            "this is a legacy (non-zip) PyTorch file, written by torch < 1.6 or with \
             _use_new_zipfile_serialization=False; re-save it with a current torch.save, or \
             convert it to safetensors"
                .into()
        } else {
            "not a PyTorch checkpoint (no zip signature; expected a file written by \
             torch.save, or a .safetensors file)"
                .into()
        });
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable PyTorch zip: {e}"))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
        let name = entry
            .name()
            .map_err(|e| format!("zip entry {i}: {e}"))?
            .into_owned();
        if !name.ends_with("data.pkl") {
            continue;
        }
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(format!(
                "{name} is {} bytes; pickles over {MAX_PICKLE_BYTES} bytes are refused",
                entry.size()
            ));
        }
        let mut pickle = Vec::with_capacity(entry.size() as usize);
        (&mut entry)
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut pickle)
            .map_err(|e| format!("{name}: {e}"))?;
        if pickle.len() as u64 > MAX_PICKLE_BYTES {
            return Err(format!(
                "{name} holds more than {MAX_PICKLE_BYTES} bytes; refused"
            ));
        }
        replay(&pickle).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// One stack slot: the bytes its value occupies and its nesting depth. candle pushes marks as
/// objects (`Object::Mark`), pops them as such and clones them into the memo, so they are
/// slots like any other.
#[derive(Clone, Copy)]
struct Slot {
    mark: bool,
    size: u64,
    depth: u32,
}

struct Replay<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Slot>,
    made: u64,
    budget: u64,
}

/// Why a replay stopped early: a limit (refuse the file) or a malformed pickle on which
/// candle's reader stops too, left for it to report in its own words.
enum Stop {
    Refuse(String),
    Malformed,
}

/// Replays `pickle`'s opcodes on sizes; `Err` when a limit is exceeded or an opcode is one
/// candle's reader does not know.
pub fn replay(pickle: &[u8]) -> Result<(), String> {
    let mut r = Replay {
        bytes: pickle,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        made: 0,
        budget: BYTES_PER_PICKLE_BYTE
            .saturating_mul(pickle.len() as u64)
            .saturating_add(BASE_BUDGET),
    };
    match r.run() {
        Ok(()) | Err(Stop::Malformed) => Ok(()),
        Err(Stop::Refuse(reason)) => Err(reason),
    }
}

impl Replay<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Stop> {
        let end = self.pos.checked_add(n).ok_or(Stop::Malformed)?;
        let s = self.bytes.get(self.pos..end).ok_or(Stop::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, Stop> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Moves past a newline-terminated argument; its length.
    fn line(&mut self) -> Result<u64, Stop> {
        let rest = self.bytes.get(self.pos..).ok_or(Stop::Malformed)?;
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Stop::Malformed)?;
        self.pos += n + 1;
        Ok(n as u64)
    }

    /// Charges `bytes` to the budget.
    fn charge(&mut self, bytes: u64) -> Result<(), Stop> {
        self.made = self.made.saturating_add(bytes);
        if self.made > self.budget {
            return Err(Stop::Refuse(format!(
                "the pickle would build more than {} bytes of objects from {} bytes (memo \
                 references repeated to expand it, a \"billion laughs\" file); refused",
                self.budget,
                self.bytes.len()
            )));
        }
        Ok(())
    }

    fn check_depth(&self, depth: u32) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::Refuse(format!(
                "the pickle nests objects more than {MAX_DEPTH} levels deep (at byte {}); \
                 refused",
                self.pos
            )));
        }
        Ok(())
    }

    /// Pushes a value of `size` bytes nested `depth` deep, charging it.
    fn push(&mut self, size: u64, depth: u32) -> Result<(), Stop> {
        self.charge(size)?;
        self.check_depth(depth)?;
        self.stack.push(Slot {
            mark: false,
            size,
            depth,
        });
        Ok(())
    }

    /// Pops the top slot, a mark included (as candle does): (size, depth).
    fn pop(&mut self) -> Result<(u64, u32), Stop> {
        let slot = self.stack.pop().ok_or(Stop::Malformed)?;
        Ok((slot.size, slot.depth))
    }

    /// Pops `n` values and pushes the one made of them.
    fn combine(&mut self, n: usize) -> Result<(), Stop> {
        let (mut size, mut depth) = (OBJECT, 0u32);
        for _ in 0..n {
            let (s, d) = self.pop()?;
            size = size.saturating_add(s);
            depth = depth.max(d);
        }
        self.push(size, depth + 1)
    }

    /// Pops everything above the last mark, and the mark: (total size, deepest depth).
    fn pop_to_mark(&mut self) -> Result<(u64, u32), Stop> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| s.mark)
            .ok_or(Stop::Malformed)?;
        let (mut size, mut depth) = (0u64, 0u32);
        for slot in self.stack.drain(mark + 1..) {
            size = size.saturating_add(slot.size);
            depth = depth.max(slot.depth);
        }
        self.stack.pop();
        Ok((size, depth))
    }

    /// Adds `size`/`depth` worth of items to the value on top of the stack (candle fails
    /// unless it is a list or dict; growing a mark here is an upper bound).
    fn extend_top(&mut self, size: u64, depth: u32) -> Result<(), Stop> {
        let top = self.stack.last_mut().ok_or(Stop::Malformed)?;
        top.size = top.size.saturating_add(size);
        top.depth = top.depth.max(depth + 1);
        let depth = top.depth;
        self.check_depth(depth)
    }

    fn memo_get(&mut self, id: u32) -> Result<(), Stop> {
        let slot = *self.memo.get(&id).ok_or(Stop::Malformed)?;
        // candle clones the memo's value onto the stack.
        self.charge(slot.size)?;
        self.stack.push(slot);
        Ok(())
    }

    fn memo_put(&mut self, id: u32) -> Result<(), Stop> {
        let slot = *self.stack.last().ok_or(Stop::Malformed)?;
        // candle clones the value into the memo.
        self.charge(slot.size)?;
        self.memo.insert(id, slot);
        Ok(())
    }

    fn run(&mut self) -> Result<(), Stop> {
        loop {
            let at = self.pos;
            let op = *self.take(1)?.first().ok_or(Stop::Malformed)?;
            match op {
                0x80 => drop(self.take(1)?), // PROTO
                b'c' => {
                    // GLOBAL module\nname\n: two strings.
                    let n = self.line()? + self.line()?;
                    self.push(OBJECT + n, 1)?
                }
                b'q' => {
                    let id = self.take(1)?[0] as u32;
                    self.memo_put(id)?
                }
                b'r' => {
                    let id = self.u32()?;
                    self.memo_put(id)?
                }
                b'h' => {
                    let id = self.take(1)?[0] as u32;
                    self.memo_get(id)?
                }
                b'j' => {
                    let id = self.u32()?;
                    self.memo_get(id)?
                }
                b')' | b'}' | b'd' | b']' | b'N' | 0x88 | 0x89 => self.push(OBJECT, 1)?,
                b'(' => {
                    self.charge(OBJECT)?;
                    self.stack.push(Slot {
                        mark: true,
                        size: OBJECT,
                        depth: 1,
                    })
                }
                b'X' => {
                    // BINUNICODE: candle allocates the declared length before reading it.
                    let n = self.u32()? as usize;
                    if n > self.bytes.len() - self.pos {
                        return Err(Stop::Refuse(format!(
                            "a string at byte {at} declares {n} bytes, past the end of the pickle"
                        )));
                    }
                    self.take(n)?;
                    self.push(OBJECT + n as u64, 1)?
                }
                b'J' => {
                    self.take(4)?;
                    self.push(OBJECT, 1)?
                }
                b'K' => {
                    self.take(1)?;
                    self.push(OBJECT, 1)?
                }
                b'M' => {
                    self.take(2)?;
                    self.push(OBJECT, 1)?
                }
                b'G' => {
                    self.take(8)?;
                    self.push(OBJECT, 1)?
                }
                0x8a => {
                    // LONG1: n, then n bytes; candle shifts them into an i64.
                    let n = self.take(1)?[0] as usize;
                    if n > 8 {
                        return Err(Stop::Refuse(format!(
                            "an integer at byte {at} has {n} bytes; at most 8 are read"
                        )));
                    }
                    self.take(n)?;
                    self.push(OBJECT, 1)?
                }
                b'R' | b'b' | 0x81 => self.combine(2)?, // REDUCE, BUILD, NEWOBJ
                b'Q' | 0x85 => self.combine(1)?,        // BINPERSID, TUPLE1
                0x86 => self.combine(2)?,               // TUPLE2
                0x87 => self.combine(3)?,               // TUPLE3
                b't' => {
                    let (size, depth) = self.pop_to_mark()?;
                    self.push(OBJECT.saturating_add(size), depth + 1)?
                }
                b'a' => {
                    let (size, depth) = self.pop()?;
                    self.extend_top(size, depth)?
                }
                b's' => {
                    let (vs, vd) = self.pop()?;
                    let (ks, kd) = self.pop()?;
                    self.extend_top(vs.saturating_add(ks), vd.max(kd))?
                }
                b'e' | b'u' => {
                    let (size, depth) = self.pop_to_mark()?;
                    self.extend_top(size, depth)?
                }
                b'.' => return Ok(()),
                other => {
                    return Err(Stop::Refuse(format!(
                        "pickle opcode 0x{other:02x} ({:?}) at byte {at} is not supported by \
                         the checkpoint reader (it reads what torch.save writes for a state \
                         dict); convert the checkpoint to safetensors",
                        other as char
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dict_like_pickle_replays() {
        // {'a': (1, 2), 'b': [None]} with memo puts and a get.
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01K\x02\x86q\x02X\x01\x00\x00\x00b]q\x03Na\x85h\x02u.";
        assert!(replay(p).is_ok());
    }

    #[test]
    fn memo_expansion_is_refused() {
        // A list, then 30 rounds of: list of two copies of the previous one (2^30 objects).
        let mut p = b"\x80\x02]q\x00".to_vec();
        for i in 0..30u8 {
            p.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l']);
            // 'l' (LIST) is not an opcode candle knows; use a tuple instead.
            p.pop();
            p.extend_from_slice(&[b't', b'q', i + 1]);
        }
        p.push(b'.');
        let msg = replay(&p).unwrap_err();
        assert!(msg.contains("billion laughs"), "{msg}");
    }

    #[test]
    fn the_budget_holds_after_a_popped_mark_for_memo_puts_and_for_strings() {
        // A mark popped as an object (candle goes on), then the expansion.
        let mut p = b"\x80\x02(\x85]q\x00".to_vec();
        for i in 0..30u8 {
            p.extend_from_slice(&[b'(', b'h', i, b'h', i, b't', b'q', i + 1]);
        }
        p.push(b'.');
        assert!(replay(&p).unwrap_err().contains("billion laughs"));

        // A large list cloned into many memo slots, with no push after the last clone.
        let mut p = b"\x80\x02]".to_vec();
        for _ in 0..20_000 {
            p.extend_from_slice(b"Na");
        }
        for id in 0..20_000u32 {
            p.push(b'r');
            p.extend_from_slice(&id.to_le_bytes());
        }
        p.push(b'.');
        assert!(replay(&p).unwrap_err().contains("billion laughs"));

        // One long string read back from the memo many times.
        let mut p = b"\x80\x02X".to_vec();
        p.extend_from_slice(&100_000u32.to_le_bytes());
        p.extend(std::iter::repeat_n(b'x', 100_000));
        p.extend_from_slice(b"q\x00");
        for _ in 0..2_000 {
            p.extend_from_slice(b"h\x00");
        }
        p.push(b'.');
        assert!(replay(&p).unwrap_err().contains("billion laughs"));
    }

    #[test]
    fn lengths_past_the_end_and_long_integers_are_refused() {
        let msg = replay(b"\x80\x02X\xff\xff\xff\xffab.").unwrap_err();
        assert!(msg.contains("past the end"), "{msg}");
        let msg = replay(b"\x80\x02\x8a\x09123456789.").unwrap_err();
        assert!(msg.contains("9 bytes"), "{msg}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', 1000));
        p.extend(std::iter::repeat_n(b'a', 999));
        p.push(b'.');
        let msg = replay(&p).unwrap_err();
        assert!(msg.contains("levels deep"), "{msg}");
    }

    #[test]
    fn unknown_opcodes_are_named() {
        let msg = replay(b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00lsti.").unwrap_err();
        assert!(msg.contains("0x69") && msg.contains("byte"), "{msg}");
    }

    #[test]
    fn legacy_and_foreign_files_are_named() {
        assert!(check_checkpoint(b"\x80\x02\x8a\x0a")
            .unwrap_err()
            .contains("legacy"));
        assert!(check_checkpoint(b"hello")
            .unwrap_err()
            .contains("no zip signature"));
    }
}
