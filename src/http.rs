//! The HTTP client both endpoints share: the azure_core pipeline (so the user's retry, transport
//! and logging options apply), a cap on response bodies, and `close`.

use crate::error;
use arc_swap::ArcSwapOption;
use azure_core::{
    Bytes,
    http::{
        ClientOptions, Context, Pipeline, PipelineStreamOptions, RawResponse, Request, StatusCode,
        headers::Headers,
    },
};
use futures::StreamExt as _;
use std::borrow::Cow;

/// Bodies from either endpoint are a few kilobytes; anything past this is refused unread.
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
}

impl HttpClient {
    pub(crate) fn new(mut options: ClientOptions) -> Self {
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
            Vec::new(),
            None,
        );
        Self {
            pipeline: ArcSwapOption::from_pointee(pipeline),
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
    ) -> azure_core::Result<Response> {
        let pipeline = self.pipeline.load_full().ok_or_else(error::closed)?;
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
            .map_err(|e| {
                error::failed_with(
                    format!(
                        "The request to the {endpoint_name} could not be completed: {e}. \
                         Check the network and the endpoint's address."
                    ),
                    e,
                )
            })?;
        let (status, headers, mut body) = response.deconstruct();
        let mut collected = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                error::failed_with(
                    format!("Reading the response of the {endpoint_name} failed: {e}."),
                    e,
                )
            })?;
            if collected.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(error::failed(format!(
                    "The {endpoint_name} sent a response body larger than {MAX_BODY_BYTES} bytes \
                     (HTTP {status}); it was refused unread. Check that the endpoint's address \
                     is right."
                )));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body: collected.into(),
        })
    }
}

/// `name: value` pairs of the diagnostic headers present, for error messages.
pub(crate) fn diagnostic_headers(headers: &Headers) -> String {
    let pairs: Vec<String> = DIAGNOSTIC_HEADERS
        .iter()
        .filter_map(|name| {
            headers
                .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
                .map(|value| format!("{name}: {value}"))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!(" ({})", pairs.join(", "))
    }
}
