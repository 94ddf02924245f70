//! The token exchange: the OIDC token presented to Microsoft Entra ID as a client assertion
//! (`client_credentials` grant), and what Entra's answers mean.

use crate::{
    AccessTokenInfo,
    assertion::{AzurePipelinesAssertion, OidcToken},
    clock::Clock,
    endpoint,
    error::{Failure, Section},
    http::{self, HttpClient, Response},
    jwt::FederationClaims,
    request::{CAE_ONLY_CLAIMS, Key},
    token,
};
use azure_core::{
    Bytes,
    credentials::Secret,
    error::ErrorKind,
    http::{
        Context, Method, Request,
        headers::{CONTENT_TYPE, content_type},
    },
};
use serde_json::Value;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use url::{Url, form_urlencoded};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra issues tokens for at most about a day; anything far beyond is a broken response.
const MAX_LIFETIME: Duration = Duration::days(7);
/// Tokens living this long are refreshed at half-life (MSAL's rule).
const LONG_LIVED: Duration = Duration::hours(2);

pub(crate) const TOKEN_ENDPOINT: &str = "Microsoft Entra ID token endpoint";

/// Exchanges OIDC tokens for access tokens at one authority.
#[derive(Debug)]
pub(crate) struct TokenExchange {
    client_id: String,
    authority: Url,
    http: Arc<HttpClient>,
    clock: Clock,
}

impl TokenExchange {
    pub(crate) fn new(
        client_id: String,
        authority: Url,
        http: Arc<HttpClient>,
        clock: Clock,
    ) -> Self {
        Self {
            client_id,
            authority,
            http,
            clock,
        }
    }

    /// An access token for `key`, with an OIDC token from `assertion`. `claims` is the `claims`
    /// form value of a request with a challenge (CAE merged in); without it a CAE key sends the
    /// CAE capability alone. Requests carry `ctx`.
    ///
    /// When Entra says the OIDC token expired (AADSTS700024), a fresh one is fetched and the
    /// exchange tried once more.
    pub(crate) async fn acquire(
        &self,
        assertion: &AzurePipelinesAssertion,
        key: &Key,
        claims: Option<&str>,
        ctx: &Context<'_>,
    ) -> Result<AccessTokenInfo, Arc<Failure>> {
        let claims = claims.or(key.cae.then_some(CAE_ONLY_CLAIMS));
        let oidc = assertion.reusable_token(ctx).await?;
        match self.exchange(&oidc, key, claims, ctx).await {
            Err(Refusal::AssertionExpired(_)) => {
                tracing::debug!(target: "azure_pipelines_credential", "OIDC token expired at Entra ID; fetching a new one");
                assertion.forget(&oidc);
                let oidc = assertion.reusable_token(ctx).await?;
                self.exchange(&oidc, key, claims, ctx)
                    .await
                    .map_err(|refusal| match refusal {
                        Refusal::AssertionExpired(f) | Refusal::Other(f) => Arc::new(f),
                    })
            }
            Err(Refusal::Other(f)) => Err(Arc::new(f)),
            Ok(token) => Ok(token),
        }
    }

    async fn exchange(
        &self,
        oidc: &OidcToken,
        key: &Key,
        claims: Option<&str>,
        ctx: &Context<'_>,
    ) -> Result<AccessTokenInfo, Refusal> {
        let url = endpoint::token_endpoint(&self.authority, &key.tenant);
        let mut http_request = Request::new(url, Method::Post);
        http_request.insert_header(
            CONTENT_TYPE,
            content_type::APPLICATION_X_WWW_FORM_URLENCODED,
        );
        // The form holds the assertion: kept here as well as in the request, so that it can be
        // zeroed once the request is done (if the transport kept no reference to it).
        let form = Bytes::from(form_body(&self.client_id, oidc.secret(), key, claims));
        http_request.set_body(form.clone());
        let sent = self.http.send(ctx, &mut http_request, TOKEN_ENDPOINT).await;
        drop(http_request);
        http::wipe("token request body", form);
        let response = sent.map_err(Refusal::Other)?;
        let now = self.clock.now();
        if response.status.is_success() {
            let parsed = parse_token_response(&response.body, now);
            // The body held the access token; the parsed copy is the one kept.
            let (status, headers) = (response.status, response.headers);
            http::wipe("token response body", response.body);
            let token = parsed.map_err(|cause| {
                Refusal::Other(Failure::new(
                    Section::InvalidTokenResponse,
                    format!(
                        "{cause} (HTTP {} from Microsoft Entra ID{})",
                        u16::from(status),
                        http::diagnostic_headers(&headers)
                    ),
                ))
            })?;
            tracing::debug!(target: "azure_pipelines_credential", "access token exchanged");
            return Ok(token);
        }
        Err(self.failure(response, oidc.claims()))
    }

