//! Quickstart: get an Azure access token the way an Azure Pipelines job does.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Outside a pipeline this starts the emulator of Azure DevOps and Microsoft Entra ID
//! (the `azure_pipelines_emulator` crate) on localhost (HTTPS), so it works on a fresh clone with
//! no Azure account. In a pipeline step (SYSTEM_OIDCREQUESTURI set, AZURESUBSCRIPTION_* and
//! SYSTEM_ACCESSTOKEN mapped) it talks to the real services through
//! `AzurePipelinesCredential::from_env`.

use azure_identity::ClientAssertionCredentialOptions;
use azure_pipelines_credential::{
    AzurePipelinesCredential, AzurePipelinesCredentialOptions, TokenRequestContext,
};
use azure_pipelines_emulator::Emulator;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value};
use std::{error::Error, fmt::Display, process::ExitCode, time::Instant};
use time::OffsetDateTime;

const SCOPE: &str = "https://storage.azure.com/.default";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nquickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    section("Where this runs");
    // The agent sets SYSTEM_OIDCREQUESTURI in every job: its absence means "not in a pipeline".
    let in_pipeline = std::env::var("SYSTEM_OIDCREQUESTURI").is_ok_and(|v| !v.trim().is_empty());
    // Kept in scope to the end: dropping the emulator stops its server.
    let mut emulator = None;
    let credential = if in_pipeline {
        row("mode", "Azure Pipelines (SYSTEM_OIDCREQUESTURI is set)");
        AzurePipelinesCredential::from_env(None)?
    } else {
        let emu = Emulator::start().await?;
        row("mode", "the emulator (SYSTEM_OIDCREQUESTURI is not set)");
        row("Azure DevOps", emu.oidc_request_uri(true));
        row("Entra ID", emu.authority_host(true));
        row(
            "note",
            "in a pipeline step, from_env() talks to the real services",
        );
        // The emulator serves HTTPS with its own CA; its client options trust that CA only.
        let options = AzurePipelinesCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: emu.client_options(),
            },
            authority_host: Some(emu.authority_host(true)),
            oidc_request_uri: Some(emu.oidc_request_uri(true)),
            ..Default::default()
        };
        // The emulator's service connection: what new(tenant, client, connection, token) gets
        // from the AZURESUBSCRIPTION_* variables and SYSTEM_ACCESSTOKEN in a pipeline.
        let c = emu.config();
        let credential = AzurePipelinesCredential::new(
            c.tenant_id.clone(),
            c.client_id.clone(),
            &c.service_connection_id,
            c.system_access_token.clone(),
            Some(options),
        )?;
        emulator = Some(emu);
        credential
    };

    section(&format!("First token for {SCOPE}"));
    // One OIDC request to Azure DevOps, then one token exchange at Entra ID.
    let start = Instant::now();
    let info = credential.get_token_info(&[SCOPE], None).await?;
    row("took", duration(start.elapsed()));
    // The token is a bearer secret: show that it exists, never its value.
    row(
        "token",
        format!(
            "{} characters (secret, not printed)",
            info.token.secret().len()
        ),
    );
    match claims(info.token.secret()) {
        // Decoding without verifying is fine here: these claims are shown, never trusted.
        Some(claims) => {
            for name in ["iss", "aud", "tid", "appid", "oid"] {
                if let Some(value) = claims.get(name).and_then(|v| v.as_str()) {
                    row(name, value);
                }
            }
            for name in ["iat", "nbf", "exp"] {
                let at = claims.get(name).and_then(|v| v.as_i64());
                if let Some(at) = at.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()) {
                    row(name, when(at));
                }
            }
        }
        None => row("claims", "(not a JWT: nothing to decode)"),
    }
    row("expires_on", when(info.expires_on));
    match info.refresh_on {
        Some(at) => row("refresh_on", when(at)),
        None => row(
            "refresh_on",
            "none: refreshed in the background before expiry",
        ),
    }
    row("token_type", &info.token_type);

    section("Second call: served from the cache");
    let start = Instant::now();
    let again = credential.get_token_info(&[SCOPE], None).await?;
    row("took", duration(start.elapsed()));
    let same = again.token.secret() == info.token.secret();
    row("same token", if same { "yes" } else { "no" });
    if let Some(emu) = &emulator {
        // The emulator counts what reached it: a cache hit adds no request.
        let counters = emu.control().counters();
        let (oidc, token) = (counters.oidc_requests, counters.token_requests);
        row(
            "requests",
            format!("{oidc} OIDC + {token} token, the same as after the 1st call"),
        );
        if (oidc, token) != (1, 1) {
            return Err("expected exactly 1 OIDC and 1 token request: the cache was missed".into());
        }
    }

    section("A tenant that is not allowed");
    // Requests may only name the credential's own tenant or additionally_allowed_tenants; the
    // check happens before any network request, and the message says how to allow it.
    let other = TokenRequestContext {
        tenant_id: Some("another-tenant".into()),
        ..Default::default()
    };
    match credential
        .get_token_info(&[SCOPE], Some(other.into()))
        .await
    {
        Ok(_) => return Err("a token for another-tenant was issued, but it is not allowed".into()),
        Err(e) => {
            for line in e.to_string().lines() {
                println!("  {line}");
            }
        }
    }

    // Stops background refreshes and releases connections before the emulator goes away.
    credential.close().await;
    println!("\nDone.");
    Ok(())
}

/// Prints a section heading.
fn section(title: &str) {
    println!("\n== {title} ==");
}

/// Prints one aligned key/value line.
fn row(key: &str, value: impl Display) {
    println!("  {key:<15} {value}");
}

/// The claims of a JWT (its middle part, base64url-encoded JSON), read without verifying it;
/// `None` when the token is not a JWT.
fn claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&json).ok()
}

/// A UTC time with how far it is from now, e.g. `2025-01-01 10:00:00 UTC (in 59 min)`.
fn when(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    // The crate reads the clock through its own seam; an example just reads it.
    #[allow(clippy::disallowed_methods)]
    let now = OffsetDateTime::now_utc();
    let minutes = (at - now).whole_seconds() as f64 / 60.0;
    let relative = if minutes.abs() < 1.0 {
        "now".to_owned()
    } else if minutes > 0.0 {
        format!("in {minutes:.0} min")
    } else {
        format!("{:.0} min ago", -minutes)
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC ({relative})",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A short duration in the unit that reads best.
fn duration(d: std::time::Duration) -> String {
    match d.as_nanos() {
        ns if ns < 1_000 => format!("{ns} ns"),
        ns if ns < 1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        ns => format!("{:.1} ms", ns as f64 / 1e6),
    }
}
