//! The persistent token cache as the CLI uses it: shared by processes (the CLI run several times,
//! and at once, against an emulator), on by default in a pipeline and off with the flag. The
//! cache itself (sealing, damaged files, permissions) is tested in the library.
//!
//! The cache exists on Unix only; elsewhere the CLI leaves it off, so these tests are Unix-only.
#![cfg(unix)]

use azure_pipelines_emulator::{Emulator, Endpoint};
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_azure-pipelines-token");
const FILE: &str = "tokens.bin";

/// A fresh, empty folder for one test (under the system temp folder; removed first if a previous
/// run left it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apt-persistent-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Where the CLI puts the cache for `AGENT_TEMPDIRECTORY=agent_temp`.
fn default_file(agent_temp: &Path) -> PathBuf {
    agent_temp.join("azure-pipelines-credential").join(FILE)
}

/// The CLI in a pipeline-like environment pointing at `emulator` over http, with
/// `AGENT_TEMPDIRECTORY=agent_temp`, and nothing else of this machine's environment.
fn cli(emulator: &Emulator, agent_temp: &Path, flags: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(["--output", "token"]).args(flags).env_clear();
    for name in ["PATH", "HOME", "SYSTEMROOT"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(emulator.environment(false));
    command.env("AGENT_TEMPDIRECTORY", agent_temp);
    command
}

/// Runs the CLI without blocking the runtime that serves the emulator; returns the token.
async fn run(command: Command) -> String {
    let output = run_output(command).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let token = String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim_end()
        .to_owned();
    assert!(!token.is_empty());
    token
}

async fn run_output(command: Command) -> Output {
    let child = tokio::process::Command::from(command).output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("the CLI finishes within 60 s")
        .expect("the CLI runs")
}

fn exchanges(emulator: &Emulator) -> (u64, u64) {
    let c = emulator.control().counters();
    (c.oidc_requests, c.token_requests)
}

#[tokio::test]
async fn two_processes_make_one_exchange() {
    let emulator = Emulator::start().await.unwrap();
    let temp = scratch("two-processes");
    let first = run(cli(&emulator, &temp, &["--persistent-cache"])).await;
    assert_eq!(exchanges(&emulator), (1, 1));
    let second = run(cli(&emulator, &temp, &["--persistent-cache"])).await;
    assert_eq!(
        second, first,
        "the second process read the first one's token"
    );
    assert_eq!(
        exchanges(&emulator),
        (1, 1),
        "one OIDC request and one token request in total"
    );
    assert!(emulator.verify_token(&second).is_some());
    let _ = std::fs::remove_dir_all(&temp);
}

#[tokio::test]
async fn on_by_default_in_a_pipeline_and_off_with_the_flag() {
    let emulator = Emulator::start().await.unwrap();
    let temp = scratch("default");
    // AGENT_TEMPDIRECTORY and SYSTEM_OIDCREQUESTURI are set: a pipeline, so the cache is on.
    let first = run(cli(&emulator, &temp, &[])).await;
    let second = run(cli(&emulator, &temp, &[])).await;
    assert_eq!(second, first);
    assert_eq!(exchanges(&emulator), (1, 1));
    assert!(default_file(&temp).exists());

    let off = scratch("default-off");
    run(cli(&emulator, &off, &["--no-persistent-cache"])).await;
    run(cli(&emulator, &off, &["--no-persistent-cache"])).await;
    assert_eq!(
        exchanges(&emulator),
        (3, 3),
        "each process went to the network"
    );
    assert!(
        !off.join("azure-pipelines-credential").exists(),
        "no file written"
    );
    let _ = std::fs::remove_dir_all(&temp);
    let _ = std::fs::remove_dir_all(&off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_cold_processes_at_once_all_succeed_and_leave_a_valid_file() {
    let emulator = Emulator::start().await.unwrap();
    // Long enough that the eight processes overlap at the token endpoint.
    emulator
        .control()
        .set_latency(Endpoint::Token, Duration::from_millis(150));
    let temp = scratch("eight");
    let runs: Vec<_> = (0..8)
        .map(|_| tokio::spawn(run(cli(&emulator, &temp, &["--persistent-cache"]))))
        .collect();
    let mut tokens = Vec::new();
    for run in runs {
        tokens.push(run.await.expect("joined"));
    }
    let (oidc, token_requests) = exchanges(&emulator);
    println!(
        "8 cold processes at once: {token_requests} token exchanges, {oidc} OIDC requests, {} \
         distinct tokens",
        {
            let mut distinct = tokens.clone();
            distinct.sort();
            distinct.dedup();
            distinct.len()
        }
    );
    assert!((1..=8).contains(&token_requests), "{token_requests}");
    assert!(tokens.iter().all(|t| emulator.verify_token(t).is_some()));

    // The file is intact: a ninth process is served from it.
    let ninth = run(cli(&emulator, &temp, &["--persistent-cache"])).await;
    assert_eq!(exchanges(&emulator), (oidc, token_requests), "no request");
    assert!(tokens.contains(&ninth));

    // No temporary file was left behind, and the modes are private.
    let folder = temp.join("azure-pipelines-credential");
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [FILE, "tokens.bin.lock"]);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(FILE)), 0o600);
    }
    let _ = std::fs::remove_dir_all(&temp);
}

#[tokio::test]
async fn a_resource_and_its_scope_share_one_cached_token() {
    let emulator = Emulator::start().await.unwrap();
    let temp = scratch("resource");
    let by_scope = run(cli(
        &emulator,
        &temp,
        &["--scope", "https://vault.azure.net/.default"],
    ))
    .await;
    let by_resource = run(cli(
        &emulator,
        &temp,
        &["--resource", "https://vault.azure.net"],
    ))
    .await;
    assert_eq!(by_resource, by_scope, "the same request, so the same token");
    assert_eq!(exchanges(&emulator), (1, 1));
    let _ = std::fs::remove_dir_all(&temp);
}
