//! The payload of a topic record (log record kind [`KIND_TOPIC_RECORD`]): an optional key
//! and a value, both opaque bytes. The record's offset and timestamp live in the log frame
//! around it (see `storage/FORMAT.md`, "Topic record payload").
//!
//! Topics are partition logs like a database's write-ahead log; only the payload differs.

use crate::error::{Error, Result};

/// Log record kind of a user topic record.
pub const KIND_TOPIC_RECORD: u8 = 2;

const PAYLOAD_VERSION: u8 = 1;
const HAS_KEY: u8 = 1;
const HEADER_LEN: usize = 6;

/// Encodes one record's key and value.
pub fn encode(key: Option<&[u8]>, value: &[u8]) -> Result<Vec<u8>> {
    let key_len = key.map_or(0, <[u8]>::len);
    let key_len32 = u32::try_from(key_len)
        .map_err(|_| Error::Payload(format!("a topic key of {key_len} bytes is too long")))?;
    let mut out = Vec::with_capacity(HEADER_LEN + key_len + value.len());
    out.push(PAYLOAD_VERSION);
    out.push(if key.is_some() { HAS_KEY } else { 0 });
    out.extend_from_slice(&key_len32.to_le_bytes());
    out.extend_from_slice(key.unwrap_or_default());
    out.extend_from_slice(value);
    Ok(out)
}

/// A decoded topic record payload, borrowing from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPayload<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

/// Decodes a payload written by [`encode`].
///
/// # Errors
/// `Payload` for an unknown version or flag, or a key length past the end.
pub fn decode(payload: &[u8]) -> Result<TopicPayload<'_>> {
    let bad = |why: String| Error::Payload(format!("topic record: {why}"));
    let Some(header) = payload.get(..HEADER_LEN) else {
        return Err(bad(format!(
            "{} bytes is shorter than its header",
            payload.len()
        )));
    };
    if header[0] != PAYLOAD_VERSION {
        return Err(bad(format!("unknown payload version {}", header[0])));
    }
    let flags = header[1];
    if flags & !HAS_KEY != 0 {
        return Err(bad(format!("unknown flags {flags:#04x}")));
    }
    let key_len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
    let rest = &payload[HEADER_LEN..];
    if key_len > rest.len() || (flags & HAS_KEY == 0 && key_len != 0) {
        return Err(bad(format!(
            "key length {key_len} does not fit the {} bytes after the header",
            rest.len()
        )));
    }
    let (key, value) = rest.split_at(key_len);
    Ok(TopicPayload {
        key: (flags & HAS_KEY != 0).then_some(key),
        value,
    })
}

/// The partition of a keyed record: the same XXH3-64 (seed 0) as series keys, over the
/// key's bytes, so a key always lands in the same partition of a topic.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_key_and_value_round_trip(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            value in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let bytes = encode(key.as_deref(), &value).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), TopicPayload { key: key.as_deref(), value: &value });
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = decode(&bytes) {
                // Whatever decodes encodes back to the same bytes.
                prop_assert_eq!(encode(p.key, p.value).unwrap(), bytes);
            }
        }
    }

    #[test]
    fn round_trips_with_and_without_a_key() {
        for (key, value) in [
            (Some(&b"k"[..]), &b"{\"a\":1}"[..]),
            (Some(&b""[..]), &b""[..]),
            (None, &b"v"[..]),
            (None, &b""[..]),
        ] {
            let bytes = encode(key, value).unwrap();
            assert_eq!(decode(&bytes).unwrap(), TopicPayload { key, value });
        }
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        let good = encode(Some(b"key"), b"value").unwrap();
        assert!(decode(&good[..3]).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(
            decode(&version)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        let mut flags = good.clone();
        flags[1] = 4;
        assert!(decode(&flags).is_err());
        let mut long = good.clone();
        long[2] = 200;
        assert!(
            decode(&long)
                .unwrap_err()
                .to_string()
                .contains("key length 200")
        );
        let mut keyless = good;
        keyless[1] = 0;
        assert!(decode(&keyless).is_err());
    }

    #[test]
    fn a_key_keeps_its_partition() {
        let p = partition_of(b"sensor-1", 8);
        assert!(p < 8);
        assert_eq!(partition_of(b"sensor-1", 8), p);
        assert_eq!(partition_of(b"anything", 1), 0);
    }
}
