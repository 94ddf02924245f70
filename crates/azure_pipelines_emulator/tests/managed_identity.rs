//! The emulated App Service managed identity endpoint, over real HTTP and HTTPS.

mod common;

use std::time::Duration;

use azure_pipelines_emulator::{Emulator, Endpoint, Fault, FaultTrigger};

use common::*;

const VAULT: &str = "https://vault.azure.net";

/// The request `ManagedIdentityCredential` sends, for `resource`, with `extra` query parameters.
fn identity_request(
    em: &Emulator,
    client: &reqwest::Client,
    tls: bool,
    resource: &str,
    extra: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let mut query = vec![("api-version", "2019-08-01"), ("resource", resource)];
    query.extend_from_slice(extra);
    client
        .get(with_query(&em.managed_identity_endpoint(tls), &query))
        .header("metadata", "true")
        .header("X-IDENTITY-HEADER", em.managed_identity_header())
}

/// Checks the App Service error shape and returns its message.
fn app_service_error(reply: &Reply) -> String {
    let j = reply.json();
    assert_eq!(j["statusCode"], reply.status, "{}", reply.body);
    assert!(j["correlationId"].is_string(), "{}", reply.body);
    j["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn issues_tokens_for_the_requested_resource() -> TestResult {
    let em = Emulator::start().await?;
    assert!(
        em.managed_identity_endpoint(true)
            .starts_with("https://localhost:")
    );
    assert!(em.managed_identity_endpoint(false).ends_with("/msi/token"));
    for (tls, client) in [(true, https_client(&em)), (false, plain())] {
        let before = em.control().now_unix();
        let reply = send(identity_request(&em, &client, tls, VAULT, &[])).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json"))
        );
        let j = reply.json();
        assert_eq!(j["resource"], VAULT);
        assert_eq!(j["token_type"], "Bearer");
        assert_eq!(j["client_id"], em.config().client_id);
        // A string of Unix seconds, which is what azure_identity parses.
        let expires_on: i64 = j["expires_on"].as_str().unwrap_or_default().parse()?;
        assert!(
            (before + 3599..=before + 3601).contains(&expires_on),
            "{expires_on}"
        );

        let token = j["access_token"].as_str().unwrap_or_default();
        let claims = em.verify_token(token).ok_or("not signed by the emulator")?;
        let tenant = &em.config().tenant_id;
        assert_eq!(claims["aud"], VAULT);
        assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
        assert_eq!(claims["tid"], tenant.as_str());
        assert_eq!(claims["appid"], em.config().client_id);
        assert_eq!(claims["oid"], em.object_id());
        assert_eq!(claims["exp"], expires_on);
    }
    // Any resource, as sent (scopes lose their `/.default` in the client).
    let reply = send(identity_request(
        &em,
        &plain(),
        false,
        "https://management.azure.com/",
        &[],
    ))
    .await;
    let token = reply.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let claims = em
        .verify_token(&token)
        .ok_or("not signed by the emulator")?;
    assert_eq!(claims["aud"], "https://management.azure.com/");

    let c = em.control().counters();
    assert_eq!(
        (
            c.managed_identity_requests,
            c.managed_identity_tokens_issued
        ),
        (3, 3)
    );
    // Not the token endpoint's.
    assert_eq!((c.token_requests, c.access_tokens_issued), (0, 0));
    Ok(())
}

