//! The `claims` parameter of a token request, and the CAE capability merged into it.
//!
//! With CAE the request announces the `CP1` client capability through
//! `{"access_token":{"xms_cc":{"values":["CP1"]}}}`, merged into whatever claims a resource's
//! challenge asked for.

use serde_json::{Map, Value, json};

/// The `claims` value to send, if any.
///
/// Claims that are not a JSON object are refused with a message saying how to fix them; the
/// claims text is not a secret, but it is not echoed either, as it can be long.
pub(crate) fn request_claims(
    claims: Option<&str>,
    enable_cae: bool,
) -> Result<Option<String>, String> {
    let parsed = match claims.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            Ok(_) | Err(_) => {
                return Err(
                    "The claims are not a JSON object. Pass the claims from the \
                            resource's WWW-Authenticate challenge, base64-decoded, \
                            for example {\"access_token\":{\"nbf\":{\"essential\":true}}}."
                        .to_owned(),
                );
            }
        },
    };
    if !enable_cae {
        return Ok(parsed.map(|_| claims.unwrap_or_default().trim().to_owned()));
    }
    let mut root = parsed.unwrap_or_default();
    let access_token = root
        .entry("access_token")
        .or_insert_with(|| Value::Object(Map::new()));
    if !access_token.is_object() {
        *access_token = Value::Object(Map::new());
    }
    let Value::Object(access_token) = access_token else {
        unreachable!("access_token was just made an object")
    };
    let xms_cc = access_token
        .entry("xms_cc")
        .or_insert_with(|| json!({ "values": [] }));
    let values = match xms_cc.get_mut("values").and_then(Value::as_array_mut) {
        Some(values) => values,
        None => {
            *xms_cc = json!({ "values": [] });
            xms_cc["values"]
                .as_array_mut()
                .expect("values was just set to an array")
        }
    };
    if !values.iter().any(|v| v == "CP1") {
        values.push(json!("CP1"));
    }
    Ok(Some(Value::Object(root).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_cae_capability() {
        let cases: &[(Option<&str>, bool, Option<Value>)] = &[
            (None, false, None),
            (Some("  "), false, None),
            (Some(r#"{"a":1}"#), false, Some(json!({"a":1}))),
            (
                None,
                true,
                Some(json!({"access_token":{"xms_cc":{"values":["CP1"]}}})),
            ),
            (
                Some(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#),
                true,
                Some(
                    json!({"access_token":{"nbf":{"essential":true,"value":"1"},"xms_cc":{"values":["CP1"]}}}),
                ),
            ),
            (
                Some(r#"{"access_token":{"xms_cc":{"values":["CP1","CP2"]}}}"#),
                true,
                Some(json!({"access_token":{"xms_cc":{"values":["CP1","CP2"]}}})),
            ),
            (
                Some(r#"{"access_token":{"xms_cc":{"values":["CP2"]}}}"#),
                true,
                Some(json!({"access_token":{"xms_cc":{"values":["CP2","CP1"]}}})),
            ),
            (
                Some(r#"{"access_token":"odd","id_token":{}}"#),
                true,
                Some(json!({"access_token":{"xms_cc":{"values":["CP1"]}},"id_token":{}})),
            ),
            (
                Some(r#"{"access_token":{"xms_cc":7}}"#),
                true,
                Some(json!({"access_token":{"xms_cc":{"values":["CP1"]}}})),
            ),
        ];
        for (claims, cae, expected) in cases {
            let out = request_claims(*claims, *cae).unwrap();
            let out: Option<Value> = out.map(|s| serde_json::from_str(&s).unwrap());
            assert_eq!(&out, expected, "{claims:?} cae={cae}");
        }
    }

    #[test]
    fn refuses_claims_that_are_not_an_object() {
        for claims in ["not json", "[1]", "\"x\"", "{\"a\":", "null"] {
            for cae in [false, true] {
                let e = request_claims(Some(claims), cae).unwrap_err();
                assert!(e.contains("not a JSON object"), "{claims}");
            }
        }
    }

    #[test]
    fn passes_claims_through_unchanged_without_cae() {
        let raw = r#"{"access_token": {"nbf": {"essential": true}}}"#;
        assert_eq!(
            request_claims(Some(raw), false).unwrap().as_deref(),
            Some(raw)
        );
    }
}
