//! The command line: flags, help text and `--output` parsing. Parsing reads nothing but the
//! arguments and the three `AZURESUBSCRIPTION_*` variables that clap shows in `--help`.

use crate::output::{Output, parse_output};
use clap::Parser;

/// The program's name, in messages and `--help`.
pub(crate) const NAME: &str = "azure-pipelines-token";

/// The scope requested when neither `--scope` nor `--resource` is given (as az).
pub(crate) const DEFAULT_SCOPE: &str = "https://management.azure.com/.default";

const ABOUT: &str = "Prints an access token for the Azure service connection of an Azure \
    Pipelines step (workload identity federation).";

const LONG_ABOUT: &str = "\
Prints a Microsoft Entra access token for the Azure service connection of an Azure Pipelines \
step, using workload identity federation (no secret stored anywhere).

Use it in pipeline scripts that need a token for tools without Azure SDK support: curl, \
terraform, cargo, custom scripts. It reads the same inputs as AzurePipelinesCredential::from_env: \
the AZURESUBSCRIPTION_* variables that the AzureCLI@2 and AzurePowerShell@5 tasks export for their \
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

  Or hand the token to later steps as a secret variable, masked in logs (ARM_ACCESS_TOKEN),
  with its expiry in Unix seconds (ARM_ACCESS_TOKEN_EXPIRES_ON, not secret):
        azure-pipelines-token --output vso=ARM_ACCESS_TOKEN

  As cargo's credential provider for an Azure Artifacts feed (.cargo/config.toml):
        credential-provider = [\"cargo:token-from-stdout\", \"azure-pipelines-token\",
          \"--resource\", \"499b84ac-1321-427f-aa17-267ca6975798\", \"--output\", \"bearer\"]

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
  Unix only: elsewhere the cache is off.

EXIT CODES:
  0  success: the token is on standard output
  1  other error: the emulator did not start, standard output could not be written
  2  usage error (unknown flag, bad --output, --scope with --resource)
  3  unavailable: not in an Azure Pipelines step, or inputs missing
  4  authentication failed (the message on standard error says why)

Errors go to standard error; the token never does.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = NAME, version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// Tenant (directory) ID of the service connection.
    #[arg(
        long,
        value_name = "ID",
        env = "AZURESUBSCRIPTION_TENANT_ID",
        hide_env_values = true
    )]
    pub(crate) tenant_id: Option<String>,

    /// Application (client) ID of the service connection's service principal.
    #[arg(
        long,
        value_name = "ID",
        env = "AZURESUBSCRIPTION_CLIENT_ID",
        hide_env_values = true
    )]
    pub(crate) client_id: Option<String>,

    /// ID of the service connection (a GUID, not its name).
    #[arg(
        long,
        value_name = "ID",
        env = "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
        hide_env_values = true
    )]
    pub(crate) service_connection_id: Option<String>,

    /// Scope to request; repeat for several scopes.
    #[arg(long = "scope", value_name = "SCOPE", default_value = DEFAULT_SCOPE)]
    pub(crate) scopes: Vec<String>,

    /// Resource to request a token for, as `az account get-access-token --resource`: requests
    /// `RESOURCE/.default`, keeping a trailing slash (`https://management.core.windows.net/`
    /// requests `https://management.core.windows.net//.default`). Not with --scope.
    #[arg(long, value_name = "RESOURCE", conflicts_with = "scopes")]
    pub(crate) resource: Option<String>,

    /// Tenant to request the token from, when it is not the service connection's own. It is
    /// also added to the credential's allowed tenants, so the request is allowed.
    #[arg(long, value_name = "ID")]
    pub(crate) tenant: Option<String>,

    /// Claims to require in the token, such as a resource's claims challenge (a JSON object).
    #[arg(long, value_name = "JSON")]
    pub(crate) claims: Option<String>,

    /// Request a Continuous Access Evaluation (CAE) token.
    #[arg(long)]
    pub(crate) cae: bool,

    /// Microsoft Entra authority host, e.g. `https://login.microsoftonline.us`. Default:
    /// AZURE_AUTHORITY_HOST, else `https://login.microsoftonline.com`.
    #[arg(long, value_name = "URL")]
    pub(crate) authority_host: Option<String>,

    /// Start the built-in emulator in this process and get the token from it. The
    /// AZURESUBSCRIPTION_* / SYSTEM_* inputs and --authority-host are ignored then. Needs the
    /// `emulator` feature (on by default).
    #[arg(long)]
    pub(crate) emulator: bool,

    /// Share tokens with the other processes of this pipeline job through an encrypted file in
    /// AGENT_TEMPDIRECTORY (the default inside a pipeline; needs AGENT_TEMPDIRECTORY).
    #[arg(long, conflicts_with = "no_persistent_cache")]
    pub(crate) persistent_cache: bool,

    /// Do not use the persistent token cache, even inside a pipeline.
    #[arg(long)]
    pub(crate) no_persistent_cache: bool,

    /// Output: `json` (like `az account get-access-token`), `token` (the bare token), `bearer`
    /// (`Bearer <token>`, for cargo's `cargo:token-from-stdout`), or `vso=NAME` (##vso logging
    /// commands setting the secret variable NAME and NAME_EXPIRES_ON, its expiry in Unix
    /// seconds).
    #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = parse_output)]
    pub(crate) output: Output,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn resource_and_scope_conflict_but_each_alone_is_fine() {
        let parse = |flags: &[&str]| Args::try_parse_from([NAME].iter().chain(flags));
        let err = parse(&[
            "--resource",
            "https://vault.azure.net",
            "--scope",
            "x/.default",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let args = parse(&["--resource", "https://vault.azure.net"]).unwrap();
        assert_eq!(args.resource.as_deref(), Some("https://vault.azure.net"));
        let args = parse(&["--scope", "a/.default", "--scope", "b/.default"]).unwrap();
        assert_eq!(args.scopes, ["a/.default", "b/.default"]);
        assert_eq!(parse(&[]).unwrap().scopes, [DEFAULT_SCOPE]);
    }

    #[test]
    fn there_is_no_flag_for_the_system_access_token() {
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("never from a flag"));
        for id in Args::command().get_arguments() {
            let name = id.get_id().as_str().to_ascii_lowercase();
            assert!(
                !name.contains("access") && !name.contains("secret"),
                "{name}"
            );
        }
    }
}
