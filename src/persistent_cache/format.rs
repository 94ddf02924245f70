//! What the sealed file holds: JSON entries, keyed like the in-memory cache (the request's
//! [`Key`]: scopes, tenant, CAE) plus the authority and client, which are fixed per credential
//! there but not in a file that every credential of the job shares. Each entry holds the access
//! token, its expiry, refresh time and type; times are Unix seconds. Neither the OIDC token nor
//! the `System.AccessToken` is ever stored.

use super::seal::Unreadable;
use crate::{
    AccessTokenInfo,
    cache::{MAX_JITTER, REFRESH_WINDOW},
    request::Key,
};
use azure_core::credentials::Secret;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use zeroize::{Zeroize, Zeroizing};

/// Room left between a token served from the file and the in-memory cache's refresh window.
const CLEARANCE: Duration = Duration::minutes(1);
/// A token in the file is served (and kept) only while it has more than this left. The
/// in-memory cache starts refreshing [`REFRESH_WINDOW`] before expiry, up to [`MAX_JITTER`]
/// earlier: a token served with less would be due for refresh at once, and every hit would start
/// another refresh that reads the same token from the file again.
pub(super) const MIN_LIFETIME_LEFT: Duration = Duration::seconds(
    REFRESH_WINDOW.whole_seconds() + MAX_JITTER.whole_seconds() + CLEARANCE.whole_seconds(),
);
/// Likewise before Entra's `refresh_on`, which the in-memory cache also moves earlier by its
/// jitter.
pub(super) const REFRESH_MARGIN: Duration =
    Duration::seconds(MAX_JITTER.whole_seconds() + CLEARANCE.whole_seconds());

/// Who a token in the file belongs to: the credential's authority and client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Owner {
    pub(super) authority: Arc<str>,
    pub(super) client: Arc<str>,
}

/// What identifies a token in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct EntryKey {
    #[serde(flatten)]
    pub(super) owner: Owner,
    /// Shared with the in-memory cache for the entry being written.
    #[serde(flatten)]
    pub(super) request: Arc<Key>,
}

/// One token in the file.
#[derive(Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) key: EntryKey,
    access_token: String,
    pub(super) expires_on: i64,
    refresh_on: Option<i64>,
    token_type: String,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.access_token.zeroize();
    }
}

impl Entry {
    pub(super) fn new(key: EntryKey, info: &AccessTokenInfo) -> Self {
        Self {
            key,
            access_token: info.token.secret().to_owned(),
            expires_on: info.expires_on.unix_timestamp(),
            refresh_on: info.refresh_on.map(OffsetDateTime::unix_timestamp),
            token_type: info.token_type.clone(),
        }
    }

    pub(super) fn info(&self) -> Option<AccessTokenInfo> {
        Some(AccessTokenInfo {
            token: Secret::new(self.access_token.clone()),
            expires_on: OffsetDateTime::from_unix_timestamp(self.expires_on).ok()?,
            refresh_on: match self.refresh_on {
                Some(at) => Some(OffsetDateTime::from_unix_timestamp(at).ok()?),
                None => None,
            },
            token_type: self.token_type.clone(),
        })
    }