    fn failure(&self, response: Response, federation: &FederationClaims) -> Refusal {
        let status = u16::from(response.status);
        let entra = EntraError::parse(&response.body);
        let (section, cause) = match &entra {
            Some(entra) => entra_failure_cause(entra, &self.client_id, federation),
            None => (
                Section::EntraError,
                format!(
                    "Microsoft Entra ID answered HTTP {status} {} with a body that is not an \
                     Entra error. Check the authority host ({}).",
                    response.status.canonical_reason(),
                    self.authority
                ),
            ),
        };
        let expired = entra.as_ref().is_some_and(|e| e.codes.contains(&700024));
        let error_code = entra
            .as_ref()
            .and_then(|e| e.codes.first().map(|c| format!("AADSTS{c}")))
            .or_else(|| Some(response.status.canonical_reason().to_string()));
        let source = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: response.status,
                error_code,
                raw_response: Some(Box::new(response.into_raw())),
            },
            format!("HTTP {status} from Microsoft Entra ID"),
        );
        let failure = Failure::new(section, cause).with_source(source);
        if expired {
            Refusal::AssertionExpired(failure)
        } else {
            Refusal::Other(failure)
        }
    }
}

/// Why an exchange produced no token: the one refusal worth another try, or anything else.
enum Refusal {
    AssertionExpired(Failure),
    Other(Failure),
}

/// The form of the token request.
fn form_body(client_id: &str, assertion: &Secret, key: &Key, claims: Option<&str>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("client_assertion", assertion.secret())
        .append_pair("client_assertion_type", ASSERTION_TYPE)
        .append_pair("client_id", client_id)
        .append_pair("grant_type", "client_credentials")
        .append_pair("scope", &key.scope_param());
    if let Some(claims) = claims {
        form.append_pair("claims", claims);
    }
    form.finish()
}

/// Seconds given as a JSON number (fractions dropped) or a string of one.
fn seconds(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f.trunc() as i64)
        }),
        Value::String(s) => seconds(
            &serde_json::from_str::<Value>(s.trim())
                .ok()
                .filter(Value::is_number)?,
        ),
        _ => None,
    }
}

