//! `azure-pipelines-token`: prints a Microsoft Entra access token for the service connection of
//! an Azure Pipelines step, for scripts and tools that have no Azure SDK support (curl,
//! terraform, ...).
//!
//! Thin wrapper over [`AzurePipelinesCredential`]: parse the command line, build the credential
//! options, call `get_token_info` once, print the token in the requested shape. See `--help`.

use azure_core::credentials::TokenRequestOptions;
use azure_pipelines_credential::{
    AccessTokenInfo, AzurePipelinesCredential, AzurePipelinesCredentialOptions,
    PersistentCacheOptions, TokenRequestContext,
    emulator::{Emulator, EmulatorConfig},
    is_unavailable, jwt,
};
use clap::Parser;
use serde::Serialize;
use std::{
    io::{self, Write},
    process::ExitCode,
    sync::Arc,
};
use time::{OffsetDateTime, UtcOffset};

const NAME: &str = "azure-pipelines-token";
const DEFAULT_SCOPE: &str = "https://management.azure.com/.default";

const LONG_ABOUT: &str = "\
Prints a Microsoft Entra access token for the Azure service connection of an Azure Pipelines \
step, using workload identity federation (no secret stored anywhere).

Use it in pipeline scripts that need a token for tools without Azure SDK support: curl, \
terraform, custom scripts. It reads the same inputs as AzurePipelinesCredential::from_env: the \
AZURESUBSCRIPTION_* variables that the AzureCLI@2 and AzurePowerShell@5 tasks export for their \
service connection, SYSTEM_OIDCREQUESTURI (set by the agent) and SYSTEM_ACCESSTOKEN (which the \
step must map, see the example below).

SYSTEM_ACCESSTOKEN is read only from the environment, never from a flag: command-line \
arguments are visible to every process on the machine (ps, /proc), environment variables are \
not.";

const AFTER_HELP: &str = "\
EXAMPLE (pipeline YAML):
  - task: AzureCLI@2   # or any step that has the AZURESUBSCRIPTION_* variables
    inputs:
      azureSubscription: my-service-connection
      scriptType: bash
      scriptLocation: inlineScript
      inlineScript: |
        TOKEN=$(azure-pipelines-token --scope https://storage.azure.com/.default --output token)
        curl -H \"Authorization: Bearer $TOKEN\" ...
    env:
      SYSTEM_ACCESSTOKEN: $(System.AccessToken)

  Or hand the token to later steps as a secret variable, masked in logs:
        azure-pipelines-token --output vso=ARM_ACCESS_TOKEN

  Try it locally without a pipeline:
        azure-pipelines-token --emulator

ENVIRONMENT:
  AZURESUBSCRIPTION_TENANT_ID              tenant of the service connection (--tenant-id)
  AZURESUBSCRIPTION_CLIENT_ID              client ID of its service principal (--client-id)
  AZURESUBSCRIPTION_SERVICE_CONNECTION_ID  service connection ID (--service-connection-id)
  SYSTEM_ACCESSTOKEN                       the job's $(System.AccessToken); environment only
  SYSTEM_OIDCREQUESTURI                    set by the agent in every job
  AZURE_AUTHORITY_HOST                     Entra authority host (--authority-host)
  AGENT_TEMPDIRECTORY                      set by the agent; holds the persistent token cache

PERSISTENT TOKEN CACHE:
  Inside a pipeline (AGENT_TEMPDIRECTORY and SYSTEM_OIDCREQUESTURI set) tokens are shared by the
  job's processes through $AGENT_TEMPDIRECTORY/azure-pipelines-credential/tokens.bin, encrypted
  with a key derived from SYSTEM_ACCESSTOKEN, mode 0600 in a 0700 folder; the agent deletes it
  after the job. A later call for the same scopes makes no network request while the token has
  more than about 8 minutes left. --no-persistent-cache turns it off; --emulator never uses it.

EXIT CODES:
  0  success: the token is on standard output
  1  other error: the emulator did not start, standard output could not be written
  2  usage error (unknown flag, bad --output)
  3  unavailable: not in an Azure Pipelines step, or inputs missing
  4  authentication failed (the message on standard error says why)

Errors go to standard error; the token never does.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = NAME, version, about = "Prints an access token for the Azure service connection \
    of an Azure Pipelines step (workload identity federation).", long_about = LONG_ABOUT,
    after_help = AFTER_HELP)]
