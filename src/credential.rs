//! `AzurePipelinesCredential`: the `TokenCredential` adapter over the assertion provider, the
//! token exchange, tenant resolution and the cache.

use crate::{
    AccessTokenInfo, AzurePipelinesAssertion, TokenRequestContext,
    assertion::{validate_service_connection_id, validate_system_access_token},
    cache::{Cached, DEFAULT_CAPACITY, KeyRef, Lookup, TokenCache},
    claims,
    clock::{Clock, SystemClock},
    endpoint, error,
    exchange::{TokenExchange, TokenRequest},
    http::HttpClient,
    tenant::{self, TenantPolicy},
    timeout,
};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_identity::ClientAssertionCredentialOptions;
use futures::future::BoxFuture;
use std::{fmt, sync::Arc};

#[cfg(feature = "persistent-cache")]
use crate::persistent_cache::{self, PersistentCache, PersistentCacheOptions};

const TENANT_ID_ENV: &str = "AZURESUBSCRIPTION_TENANT_ID";
const CLIENT_ID_ENV: &str = "AZURESUBSCRIPTION_CLIENT_ID";
const SERVICE_CONNECTION_ID_ENV: &str = "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID";
const SYSTEM_ACCESS_TOKEN_ENV: &str = "SYSTEM_ACCESSTOKEN";

/// Options for [`AzurePipelinesCredential`].
///
/// `Debug` prints no secret (there is none in here) and leaves out the HTTP client options.
#[derive(Default)]
pub struct AzurePipelinesCredentialOptions {
    /// The HTTP options, as in `azure_identity`: `credential_options.client_options` carries the
    /// retry policy, the transport and the cloud (whose authority host is used when
    /// [`authority_host`](Self::authority_host) is `None`).
    pub credential_options: ClientAssertionCredentialOptions,
    /// The Microsoft Entra authority host, such as `https://login.microsoftonline.us` for US
    /// Government. When `None`: the cloud of `client_options`, else `AZURE_AUTHORITY_HOST`, else
    /// `https://login.microsoftonline.com`. A host without scheme gets `https://`. `http://` is
    /// only accepted for loopback hosts (local emulators).
    pub authority_host: Option<String>,
    /// Tenants besides the credential's own that requests may name in
    /// [`TokenRequestContext::tenant_id`]; `"*"` allows any.
    pub additionally_allowed_tenants: Vec<String>,
    /// The pipeline's OIDC endpoint. When `None`, `SYSTEM_OIDCREQUESTURI` is read when a token
    /// is requested (not at construction, so chains can build credentials up front).
    pub oidc_request_uri: Option<String>,
    /// Where the time comes from; the system clock when `None`. Tests use
    /// [`ManualClock`](crate::clock::ManualClock) to move through token lifetimes without sleeping.
    pub clock: Option<Arc<dyn Clock>>,
    /// How long one HTTP attempt may take; **30 s** when `None`.
    ///
    /// Each attempt (the first and every retry of `client_options.retry`, to either endpoint)
    /// must receive the response headers within this time, and then the whole body within it
    /// again. An attempt that times out is retried like a dropped connection, with the retry
    /// policy's back-off and limits. Zero is refused; `Duration::MAX` means no limit. Uses
    /// tokio's clock.
    pub attempt_timeout: Option<std::time::Duration>,
    /// The budget of one token acquisition; **2 minutes** when `None`.
    ///
    /// It covers everything a cache miss or refresh does: the OIDC request, the token exchange
    /// (and its one repeat after AADSTS700024), every retry and every `Retry-After` wait. When
    /// it runs out the acquisition is cancelled and callers get an error naming
    /// `token_timeout`, whatever the retry policy would still have tried. A cached token that
    /// is still valid keeps being served meanwhile. Zero is refused; `Duration::MAX` means no
    /// limit. Uses tokio's clock.
    pub token_timeout: Option<std::time::Duration>,
    /// The opt-in persistent token cache: an encrypted file that the processes of one pipeline
    /// job share, so that each new process does not pay an OIDC request and a token exchange.
    /// Off when `None` (the default).
    ///
    /// The in-memory cache stays in front: the file is read only when it has no usable token,
    /// and written after each token exchange. The file is sealed (ChaCha20-Poly1305) under a key
    /// derived from the job's `System.AccessToken`: it protects the tokens at rest from other
    /// processes and users of the agent that do not have that token (such as later jobs on a
    /// self-hosted agent), not from code running in the same job, which has the token and could
    /// request the tokens itself. An unreadable, foreign or tampered file is a miss, never an
    /// error. See [`PersistentCacheOptions`] and the README's "Persistent token cache" section.
    #[cfg(feature = "persistent-cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "persistent-cache")))]
    pub persistent_cache: Option<PersistentCacheOptions>,
}

