//! Listeners, connections and request routing.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::control::{Control, Endpoint, Fault};
use super::jwt::{Keys, OidcClaims};
use super::{EmulatorConfig, entra, keyvault, oidc, util};

/// Largest request body read; Entra's own limit is in the same range.
const MAX_BODY: usize = 1 << 20;
/// How much of an oversized body is read and thrown away before answering.
const MAX_DRAIN: usize = 64 << 20;

pub(crate) type Resp = Response<Body>;

/// Identifiers fixed for the life of one emulator.
pub(crate) struct Ids {
    pub(crate) organization_id: String,
    pub(crate) project_id: String,
    pub(crate) plan_id: String,
    pub(crate) job_id: String,
    pub(crate) object_id: String,
}

/// Everything the request handlers need.
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    pub(crate) ids: Ids,
    pub(crate) keys: Keys,
    pub(crate) control: Control,
    pub(crate) http_base: String,
    pub(crate) https_base: String,
}

impl Shared {
    pub(crate) fn base(&self, tls: bool) -> &str {
        if tls {
            &self.https_base
        } else {
            &self.http_base
        }
    }

    pub(crate) fn oidc_issuer(&self) -> String {
        format!("https://vstoken.dev.azure.com/{}", self.ids.organization_id)
    }

    pub(crate) fn oidc_subject(&self) -> String {
        format!(
            "sc://{}/{}/{}",
            self.config.organization, self.config.project, self.config.service_connection_name
        )
    }

    pub(crate) fn oidc_path(&self) -> String {
        format!(
            "/{}/{}/_apis/distributedtask/hubs/build/plans/{}/jobs/{}/oidctoken",
            self.config.organization, self.ids.project_id, self.ids.plan_id, self.ids.job_id
        )
    }

    pub(crate) fn default_oidc_claims(&self) -> OidcClaims {
        let iat = self.control.now_unix();
        let lifetime =
            i64::try_from(self.control.oidc_token_lifetime().as_secs()).unwrap_or(i64::MAX);
        OidcClaims {
            iss: self.oidc_issuer(),
            sub: self.oidc_subject(),
            aud: super::OIDC_AUDIENCE.to_owned(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(lifetime),
            jti: util::guid(),
            extra: serde_json::Map::new(),
        }
    }

    /// Whether `tenant` is one the application exists in.
    pub(crate) fn known_tenant(&self, tenant: &str) -> Option<&str> {
        std::iter::once(&self.config.tenant_id)
            .chain(&self.config.additional_tenants)
            .find(|t| t.eq_ignore_ascii_case(tenant))
            .map(String::as_str)
    }
}

/// Per-connection state handed to each request.
#[derive(Clone)]
struct ConnCtx {
    tls: bool,
    // Notified by a `DropConnection` fault; the connection task then drops the
    // connection without writing anything.
    kill: Arc<Notify>,
}

pub(crate) struct Listeners {
    pub(crate) http: TcpListener,
    pub(crate) https: TcpListener,
}

impl Listeners {
    pub(crate) async fn bind(http_port: u16, https_port: u16) -> io::Result<Listeners> {
        let http = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], http_port))).await?;
        let https = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], https_port))).await?;
        Ok(Listeners { http, https })
    }
}

pub(crate) fn spawn(
    listeners: Listeners,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<()>,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(accept_loop(
            listeners.http,
            None,
            shared.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(accept_loop(
            listeners.https,
            Some(TlsAcceptor::from(tls)),
            shared,
            shutdown,
        )),
    ]
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::debug!(error = %e, "emulator accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let serve = async move {
                match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => serve_connection(stream, shared, true).await,
                        Err(e) => tracing::debug!(error = %e, "emulator TLS handshake failed"),
                    },
                    None => serve_connection(stream, shared, false).await,
                }
            };
            tokio::select! {
                () = serve => {}
                _ = conn_shutdown.changed() => {}
            }
        });
    }
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>, tls: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let ctx = ConnCtx {
        tls,
        kill: kill.clone(),
    };
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(&shared, &ctx, req).await) }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "emulator connection ended with an error");
            }
        }
        () = kill.notified() => {}
    }
}

