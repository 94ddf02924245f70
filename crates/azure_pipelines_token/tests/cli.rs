//! The `azure-pipelines-token` CLI, run as a process: outputs, exit codes, and that the token
//! never reaches standard error.
//!
//! Every run starts from an empty environment (plus PATH and HOME) so variables of the machine
//! running the tests (a real pipeline agent, say) cannot leak in. Tests that pass `--emulator`
//! need the crate's `emulator` feature (on by default); the others run an emulator in the test
//! and give the CLI the environment of a pipeline step pointing at it.

use azure_pipelines_emulator::Emulator;
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_azure-pipelines-token");

/// The CLI with a clean environment.
fn cli(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env_clear();
    for name in ["PATH", "HOME", "SYSTEMROOT"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
}

fn run(args: &[&str]) -> Output {
    cli(args).output().expect("the CLI runs")
}

/// Runs the CLI without blocking the runtime that serves an in-test emulator.
async fn run_async(command: Command) -> Output {
    let child = tokio::process::Command::from(command).output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("the CLI finishes within 60 s")
        .expect("the CLI runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(feature = "emulator")]
fn assert_jwt(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {} characters", token.len());
    assert!(parts.iter().all(|p| !p.is_empty()), "empty JWT part");
}

/// Now, in Unix seconds: the CLI's `--emulator` runs on the real clock.
#[cfg(feature = "emulator")]
fn now_unix() -> i64 {
    #[allow(clippy::disallowed_methods)] // the clock ban is the library's
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The CLI in the environment of a pipeline step whose service connection is `emulator`'s
/// (over http, without AGENT_TEMPDIRECTORY: no persistent cache).
fn in_pipeline(emulator: &Emulator, args: &[&str]) -> Command {
    let mut command = cli(args);
    command.envs(emulator.environment(false));
    command
}

#[cfg(feature = "emulator")]
#[test]
fn emulator_json_output_is_shaped_like_az() {
    let out = run(&["--emulator", "--output", "json"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    let token = json["accessToken"].as_str().expect("accessToken");
    assert_jwt(token);
    let expires_on = json["expires_on"]
        .as_i64()
        .expect("expires_on is an integer");
    let now = now_unix();
    assert!(
        expires_on > now,
        "expires_on {expires_on} is not after {now}"
    );
    let expires = json["expiresOn"].as_str().expect("expiresOn");
    assert_eq!(
        expires.len(),
        "YYYY-MM-DD HH:MM:SS.ffffff".len(),
        "{expires}"
    );
    assert!(json["tenant"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(json["tokenType"], "Bearer");
    assert!(!stderr.contains(token), "the token leaked to stderr");
    // az's key order.
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut in_order = stdout
        .match_indices("\n  \"")
        .map(|(i, _)| &stdout[i + 4..]);
    for key in [
        "accessToken",
        "expiresOn",
        "expires_on",
        "tenant",
        "tokenType",
    ] {
        assert!(keys.contains(&key), "{key} missing");
        assert!(
            in_order.next().unwrap().starts_with(key),
            "{key} out of order"
        );
    }
    assert_eq!(keys.len(), 5);
}

#[cfg(feature = "emulator")]
#[test]
fn emulator_token_output_is_one_jwt_line() {
    let out = run(&["--emulator", "--output", "token"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let token = stdout.strip_suffix('\n').expect("ends with a newline");
    assert!(!token.contains('\n'), "more than one line");
    assert_jwt(token);
    assert!(!text(&out.stderr).contains(token));
}

#[cfg(feature = "emulator")]
#[test]
fn emulator_vso_output_sets_a_secret_variable_and_its_expiry() {
    let out = run(&["--emulator", "--output", "vso=MY_TOKEN"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 2, "two lines");
    let prefix = "##vso[task.setvariable variable=MY_TOKEN;issecret=true]";
    let token = lines[0]
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected first line of {} bytes", lines[0].len()));
    assert_jwt(token);
    let expires_on: i64 = lines[1]
        .strip_prefix("##vso[task.setvariable variable=MY_TOKEN_EXPIRES_ON]")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected second line {:?}", lines[1]));
    assert!(expires_on > now_unix());
}

#[cfg(feature = "emulator")]
#[test]
fn emulator_accepts_several_scopes_and_another_tenant() {
    let tenant = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
    let out = run(&[
        "--emulator",
        "--scope",
        "https://storage.azure.com/.default",
        "--scope",
        "https://management.azure.com/.default",
        "--tenant",
        tenant,
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["tenant"], tenant);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--no-such-flag"][..],
        &["--output", "vso=bad name"],
        &["--output", "vso="],
        &["--output", "xml"],
        &["--output", "Bearer"],
        &["--output", "vso=a;issecret=false"],
        &["--output", "vso=a]b"],
        &["--output", "vso=100%"],
        &["--output", "vso=X\n##vso[task.setvariable variable=PATH]x"],
        &[
            "--resource",
            "https://vault.azure.net",
            "--scope",
            "x/.default",
        ],
        &["--persistent-cache", "--no-persistent-cache"],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(text(&out.stderr).contains("error:"), "{args:?}");
    }
}

#[cfg(not(feature = "emulator"))]
#[test]
fn emulator_flag_without_the_feature_exits_2() {
    let out = run(&["--emulator"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("built without its `emulator` feature"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn outside_a_pipeline_is_unavailable_exit_3() {
    let out = run(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.starts_with("azure-pipelines-token: "), "{stderr}");
    for name in [
        "AZURESUBSCRIPTION_TENANT_ID",
        "AZURESUBSCRIPTION_CLIENT_ID",
        "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
        "SYSTEM_ACCESSTOKEN",
    ] {
        assert!(stderr.contains(name), "{name} not named: {stderr}");
    }
    // The library's message, then one line of the tool's own.
    assert!(
        stderr.contains("AzurePipelinesCredential is unavailable:"),
        "{stderr}"
    );
    let last = stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("azure-pipelines-token: --tenant-id"),
        "{stderr}"
    );
    assert_eq!(
        last.contains("--emulator"),
        cfg!(feature = "emulator"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // All inputs, but no SYSTEM_OIDCREQUESTURI: still not a pipeline.
    let out = cli(&[])
        .env(
            "AZURESUBSCRIPTION_TENANT_ID",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        )
        .env(
            "AZURESUBSCRIPTION_CLIENT_ID",
            "3f8a1c2e-5b7d-4e9f-a1c3-6d2b8e4f0a95",
        )
        .env(
            "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
            "9c4e2a7b-1d3f-4b8e-9a6c-5e7f1b2d3c40",
        )
        .env("SYSTEM_ACCESSTOKEN", "not-used")
        .output()
        .expect("the CLI runs");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("SYSTEM_OIDCREQUESTURI"), "{stderr}");
    assert!(!stderr.contains("not-used"), "{stderr}");
    #[cfg(feature = "emulator")]
    assert!(
        stderr
            .trim_end()
            .ends_with("azure-pipelines-token: To try it outside a pipeline, pass --emulator."),
        "{stderr}"
    );
}

#[tokio::test]
async fn rejected_system_access_token_exits_4_without_leaking_it() {
    let emulator = Emulator::start().await.expect("emulator");
    let wrong = "wrong-system-access-token-0123456789";
    let mut command = cli(&["--authority-host", &emulator.authority_host(false)]);
    for (name, value) in emulator.environment(false) {
        if name != "AZURE_AUTHORITY_HOST" {
            command.env(name, value);
        }
    }
    command.env("SYSTEM_ACCESSTOKEN", wrong);
    let out = run_async(command).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    assert!(
        stderr.contains("rejected the System.AccessToken"),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong) && !stdout.contains(wrong));
    assert!(stdout.is_empty());
}

#[tokio::test]
async fn pipeline_environment_gets_a_token_with_one_exchange() {
    let emulator = Emulator::start().await.expect("emulator");
    let out = run_async(in_pipeline(&emulator, &["--output", "token"])).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let token = stdout.trim_end();
    assert!(
        emulator.verify_token(token).is_some(),
        "not the emulator's token"
    );
    let counters = emulator.control().counters();
    assert_eq!((counters.oidc_requests, counters.token_requests), (1, 1));
}

#[tokio::test]
async fn flags_override_the_environment() {
    let emulator = Emulator::start().await.expect("emulator");
    let client_id = emulator.config().client_id.clone();
    let mut command = in_pipeline(&emulator, &["--client-id", &client_id, "--output", "token"]);
    command.env(
        "AZURESUBSCRIPTION_CLIENT_ID",
        "00000000-0000-0000-0000-000000000000",
    );
    let out = run_async(command).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn help_explains_the_secret_and_exit_codes() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for expected in [
        "SYSTEM_ACCESSTOKEN: $(System.AccessToken)",
        "never from a flag",
        "EXIT CODES",
        "3  unavailable",
        "4  authentication failed",
        "--output",
        "--resource",
        "bearer",
        "_EXPIRES_ON",
    ] {
        assert!(help.contains(expected), "--help lacks {expected:?}");
    }
}

#[tokio::test]
async fn resource_requests_its_default_scope_keeping_a_trailing_slash_as_az() {
    let emulator = Emulator::start().await.expect("emulator");
    for (resource, audience) in [
        ("https://vault.azure.net", "https://vault.azure.net"),
        // az: resource + "/.default", so the scope is https://management.core.windows.net//.default
        // and the token's audience keeps the slash.
        (
            "https://management.core.windows.net/",
            "https://management.core.windows.net/",
        ),
    ] {
        let out = run_async(in_pipeline(
            &emulator,
            &["--resource", resource, "--output", "token"],
        ))
        .await;
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
        let claims = emulator
            .verify_token(text(&out.stdout).trim_end())
            .expect("the emulator's token");
        assert_eq!(claims["aud"], audience, "{resource}");
    }
}

#[tokio::test]
async fn bearer_output_is_one_line_for_cargo() {
    let emulator = Emulator::start().await.expect("emulator");
    let out = run_async(in_pipeline(&emulator, &["--output", "bearer"])).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // cargo:token-from-stdout takes exactly one line; a trailing newline is fine.
    let line = stdout.strip_suffix('\n').expect("ends with a newline");
    assert!(!line.contains(['\n', '\r']), "one line");
    let token = line.strip_prefix("Bearer ").expect("Bearer <token>");
    assert!(emulator.verify_token(token).is_some());
}

#[tokio::test]
async fn vso_expiry_is_the_tokens_exp_in_unix_seconds() {
    let emulator = Emulator::start().await.expect("emulator");
    let out = run_async(in_pipeline(
        &emulator,
        &["--output", "vso=ARM_ACCESS_TOKEN"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let token = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("##vso[task.setvariable variable=ARM_ACCESS_TOKEN;issecret=true]")
        })
        .expect("the secret variable");
    let claims = emulator.verify_token(token).expect("the emulator's token");
    let expiry = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("##vso[task.setvariable variable=ARM_ACCESS_TOKEN_EXPIRES_ON]")
        })
        .expect("the expiry variable");
    // The credential counts the lifetime (expires_in) from when the response came: within a
    // couple of seconds of the token's own exp.
    let expiry: i64 = expiry.parse().expect("Unix seconds");
    let exp = claims["exp"].as_i64().unwrap();
    assert!((expiry - exp).abs() <= 2, "{expiry} vs exp {exp}");
    assert!(expiry > emulator.control().now_unix());
    assert_eq!(lines.next(), None);
}
