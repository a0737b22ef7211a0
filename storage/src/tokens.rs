//! API tokens: who may do what on a server started with `--auth`.
//!
//! A token is `tdm_` and 64 hex digits of randomness, shown once when it is created; the
//! store keeps only its SHA-256 (and an id to list and revoke it by). A token is either an
//! admin token (everything) or scoped: read and/or write on named databases and topics, or
//! on all of them (`*`).
//!
//! The store is one file, `<data-dir>/tokens/tokens` (format in `storage/FORMAT.md`),
//! replaced atomically (temp file, fsync, rename, fsync of the directory) on every change,
//! under an exclusive lock on `<data-dir>/tokens/lock` so that `tidemark token create
//! --data-dir` and a running server never lose each other's changes. A server re-reads the
//! file when a token it does not know is presented and the file changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const TOKENS_MAGIC: &[u8; 8] = b"TDMKTOK\0";
pub const TOKENS_FORMAT_VERSION: u32 = 1;
const FILE: &str = "tokens";
const LOCK: &str = "lock";
/// What every token text starts with (so that a leaked one is easy to search for).
pub const TOKEN_PREFIX: &str = "tdm_";

/// What a scoped token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Query databases; read topics.
    Read,
    /// Write to databases (and delete rows); produce to topics.
    Write,
}

/// One stored token (never its text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// SHA-256 of the token text, hex.
    pub hash: String,
    pub admin: bool,
    /// Databases and topics a scoped token applies to; `*` is all of them.
    pub databases: Vec<String>,
    pub permissions: Vec<Permission>,
    pub created_ns: i64,
}

impl TokenInfo {
    /// What lists show of a token: never its hash.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "admin": self.admin,
            "databases": self.databases,
            "permissions": self.permissions,
            "created": chrono::DateTime::from_timestamp_nanos(self.created_ns).to_rfc3339(),
        })
    }

    /// Whether this token may do `what` on the database or topic `name`.
    pub fn allows(&self, what: Permission, name: &str) -> bool {
        self.admin
            || (self.permissions.contains(&what)
                && self.databases.iter().any(|d| d == "*" || d == name))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Contents {
    /// By id.
    tokens: BTreeMap<String, TokenInfo>,
}

/// A new token: its text (shown once) and what is stored of it.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub text: String,
    pub info: TokenInfo,
}

/// What a new token may do.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub name: String,
    pub admin: bool,
    pub databases: Vec<String>,
    pub permissions: Vec<Permission>,
}

/// The token store of a data directory.
#[derive(Debug)]
pub struct TokenStore {
    dir: PathBuf,
    contents: Contents,
    /// By hash: the id.
    by_hash: BTreeMap<String, String>,
    /// Modification time and length of the file when read.
    seen: Option<(SystemTime, u64)>,
}

