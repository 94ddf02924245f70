//! The emulated Microsoft Entra ID token endpoint and its discovery documents.

mod common;

use std::time::Duration;

use azure_pipelines_emulator::{Emulator, EmulatorConfig, OIDC_AUDIENCE};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use common::*;

#[tokio::test]
async fn token_exchange_over_https() -> TestResult {
    let em = Emulator::start().await?;
    let client = https_client(&em);
    let oidc = send(oidc_request(&em, &client, true)).await.json();
    let assertion = oidc["oidcToken"].as_str().unwrap_or_default().to_owned();
    let tenant = em.config().tenant_id.clone();
    let reply = post_token(&em, &client, true, &tenant, &token_form(&em, &assertion)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store, no-cache"));
    let j = reply.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 3599);
    assert_eq!(j["ext_expires_in"], 3599);
    assert!(j.get("refresh_in").is_none());
    let token = j["access_token"].as_str().unwrap_or_default();
    let claims = jwt_part(token, 1);
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!(claims["aud"], "https://storage.azure.com");
    assert_eq!(claims["tid"], tenant);
    assert_eq!(claims["appid"], em.config().client_id);
    assert_eq!(claims["oid"], em.object_id());
    assert_eq!(claims["sub"], em.object_id());
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(3599)
    );
    assert!(claims.get("xms_cc").is_none());
    assert!(em.verify_token(token).is_some());

    // Every token is a different string.
    let again = post_token(&em, &client, true, &tenant, &token_form(&em, &assertion)).await;
    assert_ne!(again.json()["access_token"], j["access_token"]);
    assert_eq!(em.control().counters().access_tokens_issued, 2);
    Ok(())
}

#[tokio::test]
async fn token_rejects_a_forged_assertion() -> TestResult {
    let em = Emulator::start().await?;
    let token = em.issue_oidc_token();
    let dot = token.rfind('.').unwrap_or(0);
    let mut signature = URL_SAFE_NO_PAD.decode(&token[dot + 1..])?;
    signature[7] ^= 0x55;
    let forged = format!("{}.{}", &token[..dot], URL_SAFE_NO_PAD.encode(signature));
    let tenant = em.config().tenant_id.clone();
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &forged)).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.aadsts(), ("invalid_client".to_owned(), 700027));

    // Signed by another emulator: a different issuer (organization) as well.
    let other = Emulator::start().await?;
    let foreign = other.issue_oidc_token();
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &foreign)).await;
    assert_eq!(reply.aadsts().1, 700211);

    // Signed by another key but claiming this emulator's issuer.
    let impostor = other.issue_oidc_token_with(|c| c.iss = em.oidc_issuer());
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &impostor)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.aadsts(), ("invalid_client".to_owned(), 700027));

    // Unsigned ("alg": "none").
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&jwt_part(&token, 1))?);
    let unsigned = format!("{header}.{claims}.");
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &unsigned)).await;
    assert_eq!(reply.status, 401);

    for garbage in ["abc", "a.b.c", "....", "eyJhbGciOiJub25lIn0.eyJ9.x"] {
        let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, garbage)).await;
        assert_eq!(reply.status, 400, "{garbage}");
        assert_eq!(
            reply.aadsts(),
            ("invalid_request".to_owned(), 50027),
            "{garbage}"
        );
    }
    assert_eq!(em.control().counters().access_tokens_issued, 0);
    Ok(())
}

