//! The persistent token cache as separate processes see it: a new credential per "process" on
//! one cache file, and the credential's debug events, which name the file on each read and
//! write.

use super::{capture::Captured, emulator::credential_with};
use azure_pipelines_credential::{
    AzurePipelinesCredential, AzurePipelinesCredentialOptions, PersistentCacheOptions,
};
use azure_pipelines_emulator::Emulator;
use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

/// The credential's debug events of this test binary, captured from the first credential on.
pub fn events() -> &'static Captured {
    static EVENTS: OnceLock<Captured> = OnceLock::new();
    EVENTS.get_or_init(|| {
        Captured::install("azure_pipelines_credential=debug").expect("the only subscriber")
    })
}

/// A new credential (an empty in-memory cache, like a new process) using `file`.
pub fn credential(emulator: &Emulator, file: &Path) -> Arc<AzurePipelinesCredential> {
    events();
    let options = AzurePipelinesCredentialOptions {
        persistent_cache: Some(PersistentCacheOptions {
            path: Some(file.to_owned()),
            ..Default::default()
        }),
        ..super::emulator::options(emulator)
    };
    credential_with(emulator, options)
}
