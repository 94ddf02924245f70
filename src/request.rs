//! What a token request asks for: scopes, tenant, CAE and claims.
//!
//! A call is decided once, before any lookup or I/O, into a borrowed [`Request`]: a cache hit
//! allocates nothing. A miss makes the one owned [`Key`] (scopes, tenant, CAE), which the cache
//! keeps as its key and hands to the exchange and the persistent cache. Claims are not part of
//! the key: a request with claims always goes to Entra ID, and its token then serves the key.

use crate::{
    error::{Failure, Section},
    tenant::TenantPolicy,
};
use azure_core::{credentials::TokenRequestOptions, http::Context};
use serde_json::{Map, Value, json};
use std::hash::{Hash, Hasher};

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
/// assert!(options.method_options.context.value::<TokenRequestContext>().is_some());
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
    fn of<'a>(options: Option<&'a TokenRequestOptions<'_>>) -> Option<&'a Self> {
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

/// One call's request, decided before any lookup or I/O.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    pub(crate) scopes: &'a [&'a str],
    /// The tenant it goes to, after the tenant rule.
    pub(crate) tenant: &'a str,
    pub(crate) cae: bool,
    /// Claims from a challenge, as given; `None` when absent or blank.
    pub(crate) claims: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// The request of a call without options: `scopes` from the credential's own `tenant`.
    #[inline]
    pub(crate) fn plain(scopes: &'a [&'a str], tenant: &'a str) -> Self {
        Self {
            scopes,
            tenant,
            cae: false,
            claims: None,
        }
    }

    /// The request `scopes` and `options` make of a credential with tenant rule `tenants`.
    /// Refuses a tenant the rule does not allow, before anything else happens.
    #[inline]
    pub(crate) fn new(
        scopes: &'a [&'a str],
        options: Option<&'a TokenRequestOptions<'_>>,
        tenants: &'a TenantPolicy,
    ) -> Result<Self, Box<Failure>> {
        let Some(context) = TokenRequestContext::of(options) else {
            return Ok(Self::plain(scopes, tenants.configured()));
        };
        let context = Some(context);
        Ok(Self {
            scopes,
            tenant: tenants
                .resolve(context.and_then(|c| c.tenant_id.as_deref()))
                .map_err(Box::new)?,
            cae: context.is_some_and(|c| c.enable_cae),
            claims: context
                .and_then(|c| c.claims.as_deref())
                .filter(|c| !c.trim().is_empty()),
        })
    }

    /// The owned key of this request; made once per miss.
    pub(crate) fn to_key(self) -> Key {
        Key {
            scopes: self.scopes.iter().map(|s| Box::from(*s)).collect(),
            tenant: self.tenant.into(),
            cae: self.cae,
        }
    }
}

/// What a token is cached under: its scopes, tenant and CAE mode.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "persistent-cache",
    derive(serde::Serialize, serde::Deserialize)
)]
pub(crate) struct Key {
    pub(crate) scopes: Box<[Box<str>]>,
    pub(crate) tenant: Box<str>,
    pub(crate) cae: bool,
}

impl Key {
    /// The `scope` form value: the scopes joined by spaces.
    pub(crate) fn scope_param(&self) -> String {
        self.scopes.join(" ")
    }
}

// `Key` and `Request` must hash identically: the same fields, in the same order, so that a
// borrowed request finds its owned key.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.scopes.len());
        self.scopes.iter().for_each(|s| s.as_ref().hash(state));
        self.tenant.as_ref().hash(state);
        self.cae.hash(state);
    }
}

impl Hash for Request<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.scopes.len());
        self.scopes.iter().for_each(|s| s.hash(state));
        self.tenant.hash(state);
        self.cae.hash(state);
    }
}

impl hashbrown::Equivalent<Key> for Request<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.cae == key.cae
            && *self.tenant == *key.tenant
            && self.scopes.len() == key.scopes.len()
            && self
                .scopes
                .iter()
                .zip(key.scopes.iter())
                .all(|(a, b)| *a == b.as_ref())
    }
}

