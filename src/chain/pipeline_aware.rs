//! `PipelineAwareCredential`: a `DefaultAzureCredential`-style chain that starts with Azure
//! Pipelines.

use super::{ChainMember, ChainedTokenCredential, TokenInfoSource};
use crate::{
    AccessTokenInfo, AzurePipelinesCredential, AzurePipelinesCredentialOptions,
    clock::Clock,
    credential, endpoint,
    error::{Failure, Section, ToError as _},
};
use azure_core::{
    credentials::{AccessToken, TokenCredential, TokenRequestOptions},
    http::ClientOptions,
};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, AzureDeveloperCliCredential,
    AzureDeveloperCliCredentialOptions, ClientAssertionCredentialOptions, Executor,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use std::{collections::HashMap, fmt, path::PathBuf, sync::Arc};

const NAME: &str = "PipelineAwareCredential";
/// The variable the other Azure SDKs read to narrow `DefaultAzureCredential` down.
const SELECTOR_ENV: &str = "AZURE_TOKEN_CREDENTIALS";
const TENANT_ID_ENV: &str = "AZURE_TENANT_ID";
const CLIENT_ID_ENV: &str = "AZURE_CLIENT_ID";
const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";
const IDENTITY_ENDPOINT_ENV: &str = "IDENTITY_ENDPOINT";
const MSI_ENDPOINT_ENV: &str = "MSI_ENDPOINT";

/// Options for [`PipelineAwareCredential`].
#[derive(Clone, Default)]
pub struct PipelineAwareCredentialOptions {
    /// HTTP options (retry, transport, cloud) of the credentials that make HTTP requests:
    /// Azure Pipelines, workload identity and managed identity.
    pub client_options: ClientOptions,
    /// Tenants besides its own that the Azure Pipelines credential may be asked for (see
    /// [`AzurePipelinesCredentialOptions::additionally_allowed_tenants`]).
    pub additionally_allowed_tenants: Vec<String>,
    /// The user-assigned managed identity to authenticate; the system-assigned one when `None`.
    pub managed_identity: Option<UserAssignedId>,
    /// Runs `az` and `azd`; `azure_identity`'s default executor when `None`.
    pub executor: Option<Arc<dyn Executor>>,
}

impl fmt::Debug for PipelineAwareCredentialOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineAwareCredentialOptions")
            .field(
                "additionally_allowed_tenants",
                &self.additionally_allowed_tenants,
            )
            .field("managed_identity", &self.managed_identity)
            .finish_non_exhaustive()
    }
}

