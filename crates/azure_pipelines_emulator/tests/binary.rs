//! The `azure-pipelines-emulator` binary.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;

const EXE: &str = env!("CARGO_BIN_EXE_azure-pipelines-emulator");

/// The binary, serving, and the variables it exported. Dropping it stops it.
struct Running {
    child: Child,
    exports: BTreeMap<String, String>,
}

impl Running {
    /// Starts the binary with `args` and reads its output up to the line that says it serves.
    fn start<I, S>(args: I) -> Result<Running, Box<dyn std::error::Error>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(EXE)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // From here on, `Running`'s drop stops the child whatever happens.
        let mut running = Running {
            child,
            exports: BTreeMap::new(),
        };
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            if line.starts_with("# Serving") {
                break;
            }
            if let Some((name, value)) =
                line.strip_prefix("export ").and_then(|l| l.split_once('='))
            {
                running
                    .exports
                    .insert(name.to_owned(), value.trim_matches('\'').to_owned());
            }
        }
        Ok(running)
    }

    fn export(&self, name: &str) -> String {
        self.exports.get(name).cloned().unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Our own child, stopped by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA path of this test process's own, removed when dropped.
struct TempCa(PathBuf);

impl TempCa {
    fn new(test: &str) -> TempCa {
        TempCa(std::env::temp_dir().join(format!(
            "emulator-test-ca-{test}-{}.pem",
            std::process::id()
        )))
    }
}

impl Drop for TempCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[test]
fn standalone_binary_prints_a_usable_environment() -> TestResult {
    let ca = TempCa::new("environment");
    let running = Running::start([
        OsStr::new("--tenant-id"),
        OsStr::new("tenant-from-cli"),
        OsStr::new("--ca-out"),
        ca.0.as_os_str(),
    ])?;
    let exports = &running.exports;
    assert_eq!(
        exports
            .get("AZURESUBSCRIPTION_TENANT_ID")
            .map(String::as_str),
        Some("tenant-from-cli")
    );
    for name in [
        "SYSTEM_OIDCREQUESTURI",
        "SYSTEM_ACCESSTOKEN",
        "AZURESUBSCRIPTION_CLIENT_ID",
        "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
        "AZURE_AUTHORITY_HOST",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        assert!(
            exports.contains_key(name),
            "{name} missing from {exports:?}"
        );
    }
    // Only on request: it changes which credential DefaultAzureCredential picks.
    assert!(!exports.contains_key("IDENTITY_ENDPOINT"));
    let pem = std::fs::read_to_string(&ca.0)?;
    assert!(pem.contains("BEGIN CERTIFICATE"));
    let uri = running.export("SYSTEM_OIDCREQUESTURI");
    let token = running.export("SYSTEM_ACCESSTOKEN");
    let id = running.export("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID");
    let status = runtime()?.block_on(async {
        let port = url::Url::parse(&uri)?.port().ok_or("no port")?;
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes())?])
            .resolve(
                "localhost",
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .no_proxy()
            .build()?;
        let resp = client
            .post(format!("{uri}?api-version=7.1&serviceConnectionId={id}"))
            .bearer_auth(token)
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .header("Content-Length", "0")
            .send()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(resp.status().as_u16())
    })?;
    assert_eq!(status, 200);
    Ok(())
}

#[test]
fn exports_the_managed_identity_endpoint_on_request() -> TestResult {
    let ca = TempCa::new("managed-identity");
    let running = Running::start([
        OsStr::new("--managed-identity"),
        OsStr::new("--identity-header"),
        OsStr::new("s3cret"),
        OsStr::new("--http"),
        OsStr::new("--ca-out"),
        ca.0.as_os_str(),
    ])?;
    let endpoint = running.export("IDENTITY_ENDPOINT");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(endpoint.ends_with("/msi/token"), "{endpoint}");
    assert_eq!(running.export("IDENTITY_HEADER"), "s3cret");
    // `--http` makes every URL a plain one.
    assert!(
        running
            .export("AZURE_AUTHORITY_HOST")
            .starts_with("http://127.0.0.1:")
    );
    let json = runtime()?.block_on(async {
        let reply = send(
            plain()
                .get(with_query(
                    &endpoint,
                    &[
                        ("api-version", "2019-08-01"),
                        ("resource", "https://vault.azure.net"),
                    ],
                ))
                .header("X-IDENTITY-HEADER", "s3cret"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    });
    assert_eq!(json["resource"], "https://vault.azure.net");
    assert_eq!(json["token_type"], "Bearer");
    Ok(())
}

#[test]
fn version_and_help() -> TestResult {
    let version = Command::new(EXE).arg("--version").output()?;
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8(version.stdout)?,
        format!("azure-pipelines-emulator {}\n", env!("CARGO_PKG_VERSION"))
    );

    let help = Command::new(EXE).arg("--help").output()?;
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout)?;
    assert!(
        help.contains("Usage: azure-pipelines-emulator [OPTIONS]"),
        "{help}"
    );
    for flag in [
        "--port-http",
        "--port-https",
        "--tenant-id",
        "--additional-tenant",
        "--client-id",
        "--service-connection-id",
        "--service-connection-name",
        "--organization",
        "--project",
        "--system-access-token",
        "--identity-header",
        "--managed-identity",
        "--lenient",
        "--http",
        "--ca-out",
        "--version",
    ] {
        assert!(help.contains(flag), "{flag} missing from {help}");
    }

    let wrong = Command::new(EXE).arg("--bogus").output()?;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8(wrong.stderr)?.contains("--bogus"));
    Ok(())
}

#[cfg(unix)]
#[test]
fn stops_cleanly_on_sigterm() -> TestResult {
    let ca = TempCa::new("sigterm");
    let mut running = Running::start([OsStr::new("--ca-out"), ca.0.as_os_str()])?;
    // Our own child, by its id.
    let sent = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()?;
    assert!(sent.success());
    let status = running.child.wait()?;
    assert!(status.success(), "{status}");
    Ok(())
}