struct Args {
    /// Tenant (directory) ID of the service connection.
    #[arg(
        long,
        value_name = "ID",
        env = "AZURESUBSCRIPTION_TENANT_ID",
        hide_env_values = true
    )]
    tenant_id: Option<String>,

    /// Application (client) ID of the service connection's service principal.
    #[arg(
        long,
        value_name = "ID",
        env = "AZURESUBSCRIPTION_CLIENT_ID",
        hide_env_values = true
    )]
    client_id: Option<String>,

    /// ID of the service connection (a GUID, not its name).
    #[arg(
        long,
        value_name = "ID",
        env = "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
        hide_env_values = true
    )]
    service_connection_id: Option<String>,

    /// Scope to request; repeat for several scopes.
    #[arg(long = "scope", value_name = "SCOPE", default_value = DEFAULT_SCOPE)]
    scopes: Vec<String>,

    /// Tenant to request the token from, when it is not the service connection's own. It is
    /// also added to the credential's allowed tenants, so the request is allowed.
    #[arg(long, value_name = "ID")]
    tenant: Option<String>,

    /// Claims to require in the token, such as a resource's claims challenge (a JSON object).
    #[arg(long, value_name = "JSON")]
    claims: Option<String>,

    /// Request a Continuous Access Evaluation (CAE) token.
    #[arg(long)]
    cae: bool,

    /// Microsoft Entra authority host, e.g. `https://login.microsoftonline.us`. Default:
    /// AZURE_AUTHORITY_HOST, else `https://login.microsoftonline.com`.
    #[arg(long, value_name = "URL")]
    authority_host: Option<String>,

    /// Start the built-in emulator in this process and get the token from it. The
    /// AZURESUBSCRIPTION_* / SYSTEM_* inputs and --authority-host are ignored then.
    #[arg(long)]
    emulator: bool,

    /// Share tokens with the other processes of this pipeline job through an encrypted file in
    /// AGENT_TEMPDIRECTORY (the default inside a pipeline; needs AGENT_TEMPDIRECTORY).
    #[arg(long, conflicts_with = "no_persistent_cache")]
    persistent_cache: bool,

    /// Do not use the persistent token cache, even inside a pipeline.
    #[arg(long)]
    no_persistent_cache: bool,

    /// Output: `json` (like `az account get-access-token`), `token` (the bare token), or
    /// `vso=NAME` (a ##vso[task.setvariable] command setting secret variable NAME).
    #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = parse_output)]
    output: Output,
}

/// What to print on success.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Output {
    /// The JSON object of `az account get-access-token`.
    Json,
    /// The bare token and a newline.
    Token,
    /// A logging command that sets the named secret pipeline variable.
    Vso(String),
}

/// Parses `--output`; a failure is a usage error (exit 2).
fn parse_output(value: &str) -> Result<Output, String> {
    match value {
        "json" => Ok(Output::Json),
        "token" => Ok(Output::Token),
        _ => match value.strip_prefix("vso=") {
            Some(name)
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) =>
            {
                Ok(Output::Vso(name.to_owned()))
            }
            Some(_) => Err(
                "the variable name in vso=NAME must be non-empty and contain only \
                            letters, digits, '_', '.' and '-'"
                    .to_owned(),
            ),
            None => Err("expected json, token or vso=NAME".to_owned()),
        },
    }
}

/// The JSON output, in the shape (and key order) of `az account get-access-token`.
#[derive(Serialize)]
struct JsonOutput<'a> {
    /// The token itself.
    #[serde(rename = "accessToken")]
    access_token: &'a str,
    /// Local time, formatted like az: `YYYY-MM-DD HH:MM:SS.ffffff`.
    #[serde(rename = "expiresOn")]
    expires_on_local: String,
    /// Unix seconds.
    expires_on: i64,
    /// The tenant that issued the token.
    tenant: &'a str,
    /// `Bearer`.
    #[serde(rename = "tokenType")]
    token_type: &'a str,
}

/// Why the tool failed, mapped to its exit code.
enum Failure {
    /// Inputs are missing: not a pipeline step with a service connection (exit 3).
    Missing(String),
    /// The credential failed; exit 3 when unavailable, else 4.
    Credential(azure_core::Error),
    /// Anything else: the emulator did not start, standard output could not be written (exit 1).
    Io(String),
}

