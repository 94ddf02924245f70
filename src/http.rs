//! The HTTP client both endpoints share: the azure_core pipeline (so the user's retry, transport
//! and logging options apply), a cap on response bodies, and `close`.

use crate::{
    error::{Failure, Section},
    timeout::{self, Elapsed},
};
use arc_swap::ArcSwapOption;
use azure_core::{
    Bytes, Uuid,
    http::{
        ClientOptions, Context, Pipeline, PipelineStreamOptions, RawResponse, Request, StatusCode,
        headers::{CLIENT_REQUEST_ID, Header as _, HeaderValue, Headers},
        request::options::ClientRequestId,
    },
};
use futures::StreamExt as _;
use std::{borrow::Cow, time::Duration};

/// Bodies from either endpoint are a few kilobytes; a body that grows past this is refused, and
/// the rest of it is not read.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Response headers worth logging and quoting in errors: support uses them to find a request.
pub(crate) const DIAGNOSTIC_HEADERS: &[&str] = &["x-vss-e2eid", "x-msedge-ref", "x-ms-request-id"];

/// A collected response.
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: Headers,
    pub(crate) body: Bytes,
}

impl Response {
    /// The response as azure_core's `RawResponse`, to keep as an error's source.
    ///
    /// Only for error responses: a successful response holds a token.
    pub(crate) fn into_raw(self) -> RawResponse {
        RawResponse::from_bytes(self.status, self.headers, self.body)
    }
}

#[derive(Debug)]
pub(crate) struct HttpClient {
    pipeline: ArcSwapOption<Pipeline>,
    attempt_timeout: Duration,
}

impl HttpClient {
    /// A client whose every attempt (each retry included) must see response headers within
    /// `attempt_timeout`, and then the whole body within `attempt_timeout` again.
    pub(crate) fn new(mut options: ClientOptions, attempt_timeout: Duration) -> Self {
        #[cfg(feature = "reqwest")]
        if options.transport.is_none() {
            options.transport = Some(azure_core::http::Transport::new(std::sync::Arc::new(
                crate::transport::DefaultTransport::default(),
            )));
        }
        options
            .logging
            .additional_allowed_header_names
            .extend(DIAGNOSTIC_HEADERS.iter().map(|h| Cow::Borrowed(*h)));
        options
            .logging
            .additional_allowed_query_params
            .extend(["api-version", "serviceConnectionId"].map(Cow::Borrowed));
        let pipeline = Pipeline::new(
            option_env!("CARGO_PKG_NAME"),
            option_env!("CARGO_PKG_VERSION"),
            options,
            Vec::new(),
            // Per try, so that each attempt the retry policy makes gets its own limit and a
            // timed-out attempt is retried like a dropped connection.
            vec![timeout::AttemptTimeoutPolicy::new(attempt_timeout)],
            None,
        );
        Self {
            pipeline: ArcSwapOption::from_pointee(pipeline),
            attempt_timeout,
        }
    }

    /// Drops the pipeline, and with it the transport's connection pool.
    pub(crate) fn close(&self) {
        self.pipeline.store(None);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.pipeline.load().is_none()
    }

    /// Sends `request` and collects at most [`MAX_BODY_BYTES`] of the body.
    pub(crate) async fn send(
        &self,
        ctx: &Context<'_>,
        request: &mut Request,
        endpoint_name: &str,
    ) -> Result<Response, Failure> {
        let pipeline = self.pipeline.load_full().ok_or_else(Failure::closed)?;
        set_client_request_id(ctx, request);
        let response = pipeline
            .stream(
                ctx,
                request,
                Some(PipelineStreamOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| send_failure(e, endpoint_name))?;
        let (status, headers, mut body) = response.deconstruct();
        let mut collected = Vec::new();
        let reading = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    Failure::new(
                        Section::NetworkError,
                        format!(
                            "Reading the response of the {endpoint_name} failed (HTTP {status}): \
                             {}. Check the network and the endpoint's address.",
                            causes(&e)
                        ),
                    )
                    .with_source(e)
                })?;
                if collected.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(Failure::new(
                        Section::ResponseTooLarge,
                        format!(
                            "The {endpoint_name} sent a response body larger than \
                             {MAX_BODY_BYTES} bytes (HTTP {status}); it was refused without reading the rest. Check \
                             that the endpoint's address is right."
                        ),
                    ));
                }
                collected.extend_from_slice(&chunk);
            }
            Ok(())
        };
        // The retry policy has returned by now, so a body that stalls is not retried; the
        // limit only keeps it from holding the caller until the overall budget runs out.
        match timeout::within(self.attempt_timeout, reading).await {
            Ok(read) => read?,
            Err(Elapsed) => {
                return Err(Failure::new(
                    Section::AttemptTimeout,
                    format!(
                        "The {endpoint_name} sent response headers (HTTP {status}) but not the \
                         whole body within {} (attempt_timeout). Check the network, or raise \
                         AzurePipelinesCredentialOptions::attempt_timeout.",
                        timeout::seconds(self.attempt_timeout)
                    ),
                ));
            }
        }
        Ok(Response {
            status,
            headers,
            body: collected.into(),
        })
    }
}

