//! Tokens for the httpmock tests, and reading the claims of tokens that no emulator signed.
//!
//! Tokens the emulator hands out are read with `Emulator::verify_token`, which also proves it
//! signed them.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

pub const ISS: &str = "https://vstoken.dev.azure.com/0d3e1f2a-4b5c-4d6e-8f70-8192a3b4c5d6";
pub const SUB: &str = "sc://org/proj/my-connection";
pub const AUD: &str = "api://AzureADTokenExchange";

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// An unsigned but real-looking OIDC token of the service connection, issued now and valid 10
/// minutes; `marker` makes tokens (and their signatures) distinct.
pub fn oidc_jwt(marker: &str) -> String {
    let header =
        json!({"typ": "JWT", "alg": "RS256", "x5t": "kQ2g3dVb0e1f", "kid": "kQ2g3dVb0e1f"});
    let now = super::now().unix_timestamp();
    let payload = json!({
        "jti": format!("jti-{marker}"),
        "iss": ISS,
        "sub": SUB,
        "aud": AUD,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    });
    format!(
        "{}.{}.{}",
        b64(&header),
        b64(&payload),
        URL_SAFE_NO_PAD.encode(format!("signature-of-{marker}-Xk29sLq"))
    )
}

/// The signature of a compact JWT: the part that makes it usable.
pub fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

/// A token and, separately, its signature: what must never be printed.
pub fn and_signature(token: &str) -> [String; 2] {
    [token.to_owned(), signature(token).to_owned()]
}

/// The claims of a compact JWT, decoded without verifying anything; `None` when it is not one.
pub fn claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}