impl fmt::Debug for AzurePipelinesCredentialOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("AzurePipelinesCredentialOptions");
        debug
            .field("authority_host", &self.authority_host)
            .field(
                "additionally_allowed_tenants",
                &self.additionally_allowed_tenants,
            )
            .field("oidc_request_uri", &self.oidc_request_uri)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("token_timeout", &self.token_timeout);
        #[cfg(feature = "persistent-cache")]
        debug.field("persistent_cache", &self.persistent_cache);
        debug.finish_non_exhaustive()
    }
}

/// Authenticates as the service principal (or managed identity) of an Azure Pipelines service
/// connection that uses workload identity federation.
///
/// The credential asks the pipeline's OIDC endpoint for an ID token of the service connection,
/// using the job's `System.AccessToken`, and exchanges it at Microsoft Entra ID for an access
/// token. Tokens are cached per scopes, tenant and CAE mode and refreshed in the background before
/// they expire; concurrent requests for the same token share one exchange.
///
/// ```no_run
/// use azure_core::credentials::TokenCredential;
/// use azure_pipelines_credential::AzurePipelinesCredential;
///
/// # async fn example() -> azure_core::Result<()> {
/// let credential = AzurePipelinesCredential::new(
///     std::env::var("AZURESUBSCRIPTION_TENANT_ID").unwrap_or_default(),
///     std::env::var("AZURESUBSCRIPTION_CLIENT_ID").unwrap_or_default(),
///     &std::env::var("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID").unwrap_or_default(),
///     std::env::var("SYSTEM_ACCESSTOKEN").unwrap_or_default(),
///     None,
/// )?;
/// let token = credential.get_token(&["https://storage.azure.com/.default"], None).await?;
/// # let _ = token;
/// # Ok(())
/// # }
/// ```
pub struct AzurePipelinesCredential {
    inner: Arc<Inner>,
}

struct Inner {
    client_id: String,
    tenants: TenantPolicy,
    assertion: AzurePipelinesAssertion,
    exchange: TokenExchange,
    cache: TokenCache,
    http: Arc<HttpClient>,
    token_timeout: std::time::Duration,
    #[cfg(feature = "persistent-cache")]
    persistent: Option<PersistentCache>,
}

impl fmt::Debug for AzurePipelinesCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzurePipelinesCredential")
            .field("tenant_id", &self.inner.tenants.configured)
            .field("client_id", &self.inner.client_id)
            .field("assertion", &self.inner.assertion)
            .finish_non_exhaustive()
    }
}