#[tokio::test]
async fn token_rejects_an_expired_assertion() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let expired = em.issue_oidc_token_with(|c| {
        c.iat -= 3600;
        c.nbf -= 3600;
        c.exp = c.iat + 600;
    });
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &expired)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.aadsts(), ("invalid_client".to_owned(), 700024));
    assert!(reply.json()["error_description"].as_str().is_some_and(|d| {
        d.contains("Client assertion is not within its valid time range. Current time: ")
    }));

    // Or: a fresh token from the endpoint, then the emulator's clock moves on.
    let fresh = send(oidc_request(&em, &plain(), false)).await.json();
    let fresh = fresh["oidcToken"].as_str().unwrap_or_default().to_owned();
    let ok = post_token(&em, &plain(), false, &tenant, &token_form(&em, &fresh)).await;
    assert_eq!(ok.status, 200);
    em.control().set_clock_skew(601);
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &fresh)).await;
    assert_eq!(reply.aadsts().1, 700024);

    // Not yet valid counts as outside the time range too.
    em.control().set_clock_skew(0);
    let future = em.issue_oidc_token_with(|c| {
        c.nbf += 3600;
        c.exp += 3600;
    });
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &future)).await;
    assert_eq!(reply.aadsts().1, 700024);
    Ok(())
}

#[tokio::test]
async fn clock_skew_moves_issued_times() -> TestResult {
    let em = Emulator::start().await?;
    let real = jwt_part(&em.issue_oidc_token(), 1)["iat"]
        .as_i64()
        .unwrap_or_default();
    em.control().set_clock_skew(-7200);
    let skewed = send(oidc_request(&em, &plain(), false)).await.json();
    let claims = jwt_part(skewed["oidcToken"].as_str().unwrap_or_default(), 1);
    let iat = claims["iat"].as_i64().unwrap_or_default();
    assert!(
        iat <= real - 7200 + 5 && iat >= real - 7200 - 5,
        "{iat} vs {real}"
    );
    // Its own tokens stay valid on its own clock.
    let assertion = skewed["oidcToken"].as_str().unwrap_or_default();
    let tenant = em.config().tenant_id.clone();
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, assertion)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // `expires_in` is relative and unaffected by the skew.
    assert_eq!(reply.json()["expires_in"], 3599);
    Ok(())
}

#[tokio::test]
async fn token_reports_issuer_audience_and_subject_mismatches() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    type Tweak = fn(&mut azure_pipelines_emulator::OidcClaims);
    let cases: [(Tweak, u64, &str); 3] = [
        (
            |c| c.iss = "https://vstoken.dev.azure.com/00000000-0000-0000-0000-000000000000".into(),
            700211,
            "issuer",
        ),
        (
            |c| c.aud = "api://AzureADTokenExchangeUSGov".into(),
            700212,
            "audience",
        ),
        (
            |c| c.sub = "sc://contoso/pipelines/another-connection".into(),
            700213,
            "subject",
        ),
    ];
    for (tweak, code, word) in cases {
        let assertion = em.issue_oidc_token_with(tweak);
        let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &assertion)).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.aadsts(), ("invalid_request".to_owned(), code));
        let description = reply.json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            description.contains(&format!(
                "No matching federated identity record found for presented assertion {word} '"
            )),
            "{description}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn token_checks_tenant() -> TestResult {
    let extra = "11111111-2222-3333-4444-555555555555".to_owned();
    let em = Emulator::start_with(EmulatorConfig {
        additional_tenants: vec![extra.clone()],
        ..Default::default()
    })
    .await?;
    let form = token_form(&em, &em.issue_oidc_token());

    let unknown = "99999999-9999-9999-9999-999999999999";
    let reply = post_token(&em, &plain(), false, unknown, &form).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.aadsts(), ("invalid_request".to_owned(), 90002));
    assert!(reply.body.contains(unknown));

    let reply = post_token(&em, &plain(), false, "not a tenant", &form).await;
    assert_eq!(reply.aadsts().1, 900023);

    let reply = post_token(&em, &plain(), false, &extra.to_uppercase(), &form).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let claims = jwt_part(reply.json()["access_token"].as_str().unwrap_or_default(), 1);
    assert_eq!(claims["tid"], extra);
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{extra}/"));
    Ok(())
}

/// The token endpoint's answer to a valid form with `field` set to `value` (`None` leaves it
/// out).
async fn post_altered(em: &Emulator, field: &'static str, value: Option<&str>) -> Reply {
    let mut form = token_form(em, &em.issue_oidc_token());
    set(&mut form, field, value);
    post_token(em, &plain(), false, &em.config().tenant_id, &form).await
}