    /// Whether the token may be handed out at `now`: it is not due for a refresh by the
    /// in-memory cache for a while (see [`MIN_LIFETIME_LEFT`]).
    pub(super) fn fresh(&self, now: OffsetDateTime) -> bool {
        self.info().is_some_and(|info| {
            !info.token.secret().is_empty()
                && info.expires_on - now > MIN_LIFETIME_LEFT
                && info.refresh_on.is_none_or(|r| r - now > REFRESH_MARGIN)
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
pub(super) struct Contents {
    pub(super) entries: Vec<Entry>,
}

impl Contents {
    pub(super) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        serde_json::to_vec(self)
            .map(Zeroizing::new)
            .map_err(|e| format!("the entries could not be encoded: {e}"))
    }

    pub(super) fn decode(plaintext: &[u8]) -> Result<Self, Unreadable> {
        serde_json::from_slice(plaintext).map_err(|_| Unreadable::Contents)
    }

    /// The fresh token of `owner` for `request`, if the file has one.
    pub(super) fn find(
        &self,
        owner: &Owner,
        request: &Key,
        now: OffsetDateTime,
    ) -> Option<AccessTokenInfo> {
        self.entries
            .iter()
            .find(|e| e.key.owner == *owner && *e.key.request == *request && e.fresh(now))
            .and_then(Entry::info)
    }

    /// Adds `entry`, unless the file already has a token for its key that lives longer (another
    /// process got one meanwhile); drops the entries that can no longer be served (see
    /// [`Entry::fresh`]), and keeps at most `max` (the soonest to expire go first).
    pub(super) fn insert(&mut self, entry: Entry, now: OffsetDateTime, max: usize) {
        self.entries.retain(|e| e.fresh(now));
        if !entry.fresh(now) {
            return;
        }
        match self.entries.iter_mut().find(|e| e.key == entry.key) {
            Some(existing) if existing.expires_on >= entry.expires_on => {}
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
        if self.entries.len() > max {
            self.entries
                .sort_unstable_by_key(|e| std::cmp::Reverse(e.expires_on));
            self.entries.truncate(max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistent_cache::seal::Keys;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
    }

    fn owner() -> Owner {
        Owner {
            authority: "https://login.microsoftonline.com/".into(),
            client: "client".into(),
        }
    }

    fn request(scope: &str) -> Arc<Key> {
        Arc::new(Key {
            scopes: [scope.into()].into(),
            tenant: "tenant".into(),
            cae: false,
        })
    }

    fn entry(scope: &str, expires_in: i64) -> Entry {
        Entry::new(
            EntryKey {
                owner: owner(),
                request: request(scope),
            },
            &AccessTokenInfo {
                token: Secret::new(format!("token-{scope}")),
                expires_on: at(expires_in),
                refresh_on: None,
                token_type: "Bearer".into(),
            },
        )
    }

    #[test]
    fn the_margins_follow_the_in_memory_cache() {
        assert_eq!(MIN_LIFETIME_LEFT, Duration::minutes(8));
        assert_eq!(REFRESH_MARGIN, Duration::minutes(2));
    }

    #[test]
    fn contents_round_trip_and_hold_no_clear_token() {
        let mut contents = Contents::default();
        contents.insert(entry("a", 3600), at(0), 8);
        let plaintext = contents.encode().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&plaintext).unwrap();
        assert_eq!(
            json["entries"][0]["key"],
            serde_json::json!({
                "authority": "https://login.microsoftonline.com/",
                "client": "client",
                "tenant": "tenant",
                "scopes": ["a"],
                "cae": false
            }),
            "the key's fields, flat"
        );
        let decoded = Contents::decode(&plaintext).unwrap();
        assert_eq!(decoded.entries.len(), 1);
        let info = decoded.find(&owner(), &request("a"), at(0)).unwrap();
        assert_eq!(info.token.secret(), "token-a");
        assert_eq!(info.expires_on, at(3600));
        assert_eq!(info.token_type, "Bearer");
        assert!(decoded.find(&owner(), &request("b"), at(0)).is_none());
        let other = Owner {
            client: "other".into(),
            ..owner()
        };
        assert!(decoded.find(&other, &request("a"), at(0)).is_none());
        let sealed = Keys::derive("t").seal(&plaintext).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"token-a"));
    }

    #[test]
    fn insert_drops_expired_keeps_the_longest_and_caps() {
        let now = at(0);
        let mut contents = Contents::default();
        contents.insert(entry("expired", -10), at(-3600), 8);
        contents.insert(entry("a", 3600), now, 8);
        assert_eq!(contents.entries.len(), 1, "the expired entry went");
        contents.insert(entry("short", 300), now, 8);
        assert_eq!(
            contents.entries.len(),
            1,
            "a token too short to serve is not kept"
        );
        // A shorter-lived token for the same key does not replace a longer-lived one.
        contents.insert(entry("a", 1800), now, 8);
        assert_eq!(contents.entries[0].expires_on, at(3600).unix_timestamp());
        contents.insert(entry("a", 7200), now, 8);
        assert_eq!(contents.entries.len(), 1);
        assert_eq!(contents.entries[0].expires_on, at(7200).unix_timestamp());
        for (i, scope) in ["b", "c", "d"].iter().enumerate() {
            contents.insert(entry(scope, 600 * (i as i64 + 1)), now, 3);
        }
        let mut kept: Vec<&str> = contents
            .entries
            .iter()
            .map(|e| e.key.request.scopes[0].as_ref())
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, ["a", "c", "d"], "the soonest to expire went");
    }

    #[test]
    fn only_fresh_tokens_are_served() {
        let e = entry("a", 3600);
        // A one-hour token is refreshed 6 minutes before expiry; the file serves it until two
        // minutes before that.
        assert!(e.fresh(at(0)));
        assert!(e.fresh(at(3600 - 8 * 60 - 1)));
        assert!(!e.fresh(at(3600 - 8 * 60)));
        assert!(!e.fresh(at(3600)));
        // Entra's refresh_on (or half-life for long tokens) counts too.
        let mut long = entry("b", 86_400);
        long.refresh_on = Some(at(43_200).unix_timestamp());
        assert!(long.fresh(at(43_200 - 121)));
        assert!(!long.fresh(at(43_200 - 120)));
    }

    #[test]
    fn undecodable_contents_are_unreadable() {
        assert!(matches!(
            Contents::decode(b"not json"),
            Err(Unreadable::Contents)
        ));
    }
}