impl AzurePipelinesCredential {
    /// Creates a credential for the service connection `service_connection_id`, whose service
    /// principal is `client_id` in `tenant_id`, authenticating to Azure DevOps with the job's
    /// `System.AccessToken`.
    ///
    /// The signature is that of `azure_identity::AzurePipelinesCredential::new`. Inputs are
    /// checked here, each error naming the input and the fix; `SYSTEM_OIDCREQUESTURI` is not
    /// needed until a token is requested.
    pub fn new(
        tenant_id: String,
        client_id: String,
        service_connection_id: &str,
        system_access_token: impl Into<Secret>,
        options: Option<AzurePipelinesCredentialOptions>,
    ) -> azure_core::Result<Arc<Self>> {
        let options = options.unwrap_or_default();
        let system_access_token = system_access_token.into();
        let tenant_id = tenant_id.trim().to_owned();
        let client_id = client_id.trim().to_owned();
        tenant::validate_tenant_id(&tenant_id, "tenant ID").map_err(error::failed)?;
        if client_id.is_empty() {
            return Err(error::failed(
                "The client ID is empty. Use the application (client) ID of the service \
                 connection's service principal, which AzureCLI@2 exports as \
                 AZURESUBSCRIPTION_CLIENT_ID.",
            ));
        }
        validate_service_connection_id(service_connection_id).map_err(error::failed)?;
        validate_system_access_token(system_access_token.secret()).map_err(error::failed)?;
        for allowed in &options.additionally_allowed_tenants {
            if allowed != "*" {
                tenant::validate_tenant_id(allowed, "tenant ID in additionally_allowed_tenants")
                    .map_err(error::failed)?;
            }
        }

        let attempt_timeout = timeout::configured(
            options.attempt_timeout,
            timeout::DEFAULT_ATTEMPT_TIMEOUT,
            "attempt_timeout",
        )
        .map_err(error::failed)?;
        let token_timeout = timeout::configured(
            options.token_timeout,
            timeout::DEFAULT_TOKEN_TIMEOUT,
            "token_timeout",
        )
        .map_err(error::failed)?;

        let client_options = options.credential_options.client_options;
        let authority = endpoint::resolve_authority_host(
            options.authority_host.as_deref(),
            client_options.cloud.as_deref(),
            std::env::var(endpoint::AZURE_AUTHORITY_HOST_ENV)
                .ok()
                .as_deref(),
        )
        .map_err(error::failed)?;
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        // Built here, while the System.AccessToken (its key material) has not moved yet.
        #[cfg(feature = "persistent-cache")]
        let persistent = options.persistent_cache.as_ref().and_then(|cache| {
            PersistentCache::new(
                cache,
                std::env::var(persistent_cache::AGENT_TEMPDIRECTORY_ENV)
                    .ok()
                    .as_deref(),
                system_access_token.secret(),
                &client_id,
                authority.as_str(),
                clock.clone(),
            )
        });
        let http = Arc::new(HttpClient::new(client_options, attempt_timeout));
        let assertion = AzurePipelinesAssertion::from_parts(
            service_connection_id,
            system_access_token,
            options.oidc_request_uri,
            http.clone(),
            clock.clone(),
            token_timeout,
        );
        let exchange =
            TokenExchange::new(client_id.clone(), authority, http.clone(), clock.clone());
        let tenants = TenantPolicy {
            configured: tenant_id,
            additionally_allowed: options.additionally_allowed_tenants,
            multitenant_disabled: tenant::multitenant_disabled(
                std::env::var(tenant::DISABLE_MULTITENANT_ENV)
                    .ok()
                    .as_deref(),
            ),
        };
        Ok(Arc::new(Self {
            inner: Arc::new(Inner {
                client_id,
                tenants,
                assertion,
                exchange,
                cache: TokenCache::new(clock, DEFAULT_CAPACITY),
                http,
                token_timeout,
                #[cfg(feature = "persistent-cache")]
                persistent,
            }),
        }))
    }

    /// Creates a credential from the variables that the AzureCLI@2 and AzurePowerShell@5 tasks
    /// export (`AZURESUBSCRIPTION_TENANT_ID`, `AZURESUBSCRIPTION_CLIENT_ID`,
    /// `AZURESUBSCRIPTION_SERVICE_CONNECTION_ID`) and `SYSTEM_ACCESSTOKEN`.
    ///
    /// When any is missing the error is *unavailable* ([`is_unavailable`](crate::is_unavailable)
    /// is true) and names every missing variable and the YAML that sets it.
    pub fn from_env(
        options: Option<AzurePipelinesCredentialOptions>,
    ) -> azure_core::Result<Arc<Self>> {
        let (tenant_id, client_id, connection, token) =
            inputs_from_env(|name| std::env::var(name).ok()).map_err(error::unavailable)?;
        Self::new(tenant_id, client_id, &connection, token, options)
    }