/// Sets `x-ms-client-request-id` as azure_core's `ClientRequestIdPolicy` would: the caller's
/// [`ClientRequestId`] from the context, or a new UUID.
///
/// That policy first looks the header up with `Headers::get_optional_str`, which, the header
/// being absent, builds an error and under `RUST_BACKTRACE=1` captures a backtrace: two thirds
/// of the client's instructions for a whole token exchange. Present, it is left as it is.
fn set_client_request_id(ctx: &Context<'_>, request: &mut Request) {
    if header(request.headers(), CLIENT_REQUEST_ID.as_str()).is_some() {
        return;
    }
    let id: HeaderValue = match ctx.value::<ClientRequestId>() {
        Some(id) => id.value(),
        None => Uuid::new_v4().to_string().into(),
    };
    request.insert_header(CLIENT_REQUEST_ID, id);
}

/// The error for a request that got no response: timed out on every attempt, or a transport
/// error (refused or dropped connection, TLS), with the underlying causes spelled out.
fn send_failure(e: azure_core::Error, endpoint_name: &str) -> Failure {
    if let Some(t) = timeout::attempt_timed_out(&e) {
        let attempts = if t.attempt == 1 {
            "1 attempt".to_owned()
        } else {
            format!("{} attempts", t.attempt)
        };
        return Failure::new(
            Section::AttemptTimeout,
            format!(
                "The {endpoint_name} did not answer within {} (attempt_timeout); {attempts} in \
                 all, as client_options.retry allows. Check the network and the endpoint's \
                 address and status, or raise AzurePipelinesCredentialOptions::attempt_timeout \
                 if the endpoint is just slow.",
                timeout::seconds(t.limit)
            ),
        )
        .with_source(e);
    }
    Failure::new(
        Section::NetworkError,
        format!(
            "The request to the {endpoint_name} could not be completed, after the retries that \
             client_options.retry allows: {}. Check the network and the endpoint's address.",
            causes(&e)
        ),
    )
    .with_source(e)
}

/// The messages of `error` and its sources, joined by `: `, each said once.
///
/// Transport errors name the URL (never a secret: the System.AccessToken and the assertion
/// travel in a header and the body) and the cause (refused, reset, TLS).
fn causes(error: &azure_core::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        // The retry policy's own wrapping says nothing the message does not already say.
        let redundant = text.starts_with("retry policy expired");
        if !redundant && !text.is_empty() && !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
        current = e.source();
    }
    said.join(": ")
}

/// Overwrites `bytes` with zeros if this is the last reference to them: request and response
/// bodies that held a secret. `Bytes` still shared (a transport kept a clone) are left alone;
/// this is best effort, see RELIABILITY.md. Returns whether the bytes were zeroed.
pub(crate) fn wipe(what: &'static str, bytes: Bytes) -> bool {
    let zeroed = match bytes.try_into_mut() {
        Ok(mut owned) => {
            zeroize::Zeroize::zeroize(&mut owned[..]);
            true
        }
        Err(_shared) => false,
    };
    tracing::trace!(target: "azure_pipelines_credential", zeroed, "{what} released");
    zeroed
}

/// The value of header `name`, if present.
///
/// Not `Headers::get_optional_str`: for an absent header it builds an error, and with
/// `RUST_BACKTRACE=1` (as many CI jobs run) captures a backtrace, some 80,000 instructions.
fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, value)| value.as_str())
}

/// `name: value` pairs of the diagnostic headers present, for error messages.
pub(crate) fn diagnostic_headers(headers: &Headers) -> String {
    let pairs: Vec<String> = DIAGNOSTIC_HEADERS
        .iter()
        .filter_map(|name| header(headers, name).map(|value| format!("{name}: {value}")))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!(" ({})", pairs.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_zeroes_only_what_it_owns() {
        assert!(wipe("test body", Bytes::from(String::from("secret"))));
        assert!(wipe("test body", Bytes::from(vec![1u8, 2, 3])));
        let shared = Bytes::from(vec![1u8, 2, 3]);
        let other = shared.clone();
        assert!(!wipe("test body", shared));
        assert_eq!(
            &other[..],
            &[1, 2, 3],
            "a clone still in use is left intact"
        );
    }
}
