//! The one error type of the connectors crate: writes into a node and file imports.

use std::path::PathBuf;

use tidemark_engine::Error as NodeError;

use crate::line_protocol::LineError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing was written: every line was bad, or some were and partial writes are off.
    #[error("{} line(s) rejected; nothing was written", .0.len())]
    Rejected(Vec<LineError>),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file cannot be imported at all (not a row of it, the whole file).
    #[error("cannot import {}: {message}", path.display())]
    Input { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn input(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
