//! The `claims` parameter: any text either is refused or becomes claims to send; with CAE the
//! result is a JSON object announcing CP1, and merging again keeps it so.
#![no_main]

use azure_pipelines_credential::fuzzing as f;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(sent)) = f::request_claims(Some(text), false) {
        assert_eq!(sent, text.trim());
    }
    match f::request_claims(Some(text), true) {
        Ok(Some(merged)) => {
            let value: Value = serde_json::from_str(&merged).expect("merged claims are JSON");
            let values = value["access_token"]["xms_cc"]["values"]
                .as_array()
                .expect("xms_cc.values is an array");
            // At least once: CP1 is added when missing, and duplicates the caller sent are kept.
            assert!(values.iter().any(|v| v == "CP1"));
            // Merging again keeps the claims and still announces CP1. (Not compared
            // value for value: numbers beyond i64/u64 pass through f64, and serde_json's float
            // parsing may move their last digit on each round; found by this target.)
            let again = f::request_claims(Some(&merged), true)
                .expect("merged claims are accepted")
                .expect("and kept");
            let again: Value = serde_json::from_str(&again).expect("JSON");
            let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(keys(&again), keys(&value));
            assert_eq!(
                again["access_token"]["xms_cc"],
                value["access_token"]["xms_cc"]
            );
        }
        Ok(None) => panic!("CAE always sends claims"),
        Err(e) => assert!(e.contains("not a JSON object")),
    }
});