/// A `DefaultAzureCredential`-style chain for code that runs both in Azure Pipelines and on a
/// developer's machine (or in Azure). It tries, in this order:
///
/// 1. [`AzurePipelinesCredential::from_env`]: in a pipeline step that has a service connection
///    (AzureCLI@2 exports `AZURESUBSCRIPTION_*`) and maps `SYSTEM_ACCESSTOKEN`. First, because a
///    pipeline agent may also have `az` logged in (AzureCLI@2 does that) or run on an Azure VM
///    with a managed identity, and the service connection is the identity the pipeline was
///    given.
/// 2. `azure_identity::WorkloadIdentityCredential`: only when `AZURE_TENANT_ID`,
///    `AZURE_CLIENT_ID` and `AZURE_FEDERATED_TOKEN_FILE` are set (AKS workload identity).
/// 3. `azure_identity::ManagedIdentityCredential`: only when `IDENTITY_ENDPOINT` or
///    `MSI_ENDPOINT` is set (App Service, Functions, Container Apps; Azure Arc, Cloud Shell and
///    Azure ML set them too, but `azure_identity` 1.0 does not support those, so they count as
///    unavailable). The chain never probes the VM metadata endpoint (IMDS), so a laptop does
///    not wait on it. **On an Azure VM or VM scale set**, which sets neither variable, set
///    `AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential` or put a `ManagedIdentityCredential`
///    in a [`ChainedTokenCredential`] yourself.
/// 4. `azure_identity::AzureCliCredential`: `az account get-access-token`.
/// 5. `azure_identity::AzureDeveloperCliCredential`: `azd auth token`.
///
/// A credential that cannot work here is *unavailable* and the chain moves on: missing
/// variables, `az`/`azd` not installed or not logged in. Anything else is an authentication
/// failure that stops the chain (see [`ChainedTokenCredential`]); so does a pipeline or workload
/// identity configuration that is present but invalid, such as a `SYSTEM_ACCESSTOKEN` that
/// is the unexpanded `$(System.AccessToken)`. The first credential that provides a token is
/// used for every later request.
///
/// `AZURE_TOKEN_CREDENTIALS` narrows the chain, as in the other Azure SDKs (case-insensitive):
///
/// | value | credentials |
/// |---|---|
/// | unset or empty | all five |
/// | `dev` | Azure CLI, Azure Developer CLI |
/// | `prod` | Azure Pipelines, workload identity, managed identity |
/// | a credential's name, e.g. `AzurePipelinesCredential`, `WorkloadIdentityCredential`, `ManagedIdentityCredential`, `AzureCliCredential`, `AzureDeveloperCliCredential` | that one (`ManagedIdentityCredential` then also uses IMDS) |
///
/// Any other value is an error from [`new`](Self::new).
///
/// ```no_run
/// use azure_core::credentials::TokenCredential;
/// use azure_pipelines_credential::PipelineAwareCredential;
///
/// # async fn example() -> azure_core::Result<()> {
/// // The service connection in a pipeline step, `az login` on a laptop.
/// let credential = PipelineAwareCredential::new(None)?;
/// let token = credential.get_token(&["https://storage.azure.com/.default"], None).await?;
/// println!("authenticated with {:?}", credential.selected());
/// # let _ = token;
/// # Ok(())
/// # }
/// ```
pub struct PipelineAwareCredential {
    chain: ChainedTokenCredential,
}

impl PipelineAwareCredential {
    /// Builds the chain from the process environment; see the type's documentation.
    ///
    /// Fails only when `AZURE_TOKEN_CREDENTIALS` has a value this chain does not know. A
    /// credential that cannot work here is not an error now: it reports why when asked for a
    /// token, and the chain moves on.
    pub fn new(options: Option<PipelineAwareCredentialOptions>) -> azure_core::Result<Arc<Self>> {
        Self::with_env(options.unwrap_or_default(), &Env::Process)
    }

    pub(crate) fn with_env(
        options: PipelineAwareCredentialOptions,
        env: &Env,
    ) -> azure_core::Result<Arc<Self>> {
        let selection =
            Selection::parse(env.get(SELECTOR_ENV).as_deref()).map_err(|f| f.into_error(NAME))?;
        let mut members = Vec::new();
        for kind in Kind::ALL {
            if selection.includes(kind) {
                members.push(kind.build(&options, env, selection == Selection::Only(kind))?);
            }
        }
        Ok(Arc::new(Self {
            chain: ChainedTokenCredential::named(NAME, members),
        }))
    }

    /// The name of the credential that provided the first token (every later request goes to
    /// it); `None` until one has.
    pub fn selected(&self) -> Option<&str> {
        self.chain.selected()
    }

    /// Requests a token with its expiry, refresh time and type; see
    /// [`ChainedTokenCredential::get_token_info`].
    pub async fn get_token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        self.chain.get_token_info(scopes, options).await
    }

    /// The names of the credentials in the chain, in the order they are tried (after
    /// `AZURE_TOKEN_CREDENTIALS`).
    pub fn credential_names(&self) -> impl Iterator<Item = &str> {
        self.chain.credential_names()
    }
}

impl fmt::Debug for PipelineAwareCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.chain, f)
    }
}

#[async_trait::async_trait]
impl TokenCredential for PipelineAwareCredential {
    /// Requests a token from the first credential of the chain that can provide one; see the
    /// type's documentation.
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.chain.get_token(scopes, options).await
    }
}

#[async_trait::async_trait]
impl TokenInfoSource for PipelineAwareCredential {
    async fn token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        self.get_token_info(scopes, options).await
    }
}

