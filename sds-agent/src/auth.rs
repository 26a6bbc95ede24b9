//! Where the CA bearer token comes from: the projected service-account token file,
//! re-read on every call because kubelet rotates it.

use std::path::{Path, PathBuf};

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    Empty(PathBuf),
}

/// Reads the token from a file on each call.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// A token read from `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TokenFile { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current token, trimmed.
    pub async fn token(&self) -> Result<String, TokenError> {
        let raw = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| TokenError::Unreadable {
                path: self.path.clone(),
                source,
            })?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(TokenError::Empty(self.path.clone()));
        }
        Ok(token.to_string())
    }
}
