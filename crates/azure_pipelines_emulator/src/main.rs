//! `azure-pipelines-emulator`: runs the emulator standalone, so other tools (the Azure CLI, other
//! SDKs) can be pointed at it. Prints the environment a pipeline step would have, then serves
//! until Ctrl-C (or SIGTERM).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use azure_pipelines_emulator::{Emulator, EmulatorConfig};
use clap::Parser;

/// Runs a local emulator of the Azure DevOps OIDC endpoint and the Microsoft Entra ID token
/// endpoint on 127.0.0.1 (http and https), prints the environment variables a pipeline step
/// would have, and serves until Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "azure-pipelines-emulator", version)]
struct Args {
    /// HTTP port (0: any free port)
    #[arg(long, value_name = "N", default_value_t = 0)]
    port_http: u16,
    /// HTTPS port (0: any free port)
    #[arg(long, value_name = "N", default_value_t = 0)]
    port_https: u16,
    /// Tenant of the application
    #[arg(long, value_name = "ID")]
    tenant_id: Option<String>,
    /// Another tenant the application exists in (repeatable)
    #[arg(long = "additional-tenant", value_name = "ID")]
    additional_tenants: Vec<String>,
    /// Application (client) ID
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Service connection ID
    #[arg(long, value_name = "ID")]
    service_connection_id: Option<String>,
    /// Service connection name (part of the OIDC subject)
    #[arg(long, value_name = "NAME")]
    service_connection_name: Option<String>,
    /// Azure DevOps organization
    #[arg(long, value_name = "NAME")]
    organization: Option<String>,
    /// Azure DevOps project
    #[arg(long, value_name = "NAME")]
    project: Option<String>,
    /// The job's System.AccessToken (default: random)
    #[arg(long, value_name = "TOKEN")]
    system_access_token: Option<String>,
    /// The managed identity endpoint's secret, IDENTITY_HEADER (default: random)
    #[arg(long, value_name = "SECRET")]
    identity_header: Option<String>,
    /// Also export IDENTITY_ENDPOINT and IDENTITY_HEADER, so that ManagedIdentityCredential
    /// (App Service) gets its tokens from the emulator
    #[arg(long)]
    managed_identity: bool,
    /// Behave exactly like Azure DevOps, which needs X-TFS-FedAuthRedirect only when the token
    /// is refused (by default it is required on every OIDC request)
    #[arg(long)]
    lenient: bool,
    /// Print http:// URLs in the exports instead of https://
    #[arg(long)]
    http: bool,
    /// Where to write the CA certificate (PEM) (default: a file in the temporary directory)
    #[arg(long, value_name = "PATH")]
    ca_out: Option<PathBuf>,
}

impl Args {
    fn config(&self) -> EmulatorConfig {
        let mut c = EmulatorConfig {
            http_port: self.port_http,
            https_port: self.port_https,
            additional_tenants: self.additional_tenants.clone(),
            strict_client_checks: !self.lenient,
            ..EmulatorConfig::default()
        };
        let fields = [
            (&self.tenant_id, &mut c.tenant_id),
            (&self.client_id, &mut c.client_id),
            (&self.service_connection_id, &mut c.service_connection_id),
            (
                &self.service_connection_name,
                &mut c.service_connection_name,
            ),
            (&self.organization, &mut c.organization),
            (&self.project, &mut c.project),
            (&self.system_access_token, &mut c.system_access_token),
            (&self.identity_header, &mut c.managed_identity_header),
        ];
        for (given, field) in fields {
            if let Some(value) = given {
                field.clone_from(value);
            }
        }
        c
    }
}

