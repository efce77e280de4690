//! keepalived.conf for xvs: the LVS part of keepalived's configuration
//! (`virtual_server`, `virtual_server_group`, `real_server` and their
//! checkers) read with keepalived's grammar and defaults, into the service
//! and dest specs xvs applies and the checker settings xvsd runs.
//!
//! `global_defs` is skipped; VRRP blocks (`vrrp_*`, `static_*`, ...) are
//! skipped with one note, since VRRP stays with keepalived. Anything else
//! this crate does not implement is refused with `file:line: keyword: why`,
//! never ignored: a configuration that loads means what it says.
//!
//! [`load`] reads a file (and its includes); [`parse_str`] reads text.

#![forbid(unsafe_code)]

mod build;
pub mod lex;
mod model;
mod ranges;

pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a statement is: file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<PathBuf>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A refused configuration: where, the keyword, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{where_}: {keyword}: {msg}")]
pub struct ConfError {
    /// `file:line`, or the file alone when it could not be read.
    pub where_: String,
    pub keyword: String,
    pub msg: String,
}

impl ConfError {
    pub(crate) fn at(loc: &Loc, keyword: &str, msg: impl Into<String>) -> ConfError {
        ConfError {
            where_: loc.to_string(),
            keyword: keyword.to_string(),
            msg: msg.into(),
        }
    }

    pub(crate) fn file(path: &Path, msg: impl Into<String>) -> ConfError {
        ConfError {
            where_: path.display().to_string(),
            keyword: "file".into(),
            msg: msg.into(),
        }
    }
}

/// Reads a keepalived.conf (and what it includes).
pub fn load(path: &Path) -> Result<Config, ConfError> {
    let mut files = Vec::new();
    let nodes = lex::read(path, &mut files)?;
    let mut c = build::build(&nodes)?;
    c.files = files;
    Ok(c)
}

/// Reads keepalived.conf text, named `name` in messages.
pub fn parse_str(text: &str, name: &str) -> Result<Config, ConfError> {
    let nodes = lex::read_str(text, name)?;
    build::build(&nodes)
}
