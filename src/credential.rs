//! `AzurePipelinesCredential`: the `TokenCredential` adapter over the assertion provider, the
//! token exchange, tenant resolution and the cache.

use crate::{
    AccessTokenInfo, AzurePipelinesAssertion,
    assertion::{self, OIDC_ENDPOINT},
    cache::{Cached, DEFAULT_CAPACITY, Served, TokenCache},
    clock::Clock,
    endpoint,
    error::{Failure, Section, ToError as _},
    exchange::{TOKEN_ENDPOINT, TokenExchange},
    http::HttpClient,
    persistent_cache::PersistentCacheOptions,
    request::{self, Key, Request},
    tenant::TenantPolicy,
    timeout,
};
use azure_core::{
    credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions},
    http::Context,
};
use azure_identity::ClientAssertionCredentialOptions;
use futures::future::BoxFuture;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};
use tracing::{Instrument as _, Level, Span, field};

pub(crate) const NAME: &str = "AzurePipelinesCredential";
const TARGET: &str = "azure_pipelines_credential";
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
    /// [`TokenRequestContext::tenant_id`](crate::TokenRequestContext::tenant_id); `"*"` allows
    /// any.
    pub additionally_allowed_tenants: Vec<String>,
    /// The pipeline's OIDC endpoint. When `None`, `SYSTEM_OIDCREQUESTURI` is read when a token
    /// is requested (not at construction, so chains can build credentials up front).
    pub oidc_request_uri: Option<String>,
    /// How long one HTTP attempt may take; **30 s** when `None`.
    ///
    /// Each attempt (the first and every retry of `client_options.retry`, to either endpoint)
    /// must receive the response headers within this time, and then the whole body within it
    /// again. An attempt that times out is retried like a dropped connection, with the retry
    /// policy's back-off and limits. Zero is refused; `Duration::MAX` means no limit. Timed on
    /// azure_core's async runtime.
    pub attempt_timeout: Option<Duration>,
    /// The budget of one token acquisition; **2 minutes** when `None`.
    ///
    /// It covers everything a cache miss or refresh does: the OIDC request, the token exchange
    /// (and its one repeat after AADSTS700024), every retry and every `Retry-After` wait. When
    /// it runs out the acquisition is cancelled and callers get an error naming
    /// `token_timeout`, whatever the retry policy would still have tried. A cached token that
    /// is still valid keeps being served meanwhile. Zero is refused; `Duration::MAX` means no
    /// limit. Timed on azure_core's async runtime.
    pub token_timeout: Option<Duration>,
    /// The opt-in persistent token cache: an encrypted file that the processes of one pipeline
    /// job share, so that each new process does not pay an OIDC request and a token exchange.
    /// Off when `None` (the default). Needs the crate's `persistent-cache` feature: without it,
    /// `Some` is refused when the credential is built.
    ///
    /// The in-memory cache stays in front: the file is read only when it has no usable token,
    /// and written after each token exchange. The file is sealed (ChaCha20-Poly1305) under a key
    /// derived from the job's `System.AccessToken`: it protects the tokens at rest from other
    /// processes and users of the agent that do not have that token (such as later jobs on a
    /// self-hosted agent), not from code running in the same job, which has the token and could
    /// request the tokens itself. An unreadable, foreign or tampered file is a miss, never an
    /// error. See [`PersistentCacheOptions`] and the README's "Persistent token cache" section.
    pub persistent_cache: Option<PersistentCacheOptions>,
}

