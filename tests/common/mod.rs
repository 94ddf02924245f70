//! What the integration tests share: the identities and scopes they use, the httpmock fixture
//! ([`mock`]), the emulator credential ([`emulator`]), the fault tables ([`faults`]), token
//! builders ([`jwt`]), per-request options ([`requests`]), error checks ([`errors`]), the
//! tracing capture ([`capture`]), credentials on a persistent cache file ([`persistent`]) and the
//! environment variables that tests clear ([`env`]).
//!
//! Tests that move the credential's clock live in the crate (`src/tests/`): its clock is
//! crate-private.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

pub mod capture;
pub mod emulator;
pub mod env;
pub mod errors;
pub mod faults;
pub mod jwt;
pub mod mock;
pub mod persistent;
pub mod requests;
pub mod spans;

/// The tenant of the credentials under test (the emulator's default too).
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Another tenant, which requests may name when it is allowed.
pub const OTHER_TENANT: &str = "c0ffee00-1111-4222-8333-444455556666";
/// A tenant given as a domain.
pub const THIRD_TENANT: &str = "contoso.onmicrosoft.com";
pub const CLIENT_ID: &str = "0b8d8f12-5a3e-4c1e-9f0a-2f4f5e6d7c8b";
pub const CONNECTION_ID: &str = "3d5c2f6a-8b9e-4f1a-a2b3-c4d5e6f70819";
/// The job's System.AccessToken, as the httpmock tests hand it to the credential.
pub const SYSTEM_TOKEN: &str = "sysAT.eyJ0ZXN0IjoidHJ1ZSJ9.Zk9xR3pLd1ZtN0hq";

pub const STORAGE: &str = "https://storage.azure.com/.default";
pub const VAULT: &str = "https://vault.azure.net/.default";

/// Claims from a resource's challenge.
pub const CHALLENGE_CLAIMS: &str =
    r#"{"access_token":{"nbf":{"essential":true,"value":"1767225600"}}}"#;

/// The start of every error of a credential that failed.
pub const FAILED: &str = "AzurePipelinesCredential authentication failed. ";
/// The start of every error of a credential that cannot work here.
pub const UNAVAILABLE: &str = "AzurePipelinesCredential is unavailable: ";

/// The real time, as the credential under test reads it (to the millisecond).
pub fn now() -> time::OffsetDateTime {
    // The credential reads the system clock; so do the tests that check what it computed.
    #[allow(clippy::disallowed_methods)]
    time::OffsetDateTime::now_utc()
}
