//! Blob Storage end to end: `azure_storage_blob` authenticates with `AzurePipelinesCredential`
//! (tokens from the built-in emulator, over https) against **Azurite**, an independent server
//! that checks each token's issuer (`https://sts.windows.net/...`), audience
//! (`https://storage.azure.com`) and lifetime (`--oauth basic`; it does not check signatures).
//!
//! Azurite is found through `AZURITE_BIN`, the path of its `azurite-blob` executable (`.ci/run`
//! installs it). Without it the test fails when `CI` is set, and is skipped otherwise:
//!
//! ```text
//! npm ci --prefix .ci/azurite
//! AZURITE_BIN=$PWD/.ci/azurite/node_modules/.bin/azurite-blob cargo test --all-features --test blob_azurite
//! ```
//!
//! The test starts Azurite itself on a free loopback port, over HTTPS with a certificate from
//! the emulator's CA (so the emulator's transport trusts both servers), and stops it at the end.

mod common;

use azure_core::{
    credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions},
    error::ErrorKind,
    http::{RequestContent, StatusCode, Url},
    time::OffsetDateTime,
};
use azure_pipelines_emulator::Emulator;
use azure_storage_blob::{BlobServiceClient, BlobServiceClientOptions};
use common::{
    STORAGE, VAULT,
    emulator::{counts, credential},
};
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};
/// Azurite's built-in account; with an IP address as host the account is the first path segment.
const ACCOUNT: &str = "devstoreaccount1";

/// `AZURITE_BIN`, or `None` (skipped) when it is unset outside CI.
fn azurite_bin() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    match set("AZURITE_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "AZURITE_BIN is {}, which is not a file. Install Azurite with \
                 `npm ci --prefix .ci/azurite` and point AZURITE_BIN at \
                 .ci/azurite/node_modules/.bin/azurite-blob",
                path.display()
            );
            Some(path)
        }
        None if set("CI").is_some_and(|v| v != "false" && v != "0") => panic!(
            "AZURITE_BIN is not set, and CI is: the Blob Storage test must run in CI. \
             .ci/run installs Azurite and sets AZURITE_BIN; if this runs elsewhere in CI, run \
             `npm ci --prefix .ci/azurite` and set \
             AZURITE_BIN=$PWD/.ci/azurite/node_modules/.bin/azurite-blob"
        ),
        None => {
            eprintln!(
                "skipped: set AZURITE_BIN to the azurite-blob executable to run the Blob Storage \
                 test against Azurite (`npm ci --prefix .ci/azurite`, then \
                 AZURITE_BIN=$PWD/.ci/azurite/node_modules/.bin/azurite-blob)"
            );
            None
        }
    }
}

