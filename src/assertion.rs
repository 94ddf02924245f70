//! The assertion provider: the pipeline's OIDC token, fetched from Azure DevOps with the
//! System.AccessToken and reused until shortly before it expires.
//!
//! Every OIDC diagnostic lives here: what each failure of the endpoint means and how to fix it.

use crate::{
    clock::Clock,
    endpoint,
    error::{Failure, Section, ToError as _},
    flight::SingleFlight,
    http::{self, HttpClient, Response},
    jwt::FederationClaims,
    timeout, token,
};
use arc_swap::ArcSwapOption;
use azure_core::{
    credentials::Secret,
    error::ErrorKind,
    http::{
        ClientMethodOptions, ClientOptions, Context, Method, Request, StatusCode,
        headers::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName},
    },
};
use azure_identity::ClientAssertion;
use serde_json::Value;
use std::{fmt, sync::Arc};
use time::{Duration, OffsetDateTime};

const NAME: &str = "AzurePipelinesAssertion";
const FEDAUTH_REDIRECT: HeaderName = HeaderName::from_static("x-tfs-fedauthredirect");
/// An OIDC token is reused until this long before its `exp`, so Entra never sees it expire.
const REUSE_MARGIN: Duration = Duration::seconds(60);
/// How long to reuse an OIDC token whose `exp` cannot be read.
const REUSE_UNKNOWN_EXPIRY: Duration = Duration::minutes(4);
const SYSTEM_TOKEN_MAPPING: &str = "env:\n  SYSTEM_ACCESSTOKEN: $(System.AccessToken)";
pub(crate) const OIDC_ENDPOINT: &str = "Azure DevOps OIDC endpoint";

/// Options for [`AzurePipelinesAssertion`].
#[derive(Clone, Default)]
pub struct AzurePipelinesAssertionOptions {
    /// The HTTP pipeline's options: retry, transport, logging.
    pub client_options: ClientOptions,
    /// The pipeline's OIDC endpoint. When `None`, `SYSTEM_OIDCREQUESTURI` is read at each
    /// request, so the provider can be built outside a pipeline.
    pub oidc_request_uri: Option<String>,
    /// How long each HTTP attempt (each retry included) may wait for the OIDC endpoint's
    /// response headers, and then for its body; 30 s when `None`. A timed-out attempt is
    /// retried as `client_options.retry` allows. See
    /// [`AzurePipelinesCredentialOptions::attempt_timeout`](crate::AzurePipelinesCredentialOptions::attempt_timeout).
    pub attempt_timeout: Option<std::time::Duration>,
}

impl fmt::Debug for AzurePipelinesAssertionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzurePipelinesAssertionOptions")
            .field("oidc_request_uri", &self.oidc_request_uri)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

/// Supplies client assertions: the Azure Pipelines OIDC token of a service connection.
///
/// Implements [`azure_identity::ClientAssertion`], so it also plugs into
/// [`azure_identity::ClientAssertionCredential`]. Concurrent callers share one OIDC request, and
/// a token is reused until a minute before its `exp`.
///
/// ```no_run
/// use azure_identity::ClientAssertionCredential;
/// use azure_pipelines_credential::AzurePipelinesAssertion;
///
/// fn main() -> azure_core::Result<()> {
///     let assertion = AzurePipelinesAssertion::new(
///         "00000000-0000-0000-0000-000000000000",
///         std::env::var("SYSTEM_ACCESSTOKEN").unwrap_or_default(),
///         None,
///     )?;
///     let credential = ClientAssertionCredential::new(
///         "tenant-id".to_string(),
///         "client-id".to_string(),
///         assertion,
///         None,
///     )?;
///     println!("{credential:?}");
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct AzurePipelinesAssertion {
    inner: Arc<Inner>,
}

struct Inner {
    service_connection_id: String,
    system_access_token: Secret,
    oidc_request_uri: Option<String>,
    http: Arc<HttpClient>,
    clock: Clock,
    reusable: ArcSwapOption<OidcToken>,
    flight: SingleFlight<Arc<OidcToken>>,
}

/// An OIDC token and what the credential reads from it.
pub(crate) struct OidcToken {
    token: Secret,
    reuse_until: OffsetDateTime,
    claims: FederationClaims,
}

