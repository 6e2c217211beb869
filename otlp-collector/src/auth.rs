//! Bearer-token authentication for the receivers and, separately, the query
//! API and UI. Tokens are compared in constant time and never logged.

use std::path::{Path, PathBuf};

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Bearer-token authentication; no tokens means no authentication.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Tokens accepted by the receivers (OTLP gRPC/HTTP, Zipkin).
    pub receiver_tokens: Vec<String>,
    /// File with one receiver token per line (merged with `receiver_tokens`).
    pub receiver_tokens_file: Option<PathBuf>,
    /// Tokens accepted by the query API and UI.
    pub query_tokens: Vec<String>,
    /// File with one query token per line (merged with `query_tokens`).
    pub query_tokens_file: Option<PathBuf>,
}

/// A token file named in `[auth]` could not be read; `config` turns it into
/// its `ConfigError::Read` (the same message as any other unreadable file).
#[derive(Debug, thiserror::Error)]
#[error("cannot read token file {path}: {source}")]
pub struct TokenFileError {
    /// File path.
    pub path: PathBuf,
    /// Underlying error.
    pub source: std::io::Error,
}

/// Reads tokens from config values and an optional file (one per line, `#` comments).
pub fn load_tokens(inline: &[String], file: Option<&Path>) -> Result<Vec<String>, TokenFileError> {
    let mut out: Vec<String> = inline.iter().filter(|t| !t.is_empty()).cloned().collect();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|source| TokenFileError {
            path: f.to_path_buf(),
            source,
        })?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(out)
}

/// A set of accepted tokens; empty means authentication is off.
#[derive(Clone, Default)]
pub struct TokenSet {
    tokens: Vec<Vec<u8>>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        write!(f, "TokenSet({} tokens)", self.tokens.len())
    }
}

/// Outcome of a token check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthResult {
    /// Authentication is off or the token matched.
    Allowed,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not accepted.
    Wrong,
}

impl TokenSet {
    /// Builds a set from tokens (empty strings ignored).
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Self {
        TokenSet {
            tokens: tokens
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(String::into_bytes)
                .collect(),
        }
    }

    /// True when at least one token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks an `authorization` header value.
    pub fn check_value(&self, value: Option<&[u8]>) -> AuthResult {
        if !self.enabled() {
            return AuthResult::Allowed;
        }
        let Some(v) = value else {
            return AuthResult::Missing;
        };
        let token = match v.get(..7) {
            Some(p) if p.eq_ignore_ascii_case(b"bearer ") => v[7..].trim_ascii(),
            _ => return AuthResult::Missing,
        };
        // Check every token without early exit so timing reveals nothing
        // (subtle's comparison is constant-time for equal lengths; a length
        // mismatch is told at once, and token lengths are not secret).
        let mut ok = subtle::Choice::from(0);
        for t in &self.tokens {
            ok |= t.as_slice().ct_eq(token);
        }
        if bool::from(ok) {
            AuthResult::Allowed
        } else {
            AuthResult::Wrong
        }
    }

    /// Checks the `authorization` header of a request.
    pub fn check(&self, headers: &HeaderMap) -> AuthResult {
        self.check_value(
            headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_bearer_tokens() {
        let off = TokenSet::default();
        assert_eq!(off.check_value(None), AuthResult::Allowed);
        let t = TokenSet::new(vec!["s3cret".to_string(), String::new()]);
        assert_eq!(t.check_value(None), AuthResult::Missing);
        assert_eq!(t.check_value(Some(b"Basic abc")), AuthResult::Missing);
        assert_eq!(t.check_value(Some(b"Bearer nope")), AuthResult::Wrong);
        assert_eq!(t.check_value(Some(b"bearer s3cret")), AuthResult::Allowed);
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