/// Single-quotes `s` for POSIX shells.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the binary prints once it serves: comments about the emulator, and the exports.
fn exports(emulator: &Emulator, args: &Args, ca: &str) -> String {
    let tls = !args.http;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "# Azure Pipelines emulator\n# http:  {}\n# https: {}\n\
         # OIDC issuer:  {}\n# OIDC subject: {}\n# CA certificate: {ca}\n#\n\
         # Environment of a pipeline step using the service connection:\n",
        emulator.http_url(),
        emulator.https_url(),
        emulator.oidc_issuer(),
        emulator.oidc_subject(),
    );
    for (name, value) in emulator.environment(tls) {
        let _ = writeln!(out, "export {name}={}", shell_quote(&value));
    }
    if args.managed_identity {
        let identity = [
            ("IDENTITY_ENDPOINT", emulator.managed_identity_endpoint(tls)),
            (
                "IDENTITY_HEADER",
                emulator.managed_identity_header().to_owned(),
            ),
        ];
        for (name, value) in identity {
            let _ = writeln!(out, "export {name}={}", shell_quote(&value));
        }
    }
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
        let _ = writeln!(out, "export {name}={}", shell_quote(ca));
    }
    out.push_str("# Serving until Ctrl-C or SIGTERM.\n");
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let emulator = match Emulator::start_with(args.config()).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ca_path = args.ca_out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "azure-pipelines-emulator-ca-{}.pem",
            emulator.https_addr().port()
        ))
    });
    if let Err(e) = std::fs::write(&ca_path, emulator.ca_pem()) {
        eprintln!(
            "error: cannot write the CA certificate to {}: {e}",
            ca_path.display()
        );
        return ExitCode::FAILURE;
    }

    // Before the exports, which tell a supervisor that it may stop the emulator from now on.
    let stopped = match stop_signals() {
        Ok(stopped) => stopped,
        Err(e) => {
            eprintln!("error: cannot listen for Ctrl-C and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = exports(&emulator, &args, &ca_path.display().to_string());
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) must not stop the server.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    drop(stdout);

    stopped.await;
    emulator.shutdown();
    ExitCode::SUCCESS
}

/// Listens for Ctrl-C and SIGTERM (how CI and containers stop a background service); the future
/// resolves on the first of them. Listening starts at once, so that a signal sent before the
/// future is first polled is caught instead of killing the process.
#[cfg(unix)]
fn stop_signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Listens for Ctrl-C; the future resolves on the first one. Listening starts at once, so that
/// one sent before the future is first polled is caught.
#[cfg(windows)]
fn stop_signals() -> std::io::Result<impl Future<Output = ()>> {
    let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
    Ok(async move {
        ctrl_c.recv().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn args(list: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(
            std::iter::once("azure-pipelines-emulator").chain(list.iter().copied()),
        )
    }

    #[test]
    fn the_command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_flags() -> Result<(), clap::Error> {
        let a = args(&[
            "--port-http",
            "8080",
            "--port-https=8443",
            "--tenant-id",
            "t",
            "--additional-tenant",
            "u",
            "--additional-tenant=v",
            "--ca-out",
            "/tmp/ca.pem",
            "--lenient",
            "--identity-header",
            "s3cret",
            "--managed-identity",
        ])?;
        let c = a.config();
        assert_eq!(c.http_port, 8080);
        assert_eq!(c.https_port, 8443);
        assert_eq!(c.tenant_id, "t");
        assert_eq!(c.additional_tenants, vec!["u".to_owned(), "v".to_owned()]);
        assert_eq!(a.ca_out, Some(PathBuf::from("/tmp/ca.pem")));
        assert!(!c.strict_client_checks);
        assert_eq!(c.managed_identity_header, "s3cret");
        assert!(a.managed_identity);
        assert!(!a.http);
        // Unset flags keep the defaults.
        assert_eq!(c.client_id, EmulatorConfig::default().client_id);
        Ok(())
    }

    #[test]
    fn rejects_bad_input() {
        assert!(args(&["--port-http", "x"]).is_err());
        assert!(args(&["--tenant-id"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        let help = args(&["--help"]).map(|_| ()).err().map(|e| e.kind());
        assert_eq!(help, Some(clap::error::ErrorKind::DisplayHelp));
        let version = args(&["--version"]).map(|_| ()).err().map(|e| e.kind());
        assert_eq!(version, Some(clap::error::ErrorKind::DisplayVersion));
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