impl fmt::Debug for AzurePipelinesCredentialOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzurePipelinesCredentialOptions")
            .field("authority_host", &self.authority_host)
            .field(
                "additionally_allowed_tenants",
                &self.additionally_allowed_tenants,
            )
            .field("oidc_request_uri", &self.oidc_request_uri)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("token_timeout", &self.token_timeout)
            .field("persistent_cache", &self.persistent_cache)
            .finish_non_exhaustive()
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
/// Requests run on azure_core's async runtime (`azure_core::async_runtime`: Tokio unless the
/// application installs another one), like every Azure SDK client.
///
/// ```no_run
/// use azure_core::credentials::TokenCredential;
/// use azure_pipelines_credential::AzurePipelinesCredential;
///
/// #[tokio::main]
/// async fn main() -> azure_core::Result<()> {
///     let credential = AzurePipelinesCredential::new(
///         std::env::var("AZURESUBSCRIPTION_TENANT_ID").unwrap_or_default(),
///         std::env::var("AZURESUBSCRIPTION_CLIENT_ID").unwrap_or_default(),
///         &std::env::var("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID").unwrap_or_default(),
///         std::env::var("SYSTEM_ACCESSTOKEN").unwrap_or_default(),
///         None,
///     )?;
///     let token = credential
///         .get_token(&["https://storage.azure.com/.default"], None)
///         .await?;
///     println!("expires on {}", token.expires_on);
///     Ok(())
/// }
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
    token_timeout: Duration,
    #[cfg(all(feature = "persistent-cache", unix))]
    persistent: Option<crate::persistent_cache::PersistentCache>,
}