/// Where the chain reads its configuration: the process environment, or (in tests) a map.
///
/// `azure_identity`'s `ManagedIdentityCredential` reads the process environment itself whatever
/// this says, so tests never make it request a token.
pub(crate) enum Env {
    Process,
    #[cfg_attr(not(test), allow(dead_code))]
    Map(HashMap<String, String>),
}

impl Env {
    /// A variable's value; empty and blank values count as unset, as in the other SDKs.
    fn get(&self, name: &str) -> Option<String> {
        let value = match self {
            Env::Process => std::env::var(name).ok(),
            Env::Map(map) => map.get(name).cloned(),
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// What to put in an option that the credential would otherwise read from the process
    /// environment: nothing for the process (the credential reads it, when it needs it), the
    /// map's value (empty meaning unset) otherwise, so a map-driven chain never sees the
    /// process's variables.
    fn pinned(&self, name: &str) -> Option<String> {
        match self {
            Env::Process => None,
            Env::Map(map) => Some(map.get(name).cloned().unwrap_or_default()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pipelines,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
    AzureDeveloperCli,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Pipelines,
        Kind::WorkloadIdentity,
        Kind::ManagedIdentity,
        Kind::AzureCli,
        Kind::AzureDeveloperCli,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Pipelines => "AzurePipelinesCredential",
            Kind::WorkloadIdentity => "WorkloadIdentityCredential",
            Kind::ManagedIdentity => "ManagedIdentityCredential",
            Kind::AzureCli => "AzureCliCredential",
            Kind::AzureDeveloperCli => "AzureDeveloperCliCredential",
        }
    }

    fn is_developer_tool(self) -> bool {
        matches!(self, Kind::AzureCli | Kind::AzureDeveloperCli)
    }

    /// The member for this kind: the credential, or a stand-in that reports why it cannot be
    /// used. Fails only for options that no environment can fix.
    fn build(
        self,
        options: &PipelineAwareCredentialOptions,
        env: &Env,
        explicitly_selected: bool,
    ) -> azure_core::Result<ChainMember> {
        let credential: Arc<dyn TokenCredential> = match self {
            Kind::Pipelines => match pipelines(options, env) {
                Ok(credential) => return Ok(ChainMember::new(credential)),
                Err(standin) => standin,
            },
            Kind::WorkloadIdentity => workload_identity(options, env),
            Kind::ManagedIdentity => managed_identity(options, env, explicitly_selected),
            Kind::AzureCli => AzureCliCredential::new(Some(AzureCliCredentialOptions {
                executor: options.executor.clone(),
                ..Default::default()
            }))?,
            Kind::AzureDeveloperCli => {
                AzureDeveloperCliCredential::new(Some(AzureDeveloperCliCredentialOptions {
                    executor: options.executor.clone(),
                    ..Default::default()
                }))?
            }
        };
        let member = ChainMember::named(self.name(), credential);
        Ok(if self.is_developer_tool() {
            member.unavailable_when(move |e| tool_is_absent(self, &e.to_string()))
        } else {
            member
        })
    }
}

/// The pipeline credential, or the stand-in saying why there is none.
fn pipelines(
    options: &PipelineAwareCredentialOptions,
    env: &Env,
) -> Result<Arc<AzurePipelinesCredential>, Arc<dyn TokenCredential>> {
    // What from_env does, with the variables read through `env`.
    let (tenant_id, client_id, connection, token) =
        match credential::pipeline_inputs(|name| env.get(name)) {
            Ok(inputs) => inputs,
            Err(missing) => return Err(standin(Kind::Pipelines, missing)),
        };
    let credential_options = AzurePipelinesCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: options.client_options.clone(),
        },
        additionally_allowed_tenants: options.additionally_allowed_tenants.clone(),
        authority_host: env
            .pinned(endpoint::AZURE_AUTHORITY_HOST_ENV)
            .filter(|h| !h.trim().is_empty()),
        oidc_request_uri: env.pinned(endpoint::OIDC_REQUEST_URI_ENV),
        ..Default::default()
    };
    match AzurePipelinesCredential::build(
        &tenant_id,
        client_id,
        &connection,
        token,
        credential_options,
        Clock::default(),
    ) {
        Ok(credential) => Ok(Arc::new(credential)),
        // The step is configured for the pipeline credential, wrongly: falling through to `az`
        // (which AzureCLI@2 logs in) would hide that, so this is a failure.
        Err(failure) => Err(standin(Kind::Pipelines, failure)),
    }
}

fn workload_identity(
    options: &PipelineAwareCredentialOptions,
    env: &Env,
) -> Arc<dyn TokenCredential> {
    let kind = Kind::WorkloadIdentity;
    let names = [TENANT_ID_ENV, CLIENT_ID_ENV, FEDERATED_TOKEN_FILE_ENV];
    let [tenant_id, client_id, token_file] = names.map(|name| env.get(name));
    let (Some(tenant_id), Some(client_id), Some(token_file)) = (tenant_id, client_id, token_file)
    else {
        let missing: Vec<&str> = names
            .into_iter()
            .filter(|name| env.get(name).is_none())
            .collect();
        return standin(
            kind,
            Failure::new(
                Section::WorkloadIdentityUnavailable,
                format!(
                    "Workload identity is not configured here: {} not set. Where workload \
                     identity is enabled (an AKS pod labelled azure.workload.identity/use: \
                     \"true\"), its webhook sets {}.",
                    missing.join(", "),
                    names.join(", ")
                ),
            ),
        );
    };
    match WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: options.client_options.clone(),
        },
        client_id: Some(client_id),
        tenant_id: Some(tenant_id),
        token_file_path: Some(PathBuf::from(token_file)),
    })) {
        Ok(credential) => credential,
        // Configured, but wrongly (an unreadable token file, an invalid tenant): a failure.
        Err(e) => standin(
            kind,
            Failure::new(Section::OtherCredential, e.to_string()).with_source(e),
        ),
    }
}