/// Scopes must be present and free of whitespace and control characters (they are joined by
/// spaces on the wire).
pub(crate) fn validate_scopes(scopes: &[&str]) -> Result<(), Failure> {
    let refuse = |cause: String| Err(Failure::new(Section::InvalidScope, cause));
    if scopes.is_empty() {
        return refuse(
            "No scope was requested. Pass at least one scope, such as \
             https://storage.azure.com/.default."
                .to_owned(),
        );
    }
    for scope in scopes {
        if scope.is_empty() {
            return refuse(
                "A requested scope is empty. Use a scope such as \
                 https://storage.azure.com/.default."
                    .to_owned(),
            );
        }
        if let Some(bad) = whitespace_or_control(scope) {
            let shown: String = scope
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect();
            return refuse(format!(
                "The scope '{shown}' contains {bad:?}; scopes contain no whitespace or control \
                 characters. Pass each scope as its own item, such as \
                 https://storage.azure.com/.default."
            ));
        }
    }
    Ok(())
}

/// The first whitespace or control character of `scope`, if any.
fn whitespace_or_control(scope: &str) -> Option<char> {
    // Every caller of a cold start checks its scopes, which are ASCII URIs: a pass over the
    // bytes, ten times cheaper than Unicode's character classes, which only non-ASCII text needs.
    // A fold rather than `all`: no early exit, so the compiler checks many bytes at once.
    if scope
        .bytes()
        .fold(true, |plain, b| plain & (b > b' ') & (b < 0x7f))
    {
        return None;
    }
    scope.chars().find(|c| c.is_whitespace() || c.is_control())
}

/// The `claims` form value of a request with CAE and no challenge claims.
pub(crate) const CAE_ONLY_CLAIMS: &str = r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#;

