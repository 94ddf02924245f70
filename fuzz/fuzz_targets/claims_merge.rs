//! The `claims` parameter, with and without CAE. See
//! `azure_pipelines_credential::fuzzing::claims_merge`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| azure_pipelines_credential::fuzzing::claims_merge(data));