fn managed_identity(
    options: &PipelineAwareCredentialOptions,
    env: &Env,
    explicitly_selected: bool,
) -> Arc<dyn TokenCredential> {
    let kind = Kind::ManagedIdentity;
    let present = env.get(IDENTITY_ENDPOINT_ENV).is_some() || env.get(MSI_ENDPOINT_ENV).is_some();
    if !present && !explicitly_selected {
        return standin(
            kind,
            Failure::new(
                Section::ManagedIdentityUnavailable,
                format!(
                    "No managed identity endpoint is configured here: neither \
                     {IDENTITY_ENDPOINT_ENV} nor {MSI_ENDPOINT_ENV} is set (App Service, \
                     Functions and Container Apps set them). {NAME} does not probe the VM \
                     metadata endpoint (IMDS): on an Azure VM, set \
                     {SELECTOR_ENV}=ManagedIdentityCredential or add a ManagedIdentityCredential \
                     to a ChainedTokenCredential."
                ),
            ),
        );
    }
    match ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: options.managed_identity.clone(),
        client_options: options.client_options.clone(),
    })) {
        Ok(credential) => credential,
        Err(e) => {
            // An environment azure_identity does not support (Azure Arc, Cloud Shell, Azure ML,
            // Service Fabric) is unavailable unless asked for: the next credentials may still
            // work (az in Cloud Shell).
            let section = if explicitly_selected {
                Section::OtherCredential
            } else {
                Section::ManagedIdentityUnavailable
            };
            standin(kind, Failure::new(section, e.to_string()).with_source(e))
        }
    }
}

/// Stands in for a credential that cannot be built here, and says why at each request: as
/// unavailable or as a failure, by the failure's section.
struct Standin {
    kind: Kind,
    failure: Arc<Failure>,
}

/// The stand-in for `kind`, failing with `failure` at each request.
fn standin(kind: Kind, failure: Failure) -> Arc<dyn TokenCredential> {
    Arc::new(Standin {
        kind,
        failure: Arc::new(failure),
    })
}

impl fmt::Debug for Standin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.kind.name()).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for Standin {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Err(self.failure.clone().to_error(self.kind.name()))
    }
}

