//! Reading the claims of a JWT without verifying it.
//!
//! The credential never trusts or verifies tokens (Entra does that); it decodes the OIDC token's
//! `iss`, `sub`, `aud` and `exp` to explain federation mismatches and to know when the token
//! expires. The signature, which is what makes a token usable, is never read.

use base64::{
    Engine as _,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use serde_json::{Map, Value};

const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Tokens bigger than this are not JWTs anyone should be decoding.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Decodes the payload (claims) of a compact JWT without verifying its signature; `None` when
/// `token` is not three dot-separated base64url parts whose middle part is a JSON object.
pub(crate) fn decode_claims(token: &str) -> Option<Map<String, Value>> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = BASE64URL.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The claims that identify a federated token, for diagnostics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FederationClaims {
    pub(crate) iss: Option<String>,
    pub(crate) sub: Option<String>,
    pub(crate) aud: Option<String>,
    pub(crate) exp: Option<i64>,
}

impl FederationClaims {
    pub(crate) fn from_token(token: &str) -> Self {
        let Some(claims) = decode_claims(token) else {
            return Self::default();
        };
        let text = |name: &str| match claims.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => None,
        };
        Self {
            iss: text("iss"),
            sub: text("sub"),
            aud: text("aud"),
            exp: claims.get("exp").and_then(Value::as_i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn decodes_or_refuses() {
        let padded = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"a":"bc"}"#)
        );
        let cases: Vec<(String, Option<&str>)> = vec![
            (jwt(r#"{"iss":"x"}"#), Some("iss")),
            (padded, Some("a")),
            (jwt("[1,2]"), None),
            (jwt("not json"), None),
            ("only.two".into(), None),
            ("a.b.c.d".into(), None),
            ("".into(), None),
            ("e30.!!!.sig".into(), None),
            (format!("e30.{}.sig", "A".repeat(MAX_TOKEN_LEN)), None),
        ];
        for (token, key) in cases {
            let decoded = decode_claims(&token);
            match key {
                Some(key) => assert!(decoded.unwrap().contains_key(key)),
                None => assert!(decoded.is_none(), "{token:.40}"),
            }
        }
    }

    #[test]
    fn federation_claims_tolerate_shapes() {
        let c = FederationClaims::from_token(&jwt(
            r#"{"iss":"https://vstoken.dev.azure.com/o","sub":"sc://o/p/c","aud":["api://AzureADTokenExchange","x"],"exp":1700000000}"#,
        ));
        assert_eq!(c.iss.as_deref(), Some("https://vstoken.dev.azure.com/o"));
        assert_eq!(c.sub.as_deref(), Some("sc://o/p/c"));
        assert_eq!(c.aud.as_deref(), Some("api://AzureADTokenExchange, x"));
        assert_eq!(c.exp, Some(1_700_000_000));
        assert_eq!(
            FederationClaims::from_token("garbage"),
            FederationClaims::default()
        );
        let odd = FederationClaims::from_token(&jwt(r#"{"iss":5,"exp":"soon"}"#));
        assert_eq!(odd, FederationClaims::default());
    }

    mod properties {
        use super::*;
        use crate::tests::strategies::{config, json_value, jwt, secret};
        use proptest::prelude::*;
        use serde_json::json;

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn decoding_never_panics(token in "\\PC{0,300}") {
                let _ = decode_claims(&token);
                let _ = FederationClaims::from_token(&token);
            }

            #[test]
            fn decoding_never_panics_on_dotted_base64(
                parts in prop::collection::vec("[A-Za-z0-9_=+/-]{0,60}", 0..5),
            ) {
                let token = parts.join(".");
                let _ = FederationClaims::from_token(&token);
            }

            #[test]
            fn federation_claims_round_trip(
                iss in "\\PC{0,40}",
                sub in "\\PC{0,40}",
                aud in "\\PC{0,40}",
                exp in any::<i64>(),
                signature in secret(),
            ) {
                let token = jwt(&json!({"iss": iss, "sub": sub, "aud": aud, "exp": exp}), &signature);
                let c = FederationClaims::from_token(&token);
                prop_assert_eq!(c.iss.as_deref(), Some(iss.as_str()));
                prop_assert_eq!(c.sub.as_deref(), Some(sub.as_str()));
                prop_assert_eq!(c.aud.as_deref(), Some(aud.as_str()));
                prop_assert_eq!(c.exp, Some(exp));
            }

            #[test]
            fn federation_claims_tolerate_any_claim_shapes(payload in json_value(), signature in secret()) {
                let token = jwt(&payload, &signature);
                let _ = FederationClaims::from_token(&token);
            }
        }
    }
}
