//! The file's envelope: the key derived from the System.AccessToken, and sealing with it.
//!
//! `magic (6) | version (1) | key id (16) | nonce (12) | ciphertext + tag`. The key id is a second
//! HKDF output of the same token, so a file sealed under another token is recognised as such
//! without trying; the nonce is random per seal; the associated data is the magic, the version
//! and the key id.

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

const MAGIC: &[u8; 6] = b"AZPTKC";
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN;
/// A fixed, versioned salt and context: a new format version derives new keys.
const HKDF_SALT: &[u8] = b"azure_pipelines_credential persistent cache v1";
const HKDF_KEY_INFO: &[u8] = b"azure_pipelines_credential persistent cache v1 encryption key";
const HKDF_KEY_ID_INFO: &[u8] = b"azure_pipelines_credential persistent cache v1 key id";

/// Why a cache file was not used; worded for debug logs.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unreadable {
    Garbage,
    Truncated,
    Version(u8),
    OtherKey,
    Tampered,
    Contents,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Garbage => f.write_str("not a token cache file (unknown header)"),
            Self::Truncated => f.write_str("truncated"),
            Self::Version(v) => {
                write!(f, "format version {v} is not supported (this is {VERSION})")
            }
            Self::OtherKey => f.write_str(
                "sealed with another System.AccessToken (another job, or another agent run)",
            ),
            Self::Tampered => f.write_str("failed authentication (tampered or corrupted)"),
            Self::Contents => f.write_str("decrypted, but its contents are not understood"),
        }
    }
}

/// The key and its public identifier, both derived from the `System.AccessToken`.
pub(super) struct Keys {
    key: Zeroizing<[u8; 32]>,
    id: [u8; KEY_ID_LEN],
}

impl Keys {
    /// HKDF-SHA256 over the token, with a fixed versioned salt, and one `info` per output so the
    /// key id (stored in clear) says nothing about the key.
    ///
    /// The key is bound to the job (its token) only, not to the client or tenant: those are not
    /// secret, so binding them would keep nothing from anyone who has the token, while two
    /// service connections of one job could no longer share the file. Entries are keyed by
    /// client and tenant instead.
    pub(super) fn derive(system_access_token: &str) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), system_access_token.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        let mut id = [0u8; KEY_ID_LEN];
        // Both lengths are far below HKDF-SHA256's limit (255 * 32 bytes), so neither fails.
        hkdf.expand(HKDF_KEY_INFO, key.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hkdf.expand(HKDF_KEY_ID_INFO, &mut id)
            .expect("16 bytes is a valid HKDF-SHA256 output length");
        Self { key, id }
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()] = VERSION;
        header[MAGIC.len() + 1..].copy_from_slice(&self.id);
        header
    }

    /// The file's bytes for `plaintext`, under a fresh random nonce.
    pub(super) fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| format!("no random nonce from the operating system: {e}"))?;
        let header = self.header();
        let cipher = ChaCha20Poly1305::new((&*self.key).into());
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &header,
                },
            )
            .map_err(|_| "the cache could not be encrypted".to_owned())?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a file's bytes, or why it cannot be read.
    pub(super) fn open(&self, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unreadable> {
        if bytes.len() < MAGIC.len() + 1 {
            return Err(if MAGIC.starts_with(bytes) {
                Unreadable::Truncated
            } else {
                Unreadable::Garbage
            });
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(Unreadable::Garbage);
        }
        if bytes[MAGIC.len()] != VERSION {
            return Err(Unreadable::Version(bytes[MAGIC.len()]));
        }
        if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(Unreadable::Truncated);
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        if header[MAGIC.len() + 1..] != self.id {
            return Err(Unreadable::OtherKey);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| Unreadable::Truncated)?;
        let cipher = ChaCha20Poly1305::new((&*self.key).into());
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map(Zeroizing::new)
            // The tag covers the whole ciphertext and header: a cut, a flipped byte or a foreign
            // key id all end here.
            .map_err(|_| Unreadable::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_derivation_is_deterministic_and_bound_to_the_token() {
        let a = Keys::derive("system-token-a");
        let again = Keys::derive("system-token-a");
        let b = Keys::derive("system-token-b");
        assert_eq!(*a.key, *again.key);
        assert_eq!(a.id, again.id);
        assert_ne!(*a.key, *b.key);
        assert_ne!(a.id, b.id);
        // The key id is a separate output: it does not reveal the key.
        assert_ne!(&a.key[..KEY_ID_LEN], &a.id[..]);
    }

    #[test]
    fn seal_and_open_round_trip_with_a_fresh_nonce() {
        let keys = Keys::derive("system-token");
        let one = keys.seal(b"plaintext").unwrap();
        let two = keys.seal(b"plaintext").unwrap();
        assert_ne!(one, two, "a random nonce per seal");
        assert_eq!(&one[..MAGIC.len()], MAGIC);
        assert_eq!(one[MAGIC.len()], VERSION);
        assert_eq!(
            one.len(),
            HEADER_LEN + NONCE_LEN + b"plaintext".len() + TAG_LEN
        );
        assert_eq!(keys.open(&one).unwrap().as_slice(), b"plaintext");
        assert_eq!(keys.open(&two).unwrap().as_slice(), b"plaintext");
    }

    #[test]
    fn unreadable_files_say_why() {
        let keys = Keys::derive("system-token");
        let sealed = keys.seal(b"{\"entries\":[]}").unwrap();
        let flip = |i: usize| {
            let mut bytes = sealed.clone();
            bytes[i] ^= 1;
            bytes
        };
        let cases: Vec<(Vec<u8>, Unreadable)> = vec![
            (Vec::new(), Unreadable::Truncated),
            (MAGIC[..3].to_vec(), Unreadable::Truncated),
            (b"hello world, not a cache".to_vec(), Unreadable::Garbage),
            (sealed[..HEADER_LEN + 5].to_vec(), Unreadable::Truncated),
            (sealed[..sealed.len() - 1].to_vec(), Unreadable::Tampered),
            (flip(MAGIC.len()), Unreadable::Version(VERSION ^ 1)),
            (flip(MAGIC.len() + 1), Unreadable::OtherKey),
            (flip(HEADER_LEN), Unreadable::Tampered),
            (flip(sealed.len() - 1), Unreadable::Tampered),
            (flip(HEADER_LEN + NONCE_LEN + 2), Unreadable::Tampered),
            (
                Keys::derive("other").seal(b"{}").unwrap(),
                Unreadable::OtherKey,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                keys.open(&bytes).err(),
                Some(expected),
                "{} bytes",
                bytes.len()
            );
        }
    }
}