/// Whether a developer tool's error says it is not installed or not logged in (the messages of
/// `azure_identity` 1.0 and of the tools themselves, as the other Azure SDKs match them). Other
/// errors, such as Entra ID refusing the signed-in account, are failures.
fn tool_is_absent(kind: Kind, message: &str) -> bool {
    const NOT_INSTALLED: [&str; 3] = [
        "not found on PATH",
        "wasn't found on PATH",
        "is not recognized as an internal or external command",
    ];
    let not_logged_in: &[&str] = match kind {
        Kind::AzureCli => &["az login", "az account set"],
        Kind::AzureDeveloperCli => &["azd auth login", "not logged in"],
        _ => &[],
    };
    NOT_INSTALLED
        .iter()
        .chain(not_logged_in)
        .any(|pattern| message.contains(pattern))
}

/// The chain `AZURE_TOKEN_CREDENTIALS` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selection {
    All,
    Developer,
    Production,
    Only(Kind),
}

impl Selection {
    fn parse(value: Option<&str>) -> Result<Self, Failure> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Selection::All);
        };
        if value.eq_ignore_ascii_case("dev") {
            return Ok(Selection::Developer);
        }
        if value.eq_ignore_ascii_case("prod") {
            return Ok(Selection::Production);
        }
        if let Some(kind) = Kind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(value))
        {
            return Ok(Selection::Only(kind));
        }
        let shown: String = value.chars().filter(|c| !c.is_control()).take(64).collect();
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        Err(Failure::new(
            Section::InvalidTokenCredentialsSelector,
            format!(
                "{SELECTOR_ENV} is '{shown}', which is not a value it knows: use dev (Azure CLI, \
                 Azure Developer CLI), prod (Azure Pipelines, workload identity, managed \
                 identity) or one credential's name: {}. Unset it to try every credential.",
                names.join(", ")
            ),
        ))
    }

    fn includes(self, kind: Kind) -> bool {
        match self {
            Selection::All => true,
            Selection::Developer => kind.is_developer_tool(),
            Selection::Production => !kind.is_developer_tool(),
            Selection::Only(only) => only == kind,
        }
    }
}