impl From<azure_core::Error> for Failure {
    fn from(e: azure_core::Error) -> Self {
        Failure::Credential(e)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // The local offset can only be read while the process has a single thread (time's guard
    // against a libc data race), so read it before anything spawns one. UTC if unknown.
    let local_offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    let args = Args::parse(); // usage errors exit 2 here
    match run(args, local_offset).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (code, message) = match failure {
                Failure::Missing(m) => (3, m),
                Failure::Credential(e) => (if is_unavailable(&e) { 3 } else { 4 }, e.to_string()),
                Failure::Io(m) => (1, m),
            };
            eprintln!("{NAME}: {message}");
            ExitCode::from(code)
        }
    }
}

/// Gets one token as `args` asks and prints it.
async fn run(args: Args, local_offset: UtcOffset) -> Result<(), Failure> {
    let mut options = AzurePipelinesCredentialOptions {
        additionally_allowed_tenants: args.tenant.iter().cloned().collect(),
        persistent_cache: persistent_cache(&args, |name| std::env::var(name).ok()),
        ..Default::default()
    };
    // `_emulator` stays alive until the token is printed: dropping it stops the server.
    let (credential, tenant_id, _emulator) = if args.emulator {
        emulator_credential(&args, options).await?
    } else {
        options.authority_host = args.authority_host.clone();
        let (credential, tenant_id) = credential_from_inputs(&args, options)?;
        (credential, tenant_id, None)
    };

    let scopes: Vec<&str> = args.scopes.iter().map(String::as_str).collect();
    let request: TokenRequestOptions<'static> = TokenRequestContext {
        claims: args.claims.clone(),
        tenant_id: args.tenant.clone(),
        enable_cae: args.cae,
    }
    .into();
    let info = credential.get_token_info(&scopes, Some(request)).await;
    credential.close().await;
    let info = info?;

    // The tenant that issued the token (its `tid`), else the one it was requested from.
    let claims = jwt::decode_claims(info.token.secret());
    let tenant = claims
        .as_ref()
        .and_then(|c| c.get("tid"))
        .and_then(|v| v.as_str())
        .or(args.tenant.as_deref())
        .unwrap_or(&tenant_id);
    print(&args.output, &info, tenant, local_offset)
        .map_err(|e| Failure::Io(format!("could not write to standard output: {e}")))
}

/// Whether to use the persistent token cache: asked for with `--persistent-cache`, or by default
/// inside a pipeline (measured: a clear win, see the README); never with `--emulator`, whose
/// tokens and System.AccessToken live only as long as the process, nor with
/// `--no-persistent-cache`.
fn persistent_cache(
    args: &Args,
    env: impl Fn(&str) -> Option<String>,
) -> Option<PersistentCacheOptions> {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    if args.emulator || args.no_persistent_cache {
        return None;
    }
    let has_location = set("AGENT_TEMPDIRECTORY");
    if args.persistent_cache && !has_location {
        eprintln!(
            "{NAME}: warning: --persistent-cache has no effect: AGENT_TEMPDIRECTORY, the job's \
             temp folder where the cache lives, is not set"
        );
        return None;
    }
    (args.persistent_cache || (has_location && set("SYSTEM_OIDCREQUESTURI")))
        .then(PersistentCacheOptions::default)
}

/// Starts the built-in emulator (https) and builds a credential for its service connection.
async fn emulator_credential(
    args: &Args,
    mut options: AzurePipelinesCredentialOptions,
) -> Result<(Arc<AzurePipelinesCredential>, String, Option<Emulator>), Failure> {
    let emulator = Emulator::start_with(EmulatorConfig {
        // The emulator must know the requested tenant for a token request there to succeed.
        additional_tenants: args.tenant.iter().cloned().collect(),
        ..Default::default()
    })
    .await
    .map_err(|e| Failure::Io(format!("could not start the emulator: {e}")))?;
    // The emulator decides the endpoints and transport; the flags keep the rest.
    let endpoints = emulator.credential_options();
    options.credential_options = endpoints.credential_options;
    options.authority_host = endpoints.authority_host;
    options.oidc_request_uri = endpoints.oidc_request_uri;
    let credential = emulator.credential(options)?;
    let tenant_id = emulator.config().tenant_id.clone();
    Ok((credential, tenant_id, Some(emulator)))
}

