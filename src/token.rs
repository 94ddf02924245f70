//! The token a credential hands out, with its timing.

use azure_core::credentials::{AccessToken, Secret};
use time::OffsetDateTime;

/// An access token with the properties the Azure SDK's `get_token_info` returns.
///
/// `Debug` never prints the token.
#[derive(Clone, Debug)]
pub struct AccessTokenInfo {
    /// The access token.
    pub token: Secret,
    /// When the token expires.
    pub expires_on: OffsetDateTime,
    /// When Microsoft Entra ID suggests refreshing it (`refresh_in`), or half its lifetime for
    /// tokens valid 2 hours or more; `None` otherwise. The credential refreshes in the
    /// background before this time or, without it, shortly before the token expires.
    pub refresh_on: Option<OffsetDateTime>,
    /// The token type, `Bearer`.
    pub token_type: String,
}

impl From<AccessTokenInfo> for AccessToken {
    fn from(info: AccessTokenInfo) -> Self {
        AccessToken::new(info.token, info.expires_on)
    }
}

/// Whether `token` is one bearer token: RFC 6750's `b64token` (letters, digits, `-._~+/`, then
/// `=` padding), which every JWT is.
///
/// Tokens are printed by tools, put in headers and handed to pipeline logging commands: a token
/// with whitespace, a control character or `#`, `[`, `;` could start another header or another
/// `##vso` command, so such a token is refused wherever it comes from.
pub(crate) fn is_token_text(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| B64TOKEN[usize::from(b)])
}

/// Which bytes `b64token` allows before its padding. A table, because every token of every
/// exchange (a few kilobytes) goes through it: half the instructions of testing each range.
const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_alphabet() {
        for ok in ["a.b.c", "eyJ0eXAi.eyJhdWQi.sig-_~+/", "abc==", "x"] {
            assert!(is_token_text(ok), "{ok:?}");
        }
        for bad in [
            "",
            "===",
            "a b",
            "a\nb",
            "a.b\n##vso[task.setvariable variable=PATH]x",
            "a\tb",
            "a;b",
            "a]b",
            "a=b",
            "tökén",
            "a\u{0}b",
        ] {
            assert!(!is_token_text(bad), "{bad:?}");
        }
    }
}
