//! Decoding a JWT's claims without verifying it: never panics, and whatever `iss`, `sub`,
//! `aud` and `exp` the credential reads are the ones in the payload.
#![no_main]

use azure_pipelines_credential::{fuzzing as f, jwt::decode_claims};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let decoded = decode_claims(&text);
    let (iss, sub, aud, exp) = f::federation_claims(&text);
    match decoded {
        None => assert!(iss.is_none() && sub.is_none() && aud.is_none() && exp.is_none()),
        Some(claims) => {
            if let Some(serde_json::Value::String(s)) = claims.get("iss") {
                assert_eq!(iss.as_deref(), Some(s.as_str()));
            }
            assert_eq!(exp, claims.get("exp").and_then(serde_json::Value::as_i64));
            let _ = (sub, aud);
        }
    }
});