impl fmt::Debug for AzurePipelinesAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(NAME)
            .field("service_connection_id", &self.inner.service_connection_id)
            .field("oidc_request_uri", &self.inner.oidc_request_uri)
            .finish_non_exhaustive()
    }
}

impl AzurePipelinesAssertion {
    /// Creates an assertion provider for the service connection `service_connection_id`,
    /// authenticating to Azure DevOps with the pipeline's `System.AccessToken`.
    ///
    /// Fails when an input is empty, when `system_access_token` is the unexpanded macro
    /// `$(System.AccessToken)`, or when `attempt_timeout` is zero.
    pub fn new(
        service_connection_id: &str,
        system_access_token: impl Into<Secret>,
        options: Option<AzurePipelinesAssertionOptions>,
    ) -> azure_core::Result<Self> {
        let options = options.unwrap_or_default();
        let system_access_token = system_access_token.into();
        let built = (|| {
            validate_service_connection_id(service_connection_id)?;
            validate_system_access_token(system_access_token.secret())?;
            let attempt_timeout = timeout::configured(
                options.attempt_timeout,
                timeout::DEFAULT_ATTEMPT_TIMEOUT,
                "attempt_timeout",
            )?;
            Ok(Arc::new(HttpClient::new(
                options.client_options,
                attempt_timeout,
            )))
        })();
        let http = built.map_err(|f: Failure| f.into_error(NAME))?;
        Ok(Self::from_parts(
            service_connection_id,
            system_access_token,
            options.oidc_request_uri,
            http,
            Clock::default(),
        ))
    }

    /// A provider on an HTTP client and clock shared with a credential; inputs already checked.
    pub(crate) fn from_parts(
        service_connection_id: &str,
        system_access_token: Secret,
        oidc_request_uri: Option<String>,
        http: Arc<HttpClient>,
        clock: Clock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                service_connection_id: service_connection_id.trim().to_owned(),
                system_access_token,
                oidc_request_uri,
                http,
                clock,
                reusable: ArcSwapOption::empty(),
                // A fetch that every acquisition waiting for it gave up on (at its
                // token_timeout) is cancelled, not left hanging for the next one to join.
                flight: SingleFlight::while_awaited(),
            }),
        }
    }

    /// The OIDC token to present as a client assertion: the one held if it is still good for
    /// more than a minute, else a new one (one request shared by concurrent callers).
    pub async fn oidc_token(&self) -> azure_core::Result<Secret> {
        self.token(&Context::new())
            .await
            .map_err(|f| f.to_error(NAME))
    }

    async fn token(&self, ctx: &Context<'_>) -> Result<Secret, Arc<Failure>> {
        Ok(self.reusable_token(ctx).await?.token.clone())
    }

    /// The OIDC token and its claims. A new request carries `ctx` (the first caller's, when
    /// several callers share it).
    pub(crate) async fn reusable_token(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Arc<OidcToken>, Arc<Failure>> {
        if let Some(held) = self.inner.reusable.load_full()
            && self.inner.clock.now() < held.reuse_until
        {
            return Ok(held);
        }
        let ctx = ctx.to_owned();
        let inner = &self.inner;
        inner
            .flight
            .join(|| {
                let (inner, ctx) = (inner.clone(), ctx.clone());
                async move {
                    let fresh = Arc::new(inner.fetch(&ctx).await?);
                    inner.reusable.store(Some(fresh.clone()));
                    Ok(fresh)
                }
            })
            .1
            .await
    }

    /// Whether an OIDC request is in flight: what a token acquisition that ran out of time was
    /// most likely waiting for.
    pub(crate) fn fetching(&self) -> bool {
        self.inner.flight.in_flight()
    }

    /// Forgets `stale` (Entra said it expired: AADSTS700024) so the next call fetches anew.
    pub(crate) fn forget(&self, stale: &OidcToken) {
        let held = self.inner.reusable.load();
        if held.as_ref().is_some_and(|h| h.token == stale.token) {
            self.inner.reusable.store(None);
        }
    }

    /// Stops network activity: drops the HTTP client and cancels a request in flight. Later
    /// requests fail with a "closed" error.
    pub async fn close(&self) {
        self.inner.http.close();
        self.inner.flight.close();
        self.inner.reusable.store(None);
    }
}

