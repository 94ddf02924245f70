//! What the property tests beside the parsers share: their configuration and the inputs they
//! draw (token-like secrets, any JSON, JWTs around a payload).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use proptest::prelude::*;
use serde_json::Value;

/// Cases per property: every property of the crate runs in a few seconds on 2 cores.
const CASES: u32 = 256;

pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Regressions are not persisted to files: a failure prints its minimal input, which
        // becomes a table-driven unit test next to the parser.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A token-like secret: long enough never to occur in a fixed message by chance.
pub(crate) fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{24,64}"
}

/// Any JSON value, a few levels deep.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Finite floats that survive a JSON round trip unchanged (serde_json's default float
        // parsing is not exact for every f64, which is no property of the credential).
        any::<f64>().prop_filter_map("finite, round-trips", |x| {
            let n = serde_json::Number::from_f64(x)?;
            (serde_json::from_str::<f64>(&n.to_string()).ok()? == x).then_some(Value::Number(n))
        }),
        "\\PC{0,16}".prop_map(Value::from),
        "-?[0-9]{1,12}(\\.[0-9]{1,3})?".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A compact JWT with `payload` and `signature` (unsigned: the credential never verifies).
pub(crate) fn jwt(payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}
