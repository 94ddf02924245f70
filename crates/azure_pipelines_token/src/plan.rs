//! What a run will do, decided from the arguments and the environment alone: which scopes and
//! request options, where the token comes from, whether the persistent cache is on, and how to
//! print it. Nothing here builds a runtime, an HTTP client or a credential.

use crate::args::{Args, NAME};
use crate::output::Output;
use azure_pipelines_credential::PersistentCacheOptions;

/// Why the tool failed, mapped to its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A usage error found after parsing, printed by clap (exit 2). (Only `--emulator` in a
    /// build without the emulator, so far.)
    #[cfg_attr(feature = "emulator", allow(dead_code))]
    Usage(clap::Error),
    /// The credential failed: unavailable (exit 3) or authentication failed (exit 4).
    Credential {
        /// Whether `is_unavailable` said so.
        unavailable: bool,
        /// The error's message, with the tool's hint when there is one.
        message: String,
    },
    /// Anything else: the emulator or the runtime did not start, standard output could not be
    /// written (exit 1).
    Other(String),
}

impl Failure {
    /// The process's exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Credential { unavailable, .. } => {
                if *unavailable {
                    3
                } else {
                    4
                }
            }
            Failure::Other(_) => 1,
        }
    }
}

/// Where the token comes from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A built-in emulator started in this process.
    #[cfg(feature = "emulator")]
    Emulator,
    /// The pipeline: the service connection's inputs from the flags, else the environment.
    Pipeline {
        /// `--tenant-id`, else `AZURESUBSCRIPTION_TENANT_ID`.
        tenant_id: Option<String>,
        /// `--client-id`, else `AZURESUBSCRIPTION_CLIENT_ID`.
        client_id: Option<String>,
        /// `--service-connection-id`, else `AZURESUBSCRIPTION_SERVICE_CONNECTION_ID`.
        service_connection_id: Option<String>,
        /// `--authority-host`.
        authority_host: Option<String>,
    },
}

/// Everything a run needs, decided before anything is started.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The scopes to request.
    pub(crate) scopes: Vec<String>,
    /// `--claims`.
    pub(crate) claims: Option<String>,
    /// `--tenant`: the tenant to request the token from (and to allow).
    pub(crate) tenant: Option<String>,
    /// `--cae`.
    pub(crate) cae: bool,
    /// Where the token comes from.
    pub(crate) source: Source,
    /// The persistent cache, when it is on.
    pub(crate) persistent_cache: Option<PersistentCacheOptions>,
    /// How to print the token.
    pub(crate) output: Output,
    /// Warnings for standard error (a flag that has no effect here).
    pub(crate) warnings: Vec<String>,
}

impl Plan {
    /// Decides the run from `args` and the environment, read through `env`.
    pub(crate) fn new(args: Args, env: impl Fn(&str) -> Option<String>) -> Result<Plan, Failure> {
        let mut warnings = Vec::new();
        let persistent_cache = persistent_cache(&args, &env, &mut warnings);
        let scopes = match &args.resource {
            Some(resource) => vec![resource_scope(resource)],
            None => args.scopes,
        };
        let source = if args.emulator {
            emulator_source()?
        } else {
            Source::Pipeline {
                tenant_id: args.tenant_id,
                client_id: args.client_id,
                service_connection_id: args.service_connection_id,
                authority_host: args.authority_host,
            }
        };
        Ok(Plan {
            scopes,
            claims: args.claims,
            tenant: args.tenant,
            cae: args.cae,
            source,
            persistent_cache,
            output: args.output,
            warnings,
        })
    }
}

#[cfg(feature = "emulator")]
fn emulator_source() -> Result<Source, Failure> {
    Ok(Source::Emulator)
}

#[cfg(not(feature = "emulator"))]
fn emulator_source() -> Result<Source, Failure> {
    use clap::CommandFactory as _;
    Err(Failure::Usage(Args::command().error(
        clap::error::ErrorKind::ArgumentConflict,
        "--emulator is not available: this azure-pipelines-token was built without its \
         `emulator` feature (reinstall with `cargo install azure_pipelines_token`, default \
         features on)",
    )))
}

