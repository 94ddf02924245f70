//! Everything a test binary logs, formatted as text, for tests that look for (or must not find)
//! something in the log.

use std::sync::{Arc, Mutex, PoisonError};
use tracing_subscriber::{EnvFilter, fmt::format::FmtSpan, util::SubscriberInitExt as _};

/// A buffer the log is written to; clones share it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs the global subscriber of this test binary: every event and every span as it
    /// closes (with its fields, such as the `get_token` span's `outcome`) that `filter` lets
    /// through, formatted without colours. Fails when the binary already has one.
    pub fn install(filter: &str) -> Result<Self, tracing_subscriber::util::TryInitError> {
        let captured = Self::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_span_events(FmtSpan::CLOSE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
            .try_init()?;
        Ok(captured)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// The lines logged so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}