    /// Requests an access token for `scopes`, with its expiry, refresh time and type.
    ///
    /// `options` may carry a [`TokenRequestContext`] (claims, tenant, CAE); see
    /// [`TokenCredential::get_token`] for the rest.
    pub async fn get_token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        self.get(scopes, options.as_ref(), |c| c.info.clone()).await
    }

    /// Releases the HTTP client and stops background refreshes. Later requests that need the
    /// network fail with a "closed" error; tokens already cached may still be served.
    pub async fn close(&self) {
        // The HTTP client first: no request can start once it is gone.
        self.inner.http.close();
        self.inner.cache.close();
        self.inner.assertion.close().await;
    }

    async fn get<R>(
        &self,
        scopes: &[&str],
        options: Option<&TokenRequestOptions<'_>>,
        project: impl Fn(&Cached) -> R,
    ) -> azure_core::Result<R> {
        let context = TokenRequestContext::of(options);
        let target = Target {
            tenant: self
                .inner
                .tenants
                .resolve(context.and_then(|c| c.tenant_id.as_deref()))
                .map_err(error::failed)?,
            cae: context.is_some_and(|c| c.enable_cae),
            claims: context
                .and_then(|c| c.claims.as_deref())
                .filter(|c| !c.trim().is_empty()),
        };
        let key = KeyRef {
            scopes,
            tenant: target.tenant,
            cae: target.cae,
        };
        if target.claims.is_none()
            && let Lookup::Hit(value) = self.inner.cache.lookup(key, &project, || {
                let claims = claims::request_claims(None, target.cae).ok().flatten();
                fetch(self.inner.clone(), target.request(scopes, claims))
            })
        {
            tracing::debug!(target: "azure_pipelines_credential", "token cache: hit");
            return Ok(value);
        }
        Ok(project(&*self.miss(scopes, target).await?))
    }

    /// The path that may wait on the network, boxed so that the hit path's future stays small.
    #[cold]
    fn miss<'a>(
        &'a self,
        scopes: &'a [&'a str],
        target: Target<'a>,
    ) -> BoxFuture<'a, azure_core::Result<Arc<Cached>>> {
        Box::pin(async move {
            validate_scopes(scopes).map_err(error::failed)?;
            let claims =
                claims::request_claims(target.claims, target.cae).map_err(error::failed)?;
            let request = target.request(scopes, claims);
            let key = KeyRef {
                scopes,
                tenant: target.tenant,
                cae: target.cae,
            };
            let inner = &self.inner;
            if target.claims.is_some() {
                let info = fetch(inner.clone(), request).await?;
                Ok(inner.cache.store(key, info))
            } else {
                inner
                    .cache
                    .wait(key, || fetch(inner.clone(), request))
                    .await
            }
        })
    }
}

/// Where a request goes, decided before any lookup or I/O.
#[derive(Clone, Copy)]
struct Target<'a> {
    tenant: &'a str,
    cae: bool,
    claims: Option<&'a str>,
}

impl Target<'_> {
    fn request(&self, scopes: &[&str], claims: Option<String>) -> TokenRequest {
        TokenRequest {
            tenant: self.tenant.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            claims,
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for AzurePipelinesCredential {
    /// Requests an access token for `scopes`.
    ///
    /// Put a [`TokenRequestContext`] in `options` (`TokenRequestContext { .. }.into()`) to send
    /// claims, request another allowed tenant, or request a CAE token.
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.get(scopes, options.as_ref(), |c| c.access.clone())
            .await
    }
}

async fn fetch(inner: Arc<Inner>, request: TokenRequest) -> azure_core::Result<AccessTokenInfo> {
    if inner.http.is_closed() {
        return Err(error::closed());
    }
    // The overall budget wraps the whole acquisition, retries and Retry-After waits included.
    let acquisition = timeout::within_budget(
        inner.token_timeout,
        || stage(&inner),
        inner.exchange.acquire(&inner.assertion, &request),
    );
    // Only misses and refreshes come here, so the file is never read on an in-memory hit. It is
    // read before the (lazy) acquisition starts and written after it succeeds; its own I/O is
    // bounded by its lock wait, outside the network budget.
    #[cfg(feature = "persistent-cache")]
    if let Some(persistent) = &inner.persistent {
        return persistent.through(&request, acquisition).await;
    }
    acquisition.await
}

/// The endpoint an acquisition that ran out of time was most likely waiting for.
fn stage(inner: &Inner) -> &'static str {
    if inner.assertion.fetching() {
        "Azure DevOps OIDC endpoint"
    } else {
        "Microsoft Entra ID token endpoint"
    }
}

/// Scopes must be present and free of whitespace and control characters (they are joined by
/// spaces on the wire).
fn validate_scopes(scopes: &[&str]) -> Result<(), String> {
    if scopes.is_empty() {
        return Err("No scope was requested. Pass at least one scope, such as \
                    https://storage.azure.com/.default."
            .to_owned());
    }
    for scope in scopes {
        if scope.is_empty() {
            return Err("A requested scope is empty. Use a scope such as \
                        https://storage.azure.com/.default."
                .to_owned());
        }
        if let Some(bad) = scope.chars().find(|c| c.is_whitespace() || c.is_control()) {
            let shown: String = scope
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect();
            return Err(format!(
                "The scope '{shown}' contains {bad:?}; scopes contain no whitespace or control \
                 characters. Pass each scope as its own item, such as \
                 https://storage.azure.com/.default."
            ));
        }
    }
    Ok(())
}