impl OidcToken {
    pub(crate) fn secret(&self) -> &Secret {
        &self.token
    }

    pub(crate) fn claims(&self) -> &FederationClaims {
        &self.claims
    }
}

impl Inner {
    async fn fetch(&self, ctx: &Context<'_>) -> Result<OidcToken, Failure> {
        let env_uri = std::env::var(endpoint::OIDC_REQUEST_URI_ENV).ok();
        let url = endpoint::oidc_request_url(
            self.oidc_request_uri.as_deref(),
            env_uri.as_deref(),
            &self.service_connection_id,
        )
        .map_err(|cause| Failure::new(Section::InvalidOidcRequestUri, cause))?
        .ok_or_else(|| {
            Failure::new(
                Section::NotInPipeline,
                format!(
                    "{} is not set, so this is not running in an Azure Pipelines job (the agent \
                     sets it for every job). Outside a pipeline, use another credential, or the \
                     emulator for tests.",
                    endpoint::OIDC_REQUEST_URI_ENV
                ),
            )
        })?;
        let mut request = Request::new(url, Method::Post);
        request.insert_header(
            AUTHORIZATION,
            format!("Bearer {}", self.system_access_token.secret()),
        );
        request.insert_header(FEDAUTH_REDIRECT, "Suppress");
        request.insert_header(CONTENT_TYPE, "application/json");
        request.insert_header(CONTENT_LENGTH, "0");
        let response = self.http.send(ctx, &mut request, OIDC_ENDPOINT).await?;
        let token = parse_oidc_response(response, &self.service_connection_id)?;
        let claims = FederationClaims::from_token(token.secret());
        let now = self.clock.now();
        let reuse_until = claims
            .exp
            .and_then(|exp| OffsetDateTime::from_unix_timestamp(exp).ok())
            .map(|exp| exp - REUSE_MARGIN)
            .unwrap_or(now + REUSE_UNKNOWN_EXPIRY);
        tracing::debug!(target: "azure_pipelines_credential", "OIDC token fetched");
        Ok(OidcToken {
            token,
            reuse_until,
            claims,
        })
    }
}

#[async_trait::async_trait]
impl ClientAssertion for AzurePipelinesAssertion {
    async fn secret(&self, options: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let ctx = options.map(|o| o.context).unwrap_or_default();
        let token = self.token(&ctx).await.map_err(|f| f.to_error(NAME))?;
        Ok(token.secret().to_owned())
    }
}

pub(crate) fn validate_service_connection_id(id: &str) -> Result<(), Failure> {
    if id.trim().is_empty() {
        return Err(Failure::new(
            Section::EmptyServiceConnectionId,
            "The service connection ID is empty. Use the ID of the Azure Resource Manager service \
             connection: the resourceId GUID in the URL of the connection's page, which \
             AzureCLI@2 exports as AZURESUBSCRIPTION_SERVICE_CONNECTION_ID.",
        ));
    }
    Ok(())
}

pub(crate) fn validate_system_access_token(token: &str) -> Result<(), Failure> {
    let token = token.trim();
    if token.is_empty() || token == "$(System.AccessToken)" {
        let what = if token.is_empty() {
            "empty"
        } else {
            "the unexpanded macro $(System.AccessToken)"
        };
        return Err(Failure::new(
            Section::SystemAccessTokenMissing,
            format!(
                "The system access token is {what}. Map it into the step's environment in the \
                 pipeline YAML:\n{SYSTEM_TOKEN_MAPPING}\nand pass \
                 std::env::var(\"SYSTEM_ACCESSTOKEN\")."
            ),
        ));
    }
    Ok(())
}