// The fake tools build exit statuses the Unix way.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::{
        ffi::OsStr,
        io,
        process::{ExitStatus, Output},
        sync::Mutex,
    };

    const STORAGE: &str = "https://storage.azure.com/.default";

    /// Plays `az` and `azd`: answers by program name with (exit code, stdout, stderr), records
    /// every command line.
    #[derive(Debug, Default)]
    struct FakeTools {
        az: Option<(i32, String, String)>,
        azd: Option<(i32, String, String)>,
        commands: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Executor for FakeTools {
        async fn run(&self, program: &OsStr, args: &[&OsStr]) -> io::Result<Output> {
            let line: Vec<String> = std::iter::once(program)
                .chain(args.iter().copied())
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let line = line.join(" ");
            self.commands
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.clone());
            // `/bin/sh -c "cd /bin && az ..."`: the tool is the word after `&&`.
            let tool = line.split("&& ").nth(1).and_then(|c| c.split(' ').next());
            let answer = match tool {
                Some("az") => self.az.clone(),
                Some("azd") => self.azd.clone(),
                _ => None,
            };
            // What sh answers for a command it cannot find.
            let (code, stdout, stderr) =
                answer.unwrap_or((127, String::new(), "sh: 1: tool: not found".to_owned()));
            Ok(Output {
                status: exit_status(code),
                stdout: stdout.into_bytes(),
                stderr: stderr.into_bytes(),
            })
        }
    }

    fn exit_status(code: i32) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus::from_raw(code << 8)
    }

    fn az_json(token: &str) -> String {
        format!(
            r#"{{"accessToken":"{token}","expiresOn":"2099-01-02 03:04:05.000000","expires_on":4070919845,"subscription":"00000000-0000-0000-0000-000000000000","tenant":"72f988bf-86f1-41af-91ab-2d7cd011db47","tokenType":"Bearer"}}"#
        )
    }

    fn azd_json(token: &str) -> String {
        format!(r#"{{"token":"{token}","expiresOn":"2099-01-02T03:04:05Z"}}"#)
    }

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::Map(
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn build_chain(vars: &[(&str, &str)], tools: &Arc<FakeTools>) -> Arc<PipelineAwareCredential> {
        PipelineAwareCredential::with_env(
            PipelineAwareCredentialOptions {
                executor: Some(tools.clone()),
                ..Default::default()
            },
            &env(vars),
        )
        .expect("chain")
    }

    fn names(chain: &PipelineAwareCredential) -> Vec<&str> {
        chain.credential_names().collect()
    }

    const PIPELINE: [(&str, &str); 4] = [
        (
            "AZURESUBSCRIPTION_TENANT_ID",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ),
        (
            "AZURESUBSCRIPTION_CLIENT_ID",
            "3f8a1c2e-5b7d-4e9f-a1c3-6d2b8e4f0a95",
        ),
        (
            "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
            "9c4e2a7b-1d3f-4b8e-9a6c-5e7f1b2d3c40",
        ),
        ("SYSTEM_ACCESSTOKEN", "sysAT-unit-test-0123456789"),
    ];

    #[test]
    fn selection_values() {
        use Kind::*;
        let all = Kind::ALL.to_vec();
        let cases: &[(Option<&str>, Option<Vec<Kind>>)] = &[
            (None, Some(all.clone())),
            (Some("  "), Some(all)),
            (Some("dev"), Some(vec![AzureCli, AzureDeveloperCli])),
            (Some(" DEV "), Some(vec![AzureCli, AzureDeveloperCli])),
            (
                Some("prod"),
                Some(vec![Pipelines, WorkloadIdentity, ManagedIdentity]),
            ),
            (Some("azurepipelinescredential"), Some(vec![Pipelines])),
            (
                Some("WorkloadIdentityCredential"),
                Some(vec![WorkloadIdentity]),
            ),
            (
                Some("ManagedIdentityCredential"),
                Some(vec![ManagedIdentity]),
            ),
            (Some("AzureCliCredential"), Some(vec![AzureCli])),
            (
                Some("AzureDeveloperCliCredential"),
                Some(vec![AzureDeveloperCli]),
            ),
            (Some("EnvironmentCredential"), None),
            (Some("developer"), None),
            (Some("AzureCliCredential,dev"), None),
        ];
        for (value, expected) in cases {
            let got = Selection::parse(*value)
                .ok()
                .map(|s| Kind::ALL.into_iter().filter(|k| s.includes(*k)).collect());
            assert_eq!(&got, expected, "{value:?}");
        }
    }

    #[test]
    fn an_invalid_selector_is_a_clear_error() {
        let tools = Arc::new(FakeTools::default());
        let e = PipelineAwareCredential::with_env(
            PipelineAwareCredentialOptions {
                executor: Some(tools),
                ..Default::default()
            },
            &env(&[("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential\u{7}")]),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e.kind(), azure_core::error::ErrorKind::Credential));
        assert!(!crate::is_unavailable(&e));
        assert!(
            text.starts_with(
                "PipelineAwareCredential authentication failed. AZURE_TOKEN_CREDENTIALS is 'EnvironmentCredential', which is not a value it knows"
            ),
            "{text}"
        );
        assert!(
            text.contains("AzureDeveloperCliCredential. Unset it"),
            "{text}"
        );
    }

    #[test]
    fn members_follow_the_selector() {
        let tools = Arc::new(FakeTools::default());
        let all = build_chain(&[], &tools);
        assert_eq!(
            names(&all),
            [
                "AzurePipelinesCredential",
                "WorkloadIdentityCredential",
                "ManagedIdentityCredential",
                "AzureCliCredential",
                "AzureDeveloperCliCredential"
            ]
        );
        let dev = build_chain(&[("AZURE_TOKEN_CREDENTIALS", "dev")], &tools);
        assert_eq!(
            names(&dev),
            ["AzureCliCredential", "AzureDeveloperCliCredential"]
        );
        let prod = build_chain(&[("AZURE_TOKEN_CREDENTIALS", "prod")], &tools);
        assert_eq!(
            names(&prod),
            [
                "AzurePipelinesCredential",
                "WorkloadIdentityCredential",
                "ManagedIdentityCredential"
            ]
        );
        // Named explicitly, managed identity is built even without its variables (it would use
        // IMDS; no request is made here).
        let mi = build_chain(
            &[("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")],
            &tools,
        );
        assert_eq!(names(&mi), ["ManagedIdentityCredential"]);
        assert!(format!("{mi:?}").starts_with("PipelineAwareCredential { credentials: ["));
    }

    #[tokio::test]
    async fn nothing_available_is_unavailable_and_says_why_for_each() {
        let tools = Arc::new(FakeTools::default());
        let chain = build_chain(&[], &tools);
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        let text = e.to_string();
        assert!(crate::is_unavailable(&e), "{text}");
        assert!(
            text.starts_with(
                "PipelineAwareCredential is unavailable: No credential in the chain is available in this environment:"
            ),
            "{text}"
        );
        for expected in [
            "- AzurePipelinesCredential (unavailable): AzurePipelinesCredential is unavailable: AZURESUBSCRIPTION_TENANT_ID, AZURESUBSCRIPTION_CLIENT_ID",
            "- WorkloadIdentityCredential (unavailable): WorkloadIdentityCredential is unavailable: Workload identity is not configured here: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE not set.",
            "- ManagedIdentityCredential (unavailable): ManagedIdentityCredential is unavailable: No managed identity endpoint is configured here",
            "AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential",
            "- AzureCliCredential (unavailable): AzureCliCredential authentication failed. az not found on PATH",
            "- AzureDeveloperCliCredential (unavailable): AzureDeveloperCliCredential authentication failed. azd not found on PATH",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        let commands = tools.commands.lock().unwrap().clone();
        assert_eq!(commands.len(), 2, "{commands:?}");
        assert!(commands[0].starts_with("/bin/sh -c cd /bin && az account get-access-token -o json --scope https://storage.azure.com/.default"), "{commands:?}");
        assert!(commands[1].starts_with("/bin/sh -c cd /bin && azd auth token -o json --no-prompt --scope https://storage.azure.com/.default"), "{commands:?}");
    }

    #[tokio::test]
    async fn not_logged_in_falls_through_to_azd() {
        let tools = Arc::new(FakeTools {
            az: Some((
                1,
                String::new(),
                "ERROR: Please run 'az login' to setup account.".into(),
            )),
            azd: Some((0, azd_json("azd-token"), String::new())),
            ..Default::default()
        });
        let chain = build_chain(&[], &tools);
        let token = chain.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), "azd-token");
        assert_eq!(chain.selected(), Some("AzureDeveloperCliCredential"));
        // Remembered: the next request runs only azd.
        chain.get_token(&[STORAGE], None).await.unwrap();
        let commands = tools.commands.lock().unwrap().clone();
        assert_eq!(commands.len(), 3, "{commands:?}");
        assert!(commands[2].contains("azd auth token"), "{commands:?}");
    }

    #[tokio::test]
    async fn other_cli_errors_stop_the_chain() {
        let tools = Arc::new(FakeTools {
            az: Some((
                1,
                String::new(),
                "ERROR: AADSTS530003: Your device is required to be managed to access this resource.".into(),
            )),
            azd: Some((0, azd_json("azd-token"), String::new())),
            ..Default::default()
        });
        let chain = build_chain(&[], &tools);
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        let text = e.to_string();
        assert!(!crate::is_unavailable(&e), "{text}");
        assert!(
            text.starts_with("PipelineAwareCredential authentication failed. AzureCliCredential failed, so the chain stopped there"),
            "{text}"
        );
        assert!(text.contains("- AzureCliCredential (failed): AzureCliCredential authentication failed. ERROR: AADSTS530003"), "{text}");
        assert_eq!(tools.commands.lock().unwrap().len(), 1, "azd was not run");
    }

    #[test]
    fn tool_absence_patterns() {
        let cases = [
            (
                Kind::AzureCli,
                "AzureCliCredential authentication failed. az not found on PATH",
                true,
            ),
            (Kind::AzureCli, "\"/bin/sh\" wasn't found on PATH", true),
            (
                Kind::AzureCli,
                "'az' is not recognized as an internal or external command,",
                true,
            ),
            (
                Kind::AzureCli,
                "ERROR: Please run 'az login' to setup account.",
                true,
            ),
            (
                Kind::AzureCli,
                "Please run 'az account set' to select a subscription.",
                true,
            ),
            (
                Kind::AzureCli,
                "ERROR: AADSTS50173: The provided grant has expired",
                false,
            ),
            (
                Kind::AzureCli,
                "expires_on field not found. Please use Azure CLI 2.54.0 or newer.",
                false,
            ),
            (
                Kind::AzureDeveloperCli,
                "\nnot logged in, run `azd auth login` to login",
                true,
            ),
            (Kind::AzureDeveloperCli, "azd not found on PATH", true),
            (
                Kind::AzureDeveloperCli,
                "fetching token: AADSTS70043",
                false,
            ),
        ];
        for (kind, message, absent) in cases {
            assert_eq!(tool_is_absent(kind, message), absent, "{kind:?}: {message}");
        }
    }

    #[tokio::test]
    async fn a_configured_pipeline_step_uses_the_pipeline_credential_first() {
        // No OIDC endpoint in the map: the pipeline credential is built (inputs present) but
        // unavailable at request time, so the chain falls through to az.
        let tools = Arc::new(FakeTools {
            az: Some((0, az_json("az-token"), String::new())),
            ..Default::default()
        });
        let chain = build_chain(&PIPELINE, &tools);
        assert!(format!("{chain:?}").contains("\"AzurePipelinesCredential\""));
        let token = chain.get_token(&[STORAGE], None).await.unwrap();
        assert_eq!(token.token.secret(), "az-token");
        assert_eq!(chain.selected(), Some("AzureCliCredential"));
    }

    #[tokio::test]
    async fn a_misconfigured_pipeline_step_stops_the_chain() {
        let tools = Arc::new(FakeTools {
            az: Some((0, az_json("az-token"), String::new())),
            ..Default::default()
        });
        let mut vars = PIPELINE.to_vec();
        vars[3] = ("SYSTEM_ACCESSTOKEN", "$(System.AccessToken)");
        let chain = build_chain(&vars, &tools);
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        let text = e.to_string();
        assert!(!crate::is_unavailable(&e), "{text}");
        assert!(
            text.contains("- AzurePipelinesCredential (failed): AzurePipelinesCredential authentication failed."),
            "{text}"
        );
        assert!(tools.commands.lock().unwrap().is_empty(), "az was not run");
    }

    #[tokio::test]
    async fn workload_identity_needs_all_three_variables() {
        let tools = Arc::new(FakeTools::default());
        let chain = build_chain(
            &[
                ("AZURE_TOKEN_CREDENTIALS", "WorkloadIdentityCredential"),
                ("AZURE_CLIENT_ID", "3f8a1c2e-5b7d-4e9f-a1c3-6d2b8e4f0a95"),
            ],
            &tools,
        );
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        assert!(crate::is_unavailable(&e), "{e}");
        assert!(
            e.to_string()
                .contains("AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE not set"),
            "{e}"
        );

        // Configured, but the token file cannot be read: a failure, not absence.
        let chain = build_chain(
            &[
                ("AZURE_TOKEN_CREDENTIALS", "WorkloadIdentityCredential"),
                ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
                ("AZURE_CLIENT_ID", "3f8a1c2e-5b7d-4e9f-a1c3-6d2b8e4f0a95"),
                (
                    "AZURE_FEDERATED_TOKEN_FILE",
                    "/nonexistent/azure-identity-token",
                ),
            ],
            &tools,
        );
        let e = chain.get_token(&[STORAGE], None).await.unwrap_err();
        assert!(!crate::is_unavailable(&e), "{e}");
        assert!(
            e.to_string().contains("/nonexistent/azure-identity-token"),
            "{e}"
        );
    }
}