/// The scope that `az account get-access-token --resource R` requests: `R/.default`. As az
/// (`resource_to_scopes` in azure-cli's azure/cli/core/auth/util.py), a trailing slash is kept:
/// `https://management.core.windows.net/` gives `https://management.core.windows.net//.default`,
/// which Microsoft Entra ID reads as the resource `https://management.core.windows.net/`, the
/// form some older resources (ARM's classic ID) are registered with.
pub(crate) fn resource_scope(resource: &str) -> String {
    format!("{resource}/.default")
}

/// Whether to use the persistent token cache: asked for with `--persistent-cache`, or by default
/// inside a pipeline (measured: a clear win, see the README); never with `--emulator`, whose
/// tokens and System.AccessToken live only as long as the process, nor with
/// `--no-persistent-cache`, nor off Unix, where the library has no file checks for it yet.
pub(crate) fn persistent_cache(
    args: &Args,
    env: impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<PersistentCacheOptions> {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    if args.emulator || args.no_persistent_cache {
        return None;
    }
    if !cfg!(unix) {
        if args.persistent_cache {
            warnings.push(
                "--persistent-cache has no effect: the persistent token cache is available on \
                 Unix only"
                    .to_owned(),
            );
        }
        return None;
    }
    let has_location = set("AGENT_TEMPDIRECTORY");
    if args.persistent_cache && !has_location {
        warnings.push(
            "--persistent-cache has no effect: AGENT_TEMPDIRECTORY, the job's temp folder where \
             the cache lives, is not set"
                .to_owned(),
        );
        return None;
    }
    (args.persistent_cache || (has_location && set("SYSTEM_OIDCREQUESTURI")))
        .then(PersistentCacheOptions::default)
}

/// The tool's line under an *unavailable* error of the pipeline source, after the library's
/// message (which names the missing variables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hint {
    /// The credential could not be built: inputs are missing, so the line names the flags too.
    MissingInputs,
    /// The request found no pipeline (no SYSTEM_OIDCREQUESTURI).
    NotInPipeline,
}

