//! The token a credential hands out, with its timing.

use azure_core::credentials::{AccessToken, Secret};
use time::OffsetDateTime;

/// An access token with the properties the Azure SDK's `get_token_info` returns.
///
/// `Debug` never prints the token.
#[derive(Clone, Debug)]
pub struct AccessTokenInfo {
    /// The access token.
    pub token: Secret,
    /// When the token expires.
    pub expires_on: OffsetDateTime,
    /// When Microsoft Entra ID suggests refreshing it (`refresh_in`), or half its lifetime for
    /// tokens valid 2 hours or more; `None` otherwise. The credential refreshes in the
    /// background before this time or, without it, shortly before the token expires.
    pub refresh_on: Option<OffsetDateTime>,
    /// The token type, `Bearer`.
    pub token_type: String,
}

impl From<AccessTokenInfo> for AccessToken {
    fn from(info: AccessTokenInfo) -> Self {
        AccessToken::new(info.token, info.expires_on)
    }
}
