//! Record framing inside a log segment (see `storage/FORMAT.md`, "Log record").
//!
//! A frame is `len:u32 | crc:u32 | version:u8 | kind:u8 | reserved:u16 | offset:u64 |
//! timestamp:i64 | payload`, little endian. `len` counts every byte after itself and the
//! CRC-32C covers every byte after itself, so a torn or flipped byte anywhere in the header
//! or the payload is detected.

/// Bytes before the payload.
pub const FRAME_HEADER_LEN: usize = 28;
/// Bytes covered by `len` that are not payload.
const LEN_COVERED_HEADER: usize = FRAME_HEADER_LEN - 4;
/// The only record version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Upper bound on one record, so a corrupt length cannot make recovery allocate or map
/// gigabytes.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// A record as read back from a segment, borrowing its payload from the mapped file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: u64,
    pub kind: u8,
    pub timestamp: i64,
    pub payload: &'a [u8],
}

/// What a decoder found at a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame, and the position just after it.
    Record(Record<'a>, usize),
    /// No bytes left.
    End,
    /// The frame runs past the end of the data: a write that did not complete.
    Truncated,
    /// The frame is complete but its bytes are wrong.
    Invalid(String),
}

/// Appends one frame for `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, offset: u64, kind: u8, timestamp: i64, payload: &[u8]) {
    let start = out.len();
    let len = (LEN_COVERED_HEADER + payload.len()) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc, filled below
    out.push(RECORD_VERSION);
    out.push(kind);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the frame starting at `pos` in `data`.
pub fn decode(data: &[u8], pos: usize) -> Decoded<'_> {
    let rest = data.len().saturating_sub(pos);
    if rest == 0 {
        return Decoded::End;
    }
    if rest < FRAME_HEADER_LEN {
        return Decoded::Truncated;
    }
    let len = read_u32(data, pos) as usize;
    if len < LEN_COVERED_HEADER {
        return Decoded::Invalid(format!("frame length {len} is shorter than a frame header"));
    }
    if len > MAX_RECORD_BYTES + LEN_COVERED_HEADER {
        // A garbage length: if it also runs past the end this is indistinguishable from a
        // torn write, which the caller decides about.
        if 4 + len > rest {
            return Decoded::Truncated;
        }
        return Decoded::Invalid(format!(
            "frame length {len} exceeds the maximum record size"
        ));
    }
    if 4 + len > rest {
        return Decoded::Truncated;
    }
    let body = &data[pos + 8..pos + 4 + len];
    let stored_crc = read_u32(data, pos + 4);
    let actual_crc = crc32c::crc32c(body);
    if stored_crc != actual_crc {
        return Decoded::Invalid(format!(
            "CRC-32C mismatch (stored {stored_crc:#010x}, computed {actual_crc:#010x})"
        ));
    }
    let version = body[0];
    if version != RECORD_VERSION {
        return Decoded::Invalid(format!("unsupported record version {version}"));
    }
    let kind = body[1];
    let offset = read_u64(body, 4);
    let timestamp = read_u64(body, 12) as i64;
    Decoded::Record(
        Record {
            offset,
            kind,
            timestamp,
            payload: &body[20..],
        },
        pos + 4 + len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20)) {
            let mut buf = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                encode(&mut buf, i as u64 + 7, 1, -5, p);
            }
            let mut pos = 0;
            for (i, p) in payloads.iter().enumerate() {
                match decode(&buf, pos) {
                    Decoded::Record(r, next) => {
                        prop_assert_eq!(r.offset, i as u64 + 7);
                        prop_assert_eq!(r.payload, &p[..]);
                        prop_assert_eq!(r.timestamp, -5);
                        pos = next;
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            prop_assert_eq!(decode(&buf, pos), Decoded::End);
        }

        #[test]
        fn any_flipped_bit_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..200), bit in any::<usize>()) {
            let mut buf = Vec::new();
            encode(&mut buf, 3, 1, 0, &payload);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!matches!(decode(&buf, 0), Decoded::Record(..)));
        }

        #[test]
        fn every_prefix_is_truncated_not_a_record(payload in proptest::collection::vec(any::<u8>(), 0..100), cut in any::<usize>()) {
            let mut buf = Vec::new();
            encode(&mut buf, 3, 1, 0, &payload);
            let cut = 1 + cut % (buf.len() - 1);
            prop_assert_eq!(decode(&buf[..cut], 0), Decoded::Truncated);
        }
    }
}