impl Hint {
    /// The line, with the program's name in front as every message of the tool; `None` when
    /// there is nothing to add (no pipeline, and a build without `--emulator`).
    pub(crate) fn line(self) -> Option<String> {
        const FLAGS: &str = "--tenant-id, --client-id and --service-connection-id can stand in \
                             for the AZURESUBSCRIPTION_* variables (SYSTEM_ACCESSTOKEN comes only \
                             from the environment)";
        let line = match (self, cfg!(feature = "emulator")) {
            (Hint::MissingInputs, true) => {
                format!("{FLAGS}; to try it outside a pipeline, pass --emulator.")
            }
            (Hint::MissingInputs, false) => format!("{FLAGS}."),
            (Hint::NotInPipeline, true) => "To try it outside a pipeline, pass --emulator.".into(),
            (Hint::NotInPipeline, false) => return None,
        };
        Some(format!("{NAME}: {line}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(flags: &[&str]) -> Args {
        Args::parse_from([NAME].iter().chain(flags))
    }

    #[test]
    fn persistent_cache_choice() {
        let pipeline = |name: &str| match name {
            "AGENT_TEMPDIRECTORY" => Some("/agent/_work/_temp".to_owned()),
            "SYSTEM_OIDCREQUESTURI" => Some("https://dev.azure.com/o/p/oidc".to_owned()),
            _ => None,
        };
        let temp_only = |name: &str| pipeline(name).filter(|_| name == "AGENT_TEMPDIRECTORY");
        let blank = |name: &str| pipeline(name).map(|_| " ".to_owned());
        let nothing = |_: &str| None;
        let choose = |args: &Args, env: &dyn Fn(&str) -> Option<String>| {
            let mut warnings = Vec::new();
            let choice = persistent_cache(args, env, &mut warnings);
            (choice, warnings.len())
        };
        let on = cfg!(unix).then(PersistentCacheOptions::default);
        assert_eq!(
            choose(&args(&[]), &pipeline),
            (on.clone(), 0),
            "on in a pipeline"
        );
        assert_eq!(choose(&args(&[]), &temp_only), (None, 0));
        assert_eq!(choose(&args(&[]), &blank), (None, 0));
        assert_eq!(choose(&args(&[]), &nothing), (None, 0));
        let flag = args(&["--persistent-cache"]);
        assert_eq!(choose(&flag, &temp_only).0, on);
        assert_eq!(
            choose(&flag, &nothing),
            (None, 1),
            "nowhere to put it: a warning"
        );
        let off = args(&["--no-persistent-cache"]);
        assert_eq!(choose(&off, &pipeline), (None, 0));
        let emulator = args(&["--emulator", "--persistent-cache"]);
        assert_eq!(choose(&emulator, &pipeline), (None, 0));
        assert!(
            Args::try_parse_from([NAME, "--persistent-cache", "--no-persistent-cache"]).is_err()
        );
    }

    #[test]
    fn resource_becomes_its_default_scope_as_in_az() {
        assert_eq!(
            resource_scope("https://vault.azure.net"),
            "https://vault.azure.net/.default"
        );
        assert_eq!(
            resource_scope("https://management.core.windows.net/"),
            "https://management.core.windows.net//.default"
        );
        assert_eq!(
            resource_scope("499b84ac-1321-427f-aa17-267ca6975798"),
            "499b84ac-1321-427f-aa17-267ca6975798/.default"
        );
        let plan = Plan::new(args(&["--resource", "https://vault.azure.net"]), |_| None).unwrap();
        assert_eq!(plan.scopes, ["https://vault.azure.net/.default"]);
        let plan = Plan::new(args(&[]), |_| None).unwrap();
        assert_eq!(plan.scopes, [crate::args::DEFAULT_SCOPE]);
    }

    #[test]
    fn flags_fill_the_pipeline_source() {
        let plan = Plan::new(
            args(&[
                "--tenant-id",
                "t",
                "--client-id",
                "c",
                "--service-connection-id",
                "s",
                "--authority-host",
                "https://login.microsoftonline.us",
                "--tenant",
                "other",
                "--claims",
                "{}",
                "--cae",
                "--output",
                "bearer",
            ]),
            |_| None,
        )
        .unwrap();
        assert_eq!(
            plan.source,
            Source::Pipeline {
                tenant_id: Some("t".into()),
                client_id: Some("c".into()),
                service_connection_id: Some("s".into()),
                authority_host: Some("https://login.microsoftonline.us".into()),
            }
        );
        assert_eq!(plan.tenant.as_deref(), Some("other"));
        assert_eq!(plan.claims.as_deref(), Some("{}"));
        assert!(plan.cae);
        assert_eq!(plan.output, Output::Bearer);
    }

    #[cfg(feature = "emulator")]
    #[test]
    fn emulator_is_a_source() {
        let plan = Plan::new(args(&["--emulator"]), |_| None).unwrap();
        assert_eq!(plan.source, Source::Emulator);
    }

    #[cfg(not(feature = "emulator"))]
    #[test]
    fn emulator_without_the_feature_is_a_usage_error() {
        let failure = Plan::new(args(&["--emulator"]), |_| None).unwrap_err();
        assert_eq!(failure.exit_code(), 2);
        assert!(format!("{failure:?}").contains("emulator"));
    }

    #[test]
    fn hints() {
        let missing = Hint::MissingInputs.line().unwrap();
        assert!(missing.starts_with("azure-pipelines-token: --tenant-id, --client-id"));
        assert!(!missing.contains('\n'));
        let not_in_pipeline = Hint::NotInPipeline.line();
        if cfg!(feature = "emulator") {
            assert!(missing.ends_with("; to try it outside a pipeline, pass --emulator."));
            assert_eq!(
                not_in_pipeline.as_deref(),
                Some("azure-pipelines-token: To try it outside a pipeline, pass --emulator.")
            );
        } else {
            assert!(!missing.contains("--emulator"), "{missing}");
            assert_eq!(not_in_pipeline, None);
        }
    }

    #[test]
    fn exit_codes() {
        let credential = |unavailable| Failure::Credential {
            unavailable,
            message: String::new(),
        };
        assert_eq!(credential(true).exit_code(), 3);
        assert_eq!(credential(false).exit_code(), 4);
        assert_eq!(Failure::Other(String::new()).exit_code(), 1);
    }
}