impl fmt::Debug for AzurePipelinesCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(NAME)
            .field("tenant_id", &self.inner.tenants.configured())
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
        Self::build(
            &tenant_id,
            client_id,
            service_connection_id,
            system_access_token.into(),
            options.unwrap_or_default(),
            Clock::default(),
        )
        .map(Arc::new)
        .map_err(|f| f.into_error(NAME))
    }

    /// Creates a credential from the variables that the AzureCLI@2 and AzurePowerShell@5 tasks
    /// export for a workload identity federation service connection
    /// (`AZURESUBSCRIPTION_TENANT_ID`, `AZURESUBSCRIPTION_CLIENT_ID`,
    /// `AZURESUBSCRIPTION_SERVICE_CONNECTION_ID`) and `SYSTEM_ACCESSTOKEN`.
    ///
    /// When any is missing the error is *unavailable* ([`is_unavailable`](crate::is_unavailable)
    /// is true) and names every missing variable and the YAML that sets it.
    pub fn from_env(
        options: Option<AzurePipelinesCredentialOptions>,
    ) -> azure_core::Result<Arc<Self>> {
        Self::from_vars(|name| std::env::var(name).ok(), options)
    }

    /// Like [`from_env`](Self::from_env), reading each of those variables through `var`: for
    /// tools whose flags or configuration override the environment. Blank values count as
    /// missing.
    ///
    /// ```
    /// use azure_pipelines_credential::{AzurePipelinesCredential, is_unavailable};
    ///
    /// let flags = [("AZURESUBSCRIPTION_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47")];
    /// let error = AzurePipelinesCredential::from_vars(
    ///     |name| {
    ///         let flag = flags.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
    ///         flag.or_else(|| std::env::var(name).ok())
    ///     },
    ///     None,
    /// );
    /// if std::env::var_os("SYSTEM_ACCESSTOKEN").is_none() {
    ///     assert!(is_unavailable(&error.unwrap_err()));
    /// }
    /// ```
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        options: Option<AzurePipelinesCredentialOptions>,
    ) -> azure_core::Result<Arc<Self>> {
        let (tenant_id, client_id, connection, token) =
            pipeline_inputs(var).map_err(|f| f.into_error(NAME))?;
        Self::new(tenant_id, client_id, &connection, token, options)
    }

    /// Builds the credential on `clock`: the crate's seam for tests that move time.
    pub(crate) fn build(
        tenant_id: &str,
        client_id: String,
        service_connection_id: &str,
        system_access_token: Secret,
        options: AzurePipelinesCredentialOptions,
        clock: Clock,
    ) -> Result<Self, Failure> {
        let tenants = TenantPolicy::new(tenant_id, options.additionally_allowed_tenants)?;
        let client_id = client_id.trim().to_owned();
        if client_id.is_empty() {
            return Err(Failure::new(
                Section::EmptyClientId,
                "The client ID is empty. Use the application (client) ID of the service \
                 connection's service principal, which AzureCLI@2 exports as \
                 AZURESUBSCRIPTION_CLIENT_ID.",
            ));
        }
        assertion::validate_service_connection_id(service_connection_id)?;
        assertion::validate_system_access_token(system_access_token.secret())?;
        let attempt_timeout = timeout::configured(
            options.attempt_timeout,
            timeout::DEFAULT_ATTEMPT_TIMEOUT,
            "attempt_timeout",
        )?;
        let token_timeout = timeout::configured(
            options.token_timeout,
            timeout::DEFAULT_TOKEN_TIMEOUT,
            "token_timeout",
        )?;
        let client_options = options.credential_options.client_options;
        let authority = endpoint::resolve_authority_host(
            options.authority_host.as_deref(),
            client_options.cloud.as_deref(),
            std::env::var(endpoint::AZURE_AUTHORITY_HOST_ENV)
                .ok()
                .as_deref(),
        )
        .map_err(|cause| Failure::new(Section::InvalidAuthorityHost, cause))?;
        // Built here, while the System.AccessToken (its key material) has not moved yet.
        #[cfg(all(feature = "persistent-cache", unix))]
        let persistent = options.persistent_cache.as_ref().and_then(|cache| {
            crate::persistent_cache::PersistentCache::new(
                cache,
                std::env::var(crate::persistent_cache::AGENT_TEMPDIRECTORY_ENV)
                    .ok()
                    .as_deref(),
                system_access_token.secret(),
                &client_id,
                authority.as_str(),
                clock.clone(),
            )
        });
        #[cfg(not(feature = "persistent-cache"))]
        if options.persistent_cache.is_some() {
            return Err(Failure::new(
                Section::PersistentCacheFeature,
                "The persistent_cache option needs the crate's persistent-cache feature, which \
                 is off in this build. Turn it on (cargo add azure_pipelines_credential \
                 --features persistent-cache), or leave persistent_cache None.",
            ));
        }
        #[cfg(all(feature = "persistent-cache", not(unix)))]
        if options.persistent_cache.is_some() {
            return Err(Failure::new(
                Section::PersistentCacheUnsupported,
                "The persistent token cache is not available on this platform yet: it relies on \
                 Unix file ownership and permission checks to keep other users out. Leave \
                 persistent_cache None here.",
            ));
        }
        let http = Arc::new(HttpClient::new(client_options, attempt_timeout));
        let assertion = AzurePipelinesAssertion::from_parts(
            service_connection_id,
            system_access_token,
            options.oidc_request_uri,
            http.clone(),
            clock.clone(),
        );
        let exchange =
            TokenExchange::new(client_id.clone(), authority, http.clone(), clock.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                client_id,
                tenants,
                assertion,
                exchange,
                cache: TokenCache::new(clock, DEFAULT_CAPACITY),
                http,
                token_timeout,
                #[cfg(all(feature = "persistent-cache", unix))]
                persistent,
            }),
        })
    }

    /// Requests an access token for `scopes`, with its expiry, refresh time and type.
    ///
    /// `options` may carry a [`TokenRequestContext`](crate::TokenRequestContext) (claims,
    /// tenant, CAE); see [`TokenCredential::get_token`] for the rest.
    pub async fn get_token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        if let Some(info) = self.hit(scopes, options.as_ref(), Cached::info) {
            return Ok(info);
        }
        self.get(scopes, options, Cached::info).await
    }

    /// The token for `scopes` that the credential can hand out without any request: from its
    /// in-memory cache, else from the persistent token cache file when that is on. `None` when
    /// neither has a token that may be used now, and for requests with claims or a tenant that
    /// is not allowed.
    ///
    /// It never touches the network and needs no async runtime: a short-lived tool can try it
    /// first and start a runtime only when it returns `None`. Reading the file blocks the calling
    /// thread for the time of a small file read. A token it finds in the file is kept in the
    /// in-memory cache too.
    pub fn cached_token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> Option<AccessTokenInfo> {
        let inner = &self.inner;
        let request = Request::new(scopes, options.as_ref(), &inner.tenants).ok()?;
        if request.claims.is_some() {
            return None;
        }
        if let Some(info) = inner.cache.peek(&request, Cached::info) {
            return Some(info);
        }
        #[cfg(all(feature = "persistent-cache", unix))]
        if let Some(persistent) = &inner.persistent
            && request::validate_scopes(scopes).is_ok()
        {
            let key = inner.cache.key(&request);
            let info = persistent.load(&key)?;
            return Some(inner.cache.store(&key, info).info());
        }
        None
    }

    /// Releases the HTTP client and stops background refreshes. Later requests that need the
    /// network fail with a "closed" error; tokens already cached may still be served.
    pub async fn close(&self) {
        // The HTTP client first: no request can start once it is gone.
        self.inner.http.close();
        self.inner.cache.close();
        self.inner.assertion.close().await;
    }

    /// A token from the cache at once, for a call that needs nothing else: no subscriber wants
    /// its span, it has no claims, its request is valid. Every other call, hit or not, goes
    /// through [`get`](Self::get). A plain function returning an `Option`, so that a hit builds
    /// no future of its own and moves the token as little as possible.
    #[inline]
    fn hit<R>(
        &self,
        scopes: &[&str],
        options: Option<&TokenRequestOptions<'_>>,
        project: impl FnOnce(&Cached) -> R,
    ) -> Option<R> {
        if tracing::enabled!(target: TARGET, Level::DEBUG) {
            return None;
        }
        let inner = &self.inner;
        let request = match options {
            None => Request::plain(scopes, inner.tenants.configured()),
            Some(_) => Request::new(scopes, options, &inner.tenants)
                .ok()
                .filter(|request| request.claims.is_none())?,
        };
        let refresh = |key| acquire(inner.clone(), key, None, context_of(options), Span::none());
        inner.cache.lookup(&request, project, refresh, &mut false)
    }

    /// A whole call, traced as one `get_token` span: the credential, scopes and tenant, the
    /// outcome (`hit`, `hit, refreshing in the background`, `miss`, `joined a request in
    /// flight`, `request with claims`, or the failure's section) and the HTTP requests the call
    /// made. Boxed, and owning the call's options, so that a call served by [`hit`](Self::hit)
    /// builds none of it.
    #[cold]
    fn get<'a, R: Send + 'a>(
        &'a self,
        scopes: &'a [&'a str],
        options: Option<TokenRequestOptions<'a>>,
        project: impl Fn(&Cached) -> R + Send + 'a,
    ) -> BoxFuture<'a, azure_core::Result<R>> {
        Box::pin(async move {
            let options = options.as_ref();
            // A disabled span still costs hundreds of instructions (tracing's `log` bridge), on
            // every caller of a cold start: built only when a subscriber wants it.
            let span = if tracing::enabled!(target: TARGET, Level::DEBUG) {
                tracing::debug_span!(
                    target: TARGET,
                    "get_token",
                    credential = NAME,
                    scopes = ?scopes,
                    tenant = field::Empty,
                    outcome = field::Empty,
                    requests = 0u32,
                )
            } else {
                Span::none()
            };
            let inner = &self.inner;
            let request = Request::new(scopes, options, &inner.tenants).map_err(|failure| {
                note(&span, "outcome", failure.section().anchor());
                failure.into_error(NAME)
            })?;
            note(&span, "tenant", request.tenant);
            if request.claims.is_none() {
                let refresh = |key| {
                    let refresh = tracing::debug_span!(
                        target: TARGET,
                        "token_refresh",
                        credential = NAME,
                        scopes = ?scopes,
                        tenant = request.tenant,
                        requests = 0u32,
                    );
                    refresh.follows_from(&span);
                    acquire(inner.clone(), key, None, context_of(options), refresh)
                };
                let mut refreshing = false;
                if let Some(value) =
                    inner
                        .cache
                        .lookup(&request, &project, refresh, &mut refreshing)
                {
                    let outcome = if refreshing {
                        "hit, refreshing in the background"
                    } else {
                        "hit"
                    };
                    note(&span, "outcome", outcome);
                    return Ok(value);
                }
            }
            self.miss(request, options, &span)
                .instrument(span.clone())
                .await
                .map(|cached| project(&cached))
                .map_err(|f| {
                    note(&span, "outcome", f.section().anchor());
                    f.to_error(NAME)
                })
        })
    }

    /// The path that may wait on the network.
    async fn miss(
        &self,
        request: Request<'_>,
        options: Option<&TokenRequestOptions<'_>>,
        span: &Span,
    ) -> Result<Arc<Cached>, Arc<Failure>> {
        request::validate_scopes(request.scopes)?;
        let inner = &self.inner;
        match request.claims {
            Some(claims) => {
                note(span, "outcome", "request with claims");
                let claims = request::claims_param(Some(claims), request.cae)?;
                let key = inner.cache.key(&request);
                let ctx = context_of(options);
                // Boxed: the whole acquisition held inline would grow the future of every call
                // that misses, joiners of a request in flight included, to kilobytes.
                let info = Box::pin(acquire(
                    inner.clone(),
                    key.clone(),
                    claims,
                    ctx,
                    span.clone(),
                ))
                .await?;
                Ok(inner.cache.store(&key, info))
            }
            None => {
                let fetch =
                    |key| acquire(inner.clone(), key, None, context_of(options), span.clone());
                let (served, outcome) = inner.cache.wait(&request, fetch).await;
                note(
                    span,
                    "outcome",
                    match served {
                        Served::Cached => "hit",
                        Served::Started => "miss",
                        Served::Joined => "joined a request in flight",
                    },
                );
                outcome
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::chain::TokenInfoSource for AzurePipelinesCredential {
    async fn token_info(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessTokenInfo> {
        self.get_token_info(scopes, options).await
    }
}

/// Records `value` as `field` of `span`, when the span is on.
fn note(span: &Span, field: &str, value: impl tracing::Value) {
    if !span.is_disabled() {
        span.record(field, value);
    }
}

/// The caller's context, for the requests its call starts (so that azure_core's tracing links
/// them to the caller). A request shared by several callers carries the context of the caller
/// that started it.
fn context_of(options: Option<&TokenRequestOptions<'_>>) -> Context<'static> {
    options.map_or_else(Context::new, |o| o.method_options.context.to_owned())
}

// Written out rather than through `#[async_trait]`, which would box a future holding the
// call's scopes and options on every call: a hit is answered before any future exists, in a
// boxed `Ready` that holds only the token, and the rest of the call is the future `get` boxes.
// A hit in the refresh window therefore starts its background refresh when `get_token` is
// called, not when the future is first polled.
impl TokenCredential for AzurePipelinesCredential {
    /// Requests an access token for `scopes`.
    ///
    /// Put a [`TokenRequestContext`](crate::TokenRequestContext) in `options`
    /// (`TokenRequestContext { .. }.into()`) to send claims, request another allowed tenant, or
    /// request a CAE token.
    fn get_token<'s, 'l, 'x, 'o, 'f>(
        &'s self,
        scopes: &'l [&'x str],
        options: Option<TokenRequestOptions<'o>>,
    ) -> Pin<Box<dyn Future<Output = azure_core::Result<AccessToken>> + Send + 'f>>
    where
        's: 'f,
        'l: 'f,
        'x: 'f,
        'o: 'f,
        Self: 'f,
    {
        let project = |c: &Cached| c.access.clone();
        match self.hit(scopes, options.as_ref(), project) {
            Some(token) => Box::pin(Hit(Some(token))),
            None => self.get(scopes, options, project),
        }
    }
}

/// The future of a call answered from the cache: the token alone, smaller than a `Ready` of the
/// whole `Result`, so that the box every call through the trait pays for is filled with fewer
/// moves.
struct Hit(Option<AccessToken>);

impl Future for Hit {
    type Output = azure_core::Result<AccessToken>;

    fn poll(mut self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.0.take() {
            Some(token) => Poll::Ready(Ok(token)),
            None => Poll::Pending,
        }
    }
}

/// One token acquisition for `key`: the OIDC token, the exchange (with `claims`, the form value
/// of a challenge), within `token_timeout`; through the persistent cache when it is on and the
/// request has no claims. The HTTP attempts it makes are recorded in `span`.
async fn acquire(
    inner: Arc<Inner>,
    key: Arc<Key>,
    claims: Option<String>,
    ctx: Context<'static>,
    span: Span,
) -> Result<AccessTokenInfo, Arc<Failure>> {
    let ctx = ctx.with_value(timeout::Attempts::default());
    let acquired = acquire_counted(&inner, &key, claims, &ctx)
        .instrument(span.clone())
        .await;
    if let Some(attempts) = ctx.value::<timeout::Attempts>() {
        note(&span, "requests", attempts.count());
    }
    acquired
}

async fn acquire_counted(
    inner: &Inner,
    key: &Arc<Key>,
    claims: Option<String>,
    ctx: &Context<'static>,
) -> Result<AccessTokenInfo, Arc<Failure>> {
    if inner.http.is_closed() {
        return Err(Arc::new(Failure::closed()));
    }
    let network = timeout::budget(
        inner.token_timeout,
        || {
            if inner.assertion.fetching() {
                OIDC_ENDPOINT
            } else {
                TOKEN_ENDPOINT
            }
        },
        inner
            .exchange
            .acquire(&inner.assertion, key, claims.as_deref(), ctx),
    );
    // Only misses and refreshes come here, so the file is never read on an in-memory hit. It is
    // read before the (lazy) acquisition starts and written after it succeeds; its own I/O is
    // bounded by its lock wait, outside the network budget.
    #[cfg(all(feature = "persistent-cache", unix))]
    if claims.is_none()
        && let Some(persistent) = &inner.persistent
    {
        return persistent.through(key, network).await;
    }
    network.await
}

/// The four inputs of [`AzurePipelinesCredential::from_vars`], or the failure naming what is
/// missing and how to set it.
pub(crate) fn pipeline_inputs(
    var: impl Fn(&str) -> Option<String>,
) -> Result<(String, String, String, Secret), Failure> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
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
            Err(Failure::new(
                Section::MissingVariables,
                format!(
                    "{} not set. Run in a step of the AzureCLI@2 (or AzurePowerShell@5) task with \
                     a service connection that uses workload identity federation: the task \
                     exports the AZURESUBSCRIPTION_* variables only for such connections. \
                     SYSTEM_ACCESSTOKEN must be mapped in the step:\n\
                     - task: AzureCLI@2\n  inputs:\n    azureSubscription: <service connection \
                     name>\n    scriptType: bash\n    scriptLocation: inlineScript\n    \
                     inlineScript: <your command>\n  env:\n    SYSTEM_ACCESSTOKEN: \
                     $(System.AccessToken)",
                    missing.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_inputs_name_what_is_missing() {
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
            pipeline_inputs(move |k| {
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
        assert_eq!(e.section(), Section::MissingVariables);
        let text = e.text();
        assert!(
            text.starts_with("AZURESUBSCRIPTION_TENANT_ID, SYSTEM_ACCESSTOKEN not set."),
            "{text}"
        );
        assert!(!text.contains("AZURESUBSCRIPTION_CLIENT_ID,"), "{text}");
        assert!(
            text.contains("SYSTEM_ACCESSTOKEN: $(System.AccessToken)"),
            "{text}"
        );
        assert!(text.contains("workload identity federation"), "{text}");
        assert!(text.contains("AzureCLI@2"), "{text}");

        let e = with(&[
            TENANT_ID_ENV,
            CLIENT_ID_ENV,
            SERVICE_CONNECTION_ID_ENV,
            SYSTEM_ACCESS_TOKEN_ENV,
        ])
        .unwrap_err();
        assert!(e.text().starts_with(&format!("{TENANT_ID_ENV}, {CLIENT_ID_ENV}, {SERVICE_CONNECTION_ID_ENV}, {SYSTEM_ACCESS_TOKEN_ENV} not set")));
        // Blank counts as missing, and no value is ever echoed.
        let blank =
            pipeline_inputs(|name| Some(if name == CLIENT_ID_ENV { " " } else { "v" }.into()));
        let e = blank.unwrap_err();
        assert!(
            e.text().starts_with("AZURESUBSCRIPTION_CLIENT_ID not set."),
            "{e}"
        );
    }
}
