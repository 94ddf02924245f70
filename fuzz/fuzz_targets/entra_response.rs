//! Microsoft Entra ID's answers: a token response and an error response. See
//! `azure_pipelines_credential::fuzzing::entra_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| azure_pipelines_credential::fuzzing::entra_response(data)
);
