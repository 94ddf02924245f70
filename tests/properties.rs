//! Property tests over the credential's pure parsers: the functions the fuzz targets in `fuzz/`
//! drive, here run in CI (`cargo test --all-features`) with a fixed number of cases.
//!
//! Every parser is fed arbitrary bytes or strings and must not panic; on structured inputs the
//! properties check the invariants the credential relies on: no secret in an error, CAE always
//! announced, no tenant with path characters, no URL that would carry a token in clear text.

#![cfg(feature = "fuzzing")]

use azure_pipelines_credential::fuzzing as f;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

/// Cases per property: 26 properties run in a few seconds on 2 cores.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Regressions are not persisted to files: a failure prints its minimal input, which
        // becomes a table-driven unit test next to the parser.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap()
}

/// A token-like secret: long enough never to occur in a fixed message by chance.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{24,64}"
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Finite floats that survive a JSON round trip unchanged (serde_json's default float
        // parsing is not exact for every f64, which is no property of the credential).
        any::<f64>().prop_filter_map("finite, round-trips", |x| {
            let n = serde_json::Number::from_f64(x)?;
            (serde_json::from_str::<f64>(&n.to_string()).ok()? == x).then_some(Value::Number(n))
        }),
        "\\PC{0,16}".prop_map(Value::from),
        "-?[0-9]{1,12}(\\.[0-9]{1,3})?".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a seconds field: what Entra sends and what a broken server might.
fn seconds_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        (-100_000i64..1_000_000).prop_map(Value::from),
        (-1e6f64..1e7).prop_map(|x| json!(x)),
        (-100_000i64..1_000_000).prop_map(|n| Value::from(n.to_string())),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::Null),
        Just(json!(true)),
        Just(json!([1])),
    ]
}