#[tokio::test]
async fn the_tokens_open_the_key_vault() -> TestResult {
    let em = Emulator::start().await?;
    em.control().set_secret("db-password", "hunter2");
    let reply = send(identity_request(
        &em,
        &em.reqwest_client(),
        true,
        VAULT,
        &[],
    ))
    .await;
    let token = reply.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let secret = send(
        em.reqwest_client()
            .get(format!(
                "{}secrets/db-password?api-version=7.5",
                em.key_vault_url()
            ))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(secret.status, 200, "{}", secret.body);
    assert_eq!(secret.json()["value"], "hunter2");
    Ok(())
}

#[tokio::test]
async fn checks_the_identity_header() -> TestResult {
    let em = Emulator::start().await?;
    let url = em.managed_identity_endpoint(false);
    let query = [("api-version", "2019-08-01"), ("resource", VAULT)];
    let url = with_query(&url, &query);
    let missing = send(plain().get(&url)).await;
    let wrong = send(
        plain()
            .get(&url)
            .header("X-IDENTITY-HEADER", "not-the-secret"),
    )
    .await;
    for reply in [missing, wrong] {
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(app_service_error(&reply).contains("X-IDENTITY-HEADER"));
    }
    let c = em.control().counters();
    assert_eq!(
        (
            c.managed_identity_requests,
            c.managed_identity_tokens_issued
        ),
        (2, 0)
    );
    Ok(())
}

#[tokio::test]
async fn checks_the_api_version_resource_and_method() -> TestResult {
    let em = Emulator::start().await?;
    let url = em.managed_identity_endpoint(false);
    let secret = em.managed_identity_header().to_owned();
    let cases: [&[(&str, &str)]; 4] = [
        &[("resource", VAULT)],
        &[("api-version", "2017-09-01"), ("resource", VAULT)],
        &[("api-version", "2019-08-01")],
        &[("api-version", "2019-08-01"), ("resource", "")],
    ];
    for query in cases {
        let reply = send(
            plain()
                .get(with_query(&url, query))
                .header("X-IDENTITY-HEADER", &secret),
        )
        .await;
        assert_eq!(reply.status, 400, "{query:?}: {}", reply.body);
        app_service_error(&reply);
    }
    let reply = send(
        plain()
            .post(with_query(
                &url,
                &[("api-version", "2019-08-01"), ("resource", VAULT)],
            ))
            .header("X-IDENTITY-HEADER", &secret),
    )
    .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    Ok(())
}

#[tokio::test]
async fn user_assigned_identities_by_client_or_object_id() -> TestResult {
    let em = Emulator::start().await?;
    let client_id = em.config().client_id.to_uppercase();
    let object_id = em.object_id().to_owned();
    for extra in [
        [("client_id", client_id.as_str())],
        [("object_id", object_id.as_str())],
        [("principal_id", object_id.as_str())],
    ] {
        let reply = send(identity_request(&em, &plain(), false, VAULT, &extra)).await;
        assert_eq!(reply.status, 200, "{extra:?}: {}", reply.body);
    }
    let other = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let resource_id = "/subscriptions/x/resourcegroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/z";
    for extra in [
        [("client_id", other)],
        [("object_id", other)],
        [("mi_res_id", resource_id)],
    ] {
        let reply = send(identity_request(&em, &plain(), false, VAULT, &extra)).await;
        assert_eq!(reply.status, 400, "{extra:?}: {}", reply.body);
        assert_eq!(
            app_service_error(&reply),
            "Unable to load the proper Managed Identity."
        );
    }
    let reply = send(identity_request(
        &em,
        &plain(),
        false,
        VAULT,
        &[("client_id", &client_id), ("object_id", &object_id)],
    ))
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(em.control().counters().managed_identity_tokens_issued, 3);
    Ok(())
}

#[tokio::test]
async fn faults_latency_and_holds_apply() -> TestResult {
    let em = Emulator::start().await?;
    let control = em.control();
    control.inject_fault(
        Endpoint::ManagedIdentity,
        Fault::Status {
            status: 503,
            retry_after: Some(2),
        },
        FaultTrigger::Count(1),
    );
    control.inject_fault(
        Endpoint::ManagedIdentity,
        Fault::MalformedJson,
        FaultTrigger::Count(1),
    );
    let reply = send(identity_request(&em, &plain(), false, VAULT, &[])).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("2"));
    app_service_error(&reply);
    let reply = send(identity_request(&em, &plain(), false, VAULT, &[])).await;
    assert_eq!(reply.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&reply.body).is_err());
    // Faults of the other endpoints stay there.
    control.inject_fault(Endpoint::Token, Fault::Hang, FaultTrigger::Count(1));
    let reply = send(identity_request(&em, &plain(), false, VAULT, &[])).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    control.clear_faults();

    let hold = control.hold(Endpoint::ManagedIdentity);
    let client = plain();
    let mut held = tokio::spawn(identity_request(&em, &client, false, VAULT, &[]).send());
    arrived(&em, |c| c.managed_identity_requests == 4).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut held)
            .await
            .is_err()
    );
    hold.release();
    assert_eq!(held.await??.status().as_u16(), 200);

    control.set_latency(Endpoint::ManagedIdentity, Duration::from_secs(3600));
    let mut delayed = tokio::spawn(identity_request(&em, &client, false, VAULT, &[]).send());
    arrived(&em, |c| c.managed_identity_requests == 5).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut delayed)
            .await
            .is_err()
    );
    delayed.abort();
    Ok(())
}