enum Route {
    Oidc,
    /// The path has the shape of an OIDC request but names another
    /// organization, project, plan or job.
    OidcNotFound,
    Token(String),
    OpenIdConfiguration(String),
    Jwks(String),
    InstanceDiscovery,
    /// Key Vault's `GET /secrets/{name}[/{version}]`.
    KeyVaultSecret {
        name: String,
        version: Option<String>,
    },
    NotFound,
}

fn route(shared: &Shared, path: &str) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match segments.as_slice() {
        [
            org,
            project,
            apis,
            dt,
            hubs,
            hub,
            plans,
            plan,
            jobs,
            job,
            oidctoken,
        ] if eq(apis, "_apis")
            && eq(dt, "distributedtask")
            && eq(hubs, "hubs")
            && eq(plans, "plans")
            && eq(jobs, "jobs")
            && eq(oidctoken, "oidctoken") =>
        {
            let project_ok =
                eq(project, &shared.ids.project_id) || eq(project, &shared.config.project);
            if eq(org, &shared.config.organization)
                && project_ok
                && eq(hub, "build")
                && eq(plan, &shared.ids.plan_id)
                && eq(job, &shared.ids.job_id)
            {
                Route::Oidc
            } else {
                Route::OidcNotFound
            }
        }
        [tenant, "oauth2", "v2.0", "token"] => Route::Token((*tenant).to_owned()),
        [tenant, "v2.0", ".well-known", "openid-configuration"] => {
            Route::OpenIdConfiguration((*tenant).to_owned())
        }
        [tenant, "discovery", "v2.0", "keys"] => Route::Jwks((*tenant).to_owned()),
        ["common", "discovery", "instance"] => Route::InstanceDiscovery,
        // SecretClient asks for the latest version as `/secrets/{name}/` (empty version).
        ["secrets", name] | ["secrets", name, ""] if !name.is_empty() => Route::KeyVaultSecret {
            name: (*name).to_owned(),
            version: None,
        },
        ["secrets", name, version] if !name.is_empty() => Route::KeyVaultSecret {
            name: (*name).to_owned(),
            version: Some((*version).to_owned()),
        },
        _ => Route::NotFound,
    }
}

async fn handle(shared: &Shared, ctx: &ConnCtx, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    match route(shared, &path) {
        Route::Oidc => {
            let body = read_body(body).await;
            shared.control.record_oidc_request();
            let mut resp = match before_answer(shared, ctx, Endpoint::Oidc, None).await {
                Some(resp) => resp,
                None => match body {
                    Ok(_) => oidc::handle(shared, &parts),
                    Err(resp) => resp,
                },
            };
            oidc::add_vss_headers(&mut resp);
            resp
        }
        Route::OidcNotFound => {
            let mut resp = json_response(
                404,
                oidc::vss_error_json(
                    "TaskOrchestrationPlanNotFoundException",
                    "The requested plan or job could not be found. Check that SYSTEM_OIDCREQUESTURI is the one of this job.",
                ),
            );
            oidc::add_vss_headers(&mut resp);
            resp
        }
        Route::Token(tenant) => {
            let ids = entra::RequestIds::new(
                parts
                    .headers
                    .get("client-request-id")
                    .and_then(|v| v.to_str().ok()),
            );
            let body = read_body(body).await;
            let form = match &body {
                Ok(bytes) if is_form(&parts.headers) => parse_form(bytes),
                _ => Vec::new(),
            };
            let scope = form_value(&form, "scope");
            shared.control.record_token_request(&tenant, scope);
            let mut resp = match before_answer(shared, ctx, Endpoint::Token, Some(&ids)).await {
                Some(resp) => resp,
                None => match body {
                    Ok(_) => entra::handle_token(shared, &parts.method, &tenant, &form, &ids),
                    Err(resp) => resp,
                },
            };
            entra::add_entra_headers(&mut resp, &ids);
            resp
        }
        Route::OpenIdConfiguration(tenant) => {
            entra::openid_configuration(shared, &parts.method, shared.base(ctx.tls), &tenant)
        }
        Route::Jwks(tenant) => entra::jwks(shared, &parts.method, &tenant),
        Route::InstanceDiscovery => entra::instance_discovery(&parts.method, shared.base(ctx.tls)),
        Route::KeyVaultSecret { name, version } => {
            // Drained so that the connection stays usable; the body itself is not used.
            let _ = read_body(body).await;
            keyvault::handle(
                shared,
                &parts.method,
                &parts.headers,
                parts.uri.query(),
                &name,
                version.as_deref(),
            )
        }
        Route::NotFound => text_response(404, "text/plain; charset=utf-8", "Not Found"),
    }
}