/// Reads a successful token response. Never echoes the body, which holds the token.
///
/// - `expires_in` (number, or number in a string; fractions dropped) gives the expiry; without
///   it `expires_on` (Unix seconds). The lifetime must be positive and under seven days.
/// - `refresh_on` is `refresh_in` when it lies within the lifetime, else half the lifetime for
///   tokens of 2 hours or more, else `None`.
/// - `token_type` defaults to `Bearer`; other types are refused, since Azure SDK clients send
///   the token as a bearer token.
pub(crate) fn parse_token_response(
    body: &[u8],
    now: OffsetDateTime,
) -> Result<AccessTokenInfo, String> {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
        return Err("Microsoft Entra ID's token response is not a JSON object.".to_owned());
    };
    // Moved out of the parsed JSON, not copied: one fewer copy of the token left in freed memory.
    let token = match fields.remove("access_token") {
        Some(Value::String(t)) if t.trim().is_empty() => {
            return Err(
                "Microsoft Entra ID's token response has an empty access_token.".to_owned(),
            );
        }
        Some(Value::String(t)) if !token::is_token_text(&t) => {
            return Err(
                "Microsoft Entra ID's access_token contains characters outside a token's \
                 alphabet (whitespace, control or punctuation characters); it was refused. Check \
                 the authority host."
                    .to_owned(),
            );
        }
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(
                "Microsoft Entra ID's token response has a non-string access_token.".to_owned(),
            );
        }
        None => return Err("Microsoft Entra ID's token response has no access_token.".to_owned()),
    };
    let token_type = match fields.get("token_type") {
        None | Some(Value::Null) => "Bearer".to_owned(),
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => "Bearer".to_owned(),
        Some(Value::String(_)) => {
            // The type is not echoed: a broken response may hold anything in it, even the token.
            return Err(
                "Microsoft Entra ID returned a token whose token_type is not Bearer; only \
                        Bearer tokens are supported."
                    .to_owned(),
            );
        }
        Some(_) => {
            return Err(
                "Microsoft Entra ID's token response has a non-string token_type.".to_owned(),
            );
        }
    };
    let lifetime = match (fields.get("expires_in"), fields.get("expires_on")) {
        (Some(v), _) => Duration::seconds(seconds(v).ok_or(
            "Microsoft Entra ID's token response has an expires_in that is not a number.",
        )?),
        (None, Some(v)) => {
            let at = seconds(v).ok_or(
                "Microsoft Entra ID's token response has an expires_on that is not a number.",
            )?;
            let at = OffsetDateTime::from_unix_timestamp(at).map_err(
                |_| "Microsoft Entra ID's token response has an expires_on out of range.",
            )?;
            at - now
        }
        (None, None) => {
            return Err(
                "Microsoft Entra ID's token response has neither expires_in nor expires_on."
                    .to_owned(),
            );
        }
    };
    if lifetime <= Duration::ZERO {
        return Err("Microsoft Entra ID returned a token that has already expired (its lifetime is not positive). \
                    Check the clock of this machine."
            .to_owned());
    }
    if lifetime > MAX_LIFETIME {
        return Err(
            "Microsoft Entra ID returned a token with an implausible lifetime (over seven days)."
                .to_owned(),
        );
    }
    let refresh_in = fields
        .get("refresh_in")
        .and_then(seconds)
        .map(Duration::seconds)
        .filter(|r| *r > Duration::ZERO && *r < lifetime);
    let refresh_in = refresh_in
        .or((lifetime >= LONG_LIVED).then(|| Duration::seconds(lifetime.whole_seconds() / 2)));
    Ok(AccessTokenInfo {
        token: Secret::new(token),
        expires_on: now + lifetime,
        refresh_on: refresh_in.map(|r| now + r),
        token_type,
    })
}

/// An Entra error body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EntraError {
    pub(crate) error: String,
    description: String,
    pub(crate) codes: Vec<i64>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
}

impl EntraError {
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        let Value::Object(fields) = serde_json::from_slice::<Value>(body).ok()? else {
            return None;
        };
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(Value::as_str)
                .map(|s| s.chars().take(1000).collect::<String>())
        };
        let error = text("error")?;
        Some(Self {
            error,
            description: text("error_description").unwrap_or_default(),
            codes: fields
                .get("error_codes")
                .and_then(Value::as_array)
                .map(|codes| codes.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default(),
            trace_id: text("trace_id"),
            correlation_id: text("correlation_id"),
        })
    }
}