/// SHA-256 of a token's text, hex.
pub fn hash_token(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| Error::Internal(format!("no randomness for a token: {e}")))?;
    Ok(hex(&buf))
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptTokens {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Encodes the store file: a sealed file (`sealed`) of JSON.
fn encode(contents: &Contents) -> Result<Vec<u8>> {
    let body =
        serde_json::to_vec(contents).map_err(|e| Error::Internal(format!("encode tokens: {e}")))?;
    Ok(crate::sealed::encode(
        TOKENS_MAGIC,
        TOKENS_FORMAT_VERSION,
        &body,
    ))
}

fn decode(path: &Path, data: &[u8]) -> Result<Contents> {
    let body = crate::sealed::decode(data, TOKENS_MAGIC, TOKENS_FORMAT_VERSION)
        .map_err(|(at, reason)| corrupt(path, format!("{reason} (byte {at})")))?;
    serde_json::from_slice(body).map_err(|e| corrupt(path, e.to_string()))
}

impl TokenStore {
    /// Opens the store of `data_dir` (empty when it has none yet).
    ///
    /// # Errors
    /// I/O errors and a damaged store file.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let mut store = Self {
            dir: data_dir.join("tokens"),
            contents: Contents::default(),
            by_hash: BTreeMap::new(),
            seen: None,
        };
        store.read()?;
        Ok(store)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(self.path()).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    fn read(&mut self) -> Result<()> {
        let path = self.path();
        let stamp = self.stamp();
        let contents = match std::fs::read(&path) {
            Ok(data) => decode(&path, &data)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        self.by_hash = contents
            .tokens
            .values()
            .map(|t| (t.hash.clone(), t.id.clone()))
            .collect();
        self.contents = contents;
        self.seen = stamp;
        Ok(())
    }

    /// Re-reads the file if it changed since it was read; returns whether it did.
    ///
    /// # Errors
    /// See [`TokenStore::open`].
    pub fn reload_if_changed(&mut self) -> Result<bool> {
        if self.stamp() == self.seen {
            return Ok(false);
        }
        self.read()?;
        Ok(true)
    }

    /// The token whose text this is.
    pub fn authenticate(&self, text: &str) -> Option<&TokenInfo> {
        let id = self.by_hash.get(&hash_token(text))?;
        self.contents.tokens.get(id)
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        self.contents.tokens.values().cloned().collect()
    }

    pub fn has_admin(&self) -> bool {
        self.contents.tokens.values().any(|t| t.admin)
    }

    /// Runs `change` on the newest contents under the store's lock and saves them.
    fn change<T>(&mut self, change: impl FnOnce(&mut Contents) -> Result<T>) -> Result<T> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let lock_path = self.dir.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        self.read()?;
        let mut contents = self.contents.clone();
        let out = change(&mut contents)?;
        let data = encode(&contents)?;
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, &data)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        crate::log::sync_dir(&self.dir)?;
        self.read()?;
        drop(lock);
        Ok(out)
    }

    /// Creates a token; its text is in the answer and nowhere else.
    ///
    /// # Errors
    /// A scoped token without databases or permissions, I/O errors.
    pub fn create(&mut self, spec: TokenSpec) -> Result<NewToken> {
        if !spec.admin && (spec.databases.is_empty() || spec.permissions.is_empty()) {
            return Err(Error::Catalog(
                "a token that is not an admin token needs at least one database (or *) and read or write permission".into(),
            ));
        }
        self.add(spec, |_| Ok(()))
    }

    /// Creates the first admin token; refused once one exists.
    ///
    /// # Errors
    /// [`Error::Catalog`] when an admin token exists; I/O errors.
    pub fn create_first_admin(&mut self, name: &str) -> Result<NewToken> {
        let spec = TokenSpec {
            name: name.to_string(),
            admin: true,
            ..TokenSpec::default()
        };
        self.add(spec, |c| {
            if c.tokens.values().any(|t| t.admin) {
                return Err(Error::Catalog(
                    "an admin token exists already: create more tokens with it".into(),
                ));
            }
            Ok(())
        })
    }

    /// Makes a token of `spec` and stores it, if `allowed` passes on the newest contents.
    fn add(
        &mut self,
        spec: TokenSpec,
        allowed: impl FnOnce(&Contents) -> Result<()>,
    ) -> Result<NewToken> {
        let text = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
        let mut permissions = spec.permissions;
        permissions.sort();
        permissions.dedup();
        let info = TokenInfo {
            id: random_hex(8)?,
            name: spec.name,
            hash: hash_token(&text),
            admin: spec.admin,
            databases: if spec.admin {
                Vec::new()
            } else {
                spec.databases
            },
            permissions: if spec.admin { Vec::new() } else { permissions },
            created_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        };
        let stored = info.clone();
        self.change(move |c| {
            allowed(c)?;
            c.tokens.insert(stored.id.clone(), stored);
            Ok(())
        })?;
        Ok(NewToken { text, info })
    }

    /// Revokes a token by id; `false` when there is none.
    ///
    /// # Errors
    /// I/O errors.
    pub fn revoke(&mut self, id: &str) -> Result<bool> {
        self.change(|c| Ok(c.tokens.remove(id).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_hashes_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TokenStore::open(dir.path()).unwrap();
        let admin = store.create_first_admin("root").unwrap();
        assert!(admin.text.starts_with(TOKEN_PREFIX) && admin.text.len() == 68);
        assert!(store.create_first_admin("again").is_err());
        let reader = store
            .create(TokenSpec {
                name: "grafana".into(),
                admin: false,
                databases: vec!["metrics".into()],
                permissions: vec![Permission::Read],
            })
            .unwrap();
        let file = std::fs::read(dir.path().join("tokens/tokens")).unwrap();
        let text = String::from_utf8_lossy(&file);
        assert!(!text.contains(&admin.text) && !text.contains(&reader.text));
        assert!(text.contains(&hash_token(&reader.text)));

        let mut other = TokenStore::open(dir.path()).unwrap();
        let r = other.authenticate(&reader.text).unwrap();
        assert!(r.allows(Permission::Read, "metrics"));
        assert!(!r.allows(Permission::Write, "metrics"));
        assert!(!r.allows(Permission::Read, "other"));
        assert!(other.authenticate(&admin.text).unwrap().admin);
        assert!(other.authenticate("tdm_00").is_none());

        // A change by another handle is seen after a reload.
        assert!(store.revoke(&reader.info.id).unwrap());
        assert!(!store.revoke(&reader.info.id).unwrap());
        assert!(other.reload_if_changed().unwrap());
        assert!(other.authenticate(&reader.text).is_none());
        assert!(!other.reload_if_changed().unwrap());
        assert!(
            store
                .create(TokenSpec {
                    name: "x".into(),
                    ..TokenSpec::default()
                })
                .is_err()
        );
    }

    #[test]
    fn a_damaged_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TokenStore::open(dir.path()).unwrap();
        store.create_first_admin("root").unwrap();
        let path = dir.path().join("tokens/tokens");
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 3;
        data[last] ^= 1;
        std::fs::write(&path, &data).unwrap();
        let err = TokenStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("CRC-32C"), "{err}");
    }
}