/// Builds the credential from the flags, falling back to the environment for each input.
/// Returns it with the configured tenant ID.
fn credential_from_inputs(
    args: &Args,
    options: AzurePipelinesCredentialOptions,
) -> Result<(Arc<AzurePipelinesCredential>, String), Failure> {
    // Blank values count as missing, as in `from_env`.
    let present = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    let tenant_id = present(&args.tenant_id);
    let client_id = present(&args.client_id);
    let connection = present(&args.service_connection_id);
    let token = present(&std::env::var("SYSTEM_ACCESSTOKEN").ok());
    match (tenant_id, client_id, connection, token) {
        (Some(tenant_id), Some(client_id), Some(connection), Some(token)) => {
            let credential = AzurePipelinesCredential::new(
                tenant_id.clone(),
                client_id,
                &connection,
                token,
                Some(options),
            )?;
            Ok((credential, tenant_id))
        }
        (tenant_id, client_id, connection, token) => {
            let missing: Vec<&str> = [
                (
                    "AZURESUBSCRIPTION_TENANT_ID (or --tenant-id)",
                    tenant_id.is_none(),
                ),
                (
                    "AZURESUBSCRIPTION_CLIENT_ID (or --client-id)",
                    client_id.is_none(),
                ),
                (
                    "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID (or --service-connection-id)",
                    connection.is_none(),
                ),
                ("SYSTEM_ACCESSTOKEN", token.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, missing)| missing.then_some(name))
            .collect();
            Err(Failure::Missing(format!(
                "not running in an Azure Pipelines step with a service connection: missing {}. \
                 The AzureCLI@2 task exports the AZURESUBSCRIPTION_* variables of its service \
                 connection; SYSTEM_ACCESSTOKEN must be mapped in the step:\n  env:\n    \
                 SYSTEM_ACCESSTOKEN: $(System.AccessToken)\n\
                 To try it outside a pipeline, pass --emulator. See --help.",
                missing.join(", ")
            )))
        }
    }
}

/// Writes the token to standard output in the requested shape.
fn print(
    output: &Output,
    info: &AccessTokenInfo,
    tenant: &str,
    local_offset: UtcOffset,
) -> io::Result<()> {
    let token = info.token.secret();
    let mut out = io::stdout().lock();
    match output {
        Output::Json => {
            let json = JsonOutput {
                access_token: token,
                expires_on_local: az_time(info.expires_on.to_offset(local_offset)),
                expires_on: info.expires_on.unix_timestamp(),
                tenant,
                token_type: &info.token_type,
            };
            serde_json::to_writer_pretty(&mut out, &json)?;
            writeln!(out)?;
        }
        Output::Token => writeln!(out, "{token}")?,
        Output::Vso(name) => writeln!(
            out,
            "##vso[task.setvariable variable={name};issecret=true]{token}"
        )?,
    }
    out.flush()
}

/// Formats like Python's `%Y-%m-%d %H:%M:%S.%f`, which az uses for `expiresOn`.
fn az_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_parsing() {
        assert_eq!(parse_output("json"), Ok(Output::Json));
        assert_eq!(parse_output("token"), Ok(Output::Token));
        assert_eq!(
            parse_output("vso=My_Token.v-2"),
            Ok(Output::Vso("My_Token.v-2".into()))
        );
        for bad in ["xml", "vso=", "vso=bad name", "vso=a;b", "vso=a]b", "JSON"] {
            assert!(parse_output(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn persistent_cache_choice() {
        let pipeline = |name: &str| match name {
            "AGENT_TEMPDIRECTORY" => Some("/agent/_work/_temp".to_owned()),
            "SYSTEM_OIDCREQUESTURI" => Some("https://dev.azure.com/o/p/oidc".to_owned()),
            _ => None,
        };
        let temp_only = |name: &str| pipeline(name).filter(|_| name == "AGENT_TEMPDIRECTORY");
        let nothing = |_: &str| None;
        let args = |flags: &[&str]| Args::parse_from([NAME].iter().chain(flags));
        let on = Some(PersistentCacheOptions::default());
        assert_eq!(
            persistent_cache(&args(&[]), pipeline),
            on,
            "on in a pipeline"
        );
        assert_eq!(persistent_cache(&args(&[]), temp_only), None);
        assert_eq!(persistent_cache(&args(&[]), nothing), None);
        let flag = args(&["--persistent-cache"]);
        assert_eq!(persistent_cache(&flag, temp_only), on);
        assert_eq!(persistent_cache(&flag, nothing), None, "nowhere to put it");
        let off = args(&["--no-persistent-cache"]);
        assert_eq!(persistent_cache(&off, pipeline), None);
        let emulator = args(&["--emulator", "--persistent-cache"]);
        assert_eq!(persistent_cache(&emulator, pipeline), None);
        assert!(
            Args::try_parse_from([NAME, "--persistent-cache", "--no-persistent-cache"]).is_err()
        );
    }

    #[test]
    fn az_time_format() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(az_time(t), "2023-11-14 22:13:20.123456");
    }
}