fn jwt(payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

fn is_loopback_http(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The transport rule both endpoints share, checked on a URL the credential accepted.
fn assert_safe_url(text: &str) -> Result<url::Url, TestCaseError> {
    let url = url::Url::parse(text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
    prop_assert!(
        url.scheme() == "https" || (url.scheme() == "http" && is_loopback_http(&url)),
        "{text}"
    );
    prop_assert!(
        url.username().is_empty() && url.password().is_none(),
        "{text}"
    );
    prop_assert!(url.fragment().is_none(), "{text}");
    prop_assert!(url.host().is_some(), "{text}");
    Ok(url)
}

proptest! {
    #![proptest_config(config())]

    // ----- OIDC response --------------------------------------------------------------------

    #[test]
    fn oidc_body_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = f::oidc_body(&body);
    }

    #[test]
    fn oidc_body_returns_exactly_the_token_and_never_echoes_it(
        token in secret(),
        extra in json_value(),
        blank in "[ \t]{0,3}",
    ) {
        let body = json!({ "oidcToken": token, "extra": extra }).to_string();
        let parsed = f::oidc_body(body.as_bytes()).unwrap();
        prop_assert_eq!(parsed.secret(), token.as_str());
        // Broken shapes around the same secret: errors, none quoting it.
        for broken in [
            json!({ "oidcToken": [token.clone()] }).to_string(),
            json!({ "token": token.clone() }).to_string(),
            json!({ "oidcToken": blank.clone(), "x": token.clone() }).to_string(),
            format!("{{\"oidcToken\":\"{token}\""),
            format!("<html>{token}</html>"),
        ] {
            let e = f::oidc_body(broken.as_bytes()).unwrap_err();
            prop_assert!(!e.contains(&token), "{e}");
        }
    }

    #[test]
    fn oidc_failure_cause_never_panics_nor_quotes_a_token(
        status in 100u16..600,
        body in prop::collection::vec(any::<u8>(), 0..256),
        token in secret(),
    ) {
        prop_assert!(!f::oidc_failure_cause(status, &body).is_empty());
        let with_token = json!({ "oidcToken": token }).to_string();
        let cause = f::oidc_failure_cause(status, with_token.as_bytes());
        prop_assert!(!cause.contains(&token), "{cause}");
    }

    // ----- Entra token response ---------------------------------------------------------------

    #[test]
    fn token_response_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = f::token_response(&body, now());
    }

    #[test]
    fn token_response_never_panics_on_any_json(value in json_value()) {
        let _ = f::token_response(value.to_string().as_bytes(), now());
    }

    #[test]
    fn an_accepted_token_is_valid_bearer_and_sanely_timed(
        token in secret(),
        expires_in in prop::option::of(seconds_value()),
        expires_on in prop::option::of(seconds_value()),
        refresh_in in prop::option::of(seconds_value()),
        token_type in prop::option::of(prop_oneof![
            Just(json!("Bearer")), Just(json!("bearer")), Just(json!("pop")), Just(json!(1)),
            Just(Value::Null),
        ]),
    ) {
        let mut body = Map::new();
        body.insert("access_token".into(), json!(token));
        for (name, value) in [
            ("expires_in", expires_in),
            ("expires_on", expires_on),
            ("refresh_in", refresh_in),
            ("token_type", token_type),
        ] {
            if let Some(value) = value {
                body.insert(name.into(), value);
            }
        }
        let text = Value::Object(body).to_string();
        match f::token_response(text.as_bytes(), now()) {
            Ok(info) => {
                prop_assert_eq!(info.token.secret(), token.as_str());
                prop_assert_eq!(info.token_type.as_str(), "Bearer");
                prop_assert!(info.expires_on > now(), "already expired: {}", text);
                prop_assert!(info.expires_on <= now() + time::Duration::days(7), "{}", text);
                if let Some(refresh_on) = info.refresh_on {
                    prop_assert!(refresh_on > now() && refresh_on < info.expires_on, "{}", text);
                }
            }
            Err(e) => prop_assert!(!e.contains(&token), "the token in an error: {e}"),
        }
    }

    #[test]
    fn token_response_errors_never_contain_the_access_token(
        token in secret(),
        broken in prop_oneof![
            Just("expires_in"), Just("token_type"), Just("truncated"), Just("expires_on"),
        ],
    ) {
        let body = match broken {
            "expires_in" => json!({"access_token": token, "expires_in": token}).to_string(),
            "expires_on" => json!({"access_token": token, "expires_on": token}).to_string(),
            "token_type" => {
                json!({"access_token": token, "expires_in": 60, "token_type": token}).to_string()
            }
            _ => format!("{{\"access_token\":\"{token}\",\"expires_in\":"),
        };
        let e = f::token_response(body.as_bytes(), now()).unwrap_err();
        prop_assert!(!e.contains(&token), "{e}");
    }

    // ----- Entra error response -----------------------------------------------------------------

    #[test]
    fn entra_failure_never_panics(
        body in prop::collection::vec(any::<u8>(), 0..512),
        client_id in "\\PC{0,40}",
        assertion in "\\PC{0,80}",
    ) {
        let _ = f::entra_failure(&body, &client_id, &assertion);
    }

    #[test]
    fn entra_failure_reads_codes_and_never_quotes_the_assertion_signature(
        error in "[a-z_]{1,24}",
        codes in prop::collection::vec(prop_oneof![
            Just(700_024i64), Just(700_211), Just(700_212), Just(700_213), Just(700_016),
            Just(90_002), Just(50_027), Just(7_000_215), any::<i64>(),
        ], 0..4),
        description in "\\PC{0,200}",
        extra in json_value(),
        signature in secret(),
    ) {
        let body = json!({
            "error": error,
            "error_description": description,
            "error_codes": codes,
            "trace_id": "t",
            "correlation_id": "c",
            "extra": extra,
        })
        .to_string();
        let assertion = jwt(
            &json!({"iss": "https://vstoken.dev.azure.com/o", "sub": "sc://o/p/c", "aud": "api://AzureADTokenExchange"}),
            &signature,
        );
        let failure = f::entra_failure(body.as_bytes(), "client", &assertion).unwrap();
        prop_assert_eq!(&failure.error, &error);
        prop_assert_eq!(&failure.codes, &codes);
        let named = format!("error: {error}");
        prop_assert!(failure.cause.contains(&named), "{}", failure.cause);
        prop_assert!(!failure.cause.contains(&signature), "{}", failure.cause);
        prop_assert!(!failure.cause.contains(&assertion));
    }

    // ----- Claims merge -------------------------------------------------------------------------

    #[test]
    fn request_claims_never_panics(claims in prop::option::of("\\PC{0,200}"), cae in any::<bool>()) {
        let _ = f::request_claims(claims.as_deref(), cae);
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
        let merged = f::request_claims(Some(&input), true).unwrap().unwrap();
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
        let again = f::request_claims(Some(&merged.to_string()), true).unwrap().unwrap();
        prop_assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), merged);
    }

    #[test]
    fn without_cae_object_claims_pass_through_and_others_are_refused(claims in json_value()) {
        let text = claims.to_string();
        match (f::request_claims(Some(&text), false), claims.is_object()) {
            (Ok(Some(sent)), true) => prop_assert_eq!(sent, text),
            (Err(e), false) => prop_assert!(e.contains("not a JSON object")),
            (got, _) => prop_assert!(false, "{text}: {got:?}"),
        }
    }

    // ----- JWT claims ---------------------------------------------------------------------------

    #[test]
    fn jwt_decoding_never_panics(token in "\\PC{0,300}") {
        let _ = azure_pipelines_credential::jwt::decode_claims(&token);
        let _ = f::federation_claims(&token);
    }

    #[test]
    fn jwt_decoding_never_panics_on_dotted_base64(
        parts in prop::collection::vec("[A-Za-z0-9_=+/-]{0,60}", 0..5),
    ) {
        let token = parts.join(".");
        let _ = f::federation_claims(&token);
    }

    #[test]
    fn federation_claims_round_trip(
        iss in "\\PC{0,40}",
        sub in "\\PC{0,40}",
        aud in "\\PC{0,40}",
        exp in any::<i64>(),
        signature in secret(),
    ) {
        let token = jwt(&json!({"iss": iss, "sub": sub, "aud": aud, "exp": exp}), &signature);
        let (i, s, a, e) = f::federation_claims(&token);
        prop_assert_eq!(i.as_deref(), Some(iss.as_str()));
        prop_assert_eq!(s.as_deref(), Some(sub.as_str()));
        prop_assert_eq!(a.as_deref(), Some(aud.as_str()));
        prop_assert_eq!(e, Some(exp));
    }

    #[test]
    fn federation_claims_tolerate_any_claim_shapes(payload in json_value(), signature in secret()) {
        let token = jwt(&payload, &signature);
        let _ = f::federation_claims(&token);
    }

    // ----- Tenant resolution --------------------------------------------------------------------

    #[test]
    fn a_valid_tenant_has_no_path_characters(tenant in "\\PC{0,40}") {
        if f::validate_tenant_id(&tenant).is_ok() {
            prop_assert!(!tenant.is_empty());
            prop_assert!(tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'), "{tenant:?}");
        }
    }

    #[test]
    fn resolve_only_ever_returns_a_safe_known_tenant(
        configured in "[A-Za-z0-9.-]{1,36}",
        allowed in prop::collection::vec(prop_oneof![Just("*".to_owned()), "\\PC{0,20}"], 0..4),
        disabled in any::<bool>(),
        requested in prop::option::of(prop_oneof![
            "[A-Za-z0-9.-]{1,36}",
            "\\PC{0,40}",
            Just("../x".to_owned()), Just("a/b".to_owned()), Just("%2F".to_owned()),
            Just("a?b".to_owned()), Just("a#b".to_owned()), Just("a b".to_owned()),
        ]),
    ) {
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        match f::resolve_tenant(&configured, &allowed, disabled, requested.as_deref()) {
            Ok(tenant) => {
                prop_assert!(
                    tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
                    "{tenant:?}"
                );
                prop_assert!(
                    tenant == configured || Some(tenant.as_str()) == requested.as_deref(),
                    "{tenant:?}"
                );
                if tenant != configured {
                    prop_assert!(!disabled);
                    prop_assert!(allowed.iter().any(|a| *a == "*" || a.eq_ignore_ascii_case(&tenant)));
                }
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    #[test]
    fn the_token_endpoint_keeps_the_tenant_in_one_segment(tenant in "[A-Za-z0-9.-]{1,36}") {
        let url = f::token_endpoint("https://login.microsoftonline.com/", &tenant).unwrap();
        let url = url::Url::parse(&url).unwrap();
        let segments: Vec<&str> = url.path_segments().unwrap().collect();
        if f::validate_tenant_id(&tenant).is_ok() {
            prop_assert_eq!(segments, vec![tenant.as_str(), "oauth2", "v2.0", "token"]);
        }
    }

    // ----- Endpoints ----------------------------------------------------------------------------

    #[test]
    fn an_accepted_authority_never_sends_tokens_in_clear(
        explicit in prop::option::of(prop_oneof![
            "\\PC{0,60}",
            "(https?|ftp|file)://[a-z0-9.@:\\[\\]-]{0,30}(/[a-z]{0,5})?(\\?[a-z=]{0,5})?(#[a-z]{0,3})?",
        ]),
        env in prop::option::of("\\PC{0,60}"),
    ) {
        if let Ok(authority) = f::authority_host(explicit.as_deref(), env.as_deref()) {
            let url = assert_safe_url(&authority)?;
            prop_assert!(url.query().is_none(), "{authority}");
        }
    }

    #[test]
    fn an_accepted_oidc_uri_never_sends_tokens_in_clear(
        explicit in prop::option::of(prop_oneof![
            "\\PC{0,60}",
            "(https?|ftp|file)://[a-z0-9.@:\\[\\]-]{0,30}(/[a-z]{0,5})?(\\?[a-z=]{0,5})?(#[a-z]{0,3})?",
        ]),
        env in prop::option::of("\\PC{0,60}"),
        connection in "\\PC{0,40}",
    ) {
        match f::oidc_request_url(explicit.as_deref(), env.as_deref(), &connection) {
            Ok(Some(uri)) => {
                let url = assert_safe_url(&uri)?;
                let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
                prop_assert!(pairs.contains(&("api-version".into(), "7.1".into())), "{uri}");
                prop_assert!(pairs.contains(&("serviceConnectionId".into(), connection.clone())), "{uri}");
            }
            Ok(None) => prop_assert!(
                explicit.as_deref().map_or(env.as_deref().is_none_or(|e| e.trim().is_empty()), |e| e.trim().is_empty())
            ),
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }
}

/// Not a property: tenants made of dots would be resolved away as `.` / `..` path segments.
#[test]
fn dot_segments_are_not_tenants() {
    for tenant in [".", "..", "...", ".contoso", "contoso.", "a..b"] {
        assert!(f::validate_tenant_id(tenant).is_err(), "{tenant}");
        assert!(
            f::resolve_tenant("home", &["*"], false, Some(tenant)).is_err(),
            "{tenant}"
        );
    }
    assert!(f::validate_tenant_id("contoso.onmicrosoft.com").is_ok());
}

/// Not a property: the loopback aliases that look local but are not, spelled out.
#[test]
fn loopback_lookalikes_are_refused() {
    for host in [
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "http://localhost.",
        "http://0x7f.example",
        "http://[::ffff:10.0.0.1]",
    ] {
        assert!(f::authority_host(Some(host), None).is_err(), "{host}");
        assert!(
            f::oidc_request_url(Some(&format!("{host}/x")), None, "c").is_err(),
            "{host}"
        );
    }
    for host in [
        "http://localhost:1",
        "http://127.0.0.2",
        "http://[::1]:8080",
    ] {
        assert!(f::authority_host(Some(host), None).is_ok(), "{host}");
    }
}