/// Hold, latency and injected faults: what happens to every request that
/// reached an endpoint before the endpoint itself looks at it.
async fn before_answer(
    shared: &Shared,
    ctx: &ConnCtx,
    endpoint: Endpoint,
    ids: Option<&entra::RequestIds>,
) -> Option<Resp> {
    shared.control.wait_hold(endpoint).await;
    let latency = shared.control.latency(endpoint);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = shared.control.take_fault(endpoint)?;
    Some(fault_response(ctx, endpoint, fault, ids).await)
}

async fn fault_response(
    ctx: &ConnCtx,
    endpoint: Endpoint,
    fault: Fault,
    ids: Option<&entra::RequestIds>,
) -> Resp {
    match fault {
        Fault::Status {
            status,
            retry_after,
        } => {
            let body = match endpoint {
                Endpoint::Oidc => oidc::status_fault_body(status),
                Endpoint::Token => entra::status_fault_body(status, ids),
            };
            let mut resp = json_response(status, body);
            if let Some(secs) = retry_after {
                set_header(&mut resp, RETRY_AFTER, &secs.to_string());
            }
            resp
        }
        Fault::Hang => std::future::pending().await,
        Fault::DropConnection => {
            ctx.kill.notify_one();
            // The connection task drops this future together with the connection.
            std::future::pending().await
        }
        Fault::MalformedJson => {
            let body = match endpoint {
                Endpoint::Oidc => "{\"oidcToken\":\"eyJ0eXAiOiJKV1QiLCJhbGciOi",
                Endpoint::Token => {
                    "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,\"access_token\":\"eyJ0eXAiOiJKV1Qi"
                }
            };
            json_response(200, body.to_owned())
        }
        Fault::Html203 => text_response(203, "text/html; charset=utf-8", oidc::SIGN_IN_PAGE),
        Fault::Body {
            status,
            content_type,
            body,
        } => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status_code(status);
            let value = HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            resp.headers_mut().insert(CONTENT_TYPE, value);
            resp
        }
    }
}

/// Reads the body, keeping at most `MAX_BODY` bytes. A larger body is still
/// read to its end (up to `MAX_DRAIN`) before the 413 goes out: closing a
/// socket with unread data makes the kernel send a reset, which can destroy the
/// response before the client reads it.
async fn read_body(mut body: Incoming) -> Result<Bytes, Resp> {
    use hyper::body::Body as _;
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else {
            return Err(text_response(
                400,
                "text/plain; charset=utf-8",
                "Bad Request",
            ));
        };
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total > MAX_DRAIN {
                break;
            }
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            }
        }
    }
    if total > MAX_BODY {
        return Err(text_response(
            413,
            "text/plain; charset=utf-8",
            "Request Entity Too Large",
        ));
    }
    Ok(Bytes::from(buf))
}

fn is_form(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The first non-empty value of `key`; Entra treats an empty value as missing.
pub(crate) fn form_value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn set_header(resp: &mut Resp, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        resp.headers_mut().append(name, value);
    }
}

pub(crate) fn text_response(
    status: u16,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Resp {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status_code(status);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) fn json_response(status: u16, body: String) -> Resp {
    text_response(status, "application/json; charset=utf-8", body)
}
