//! Per-request options that the `TokenCredential` trait has no parameters for.

use azure_core::{credentials::TokenRequestOptions, http::Context};

/// The per-request options of the Azure SDK's `get_token`: `claims`, `tenant_id` and
/// `enable_cae`.
///
/// `TokenCredential::get_token` takes only scopes and [`TokenRequestOptions`], so these travel in
/// the options' context. Convert with `.into()`:
///
/// ```
/// use azure_core::credentials::TokenRequestOptions;
/// use azure_pipelines_credential::TokenRequestContext;
///
/// let options: TokenRequestOptions<'static> = TokenRequestContext {
///     tenant_id: Some("other-tenant".into()),
///     enable_cae: true,
///     ..Default::default()
/// }
/// .into();
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenRequestContext {
    /// Additional claims required in the token, such as those from a resource's claims
    /// challenge (a JSON object). A request with claims always goes to Entra ID.
    pub claims: Option<String>,
    /// The tenant to request the token from, when it is not the credential's own; it must be
    /// allowed by `additionally_allowed_tenants`.
    pub tenant_id: Option<String>,
    /// Request a Continuous Access Evaluation (CAE) token. CAE tokens are cached apart from
    /// other tokens.
    pub enable_cae: bool,
}

impl TokenRequestContext {
    pub(crate) fn of<'a>(options: Option<&'a TokenRequestOptions<'_>>) -> Option<&'a Self> {
        options.and_then(|o| o.method_options.context.value::<Self>())
    }
}

impl From<TokenRequestContext> for TokenRequestOptions<'static> {
    fn from(context: TokenRequestContext) -> Self {
        let mut options = TokenRequestOptions::default();
        options.method_options.context = Context::new().with_value(context);
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_options() {
        let context = TokenRequestContext {
            claims: Some("{}".into()),
            ..Default::default()
        };
        let options: TokenRequestOptions<'static> = context.clone().into();
        assert_eq!(TokenRequestContext::of(Some(&options)), Some(&context));
        assert_eq!(TokenRequestContext::of(None), None);
        assert_eq!(
            TokenRequestContext::of(Some(&TokenRequestOptions::default())),
            None
        );
    }
}