fn looks_like_guid(s: &str) -> bool {
    let s = s.trim();
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The OIDC token from a response of the OIDC endpoint, or a failure that says what went wrong.
fn parse_oidc_response(response: Response, service_connection_id: &str) -> Result<Secret, Failure> {
    let status = response.status;
    if status == StatusCode::Ok {
        let parsed = parse_oidc_body(&response.body).map_err(|cause| {
            Failure::new(
                Section::InvalidOidcResponse,
                format!(
                    "{cause} (HTTP 200 from the OIDC endpoint{})",
                    http::diagnostic_headers(&response.headers)
                ),
            )
        });
        // The body held the OIDC token; the parsed copy is the one kept.
        http::wipe("OIDC response body", response.body);
        return parsed;
    }
    let (section, mut cause) = oidc_failure_cause(status, &response.body);
    cause.push_str(&format!(
        " (HTTP {}{})",
        u16::from(status),
        http::diagnostic_headers(&response.headers)
    ));
    if !looks_like_guid(service_connection_id) {
        cause.push_str(&format!(
            " Hint: the service connection ID '{service_connection_id}' is not a GUID. Use the \
             connection's ID (the resourceId in the URL of its page), not its name."
        ));
    }
    let source = azure_core::Error::with_message(
        ErrorKind::HttpResponse {
            status,
            error_code: Some(status.canonical_reason().to_string()),
            raw_response: Some(Box::new(response.into_raw())),
        },
        format!("HTTP {} from the OIDC endpoint", u16::from(status)),
    );
    Err(Failure::new(section, cause).with_source(source))
}

/// Reads `oidcToken` from a 200 body, never echoing the body.
pub(crate) fn parse_oidc_body(body: &[u8]) -> Result<Secret, String> {
    if looks_like_html(body) {
        return Err(
            "The OIDC endpoint answered with an HTML page instead of JSON: the request was \
             redirected to a sign-in page, so the System.AccessToken was not accepted."
                .to_owned(),
        );
    }
    let mut value: Value = serde_json::from_slice(body).map_err(|_| {
        "The OIDC endpoint's response is not valid JSON. Check that SYSTEM_OIDCREQUESTURI is the \
         value the agent set."
            .to_owned()
    })?;
    // Moved out of the parsed JSON, not copied: one fewer copy of the token left in freed memory.
    match value.get_mut("oidcToken").map(Value::take) {
        Some(Value::String(token)) if token.trim().is_empty() => {
            Err("The OIDC endpoint's response has an empty oidcToken.".to_owned())
        }
        Some(Value::String(token)) if !token::is_token_text(&token) => Err(
            "The OIDC endpoint's oidcToken contains characters outside a token's alphabet \
             (whitespace, control or punctuation characters); it was refused. Check that \
             SYSTEM_OIDCREQUESTURI is the value the agent set."
                .to_owned(),
        ),
        Some(Value::String(token)) => Ok(Secret::new(token)),
        Some(_) => Err("The OIDC endpoint's response has a non-string oidcToken.".to_owned()),
        None => Err("The OIDC endpoint's response has no oidcToken. Check that \
                     SYSTEM_OIDCREQUESTURI is the value the agent set."
            .to_owned()),
    }
}

fn looks_like_html(body: &[u8]) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let head = &body[start..body.len().min(start + 64)];
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html") || head.starts_with("<?xml")
}

