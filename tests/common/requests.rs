//! The per-request options of `get_token`: claims, tenant and CAE.

use azure_core::credentials::TokenRequestOptions;
use azure_pipelines_credential::TokenRequestContext;

pub fn context(context: TokenRequestContext) -> Option<TokenRequestOptions<'static>> {
    Some(context.into())
}

pub fn with_claims(claims: &str) -> Option<TokenRequestOptions<'static>> {
    context(TokenRequestContext {
        claims: Some(claims.to_owned()),
        ..Default::default()
    })
}

pub fn with_tenant(tenant: &str) -> Option<TokenRequestOptions<'static>> {
    context(TokenRequestContext {
        tenant_id: Some(tenant.to_owned()),
        ..Default::default()
    })
}

pub fn with_cae() -> Option<TokenRequestOptions<'static>> {
    context(TokenRequestContext {
        enable_cae: true,
        ..Default::default()
    })
}
