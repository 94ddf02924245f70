//! Decoding a JWT's claims without verifying it. See
//! `azure_pipelines_credential::fuzzing::jwt_claims`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| azure_pipelines_credential::fuzzing::jwt_claims(data));
