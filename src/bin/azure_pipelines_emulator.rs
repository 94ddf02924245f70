//! `azure-pipelines-emulator`: runs the Azure DevOps OIDC + Entra ID token
//! endpoint emulator standalone, so other tools (the Azure CLI, other SDKs) can
//! be pointed at it. Prints the environment a pipeline step would have, then
//! serves until Ctrl-C (or SIGTERM).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use azure_pipelines_credential::emulator::{Emulator, EmulatorConfig};

const USAGE: &str = "\
Usage: azure-pipelines-emulator [OPTIONS]

Runs a local emulator of the Azure DevOps OIDC endpoint and the Microsoft Entra ID
token endpoint on 127.0.0.1 (http and https), prints the environment variables a
pipeline step would have, and serves until Ctrl-C or SIGTERM.

Options:
  --port-http N                  HTTP port (default 0: any free port)
  --port-https N                 HTTPS port (default 0: any free port)
  --tenant-id ID                 Tenant of the application
  --additional-tenant ID         Another tenant the application exists in (repeatable)
  --client-id ID                 Application (client) ID
  --service-connection-id ID     Service connection ID
  --service-connection-name NAME Service connection name (part of the OIDC subject)
  --organization NAME            Azure DevOps organization
  --project NAME                 Azure DevOps project
  --system-access-token TOKEN    The job's System.AccessToken (default: random)
  --lenient                      Behave exactly like Azure DevOps, which needs
                                 X-TFS-FedAuthRedirect only when the token is refused
                                 (by default it is required on every OIDC request)
  --http                         Print http:// URLs in the exports instead of https://
  --ca-out PATH                  Where to write the CA certificate (PEM)
                                 (default: a file in the temporary directory)
  -h, --help                     Print this help
";

struct Args {
    config: EmulatorConfig,
    ca_out: Option<PathBuf>,
    tls: bool,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        config: EmulatorConfig::default(),
        ca_out: None,
        tls: true,
    };
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let port = |s: String, name: &str| -> Result<u16, String> {
            s.parse()
                .map_err(|_| format!("{name}: '{s}' is not a port number"))
        };
        let c = &mut parsed.config;
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port-http" => c.http_port = port(value(&flag)?, &flag)?,
            "--port-https" => c.https_port = port(value(&flag)?, &flag)?,
            "--tenant-id" => c.tenant_id = value(&flag)?,
            "--additional-tenant" => c.additional_tenants.push(value(&flag)?),
            "--client-id" => c.client_id = value(&flag)?,
            "--service-connection-id" => c.service_connection_id = value(&flag)?,
            "--service-connection-name" => c.service_connection_name = value(&flag)?,
            "--organization" => c.organization = value(&flag)?,
            "--project" => c.project = value(&flag)?,
            "--system-access-token" => c.system_access_token = value(&flag)?,
            "--ca-out" => parsed.ca_out = Some(PathBuf::from(value(&flag)?)),
            "--lenient" => c.strict_client_checks = false,
            "--http" => parsed.tls = false,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Some(parsed))
}

/// Single-quotes `s` for POSIX shells.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let emulator = match Emulator::start_with(args.config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ca_path = args.ca_out.unwrap_or_else(|| {
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
    let ca = ca_path.display().to_string();

    let mut out = String::new();
    out.push_str(&format!(
        "# Azure Pipelines emulator\n# http:  {}\n# https: {}\n",
        emulator.http_url(),
        emulator.https_url()
    ));
    out.push_str(&format!(
        "# OIDC issuer:  {}\n# OIDC subject: {}\n# CA certificate: {ca}\n#\n",
        emulator.oidc_issuer(),
        emulator.oidc_subject()
    ));
    out.push_str("# Environment of a pipeline step using the service connection:\n");
    for (name, value) in emulator.environment(args.tls) {
        out.push_str(&format!("export {name}={}\n", shell_quote(&value)));
    }
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
        out.push_str(&format!("export {name}={}\n", shell_quote(&ca)));
    }
    out.push_str("# Serving until Ctrl-C or SIGTERM.\n");
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) must not stop the server.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    drop(stdout);

    if let Err(e) = stopped().await {
        eprintln!("error: cannot wait for Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    emulator.shutdown();
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one (how CI and
/// containers stop a background service).
async fn stopped() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>, String> {
        parse(list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_flags() {
        let Ok(Some(a)) = args(&[
            "--port-http",
            "8080",
            "--port-https=8443",
            "--tenant-id",
            "t",
            "--additional-tenant",
            "u",
            "--ca-out",
            "/tmp/ca.pem",
            "--lenient",
        ]) else {
            panic!("flags were rejected");
        };
        assert_eq!(a.config.http_port, 8080);
        assert_eq!(a.config.https_port, 8443);
        assert_eq!(a.config.tenant_id, "t");
        assert_eq!(a.config.additional_tenants, vec!["u".to_owned()]);
        assert_eq!(a.ca_out, Some(PathBuf::from("/tmp/ca.pem")));
        assert!(!a.config.strict_client_checks);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(args(&["--port-http", "x"]).is_err());
        assert!(args(&["--tenant-id"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(matches!(args(&["--help"]), Ok(None)));
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
