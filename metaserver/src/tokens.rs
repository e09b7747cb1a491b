//! The secrets the server hands out (resume, watch and control tokens) and what it keeps of them
//! instead: their SHA-256 ([`TokenHash`]).
//!
//! **Architecture Invariant: tokens never rest.** A token exists only in the browser and in the
//! one message that hands it over; the server keeps hashes, compares them in constant time and
//! logs session ids only.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A secret handed to one browser: 128 bits from the operating system, base64url.
pub fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of a token, hex: what the server keeps instead of the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        TokenHash(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Compares in constant time. (Lookups by hash in a map compare hashes too, not in constant
    /// time; that leaks nothing useful: a guess's hash is unrelated to the guess, so timing can
    /// at best reveal prefixes of a hash, and finding a token for a hash prefix is a preimage
    /// search.)
    pub fn matches(&self, other: &TokenHash) -> bool {
        ipc_proto::handshake::secret_eq(&self.0, &other.0)
    }

    /// A hash read back as hex (from Redis): 64 lowercase hex digits, else `None`.
    pub fn from_hex(hex: &str) -> Option<TokenHash> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| TokenHash(hex.to_owned()))
    }

    /// The hash as hex (a file or key name; not a secret).
    pub fn hex(&self) -> &str {
        &self.0
    }
}

/// Is `token` shaped like one of ours (so garbage is refused before any lookup)?
pub fn plausible_token(token: &str) -> bool {
    token.len() == 22
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The watch token belonging to a resume token: derived, so a resuming owner can be given its
/// share link again although the server keeps neither secret (only their hashes). One-way: the
/// watch token reveals nothing about the resume token.
pub fn watch_token_for(token: &str) -> String {
    use base64::Engine;
    let digest = Sha256::digest(format!("hamlet-watch:{token}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}