/// What an Entra error means for this credential, how to fix it, and the section explaining it.
pub(crate) fn entra_failure_cause(
    entra: &EntraError,
    client_id: &str,
    federation: &FederationClaims,
) -> (Section, String) {
    let summary = entra.description.lines().next().unwrap_or_default().trim();
    let ids = [
        Some(format!("error: {}", entra.error)),
        (!entra.codes.is_empty()).then(|| {
            let codes: Vec<String> = entra.codes.iter().map(|c| format!("AADSTS{c}")).collect();
            format!("codes: {}", codes.join(", "))
        }),
        entra.trace_id.as_ref().map(|t| format!("trace ID: {t}")),
        entra
            .correlation_id
            .as_ref()
            .map(|c| format!("correlation ID: {c}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("; ");
    let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unreadable)".to_owned());
    let mismatch = [
        (700211, "issuer"),
        (700212, "audience"),
        (700213, "subject"),
    ]
    .into_iter()
    .find(|(code, _)| entra.codes.contains(code));
    let (section, advice) = if let Some((_, what)) = mismatch {
        (
            Section::FederationMismatch,
            format!(
                "No federated identity credential of the app '{client_id}' matches the OIDC token's \
             {what}. The token has issuer '{}', subject '{}' and audience '{}'; the federated \
             credential on the app registration (or managed identity) must match them exactly.",
                shown(&federation.iss),
                shown(&federation.sub),
                shown(&federation.aud)
            ),
        )
    } else if entra.codes.contains(&700024) {
        (
            Section::AssertionExpired,
            "Microsoft Entra ID says the OIDC token (client assertion) is not within its valid \
             time range, even after a new one was fetched. Check this machine's clock, and that \
             nothing on the way caches the OIDC endpoint's responses."
                .to_owned(),
        )
    } else if entra.error == "temporarily_unavailable" || entra.codes.contains(&90033) {
        // A 503 from Entra, still there after the retries: not a refusal of this identity.
        (
            Section::EntraUnavailable,
            "Microsoft Entra ID is temporarily unavailable, after the retries that \
             client_options.retry allows. Run the job again later."
                .to_owned(),
        )
    } else if entra.codes.contains(&700016) {
        (
            Section::ApplicationNotFound,
            format!(
                "The application '{client_id}' was not found in the tenant. Check the client ID \
                 (AZURESUBSCRIPTION_CLIENT_ID) and the tenant ID of the service connection."
            ),
        )
    } else if entra.codes.contains(&90002) {
        (
            Section::TenantNotFound,
            "The tenant was not found. Check the tenant ID (AZURESUBSCRIPTION_TENANT_ID) and the \
             authority host for your cloud."
                .to_owned(),
        )
    } else if entra.codes.contains(&50027) || entra.codes.contains(&7000215) {
        (
            Section::AssertionNotAccepted,
            "Microsoft Entra ID did not accept the OIDC token as a client assertion. Check that \
             the service connection uses workload identity federation."
                .to_owned(),
        )
    } else {
        (
            Section::EntraError,
            "Microsoft Entra ID refused the token request.".to_owned(),
        )
    };
    (
        section,
        format!("{advice} Entra ID said: \"{summary}\" ({ids})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    #[test]
    fn token_response_interpretation() {
        let h = 3600;
        // (body, Ok((lifetime s, refresh_in s))) or Err(fragment)
        let cases: &[(&str, Result<(i64, Option<i64>), &str>)] = &[
            (
                r#"{"token_type":"Bearer","expires_in":3599,"access_token":"t"}"#,
                Ok((3599, None)),
            ),
            (
                r#"{"expires_in":"3599","access_token":"t"}"#,
                Ok((3599, None)),
            ),
            (
                r#"{"expires_in":" 60 ","access_token":"t"}"#,
                Ok((60, None)),
            ),
            (r#"{"expires_in":59.9,"access_token":"t"}"#, Ok((59, None))),
            (
                r#"{"expires_in":3599,"refresh_in":1800,"access_token":"t"}"#,
                Ok((3599, Some(1800))),
            ),
            (
                r#"{"expires_in":3599,"refresh_in":"1800","access_token":"t"}"#,
                Ok((3599, Some(1800))),
            ),
            (
                r#"{"expires_in":86399,"access_token":"t"}"#,
                Ok((86399, Some(43199))),
            ),
            (
                r#"{"expires_in":7200,"access_token":"t"}"#,
                Ok((7200, Some(h))),
            ),
            (
                r#"{"expires_in":3599,"refresh_in":99999,"access_token":"t"}"#,
                Ok((3599, None)),
            ),
            (
                r#"{"expires_in":3599,"refresh_in":-5,"access_token":"t"}"#,
                Ok((3599, None)),
            ),
            (
                r#"{"expires_in":3599,"refresh_in":"soon","access_token":"t"}"#,
                Ok((3599, None)),
            ),
            (
                r#"{"expires_on":1700003600,"access_token":"t"}"#,
                Ok((3600, None)),
            ),
            (
                r#"{"expires_on":"1700003600","access_token":"t"}"#,
                Ok((3600, None)),
            ),
            (
                r#"{"token_type":"bearer","expires_in":5,"access_token":"t"}"#,
                Ok((5, None)),
            ),
            (
                r#"{"token_type":"pop","expires_in":5,"access_token":"t"}"#,
                Err("not Bearer"),
            ),
            (
                r#"{"token_type":7,"expires_in":5,"access_token":"t"}"#,
                Err("non-string token_type"),
            ),
            (
                r#"{"expires_in":0,"access_token":"t"}"#,
                Err("already expired"),
            ),
            (
                r#"{"expires_in":-1,"access_token":"t"}"#,
                Err("already expired"),
            ),
            (
                r#"{"expires_on":1600000000,"access_token":"t"}"#,
                Err("already expired"),
            ),
            (
                r#"{"expires_in":1e300,"access_token":"t"}"#,
                Err("not a number"),
            ),
            (
                r#"{"expires_in":99999999999,"access_token":"t"}"#,
                Err("implausible"),
            ),
            (
                r#"{"expires_in":"abc","access_token":"t"}"#,
                Err("not a number"),
            ),
            (
                r#"{"expires_in":true,"access_token":"t"}"#,
                Err("not a number"),
            ),
            (
                r#"{"access_token":"t"}"#,
                Err("neither expires_in nor expires_on"),
            ),
            (r#"{"expires_in":5}"#, Err("no access_token")),
            (
                r#"{"expires_in":5,"access_token":""}"#,
                Err("empty access_token"),
            ),
            (
                r#"{"expires_in":5,"access_token":5}"#,
                Err("non-string access_token"),
            ),
            (
                r#"{"expires_in":5,"access_token":"a.b\n##vso[task.setvariable variable=PATH]x"}"#,
                Err("alphabet"),
            ),
            (
                r#"{"expires_in":5,"access_token":"#,
                Err("not a JSON object"),
            ),
            ("", Err("not a JSON object")),
            ("<html></html>", Err("not a JSON object")),
            ("[1]", Err("not a JSON object")),
            ("\u{FFFD}", Err("not a JSON object")),
        ];
        for (body, expected) in cases {
            match (parse_token_response(body.as_bytes(), now()), expected) {
                (Ok(info), Ok((lifetime, refresh))) => {
                    assert_eq!(
                        info.expires_on,
                        now() + Duration::seconds(*lifetime),
                        "{body}"
                    );
                    assert_eq!(
                        info.refresh_on,
                        refresh.map(|r| now() + Duration::seconds(r)),
                        "{body}"
                    );
                    assert_eq!(info.token.secret(), "t");
                    assert_eq!(info.token_type, "Bearer");
                }
                (Err(m), Err(e)) => assert!(m.contains(e), "{body}: {m}"),
                (got, expected) => panic!(
                    "{body}: got {:?}, expected {expected:?}",
                    got.map(|i| i.expires_on)
                ),
            }
        }
        assert!(parse_token_response(b"\xff\xfe{", now()).is_err());
    }

    #[test]
    fn token_response_errors_never_echo_the_body() {
        let body = br#"{"expires_in":"x","access_token":"SECRET-TOKEN-VALUE","token_type":"SECRET-TOKEN-VALUE"}"#;
        let e = parse_token_response(body, now()).unwrap_err();
        assert!(!e.contains("SECRET-TOKEN-VALUE"), "{e}");
    }

    #[test]
    fn form_body_is_encoded() {
        let key = Key {
            tenant: "t".into(),
            scopes: ["https://storage.azure.com/.default".into(), "b c".into()].into(),
            cae: false,
        };
        let form = form_body("client", &Secret::new("x.y+z"), &key, Some(r#"{"a":1}"#));
        assert_eq!(
            form,
            "client_assertion=x.y%2Bz&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
             &client_id=client&grant_type=client_credentials&scope=https%3A%2F%2Fstorage.azure.com%2F.default+b+c\
             &claims=%7B%22a%22%3A1%7D"
        );
        assert!(!form_body("client", &Secret::new("a"), &key, None).contains("claims"));
    }

    #[test]
    fn entra_errors_explained() {
        let federation = FederationClaims {
            iss: Some("https://vstoken.dev.azure.com/org".into()),
            sub: Some("sc://o/p/c".into()),
            aud: Some("api://AzureADTokenExchange".into()),
            exp: None,
        };
        let body = |code: i64, error: &str| {
            format!(
                r#"{{"error":"{error}","error_description":"AADSTS{code}: Something.\r\nTrace ID: t\r\n","error_codes":[{code}],"trace_id":"tid","correlation_id":"cid"}}"#
            )
        };
        use Section as S;
        let cases: &[(i64, &str, Section, &[&str])] = &[
            (
                700211,
                "invalid_request",
                S::FederationMismatch,
                &[
                    "issuer",
                    "https://vstoken.dev.azure.com/org",
                    "sc://o/p/c",
                    "api://AzureADTokenExchange",
                ],
            ),
            (
                700212,
                "invalid_request",
                S::FederationMismatch,
                &["audience"],
            ),
            (
                700213,
                "invalid_request",
                S::FederationMismatch,
                &["subject", "'client'"],
            ),
            (
                700024,
                "invalid_client",
                S::AssertionExpired,
                &["valid time range", "clock"],
            ),
            (
                700016,
                "unauthorized_client",
                S::ApplicationNotFound,
                &["was not found in the tenant"],
            ),
            (
                90002,
                "invalid_request",
                S::TenantNotFound,
                &["tenant was not found"],
            ),
            (
                50027,
                "invalid_client",
                S::AssertionNotAccepted,
                &["workload identity federation"],
            ),
            (
                90033,
                "temporarily_unavailable",
                S::EntraUnavailable,
                &["temporarily unavailable", "AADSTS90033"],
            ),
            (
                12345,
                "server_error",
                S::EntraError,
                &[
                    "refused the token request",
                    "AADSTS12345: Something.",
                    "trace ID: tid",
                    "correlation ID: cid",
                    "error: server_error",
                    "codes: AADSTS12345",
                ],
            ),
        ];
        for (code, error, section, needles) in cases {
            let entra = EntraError::parse(body(*code, error).as_bytes()).unwrap();
            let (got, cause) = entra_failure_cause(&entra, "client", &federation);
            assert_eq!(got, *section, "{code}");
            for needle in *needles {
                assert!(cause.contains(needle), "{code}: {cause}");
            }
            assert!(
                !cause.contains("Trace ID: t\r"),
                "only the first line of the description"
            );
        }
        assert_eq!(EntraError::parse(b"not json"), None);
        assert_eq!(EntraError::parse(br#"{"no":"error"}"#), None);
        assert_eq!(
            EntraError::parse(br#"{"error":"x"}"#).unwrap().codes,
            Vec::<i64>::new()
        );
    }

    mod properties {
        use super::*;
        use crate::tests::strategies::{config, json_value, jwt, secret};
        use proptest::prelude::*;
        use serde_json::{Map, json};

        /// A value for a seconds field: what Entra sends and what a broken server might.
        fn seconds_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                (-100_000i64..1_000_000).prop_map(Value::from),
                (-1e6f64..1e7).prop_map(|x| json!(x)),
                (-100_000i64..1_000_000).prop_map(|n| Value::from(n.to_string())),
                "\\PC{0,12}".prop_map(Value::from),
                Just(Value::Null),
                Just(json!(true)),
                Just(json!([1])),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn token_response_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_token_response(&body, now());
            }

            #[test]
            fn token_response_never_panics_on_any_json(value in json_value()) {
                let _ = parse_token_response(value.to_string().as_bytes(), now());
            }

            #[test]
            fn an_accepted_token_is_valid_bearer_and_sanely_timed(
                token in secret(),
                expires_in in prop::option::of(seconds_value()),
                expires_on in prop::option::of(seconds_value()),
                refresh_in in prop::option::of(seconds_value()),
                token_type in prop::option::of(prop_oneof![
                    Just(json!("Bearer")), Just(json!("bearer")), Just(json!("pop")), Just(json!(1)),
                    Just(Value::Null),
                ]),
            ) {
                let mut body = Map::new();
                body.insert("access_token".into(), json!(token));
                for (name, value) in [
                    ("expires_in", expires_in),
                    ("expires_on", expires_on),
                    ("refresh_in", refresh_in),
                    ("token_type", token_type),
                ] {
                    if let Some(value) = value {
                        body.insert(name.into(), value);
                    }
                }
                let text = Value::Object(body).to_string();
                match parse_token_response(text.as_bytes(), now()) {
                    Ok(info) => {
                        prop_assert_eq!(info.token.secret(), token.as_str());
                        prop_assert_eq!(info.token_type.as_str(), "Bearer");
                        prop_assert!(info.expires_on > now(), "already expired: {}", text);
                        prop_assert!(info.expires_on <= now() + Duration::days(7), "{}", text);
                        if let Some(refresh_on) = info.refresh_on {
                            prop_assert!(refresh_on > now() && refresh_on < info.expires_on, "{}", text);
                        }
                    }
                    Err(e) => prop_assert!(!e.contains(&token), "the token in an error: {e}"),
                }
            }

            #[test]
            fn token_response_errors_never_contain_the_access_token(
                token in secret(),
                broken in prop_oneof![
                    Just("expires_in"), Just("token_type"), Just("truncated"), Just("expires_on"),
                    Just("alphabet"),
                ],
            ) {
                let body = match broken {
                    "expires_in" => json!({"access_token": token, "expires_in": token}).to_string(),
                    "expires_on" => json!({"access_token": token, "expires_on": token}).to_string(),
                    "token_type" => {
                        json!({"access_token": token, "expires_in": 60, "token_type": token}).to_string()
                    }
                    "alphabet" => {
                        json!({"access_token": format!("{token}\n{token}"), "expires_in": 60}).to_string()
                    }
                    _ => format!("{{\"access_token\":\"{token}\",\"expires_in\":"),
                };
                let e = parse_token_response(body.as_bytes(), now()).unwrap_err();
                prop_assert!(!e.contains(&token), "{e}");
            }

            #[test]
            fn entra_failure_never_panics(
                body in prop::collection::vec(any::<u8>(), 0..512),
                client_id in "\\PC{0,40}",
                assertion in "\\PC{0,80}",
            ) {
                if let Some(entra) = EntraError::parse(&body) {
                    let federation = FederationClaims::from_token(&assertion);
                    let _ = entra_failure_cause(&entra, &client_id, &federation);
                }
            }

            #[test]
            fn entra_failure_reads_codes_and_never_quotes_the_assertion_signature(
                error in "[a-z_]{1,24}",
                codes in prop::collection::vec(prop_oneof![
                    Just(700_024i64), Just(700_211), Just(700_212), Just(700_213), Just(700_016),
                    Just(90_002), Just(50_027), Just(7_000_215), any::<i64>(),
                ], 0..4),
                description in "\\PC{0,200}",
                extra in json_value(),
                signature in secret(),
            ) {
                let body = json!({
                    "error": error,
                    "error_description": description,
                    "error_codes": codes,
                    "trace_id": "t",
                    "correlation_id": "c",
                    "extra": extra,
                })
                .to_string();
                let assertion = jwt(
                    &json!({"iss": "https://vstoken.dev.azure.com/o", "sub": "sc://o/p/c", "aud": "api://AzureADTokenExchange"}),
                    &signature,
                );
                let entra = EntraError::parse(body.as_bytes()).unwrap();
                prop_assert_eq!(&entra.error, &error);
                prop_assert_eq!(&entra.codes, &codes);
                let federation = FederationClaims::from_token(&assertion);
                let (_, cause) = entra_failure_cause(&entra, "client", &federation);
                let named = format!("error: {error}");
                prop_assert!(cause.contains(&named), "{}", cause);
                prop_assert!(!cause.contains(&signature), "{}", cause);
                prop_assert!(!cause.contains(&assertion));
            }
        }
    }
}
