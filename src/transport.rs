//! The transport used when the application gives none: azure_core's, except for loopback.
//!
//! azure_core's default reqwest client takes its proxy from `HTTP_PROXY`, `HTTPS_PROXY` and
//! `NO_PROXY`. For real endpoints that is what users expect, and it stays so. A loopback endpoint
//! (a local emulator, a test server) is another matter: plain http to `127.0.0.1` would carry the
//! System.AccessToken and the OIDC token to the proxy in clear text. So requests to a loopback
//! host go through a second client that never uses a proxy, and that resolves `localhost` only
//! to `127.0.0.1` and `::1`, whatever the resolver says. An application that sets its own
//! transport keeps full control of both.
//!
//! Both clients are built on first use: a process served from the persistent token cache never
//! loads TLS roots or builds a connection pool.

use crate::endpoint;
use async_trait::async_trait;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, new_http_client};
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, OnceLock},
    time::Duration,
};

/// The limits of azure_core's own default client, kept for the loopback client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(crate) struct DefaultTransport {
    proxied: OnceLock<Arc<dyn HttpClient>>,
    loopback: OnceLock<azure_core::Result<Arc<dyn HttpClient>>>,
}

impl DefaultTransport {
    /// azure_core's default client, for every other host.
    fn proxied(&self) -> &Arc<dyn HttpClient> {
        self.proxied.get_or_init(|| new_http_client(None))
    }

    /// The client for loopback hosts, built on first use (most credentials never need it).
    fn loopback(&self) -> azure_core::Result<&Arc<dyn HttpClient>> {
        let built = self.loopback.get_or_init(|| {
            let loopback = [
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
            ];
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                // reqwest ignores the port of an override; the URL's port is used.
                .resolve_to_addrs("localhost", &loopback)
                .build()
                .map(|client| Arc::new(client) as Arc<dyn HttpClient>)
                .map_err(|e| {
                    azure_core::Error::with_error(
                        azure_core::error::ErrorKind::Io,
                        e,
                        "the HTTP client for loopback hosts could not be built",
                    )
                })
        });
        built.as_ref().map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Io, e.to_string())
        })
    }
}

#[async_trait]
impl HttpClient for DefaultTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        if endpoint::is_loopback(request.url()) {
            self.loopback()?.execute_request(request).await
        } else {
            self.proxied().execute_request(request).await
        }
    }
}
