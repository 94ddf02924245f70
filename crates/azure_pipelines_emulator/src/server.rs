//! Listeners, connections, routing, and what happens to a request before its endpoint sees it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::{Bytes, Incoming};
use hyper::header::RETRY_AFTER;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::control::{ConnectionFault, Endpoint, Fault};
use crate::state::Shared;
use crate::tls::TlsMaterial;
use crate::wire::{
    RequestIds, Resp, form_value, is_form, json_response, parse_form, response, set_header,
    text_response, vss_error_json,
};
use crate::{entra, keyvault, managed_identity, oidc};

/// Largest request body read; Entra's own limit is in the same range.
const MAX_BODY: usize = 1 << 20;
/// How much of an oversized body is read and thrown away before answering.
const MAX_DRAIN: usize = 64 << 20;

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
    tls: &TlsMaterial,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<()>,
) -> Vec<JoinHandle<()>> {
    let acceptors = Acceptors {
        trusted: TlsAcceptor::from(tls.server_config.clone()),
        untrusted: TlsAcceptor::from(tls.untrusted_config.clone()),
    };
    vec![
        tokio::spawn(accept_loop(
            listeners.http,
            None,
            shared.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(accept_loop(
            listeners.https,
            Some(acceptors),
            shared,
            shutdown,
        )),
    ]
}

/// The HTTPS listener's TLS: its own, and the impostor's for
/// [`ConnectionFault::UntrustedCertificate`].
#[derive(Clone)]
struct Acceptors {
    trusted: TlsAcceptor,
    untrusted: TlsAcceptor,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Acceptors>,
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
        let fault = shared.control.accept_connection(tls.is_some());
        let shared = shared.clone();
        let tls = tls.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let serve = async move {
                let Some(acceptors) = tls else {
                    return serve_connection(stream, shared, false).await;
                };
                let acceptor = match fault {
                    None => acceptors.trusted,
                    Some(ConnectionFault::UntrustedCertificate) => acceptors.untrusted,
                    Some(ConnectionFault::StallHandshake) => {
                        // Holds the stream, unread, until the client or the emulator gives up.
                        let _held = stream;
                        return std::future::pending().await;
                    }
                };
                match acceptor.accept(stream).await {
                    Ok(stream) => serve_connection(stream, shared, true).await,
                    Err(e) => tracing::debug!(error = %e, "emulator TLS handshake failed"),
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
    /// App Service's `GET /msi/token`.
    ManagedIdentity,
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
        [msi, token] | [msi, token, ""] if eq(msi, "msi") && eq(token, "token") => {
            Route::ManagedIdentity
        }
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
            let mut resp = serve_endpoint(shared, ctx, Endpoint::Oidc, None, || match body {
                Ok(_) => oidc::handle(shared, &parts),
                Err(resp) => resp,
            })
            .await;
            oidc::add_vss_headers(&mut resp);
            resp
        }
        Route::OidcNotFound => {
            let mut resp = json_response(
                404,
                vss_error_json(
                    "TaskOrchestrationPlanNotFoundException",
                    "The requested plan or job could not be found. Check that SYSTEM_OIDCREQUESTURI is the one of this job.",
                ),
            );
            oidc::add_vss_headers(&mut resp);
            resp
        }
        Route::Token(tenant) => {
            let ids = RequestIds::new(
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
            let mut resp =
                serve_endpoint(shared, ctx, Endpoint::Token, Some(&ids), || match body {
                    Ok(_) => entra::handle_token(shared, &parts.method, &tenant, &form, &ids),
                    Err(resp) => resp,
                })
                .await;
            entra::add_entra_headers(&mut resp, &ids);
            resp
        }
        Route::OpenIdConfiguration(tenant) => {
            entra::openid_configuration(shared, &parts.method, shared.base(ctx.tls), &tenant)
        }
        Route::Jwks(tenant) => entra::jwks(shared, &parts.method, &tenant),
        Route::InstanceDiscovery => entra::instance_discovery(&parts.method, shared.base(ctx.tls)),
        Route::ManagedIdentity => {
            // Drained so that the connection stays usable; a GET has no use for it.
            let _ = read_body(body).await;
            shared.control.record_managed_identity_request();
            serve_endpoint(shared, ctx, Endpoint::ManagedIdentity, None, || {
                managed_identity::handle(shared, &parts.method, &parts.headers, parts.uri.query())
            })
            .await
        }
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

/// Hold, latency and injected faults: what happens to every request that reached an endpoint
/// before the endpoint itself looks at it. `answer` is the endpoint's own answer, asked for only
/// when no fault replaces it.
async fn serve_endpoint(
    shared: &Shared,
    ctx: &ConnCtx,
    endpoint: Endpoint,
    ids: Option<&RequestIds>,
    answer: impl FnOnce() -> Resp,
) -> Resp {
    shared.control.wait_hold(endpoint).await;
    let latency = shared.control.latency(endpoint);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match shared.control.take_fault(endpoint) {
        None => answer(),
        Some(fault) => fault_response(ctx, endpoint, fault, ids, answer).await,
    }
}

/// `resp` with its body sent the way `how` says.
fn reshape(resp: Resp, how: impl FnOnce(Bytes) -> Body) -> Resp {
    let (parts, body) = resp.into_parts();
    match body.bytes() {
        Some(bytes) => Response::from_parts(parts, how(bytes)),
        None => Response::from_parts(parts, body),
    }
}

/// The response under `fault`; `answer` is the endpoint's own, for the faults that spoil it.
async fn fault_response(
    ctx: &ConnCtx,
    endpoint: Endpoint,
    fault: Fault,
    ids: Option<&RequestIds>,
    answer: impl FnOnce() -> Resp,
) -> Resp {
    match fault {
        Fault::Status {
            status,
            retry_after,
        } => {
            let body = match endpoint {
                Endpoint::Oidc => oidc::status_fault_body(status),
                Endpoint::Token => entra::status_fault_body(status, ids),
                Endpoint::ManagedIdentity => managed_identity::status_fault_body(status),
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
                Endpoint::ManagedIdentity => "{\"access_token\":\"eyJ0eXAiOiJKV1Qi",
            };
            json_response(200, body.to_owned())
        }
        Fault::Html203 => text_response(203, "text/html; charset=utf-8", oidc::SIGN_IN_PAGE),
        Fault::Body {
            status,
            content_type,
            body,
        } => response(status, &content_type, Body::full(body)),
        Fault::HugeBody { bytes } => response(
            200,
            "application/json; charset=utf-8",
            Body::huge_json(bytes),
        ),
        Fault::Trickle { chunk, interval } => {
            reshape(answer(), |bytes| Body::trickle(bytes, chunk, interval))
        }
        Fault::TruncatedBody => reshape(answer(), Body::truncated),
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