/// A running Azurite blob service, killed when dropped.
struct Azurite {
    child: tokio::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Azurite {
    async fn start(bin: &Path, emulator: &Emulator) -> Azurite {
        let dir = std::env::temp_dir().join(format!(
            "azure-pipelines-credential-azurite-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let (cert, key) = emulator
            .issue_server_certificate(&["127.0.0.1", "localhost"])
            .unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();

        // A free port can be taken by someone else before Azurite binds it: try a few.
        let mut failures = Vec::new();
        for attempt in 0..3 {
            let port = free_port();
            let log = dir.join(format!("azurite-{attempt}.log"));
            let log_file = std::fs::File::create(&log).unwrap();
            let mut child = tokio::process::Command::new(bin)
                .arg("--blobHost")
                .arg("127.0.0.1")
                .arg("--blobPort")
                .arg(port.to_string())
                .arg("--location")
                .arg(&data)
                .arg("--oauth")
                .arg("basic")
                .arg("--cert")
                .arg(&cert_path)
                .arg("--key")
                .arg(&key_path)
                // The Rust SDK sends a newer x-ms-version than Azurite knows.
                .arg("--skipApiVersionCheck")
                .arg("--silent")
                // Azurite's telemetry would try to reach the internet.
                .arg("--disableTelemetry")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            // Up to 30 s for node to load Azurite and listen.
            for _ in 0..300 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Azurite { child, dir, port };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    failures.push(format!(
                        "Azurite exited with {status}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if failures.len() <= attempt {
                let _ = child.kill().await;
                failures.push(format!(
                    "Azurite did not listen on port {port} within 30 s: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
        }
        panic!("Azurite did not start:\n{}", failures.join("\n"));
    }

    /// `https://127.0.0.1:PORT/devstoreaccount1`: no trailing slash, because the clients append
    /// container and blob names as path segments, and after a trailing slash that makes `//`.
    fn service_url(&self) -> Url {
        Url::parse(&format!("https://127.0.0.1:{}/{ACCOUNT}", self.port)).unwrap()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // The child is killed by kill_on_drop (or `stop`); its files go with the directory.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

fn blob_service(
    azurite: &Azurite,
    emulator: &Emulator,
    credential: Arc<dyn TokenCredential>,
) -> BlobServiceClient {
    BlobServiceClient::new(
        azurite.service_url(),
        Some(credential),
        Some(BlobServiceClientOptions {
            // Trusts the emulator's CA, which signed Azurite's certificate.
            client_options: emulator.client_options(),
            ..Default::default()
        }),
    )
    .unwrap()
}

/// Hands out a fixed token, which it claims is valid until the given time.
#[derive(Debug)]
struct Fixed(String, OffsetDateTime);

impl Fixed {
    /// `token`, claimed to be valid for an hour (by the emulator's clock).
    fn for_an_hour(emulator: &Emulator, token: String) -> Arc<Self> {
        let expires_on = emulator.control().now() + azure_core::time::Duration::hours(1);
        Arc::new(Fixed(token, expires_on))
    }
}

#[async_trait::async_trait]
impl TokenCredential for Fixed {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(Secret::new(self.0.clone()), self.1))
    }
}

/// Asserts that `e` is Azurite's 403 AuthenticationFailed with `detail`.
fn assert_refused(e: &azure_core::Error, detail: &str) {
    let ErrorKind::HttpResponse {
        status,
        error_code,
        raw_response,
    } = e.kind()
    else {
        panic!("not an HTTP error: {e:?}");
    };
    assert_eq!(*status, StatusCode::Forbidden, "{e}");
    assert_eq!(error_code.as_deref(), Some("AuthenticationFailed"), "{e}");
    let body = raw_response
        .as_ref()
        .map(|r| String::from_utf8_lossy(r.body()).into_owned())
        .unwrap_or_default();
    assert!(
        body.contains(detail) || e.to_string().contains(detail),
        "expected {detail:?} in the error: {e}\nbody: {body}"
    );
}

#[tokio::test]
async fn blob_round_trip_against_azurite_with_pipeline_tokens() {
    let Some(bin) = azurite_bin() else {
        return;
    };
    let emulator = Emulator::start().await.unwrap();
    let azurite = Azurite::start(&bin, &emulator).await;
    let credential = credential(&emulator);

    // Create a container, upload a blob, download it.
    let service = blob_service(&azurite, &emulator, credential.clone());
    let container = service.blob_container_client("pipeline-artifacts");
    container.create(None).await.unwrap();
    let blob = container.blob_client("build/output.txt");
    let data: Vec<u8> =
        b"uploaded with a token from an Azure Pipelines service connection\n".repeat(1000);
    blob.upload(RequestContent::from(data.clone()), None)
        .await
        .unwrap();
    let downloaded = blob
        .download(None)
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    assert_eq!(downloaded.len(), data.len());
    assert!(downloaded == data, "the downloaded blob differs");

    // One OIDC token and one access token served all the requests.
    assert_eq!(counts(&emulator), (1, 1));
    assert_eq!(
        emulator.control().counters().by_scope.get(STORAGE),
        Some(&1)
    );

    // An expired token: Azurite refuses it, and the client says why.
    let tenant = &emulator.config().tenant_id;
    let now = emulator.control().now_unix();
    let expired = emulator.sign_claims(&serde_json::json!({
        "aud": "https://storage.azure.com",
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now - 7200,
        "nbf": now - 7200,
        "exp": now - 3600,
        "appid": emulator.config().client_id,
        "tid": tenant,
        "ver": "1.0",
    }));
    let refused = blob_service(&azurite, &emulator, Fixed::for_an_hour(&emulator, expired));
    let e = refused
        .blob_client("pipeline-artifacts", "build/output.txt")
        .download(None)
        .await
        .unwrap_err();
    assert_refused(&e, "Lifetime validation failed. The token is expired.");

    // A real emulator token for another audience (Key Vault): refused too.
    let vault_token = credential.get_token(&[VAULT], None).await.unwrap();
    let vault_token = Fixed::for_an_hour(&emulator, vault_token.token.secret().to_owned());
    let refused = blob_service(&azurite, &emulator, vault_token);
    let e = refused
        .blob_container_client("pipeline-artifacts")
        .create(None)
        .await
        .unwrap_err();
    assert_refused(&e, "Invalid token audience.");

    azurite.stop().await;
}