/// What a non-200 answer of the OIDC endpoint means, and the section that explains it.
pub(crate) fn oidc_failure_cause(status: StatusCode, body: &[u8]) -> (Section, String) {
    let code = u16::from(status);
    if code == 401 {
        return (
            Section::SystemAccessTokenRejected,
            format!(
                "Azure DevOps rejected the System.AccessToken: it is wrong, expired (jobs lose it \
                 after about 24 hours), or not mapped into the step. Map it in the pipeline YAML:\n\
                 {SYSTEM_TOKEN_MAPPING}"
            ),
        );
    }
    if code == 203 || (300..400).contains(&code) || looks_like_html(body) {
        return (
            Section::SignInPage,
            "The OIDC endpoint answered with a sign-in page: the System.AccessToken was not \
             accepted. Check that SYSTEM_ACCESSTOKEN holds $(System.AccessToken) of this job."
                .to_owned(),
        );
    }
    if code == 404 {
        return (
            Section::OidcEndpointNotFound,
            "The OIDC endpoint was not found (404). SYSTEM_OIDCREQUESTURI must be the value the \
             agent set for this job."
                .to_owned(),
        );
    }
    if code == 429 || code >= 500 {
        // Not a refusal: Azure DevOps is overloaded or failing, and the retries are spent. Its
        // VSS error (an internal error's activity ID) is quoted; the service connection advice
        // of a 400 would mislead.
        let said = vss_error(body)
            .map(|(message, _)| format!(" Azure DevOps said: \"{message}\"."))
            .unwrap_or_default();
        return (
            Section::AzureDevOpsUnavailable,
            format!(
                "The OIDC endpoint answered HTTP {code} {}, after the retries that \
                 client_options.retry allows: Azure DevOps is overloaded or failing, usually for \
                 a short time.{said} Run the job again later.",
                status.canonical_reason()
            ),
        );
    }
    if let Some((message, type_key)) = vss_error(body) {
        if message
            .to_ascii_lowercase()
            .contains("no explicit reference to service connection")
        {
            return (
                Section::StageDoesNotReferenceConnection,
                format!(
                    "Azure DevOps refused the OIDC token because the current stage does not \
                     reference the service connection: \"{message}\". Reference the connection in \
                     the stage or job (for example through a task input such as \
                     azureSubscription, or the connection's name in a variable the stage uses), \
                     or authorize it for the pipeline."
                ),
            );
        }
        let type_key = type_key.map(|k| format!(" [{k}]")).unwrap_or_default();
        return (
            Section::ServiceConnectionRefused,
            format!(
                "Azure DevOps refused the OIDC token request: \"{message}\"{type_key}. Check the \
                 service connection ID and that the pipeline is authorized to use the connection."
            ),
        );
    }
    (
        Section::OidcHttpError,
        format!(
            "The OIDC endpoint answered HTTP {code} {}. Check SYSTEM_OIDCREQUESTURI and the \
             service connection ID.",
            status.canonical_reason()
        ),
    )
}