/// A form with one field changed: the status, error, AADSTS code and a piece of the
/// description that Entra answers with.
async fn check_altered_forms(
    em: &Emulator,
    cases: &[(&'static str, Option<&str>, u16, &str, u64, &str)],
) {
    for &(field, value, status, error, code, says) in cases {
        let reply = post_altered(em, field, value).await;
        let case = format!("{field} = {value:?}: {}", reply.body);
        assert_eq!(reply.status, status, "{case}");
        assert_eq!(reply.aadsts(), (error.to_owned(), code), "{case}");
        assert!(reply.body.contains(says), "{case}");
    }
}

#[tokio::test]
async fn token_checks_client_id_grant_and_assertion_type() -> TestResult {
    let em = Emulator::start().await?;
    let other_app = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    check_altered_forms(
        &em,
        &[
            (
                "client_id",
                Some(other_app),
                400,
                "unauthorized_client",
                700016,
                other_app,
            ),
            (
                "grant_type",
                None,
                400,
                "invalid_request",
                900144,
                "'grant_type'",
            ),
            (
                "grant_type",
                Some("password"),
                400,
                "unsupported_grant_type",
                70003,
                "'password'",
            ),
            (
                "client_assertion_type",
                Some("urn:something:else"),
                400,
                "invalid_request",
                70002,
                "urn:something:else",
            ),
            (
                "client_assertion_type",
                None,
                400,
                "invalid_request",
                900144,
                "'client_assertion_type'",
            ),
            (
                "client_assertion",
                None,
                401,
                "invalid_client",
                7000218,
                "'client_assertion'",
            ),
        ],
    )
    .await;

    let tenant = &em.config().tenant_id;
    // Not form-encoded: Entra sees no parameters at all.
    let reply = send(
        plain()
            .post(em.token_endpoint(false, tenant))
            .header("Content-Type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(reply.aadsts().1, 900144);

    let reply = send(plain().get(em.token_endpoint(false, tenant))).await;
    assert_eq!(reply.aadsts().1, 900561);
    Ok(())
}

#[tokio::test]
async fn token_checks_scope() -> TestResult {
    let em = Emulator::start().await?;
    let not_default = "https://storage.azure.com/user_impersonation";
    check_altered_forms(
        &em,
        &[
            (
                "scope",
                Some(not_default),
                400,
                "invalid_scope",
                1002012,
                not_default,
            ),
            ("scope", None, 400, "invalid_request", 900144, "'scope'"),
            (
                "scope",
                Some("storage/.default"),
                400,
                "invalid_resource",
                500011,
                "storage",
            ),
        ],
    )
    .await;

    for (scope, aud) in [
        ("api://my-app/.default", "api://my-app"),
        (
            "https://management.azure.com//.default",
            "https://management.azure.com/",
        ),
        (
            "d4f0c4a2-6c1e-4a3b-9f6e-2b7d8c9e0f11/.default",
            "d4f0c4a2-6c1e-4a3b-9f6e-2b7d8c9e0f11",
        ),
    ] {
        let reply = post_altered(&em, "scope", Some(scope)).await;
        assert_eq!(reply.status, 200, "{scope}: {}", reply.body);
        let claims = jwt_part(reply.json()["access_token"].as_str().unwrap_or_default(), 1);
        assert_eq!(claims["aud"], aud);
    }
    Ok(())
}

#[tokio::test]
async fn token_checks_claims_and_supports_cae() -> TestResult {
    let em = Emulator::start().await?;

    for bad in ["{not json", "[1,2]", "\"text\""] {
        let reply = post_altered(&em, "claims", Some(bad)).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert_eq!(reply.aadsts().0, "invalid_request");
    }

    let cae = json!({"access_token": {"xms_cc": {"values": ["CP1"]}}});
    let reply = post_altered(&em, "claims", Some(&cae.to_string())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let claims = jwt_part(reply.json()["access_token"].as_str().unwrap_or_default(), 1);
    assert_eq!(claims["xms_cc"], json!(["CP1"]));
    assert_eq!(claims["xms_claims_requested"], cae);

    let challenge = json!({"access_token": {"nbf": {"essential": true, "value": "1700000000"}}});
    let reply = post_altered(&em, "claims", Some(&challenge.to_string())).await;
    let claims = jwt_part(reply.json()["access_token"].as_str().unwrap_or_default(), 1);
    assert!(claims.get("xms_cc").is_none());
    assert_eq!(claims["xms_claims_requested"], challenge);
    Ok(())
}

#[tokio::test]
async fn token_lifetime_knobs() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let form = token_form(&em, &em.issue_oidc_token());

    em.control().set_refresh_in(Some(Duration::from_secs(1800)));
    em.control()
        .set_access_token_lifetime(Duration::from_secs(120));
    let j = post_token(&em, &plain(), false, &tenant, &form)
        .await
        .json();
    assert_eq!(j["refresh_in"], 1800);
    assert_eq!(j["expires_in"], 120);
    let claims = jwt_part(j["access_token"].as_str().unwrap_or_default(), 1);
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(120)
    );

    em.control().set_refresh_in(None);
    em.control().set_expires_in_as_string(true);
    let j = post_token(&em, &plain(), false, &tenant, &form)
        .await
        .json();
    assert!(j.get("refresh_in").is_none());
    assert_eq!(j["expires_in"], "120");
    assert_eq!(j["ext_expires_in"], "120");

    em.control()
        .set_oidc_token_lifetime(Duration::from_secs(60));
    let oidc = send(oidc_request(&em, &plain(), false)).await.json();
    let claims = jwt_part(oidc["oidcToken"].as_str().unwrap_or_default(), 1);
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(60)
    );
    Ok(())
}

#[tokio::test]
async fn hostile_requests_get_error_responses() -> TestResult {
    let em = Emulator::start().await?;
    let tenant = em.config().tenant_id.clone();
    let huge = vec![b'a'; 2 << 20];
    let reply = send(
        plain()
            .post(em.token_endpoint(false, &tenant))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(huge),
    )
    .await;
    assert_eq!(reply.status, 413);

    let reply = send(
        plain()
            .post(em.token_endpoint(false, &tenant))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(vec![0xff, 0xfe, b'=', b'&', b'%', b'z']),
    )
    .await;
    assert_eq!(reply.status, 400);

    let weird = json!({"iss": em.oidc_issuer(), "exp": "soon", "aud": OIDC_AUDIENCE, "sub": em.oidc_subject()});
    let token = em.sign_claims(&weird);
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &token)).await;
    assert_eq!(reply.aadsts().1, 50027);

    let list_aud = json!({"iss": em.oidc_issuer(), "exp": i64::MAX, "aud": [OIDC_AUDIENCE], "sub": em.oidc_subject()});
    let token = em.sign_claims(&list_aud);
    let reply = post_token(&em, &plain(), false, &tenant, &token_form(&em, &token)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The server is still healthy.
    assert_eq!(send(oidc_request(&em, &plain(), false)).await.status, 200);
    Ok(())
}

#[tokio::test]
async fn discovery_documents() -> TestResult {
    let em = Emulator::start().await?;
    let client = https_client(&em);
    let tenant = em.config().tenant_id.clone();
    let config = send(client.get(format!(
        "{}{tenant}/v2.0/.well-known/openid-configuration",
        em.https_url()
    )))
    .await;
    assert_eq!(config.status, 200);
    assert_eq!(
        config.json()["token_endpoint"],
        em.token_endpoint(true, &tenant)
    );
    let jwks_uri = config.json()["jwks_uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let jwks = send(client.get(jwks_uri)).await.json();
    assert_eq!(jwks["keys"][0]["kid"], em.key_id());
    let instance = send(client.get(format!(
        "{}common/discovery/instance?api-version=1.1",
        em.https_url()
    )))
    .await;
    assert_eq!(instance.status, 200);
    // Discovery is not the token endpoint.
    assert_eq!(em.control().counters().token_requests, 0);
    Ok(())
}