/// The four inputs of [`AzurePipelinesCredential::from_env`], or a message naming what is
/// missing and how to set it.
pub(crate) fn inputs_from_env(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, String, String, Secret), String> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let tenant = get(TENANT_ID_ENV);
    let client = get(CLIENT_ID_ENV);
    let connection = get(SERVICE_CONNECTION_ID_ENV);
    let token = get(SYSTEM_ACCESS_TOKEN_ENV);
    match (tenant, client, connection, token) {
        (Some(t), Some(c), Some(s), Some(a)) => Ok((t, c, s, Secret::new(a))),
        (tenant, client, connection, token) => {
            let missing: Vec<&str> = [
                (TENANT_ID_ENV, tenant.is_none()),
                (CLIENT_ID_ENV, client.is_none()),
                (SERVICE_CONNECTION_ID_ENV, connection.is_none()),
                (SYSTEM_ACCESS_TOKEN_ENV, token.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, missing)| missing.then_some(name))
            .collect();
            Err(format!(
                "Environment variables missing: {}. Run in an Azure Pipelines job step that sets \
                 them: the AzureCLI@2 task exports the AZURESUBSCRIPTION_* variables of its \
                 service connection, and SYSTEM_ACCESSTOKEN must be mapped:\n\
                 - task: AzureCLI@2\n  inputs:\n    azureSubscription: <service connection name>\n    \
                 scriptType: bash\n    scriptLocation: inlineScript\n    inlineScript: <your command>\n  \
                 env:\n    SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
                missing.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_validation() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["https://storage.azure.com/.default"], None),
            (&["api://x/.default", "openid"], None),
            (&[], Some("No scope")),
            (&[""], Some("is empty")),
            (&["a b"], Some("' '")),
            (&["a\tb"], Some("'\\t'")),
            (&["a\u{0}b"], Some("'\\0'")),
            (&["ok", "a\nb"], Some("'\\n'")),
        ];
        for (scopes, expected) in cases {
            match (validate_scopes(scopes), expected) {
                (Ok(()), None) => {}
                (Err(m), Some(e)) => assert!(m.contains(e), "{scopes:?}: {m}"),
                (got, _) => panic!("{scopes:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn env_inputs() {
        let all = [
            (TENANT_ID_ENV, "t"),
            (CLIENT_ID_ENV, "c"),
            (SERVICE_CONNECTION_ID_ENV, "s"),
            (SYSTEM_ACCESS_TOKEN_ENV, "secret-value"),
        ];
        let with = |skip: &[&str]| {
            let vars: Vec<(&str, &str)> = all
                .iter()
                .copied()
                .filter(|(k, _)| !skip.contains(k))
                .collect();
            inputs_from_env(move |k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        let (t, c, s, a) = with(&[]).unwrap();
        assert_eq!(
            (t.as_str(), c.as_str(), s.as_str(), a.secret()),
            ("t", "c", "s", "secret-value")
        );

        let e = with(&[TENANT_ID_ENV, SYSTEM_ACCESS_TOKEN_ENV]).unwrap_err();
        assert!(
            e.contains("AZURESUBSCRIPTION_TENANT_ID, SYSTEM_ACCESSTOKEN"),
            "{e}"
        );
        assert!(!e.contains("AZURESUBSCRIPTION_CLIENT_ID,"), "{e}");
        assert!(
            e.contains("SYSTEM_ACCESSTOKEN: $(System.AccessToken)"),
            "{e}"
        );
        assert!(e.contains("AzureCLI@2"), "{e}");

        let e = with(&[
            TENANT_ID_ENV,
            CLIENT_ID_ENV,
            SERVICE_CONNECTION_ID_ENV,
            SYSTEM_ACCESS_TOKEN_ENV,
        ])
        .unwrap_err();
        assert!(e.contains(&format!("{TENANT_ID_ENV}, {CLIENT_ID_ENV}, {SERVICE_CONNECTION_ID_ENV}, {SYSTEM_ACCESS_TOKEN_ENV}")));
    }
}
