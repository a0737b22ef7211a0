//! Checkpoints of a running topology: every node's state at one epoch, written atomically.
//!
//! The coordinator in `run` asks the sources for epoch `e`; each source saves its position
//! and sends a barrier after its last batch before the cut. A node with several inputs
//! waits until the barrier came through all of them (aligned barriers, so no row of the
//! next epoch is counted in this one), saves its state and passes the barrier on; a sink
//! flushes and saves. Once every node reported `e`, [`Checkpoint::write`] puts the file
//! in place. A restart hands each node its state: sources resume from their saved
//! positions, windows hold what they held, and rows after the cut are read again.
//!
//! File format (`<dir>/checkpoint`, documented in `storage/FORMAT.md`): magic `TMCP`,
//! version u32 = 1, epoch u64, node count u32, then per node name length u32, name,
//! state length u32, state; then CRC-32C of everything before it. All integers little
//! endian. Written to `checkpoint.tmp`, fsynced, renamed, and the directory fsynced.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

const MAGIC: &[u8; 4] = b"TMCP";
const VERSION: u32 = 1;
pub const FILE_NAME: &str = "checkpoint";

/// Every node's state at one epoch, by node name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub epoch: u64,
    pub states: BTreeMap<String, Vec<u8>>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&(self.states.len() as u32).to_le_bytes());
        for (name, state) in &self.states {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(state.len() as u32).to_le_bytes());
            out.extend_from_slice(state);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// # Errors
    /// A bad magic, version or checksum, or a truncated file.
    pub fn decode(data: &[u8]) -> Result<Self, String> {
        let body_len = data
            .len()
            .checked_sub(4)
            .ok_or("shorter than its checksum")?;
        let (body, crc) = data.split_at(body_len);
        let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "no checksum")?);
        if crc32c::crc32c(body) != stored {
            return Err("checksum mismatch".into());
        }
        let mut r = StateReader::new(body);
        if r.bytes(4)? != MAGIC {
            return Err("not a topology checkpoint (bad magic)".into());
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(format!(
                "checkpoint version {version}; this build reads {VERSION}"
            ));
        }
        let epoch = r.u64()?;
        let count = r.u32()?;
        let mut states = BTreeMap::new();
        for _ in 0..count {
            let n = r.u32()? as usize;
            let name = String::from_utf8(r.bytes(n)?.to_vec()).map_err(|e| e.to_string())?;
            let n = r.u32()? as usize;
            states.insert(name, r.bytes(n)?.to_vec());
        }
        if !r.is_empty() {
            return Err("bytes after the last node".into());
        }
        Ok(Self { epoch, states })
    }

    /// Writes the checkpoint into `dir`, replacing the previous one atomically.
    ///
    /// # Errors
    /// I/O errors; the previous checkpoint is then still in place.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(FILE_NAME))?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// The checkpoint in `dir`, if there is one.
    ///
    /// # Errors
    /// It cannot be read or is corrupt (the topology must not silently start over).
    pub fn read(dir: &Path) -> Result<Option<Self>, String> {
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(data) => Self::decode(&data)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// Builds a node's state: little-endian integers one after another.
#[derive(Debug, Default)]
pub struct StateWriter(Vec<u8>);

impl StateWriter {
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// `bytes`, prefixed by their length (u64).
    pub fn bytes(self, bytes: &[u8]) -> Self {
        let mut w = self.u64(bytes.len() as u64);
        w.0.extend_from_slice(bytes);
        w
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads what a [`StateWriter`] wrote.
#[derive(Debug)]
pub struct StateReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> StateReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or("truncated state")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn i64(&mut self) -> Result<i64, String> {
        self.u64().map(|v| v as i64)
    }

    /// What [`StateWriter::bytes`] wrote.
    pub fn prefixed(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.u64()?).map_err(|_| "a length past the end")?;
        self.bytes(len)
    }

    pub fn is_empty(&self) -> bool {
        self.pos == self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_corruption() {
        let mut c = Checkpoint {
            epoch: 7,
            ..Checkpoint::default()
        };
        c.states
            .insert("src".into(), StateWriter::default().u64(42).finish());
        c.states.insert("sink".into(), Vec::new());
        let bytes = c.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(c.clone()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Checkpoint::decode(&bad).is_err(), "flipped byte {i}");
        }
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 1]).is_err());

        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(Checkpoint::read(dir.path()), Ok(None));
        c.write(dir.path()).expect("write");
        assert_eq!(Checkpoint::read(dir.path()), Ok(Some(c)));
    }
}
