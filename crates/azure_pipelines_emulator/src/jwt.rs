//! The emulator's signing key and its compact JWS encoding (ES256).

use std::io;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::util;

/// The claims of an OIDC token issued by the emulated Azure DevOps endpoint.
///
/// [`Emulator::issue_oidc_token_with`](crate::Emulator::issue_oidc_token_with)
/// hands these to a closure before signing, so tests can produce tokens that
/// are expired or carry the wrong issuer, subject or audience.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OidcClaims {
    /// Issuer: `https://vstoken.dev.azure.com/{organizationId}`.
    pub iss: String,
    /// Subject: `sc://{organization}/{project}/{serviceConnectionName}`.
    pub sub: String,
    /// Audience: `api://AzureADTokenExchange`.
    pub aud: String,
    /// Issued at (seconds since the Unix epoch, emulator clock).
    pub iat: i64,
    /// Not before (seconds since the Unix epoch).
    pub nbf: i64,
    /// Expiry (seconds since the Unix epoch).
    pub exp: i64,
    /// Unique token identifier.
    pub jti: String,
    /// Any further claims, serialized next to the others.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a presented JWT was not accepted.
#[derive(Debug)]
pub(crate) enum VerifyError {
    /// Not three base64url parts of JSON objects.
    Malformed,
    /// Signed by another key, or with another algorithm.
    UnknownKey,
    /// The signature does not match.
    BadSignature,
}

pub(crate) struct Keys {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
    jwk_x: String,
    jwk_y: String,
}

impl Keys {
    pub(crate) fn generate() -> io::Result<Keys> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| io::Error::other("cannot generate the signing key"))?;
        // An uncompressed P-256 point: 0x04 || x (32 bytes) || y (32 bytes).
        let (jwk_x, jwk_y) = match pair.public_key().as_ref() {
            [4, rest @ ..] if rest.len() == 64 => (
                URL_SAFE_NO_PAD.encode(&rest[..32]),
                URL_SAFE_NO_PAD.encode(&rest[32..]),
            ),
            _ => return Err(io::Error::other("unexpected public key encoding")),
        };
        let keys = Keys {
            pair,
            rng: SystemRandom::new(),
            kid: util::random_b64url::<20>(),
            jwk_x,
            jwk_y,
        };
        // Signing once here means a broken crypto setup fails `start`, not a request.
        let probe = keys.sign(&serde_json::json!({"probe": true}))?;
        keys.verify(&probe)
            .map_err(|e| io::Error::other(format!("signing key self-test failed: {e:?}")))?;
        Ok(keys)
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS document.
    pub(crate) fn jwks(&self) -> Value {
        serde_json::json!({
            "keys": [{
                "kty": "EC",
                "use": "sig",
                "crv": "P-256",
                "alg": "ES256",
                "kid": self.kid,
                "x5t": self.kid,
                "x": self.jwk_x,
                "y": self.jwk_y,
            }]
        })
    }

    pub(crate) fn sign(&self, claims: &impl Serialize) -> io::Result<String> {
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5t": self.kid,
            "kid": self.kid,
        });
        let header = serde_json::to_vec(&header).map_err(io::Error::other)?;
        let payload = serde_json::to_vec(claims).map_err(io::Error::other)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = self
            .pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| io::Error::other("cannot sign a JWT"))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    /// Checks the signature and returns the claims object.
    pub(crate) fn verify(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        let (header, claims, signature) = split(token).ok_or(VerifyError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| VerifyError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || header.get("kid").and_then(Value::as_str) != Some(self.kid.as_str())
        {
            return Err(VerifyError::UnknownKey);
        }
        let Some(dot) = token.rfind('.') else {
            return Err(VerifyError::Malformed);
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref())
            .verify(&token.as_bytes()[..dot], &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        Ok(claims)
    }
}

/// Header, claims and the still-encoded signature of a compact JWT.
type Parts<'a> = (Map<String, Value>, Map<String, Value>, &'a str);

/// Decodes the header and claims of a compact JWT without checking anything else.
fn split(token: &str) -> Option<Parts<'_>> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((decode_part(h)?, decode_part(c)?, s))
}

/// The claims of a compact JWT, without checking its signature or anything else: what Entra
/// reads to find the federated credential before it validates the token.
pub(crate) fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, claims, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    decode_part(claims)
}

fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() -> io::Result<()> {
        let keys = Keys::generate()?;
        let token = keys.sign(&serde_json::json!({"a": 1}))?;
        let claims = keys
            .verify(&token)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        assert_eq!(claims.get("a"), Some(&Value::from(1)));

        let other = Keys::generate()?;
        assert!(matches!(other.verify(&token), Err(VerifyError::UnknownKey)));

        let dot = token.rfind('.').unwrap_or(0);
        let mut sig = URL_SAFE_NO_PAD
            .decode(&token[dot + 1..])
            .map_err(io::Error::other)?;
        sig[10] ^= 1;
        let forged = format!("{}.{}", &token[..dot], URL_SAFE_NO_PAD.encode(sig));
        assert!(matches!(
            keys.verify(&forged),
            Err(VerifyError::BadSignature)
        ));
        assert!(matches!(keys.verify("a.b"), Err(VerifyError::Malformed)));
        assert!(matches!(
            keys.verify("a.b.c.d"),
            Err(VerifyError::Malformed)
        ));
        Ok(())
    }

    #[test]
    fn unverified_claims_of_a_token() -> io::Result<()> {
        let keys = Keys::generate()?;
        let token = keys.sign(&serde_json::json!({"aud": "api://AzureADTokenExchange"}))?;
        let claims = unverified_claims(&token).unwrap_or_default();
        assert_eq!(
            claims.get("aud"),
            Some(&Value::from("api://AzureADTokenExchange"))
        );
        // The claims alone decide; the header and signature are not looked at.
        let claims_part = token.split('.').nth(1).unwrap_or_default();
        assert!(unverified_claims(&format!("x.{claims_part}.")).is_some());
        for garbage in ["nope", "a.b.c", "....", "eyJhbGciOiJub25lIn0.eyJ9.x"] {
            assert!(unverified_claims(garbage).is_none(), "{garbage}");
        }
        Ok(())
    }

    #[test]
    fn oidc_claims_round_trip_with_extras() -> Result<(), serde_json::Error> {
        let mut extra = Map::new();
        extra.insert("x".into(), Value::from("y"));
        let claims = OidcClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            iat: 1,
            nbf: 1,
            exp: 2,
            jti: "j".into(),
            extra,
        };
        let v = serde_json::to_value(&claims)?;
        assert_eq!(v["x"], "y");
        assert_eq!(serde_json::from_value::<OidcClaims>(v)?, claims);
        Ok(())
    }
}