/// `message` and `typeKey` of a VSS error body.
fn vss_error(body: &[u8]) -> Option<(String, Option<String>)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = value.get("message")?.as_str()?.trim();
    let message: String = message.chars().take(500).collect();
    let type_key = value
        .get("typeKey")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((message, type_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_body_parsing() {
        let cases: &[(&[u8], Result<&str, &str>)] = &[
            (br#"{"oidcToken":"a.b.c"}"#, Ok("a.b.c")),
            (br#"{"oidcToken":"a.b.c","extra":1}"#, Ok("a.b.c")),
            (br#"{"oidcToken":""}"#, Err("empty oidcToken")),
            (br#"{"oidcToken":5}"#, Err("non-string oidcToken")),
            (
                br#"{"oidcToken":"a.b\n##vso[task.setvariable variable=X]y"}"#,
                Err("alphabet"),
            ),
            (br#"{"oidcToken":"a b"}"#, Err("alphabet")),
            (br#"{"token":"x"}"#, Err("no oidcToken")),
            (br#"{"oidcToken":"#, Err("not valid JSON")),
            (b"", Err("not valid JSON")),
            (b"\xff\xfe", Err("not valid JSON")),
            (b"  <!DOCTYPE html><html>sign in</html>", Err("HTML page")),
            (b"<html>", Err("HTML page")),
        ];
        for (body, expected) in cases {
            match (parse_oidc_body(body), expected) {
                (Ok(t), Ok(e)) => assert_eq!(t.secret(), *e),
                (Err(m), Err(e)) => assert!(m.contains(e), "{m}"),
                (got, _) => panic!("{:?}: {:?}", String::from_utf8_lossy(body), got.map(|_| ())),
            }
        }
    }

    #[test]
    fn oidc_failure_causes() {
        let vss = br#"{"$id":"1","innerException":null,"message":"No service connection found with identifier 123.","typeName":"X","typeKey":"ServiceEndpointNotFoundException","errorCode":0,"eventId":3000}"#;
        let stage = br#"{"message":"There is no explicit reference to service connection c from the current stage.","typeKey":"X"}"#;
        use Section::*;
        let cases: &[(u16, &[u8], Section, &str)] = &[
            (
                401,
                b"",
                SystemAccessTokenRejected,
                "rejected the System.AccessToken",
            ),
            (
                401,
                b"",
                SystemAccessTokenRejected,
                "SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
            ),
            (203, b"<html>", SignInPage, "sign-in page"),
            (302, b"", SignInPage, "sign-in page"),
            (200, b"<html>", SignInPage, "sign-in page"),
            (404, b"", OidcEndpointNotFound, "not found"),
            (
                400,
                vss,
                ServiceConnectionRefused,
                "No service connection found with identifier 123.",
            ),
            (
                400,
                vss,
                ServiceConnectionRefused,
                "[ServiceEndpointNotFoundException]",
            ),
            (
                400,
                stage,
                StageDoesNotReferenceConnection,
                "does not reference the service connection",
            ),
            (403, b"{}", OidcHttpError, "HTTP 403 Forbidden"),
            (500, b"oops", AzureDevOpsUnavailable, "HTTP 500"),
            (
                503,
                vss,
                AzureDevOpsUnavailable,
                "Azure DevOps is overloaded or failing",
            ),
            (
                503,
                vss,
                AzureDevOpsUnavailable,
                "Azure DevOps said: \"No service connection",
            ),
            (
                429,
                b"",
                AzureDevOpsUnavailable,
                "HTTP 429 Too Many Requests, after the retries",
            ),
        ];
        for (status, body, section, needle) in cases {
            let (got, cause) = oidc_failure_cause(StatusCode::from(*status), body);
            assert!(cause.contains(needle), "{status}: {cause}");
            assert_eq!(got, *section, "{status}: {cause}");
        }
    }

    #[test]
    fn input_validation() {
        assert!(validate_system_access_token("abc").is_ok());
        for bad in ["", "  ", "$(System.AccessToken)"] {
            let e = validate_system_access_token(bad).unwrap_err();
            assert!(
                e.text()
                    .contains("SYSTEM_ACCESSTOKEN: $(System.AccessToken)"),
                "{e}"
            );
            assert_eq!(e.section(), Section::SystemAccessTokenMissing);
        }
        assert!(validate_service_connection_id("x").is_ok());
        assert!(
            validate_service_connection_id(" ")
                .unwrap_err()
                .text()
                .contains("resourceId")
        );
    }

    #[test]
    fn guid_shape() {
        assert!(looks_like_guid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!looks_like_guid("my-connection"));
        assert!(!looks_like_guid("72f988bf-86f1-41af-91ab-2d7cd011db4z"));
    }

    mod properties {
        use super::*;
        use crate::tests::strategies::{config, json_value, secret};
        use proptest::prelude::*;
        use serde_json::json;

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn oidc_body_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_oidc_body(&body);
            }

            #[test]
            fn oidc_body_returns_exactly_the_token_and_never_echoes_it(
                token in secret(),
                extra in json_value(),
                blank in "[ \t]{0,3}",
            ) {
                let body = json!({ "oidcToken": token, "extra": extra }).to_string();
                let parsed = parse_oidc_body(body.as_bytes()).unwrap();
                prop_assert_eq!(parsed.secret(), token.as_str());
                // Broken shapes around the same secret: errors, none quoting it.
                for broken in [
                    json!({ "oidcToken": [token.clone()] }).to_string(),
                    json!({ "token": token.clone() }).to_string(),
                    json!({ "oidcToken": blank.clone(), "x": token.clone() }).to_string(),
                    json!({ "oidcToken": format!("{token} {token}") }).to_string(),
                    format!("{{\"oidcToken\":\"{token}\""),
                    format!("<html>{token}</html>"),
                ] {
                    let e = parse_oidc_body(broken.as_bytes()).unwrap_err();
                    prop_assert!(!e.contains(&token), "{e}");
                }
            }

            #[test]
            fn oidc_failure_cause_never_panics_nor_quotes_a_token(
                status in 100u16..600,
                body in prop::collection::vec(any::<u8>(), 0..256),
                token in secret(),
            ) {
                prop_assert!(!oidc_failure_cause(StatusCode::from(status), &body).1.is_empty());
                let with_token = json!({ "oidcToken": token }).to_string();
                let (_, cause) = oidc_failure_cause(StatusCode::from(status), with_token.as_bytes());
                prop_assert!(!cause.contains(&token), "{cause}");
            }
        }
    }
}