/// The `claims` form value for challenge `claims`, with the CAE capability `CP1` merged into
/// `access_token.xms_cc` when `cae` is set; `None` for no claims and no CAE.
///
/// Claims that are not a JSON object are refused with a message saying how to fix them; the
/// claims text is not a secret, but it is not echoed either, as it can be long.
pub(crate) fn claims_param(claims: Option<&str>, cae: bool) -> Result<Option<String>, Failure> {
    let Some(text) = claims.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(cae.then(|| CAE_ONLY_CLAIMS.to_owned()));
    };
    let Ok(Value::Object(mut root)) = serde_json::from_str::<Value>(text) else {
        return Err(Failure::new(
            Section::InvalidClaims,
            "The claims are not a JSON object. Pass the claims from the resource's \
             WWW-Authenticate challenge, base64-decoded, for example \
             {\"access_token\":{\"nbf\":{\"essential\":true}}}.",
        ));
    };
    if !cae {
        return Ok(Some(text.to_owned()));
    }
    let access_token = root
        .entry("access_token")
        .or_insert_with(|| Value::Object(Map::new()));
    if !access_token.is_object() {
        *access_token = Value::Object(Map::new());
    }
    let xms_cc = &mut access_token["xms_cc"];
    if !xms_cc.get("values").is_some_and(Value::is_array) {
        *xms_cc = json!({ "values": [] });
    }
    if let Some(values) = xms_cc["values"].as_array_mut()
        && !values.iter().any(|v| v == "CP1")
    {
        values.push(json!("CP1"));
    }
    Ok(Some(Value::Object(root).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn the_context_round_trips_through_options() {
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

    #[test]
    fn a_call_becomes_a_request_before_anything_else() {
        let tenants = TenantPolicy::for_tests("home", &["other"]);
        let with = |context: TokenRequestContext| -> Option<TokenRequestOptions<'static>> {
            Some(context.into())
        };
        let cases: Vec<(
            Option<TokenRequestOptions<'static>>,
            Result<(&str, bool, Option<&str>), Section>,
        )> = vec![
            (None, Ok(("home", false, None))),
            (
                with(TokenRequestContext::default()),
                Ok(("home", false, None)),
            ),
            (
                with(TokenRequestContext {
                    tenant_id: Some("other".into()),
                    enable_cae: true,
                    claims: Some("  ".into()),
                }),
                Ok(("other", true, None)),
            ),
            (
                with(TokenRequestContext {
                    claims: Some("{}".into()),
                    ..Default::default()
                }),
                Ok(("home", false, Some("{}"))),
            ),
            (
                with(TokenRequestContext {
                    tenant_id: Some("third".into()),
                    ..Default::default()
                }),
                Err(Section::TenantNotAllowed),
            ),
        ];
        for (options, expected) in cases {
            let got = Request::new(&["s"], options.as_ref(), &tenants)
                .map(|r| (r.tenant, r.cae, r.claims))
                .map_err(|f| f.section());
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn borrowed_and_owned_keys_agree() {
        let state = hashbrown::DefaultHashBuilder::default();
        let request = |scopes: &'static [&'static str], tenant: &'static str, cae: bool| Request {
            scopes,
            tenant,
            cae,
            claims: None,
        };
        let cases = [
            (
                request(&["a"], "t", false),
                request(&["a"], "t", false),
                true,
            ),
            (
                request(&["a", "b"], "t", false),
                request(&["a", "b"], "t", false),
                true,
            ),
            (
                request(&["a"], "t", false),
                request(&["a"], "t", true),
                false,
            ),
            (
                request(&["a"], "t", false),
                request(&["a"], "u", false),
                false,
            ),
            (
                request(&["ab"], "t", false),
                request(&["a", "b"], "t", false),
                false,
            ),
            (
                request(&["a", "b"], "t", false),
                request(&["b", "a"], "t", false),
                false,
            ),
        ];
        for (probe, stored, equal) in cases {
            let owned = stored.to_key();
            assert_eq!(
                hashbrown::Equivalent::equivalent(&probe, &owned),
                equal,
                "{probe:?} vs {stored:?}"
            );
            if equal {
                assert_eq!(state.hash_one(probe), state.hash_one(&owned));
            }
        }
        assert_eq!(
            request(&["a", "b"], "t", false).to_key().scope_param(),
            "a b"
        );
    }

    #[test]
    fn scope_validation() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["https://storage.azure.com/.default"], None),
            (&["api://x/.default", "openid"], None),
            (&[], Some("No scope")),
            (&[""], Some("is empty")),
            (&["a b"], Some("' '")),
            (&["a\tb"], Some("'\\t'")),
            (&["a\u{0}b"], Some("'\\0'")),
            (&["ok", "a\nb"], Some("'\\n'")),
            (&["a\u{7f}b"], Some("'\\u{7f}'")),
            // Past ASCII, Unicode's classes decide.
            (&["https://ex.example/é/.default"], None),
            (&["a\u{a0}b"], Some("'\\u{a0}'")),
            (&["a\u{2003}b"], Some("'\\u{2003}'")),
            (&["a\u{85}b"], Some("'\\u{85}'")),
        ];
        for (scopes, expected) in cases {
            match (validate_scopes(scopes), expected) {
                (Ok(()), None) => {}
                (Err(f), Some(e)) => {
                    assert!(f.text().contains(e), "{scopes:?}: {f}");
                    assert_eq!(f.section(), Section::InvalidScope);
                }
                (got, _) => panic!("{scopes:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn claims_and_cae_merge() {
        let cp1 = r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#;
        let cases: &[(Option<&str>, bool, Result<Option<&str>, ()>)] = &[
            (None, false, Ok(None)),
            (Some("  "), false, Ok(None)),
            (None, true, Ok(Some(cp1))),
            (Some(r#" {"a":1} "#), false, Ok(Some(r#"{"a":1}"#))),
            (
                Some(r#"{"access_token":{"nbf":{"essential":true}}}"#),
                true,
                Ok(Some(
                    r#"{"access_token":{"nbf":{"essential":true},"xms_cc":{"values":["CP1"]}}}"#,
                )),
            ),
            (
                Some(r#"{"access_token":{"xms_cc":{"values":["CP2"]}}}"#),
                true,
                Ok(Some(
                    r#"{"access_token":{"xms_cc":{"values":["CP2","CP1"]}}}"#,
                )),
            ),
            (
                Some(r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#),
                true,
                Ok(Some(cp1)),
            ),
            (Some(r#"{"access_token":5}"#), true, Ok(Some(cp1))),
            (
                Some(r#"{"access_token":{"xms_cc":7}}"#),
                true,
                Ok(Some(cp1)),
            ),
            (
                Some(r#"{"access_token":"odd","id_token":{}}"#),
                true,
                Ok(Some(
                    r#"{"access_token":{"xms_cc":{"values":["CP1"]}},"id_token":{}}"#,
                )),
            ),
            (Some("[1]"), false, Err(())),
            (Some("not json"), true, Err(())),
            (Some("\"x\""), false, Err(())),
            (Some("{\"a\":"), true, Err(())),
            (Some("null"), false, Err(())),
        ];
        for (claims, cae, expected) in cases {
            let got = claims_param(*claims, *cae);
            match (got, expected) {
                (Ok(got), Ok(expected)) => {
                    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
                    assert_eq!(got.as_deref().map(parse), expected.map(parse), "{claims:?}");
                }
                (Err(f), Err(())) => assert_eq!(f.section(), Section::InvalidClaims),
                (got, _) => panic!("{claims:?} {cae}: {got:?}"),
            }
        }
        assert_eq!(CAE_ONLY_CLAIMS, claims_param(None, true).unwrap().unwrap());
        // Without CAE the challenge's claims go out exactly as given.
        let raw = r#"{"access_token": {"nbf": {"essential": true}}}"#;
        assert_eq!(
            claims_param(Some(raw), false).unwrap().as_deref(),
            Some(raw)
        );
    }

    mod properties {
        use super::*;
        use crate::tests::strategies::{config, json_value};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn claims_never_panic(claims in prop::option::of("\\PC{0,200}"), cae in any::<bool>()) {
                let _ = claims_param(claims.as_deref(), cae);
            }

            #[test]
            fn with_cae_the_claims_always_announce_cp1_and_keep_the_rest(
                object in prop::collection::btree_map("\\PC{0,10}", json_value(), 0..5),
                access_token in prop::option::of(json_value()),
            ) {
                let mut root: Map<String, Value> = object.into_iter().collect();
                if let Some(access_token) = access_token {
                    root.insert("access_token".into(), access_token);
                }
                let input = Value::Object(root.clone()).to_string();
                let merged = claims_param(Some(&input), true).unwrap().unwrap();
                let merged: Value = serde_json::from_str(&merged).unwrap();
                let values = merged["access_token"]["xms_cc"]["values"].as_array().unwrap();
                prop_assert!(values.iter().any(|v| v == "CP1"), "{merged}");
                // Exactly once, unless the caller's claims already repeated it.
                let before = root
                    .get("access_token")
                    .and_then(|a| a.get("xms_cc"))
                    .and_then(|x| x.get("values"))
                    .and_then(Value::as_array)
                    .map_or(0, |v| v.iter().filter(|v| *v == "CP1").count());
                prop_assert_eq!(values.iter().filter(|v| *v == "CP1").count(), before.max(1));
                // Compared with the input as parsed: JSON numbers pass through f64 either way.
                let parsed: Value = serde_json::from_str(&input).unwrap();
                for key in root.keys() {
                    if key != "access_token" {
                        prop_assert_eq!(&merged[key], &parsed[key]);
                    }
                }
                // Merging again changes nothing.
                let again = claims_param(Some(&merged.to_string()), true).unwrap().unwrap();
                prop_assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), merged);
            }

            #[test]
            fn without_cae_object_claims_pass_through_and_others_are_refused(claims in json_value()) {
                let text = claims.to_string();
                match (claims_param(Some(&text), false), claims.is_object()) {
                    (Ok(Some(sent)), true) => prop_assert_eq!(sent, text),
                    (Err(e), false) => prop_assert!(e.text().contains("not a JSON object")),
                    (got, _) => prop_assert!(false, "{text}: {got:?}"),
                }
            }
        }
    }
}
