//! Tenant resolution and the URLs built from user input. See
//! `azure_pipelines_credential::fuzzing::tenant_resolution`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| azure_pipelines_credential::fuzzing::tenant_resolution(data)
);
