//! The `azure-pipelines-token` CLI, run as a process: outputs, exit codes, and that the token
//! never reaches standard error.
//!
//! Every run starts from an empty environment (plus PATH and HOME) so variables of the machine
//! running the tests (a real pipeline agent, say) cannot leak in.

use azure_pipelines_credential::clock::{Clock, SystemClock};
use azure_pipelines_credential::emulator::Emulator;
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

fn assert_jwt(token: &str) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {} characters", token.len());
    assert!(parts.iter().all(|p| !p.is_empty()), "empty JWT part");
}

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
    let now = SystemClock.now().unix_timestamp();
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
}

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

#[test]
fn emulator_vso_output_sets_a_secret_variable() {
    let out = run(&["--emulator", "--output", "vso=MY_TOKEN"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let prefix = "##vso[task.setvariable variable=MY_TOKEN;issecret=true]";
    let token = stdout
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected output of {} bytes", stdout.len()));
    assert_jwt(token);
}

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
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
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
    let mut command = cli(&["--output", "token"]);
    command.envs(emulator.environment(false));
    let out = run_async(command).await;
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
    let mut command = cli(&["--client-id", &client_id, "--output", "token"]);
    command.envs(emulator.environment(false));
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
    ] {
        assert!(help.contains(expected), "--help lacks {expected:?}");
    }
}
