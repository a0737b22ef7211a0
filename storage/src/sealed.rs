//! A whole file sealed by one header: `magic (8) | u32 version | u32 CRC-32C of the payload
//! | u64 payload length | payload`, all little endian. Catalog checkpoints and the token
//! store are written this way (each layout in `storage/FORMAT.md`); a reader trusts the
//! payload only when every field checks out.

/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;

/// The file's bytes.
pub fn encode(magic: &[u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(HEADER_LEN + payload.len());
    data.extend_from_slice(magic);
    data.extend_from_slice(&version.to_le_bytes());
    data.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    data.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    data.extend_from_slice(payload);
    data
}

/// Where a sealed file is wrong: the byte position of the field, and what is wrong.
pub type Damage = (u64, String);

/// The payload of a sealed file.
///
/// # Errors
/// A bad magic, an unknown version, a length or a CRC that does not match.
pub fn decode<'a>(data: &'a [u8], magic: &[u8; 8], version: u32) -> Result<&'a [u8], Damage> {
    if data.len() < HEADER_LEN || &data[..8] != magic {
        return Err((0, "bad magic".into()));
    }
    let word = |at: usize| {
        let mut a = [0u8; 4];
        a.copy_from_slice(&data[at..at + 4]);
        u32::from_le_bytes(a)
    };
    let found = word(8);
    if found != version {
        return Err((8, format!("unsupported version {found}")));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&data[16..24]);
    let len = u64::from_le_bytes(len);
    let payload = &data[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err((
            16,
            format!("payload is {} bytes, header says {len}", payload.len()),
        ));
    }
    if crc32c::crc32c(payload) != word(12) {
        return Err((12, "CRC-32C mismatch".into()));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_damage_is_refused() {
        let data = encode(b"TESTMAG\0", 3, b"hello");
        assert_eq!(decode(&data, b"TESTMAG\0", 3), Ok(&b"hello"[..]));
        assert_eq!(decode(&data, b"TESTMAG\0", 4).unwrap_err().0, 8);
        assert_eq!(decode(&data, b"OTHERMG\0", 3).unwrap_err().0, 0);
        assert_eq!(
            decode(&data[..data.len() - 1], b"TESTMAG\0", 3)
                .unwrap_err()
                .0,
            16
        );
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 1;
            assert!(decode(&bad, b"TESTMAG\0", 3).is_err(), "byte {i}");
        }
    }
}
