//! The tenant that issued an access token, its `tid` claim, for the JSON output's `tenant`.
//!
//! The token is **not verified** here (the CLI is not its audience and has no key for it): the
//! claim is only displayed, as az displays it. Only `tid` is kept; every other claim is
//! dropped unread, and nothing of the token ever reaches an error message.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;

/// The only claim read.
#[derive(Deserialize)]
struct Claims {
    tid: Option<String>,
}

/// The `tid` claim of the JWT `token`, or `None` when the token is not a JWT, its payload is not
/// base64url JSON, or the claim is missing or does not look like a tenant ID (a GUID or a domain
/// name: letters, digits, `-` and `.`, at most 256 characters).
pub(crate) fn token_tenant(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // Padding is optional in JWTs; accept it, as some issuers leave it in.
    let payload = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let tid = serde_json::from_slice::<Claims>(&payload).ok()?.tid?;
    let plausible = !tid.is_empty()
        && tid.len() <= 256
        && tid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    plausible.then_some(tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let encode = |s: &str| URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", encode(r#"{"alg":"ES256"}"#), encode(payload))
    }

    #[test]
    fn reads_tid() {
        let token = jwt(r#"{"aud":"x","tid":"72f988bf-86f1-41af-91ab-2d7cd011db47","oid":"o"}"#);
        assert_eq!(
            token_tenant(&token).as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        let padded = format!(
            "{}.{}=.c2ln",
            "e30",
            URL_SAFE_NO_PAD.encode(r#"{"tid":"t1"}"#)
        );
        assert_eq!(token_tenant(&padded).as_deref(), Some("t1"));
        assert_eq!(
            token_tenant(&jwt(r#"{"tid":"contoso.onmicrosoft.com"}"#)).as_deref(),
            Some("contoso.onmicrosoft.com")
        );
    }

    #[test]
    fn anything_else_is_none() {
        for token in [
            String::new(),
            "opaque-token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "e30.!!!.c2ln".to_owned(),
            jwt("not json"),
            jwt("[1,2]"),
            jwt(r#"{"aud":"x"}"#),
            jwt(r#"{"tid":7}"#),
            jwt(r#"{"tid":""}"#),
            jwt(r#"{"tid":"a\nb"}"#),
            jwt(r#"{"tid":"a\"b"}"#),
            jwt(&format!(r#"{{"tid":"{}"}}"#, "a".repeat(257))),
        ] {
            assert_eq!(token_tenant(&token), None, "{token}");
        }
    }
}
