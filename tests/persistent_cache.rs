//! The persistent token cache: shared by processes (the CLI run several times, and at once,
//! against an emulator), refusing or ignoring every bad file while authentication goes on, never
//! holding a secret in clear text, and never touched on an in-memory hit.
//!
//! In-process tests capture the credential's debug events with a global subscriber; each test
//! uses its own folder and looks only at the events that name its own file.

use azure_core::credentials::TokenCredential;
use azure_pipelines_credential::{
    AzurePipelinesCredential, AzurePipelinesCredentialOptions, PersistentCacheOptions,
    TokenRequestContext,
    clock::ManualClock,
    emulator::{Emulator, EmulatorConfig, Endpoint},
};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_azure-pipelines-token");
const STORAGE: &str = "https://storage.azure.com/.default";
const FILE: &str = "tokens.bin";

/// A fresh, empty folder for one test (under the system temp folder; removed first if a previous
/// run left it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("apc-persistent-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Where the CLI puts the cache for `AGENT_TEMPDIRECTORY=agent_temp`.
fn default_file(agent_temp: &Path) -> PathBuf {
    agent_temp.join("azure-pipelines-credential").join(FILE)
}

// ---------------------------------------------------------------------------------------------
// The CLI, as separate processes.

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
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(FILE)), 0o600);
    }
    let _ = std::fs::remove_dir_all(&temp);
}

/// Not a test: the measurement behind the CLI's default. Run with
/// `cargo test --all-features --test persistent_cache -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_cli_with_and_without_the_cache() {
    const RUNS: usize = 20;
    let emulator = Emulator::start().await.unwrap();
    emulator
        .control()
        .set_latency(Endpoint::Oidc, Duration::from_millis(120));
    emulator
        .control()
        .set_latency(Endpoint::Token, Duration::from_millis(80));
    for (label, flag) in [
        ("without the cache", "--no-persistent-cache"),
        ("with the cache", "--persistent-cache"),
    ] {
        let temp = scratch(&format!("measure-{}", &flag[2..]));
        emulator.control().reset_counters();
        let mut times = Vec::new();
        let start = Instant::now();
        for _ in 0..RUNS {
            let one = Instant::now();
            run(cli(&emulator, &temp, &[flag])).await;
            times.push(one.elapsed());
        }
        let total = start.elapsed();
        let first = times[0];
        let mut rest = times[1..].to_vec();
        rest.sort();
        let (oidc, token) = exchanges(&emulator);
        println!(
            "{RUNS} CLI runs {label} (OIDC 120 ms, Entra 80 ms): total {total:?}, first \
             {first:?}, then median {:?}, min {:?}, max {:?}; {oidc} OIDC + {token} token \
             requests",
            rest[rest.len() / 2],
            rest[0],
            rest[rest.len() - 1]
        );
        let _ = std::fs::remove_dir_all(&temp);
    }
}

// ---------------------------------------------------------------------------------------------
// In process, with the debug events captured.

/// Every event of the credential at DEBUG level and above, as formatted text.
fn events() -> &'static Mutex<Vec<u8>> {
    static EVENTS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("azure_pipelines_credential=debug")
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        events
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines that name `file`.
fn log_of(file: &Path) -> Vec<String> {
    let needle = file.display().to_string();
    let events = events().lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&events)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

fn reads_of(file: &Path) -> usize {
    log_of(file)
        .iter()
        .filter(|l| l.contains("persistent token cache: reading"))
        .count()
}

fn options(emulator: &Emulator, file: &Path) -> AzurePipelinesCredentialOptions {
    events();
    AzurePipelinesCredentialOptions {
        persistent_cache: Some(PersistentCacheOptions {
            path: Some(file.to_owned()),
            ..Default::default()
        }),
        ..emulator.credential_options()
    }
}

fn credential_with(
    emulator: &Emulator,
    options: AzurePipelinesCredentialOptions,
) -> Arc<AzurePipelinesCredential> {
    let c = emulator.config();
    AzurePipelinesCredential::new(
        c.tenant_id.clone(),
        c.client_id.clone(),
        &c.service_connection_id,
        c.system_access_token.clone(),
        Some(options),
    )
    .expect("credential")
}

/// A new credential (an empty in-memory cache, like a new process) using `file`.
fn credential(emulator: &Emulator, file: &Path) -> Arc<AzurePipelinesCredential> {
    credential_with(emulator, options(emulator, file))
}

async fn token(credential: &AzurePipelinesCredential) -> String {
    credential
        .get_token(&[STORAGE], None)
        .await
        .expect("authentication works")
        .token
        .secret()
        .to_owned()
}

#[tokio::test]
async fn a_new_credential_is_served_from_the_file() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("in-process").join("cache").join(FILE);
    let first = token(&credential(&emulator, &file)).await;
    let second = token(&credential(&emulator, &file)).await;
    assert_eq!(first, second);
    assert_eq!(exchanges(&emulator), (1, 1));
    let log = log_of(&file).join("\n");
    assert!(log.contains("saved a token"), "{log}");
    assert!(log.contains("hit in"), "{log}");
}

#[tokio::test]
async fn the_in_memory_cache_stays_the_hot_path() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("hot-path").join("cache").join(FILE);
    let credential = credential(&emulator, &file);
    let first = token(&credential).await;
    assert_eq!(reads_of(&file), 1, "read once, on the miss");
    // Whatever happens to the file now, hits neither read nor write it.
    std::fs::remove_file(&file).unwrap();
    for _ in 0..100 {
        assert_eq!(token(&credential).await, first);
    }
    assert_eq!(reads_of(&file), 1);
    assert!(!file.exists(), "nothing written on a hit");
    assert_eq!(exchanges(&emulator), (1, 1));
}

#[tokio::test]
async fn claims_bypass_the_file_and_cae_is_keyed_apart() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("claims").join("cache").join(FILE);
    token(&credential(&emulator, &file)).await;
    let reads = reads_of(&file);

    let claims = TokenRequestContext {
        claims: Some(r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#.into()),
        ..Default::default()
    };
    credential(&emulator, &file)
        .get_token(&[STORAGE], Some(claims.into()))
        .await
        .unwrap();
    assert_eq!(exchanges(&emulator).1, 2, "claims go to Entra");
    assert_eq!(reads_of(&file), reads, "without reading the file");

    let cae = || -> Option<azure_core::credentials::TokenRequestOptions<'static>> {
        Some(
            TokenRequestContext {
                enable_cae: true,
                ..Default::default()
            }
            .into(),
        )
    };
    let first = credential(&emulator, &file)
        .get_token(&[STORAGE], cae())
        .await
        .unwrap();
    assert_eq!(
        exchanges(&emulator).1,
        3,
        "a CAE token is not the plain one"
    );
    let second = credential(&emulator, &file)
        .get_token(&[STORAGE], cae())
        .await
        .unwrap();
    assert_eq!(second.token.secret(), first.token.secret());
    assert_eq!(
        exchanges(&emulator).1,
        3,
        "the CAE token came from the file"
    );
}

#[tokio::test]
async fn tokens_near_their_refresh_time_are_not_served_from_the_file() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("refresh").join("cache").join(FILE);
    let first = token(&credential(&emulator, &file)).await;
    // A process that starts 55 minutes later (by the credential's clock) finds the token too
    // close to its refresh time to be served, and gets a new one from the network.
    let clock = ManualClock::starting_now();
    clock.advance(time::Duration::minutes(55));
    let later = credential_with(
        &emulator,
        AzurePipelinesCredentialOptions {
            clock: Some(Arc::new(clock)),
            ..options(&emulator, &file)
        },
    );
    assert_ne!(token(&later).await, first);
    assert_eq!(exchanges(&emulator).1, 2);
    let log = log_of(&file).join("\n");
    assert!(log.contains("no fresh token for this key"), "{log}");
}

/// Fills the cache file with a token, breaks it with `damage`, and checks that a new credential
/// still authenticates (over the network), that the debug log says `why`, and whether the file
/// was rewritten (then a third credential is served from it).
async fn survives(name: &str, damage: impl FnOnce(&Path), why: &str, rewritten: bool) {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch(name).join("cache").join(FILE);
    let first = token(&credential(&emulator, &file)).await;
    damage(&file);
    let damaged = std::fs::read(&file).ok();

    let second = token(&credential(&emulator, &file)).await;
    assert_ne!(second, first, "{name}: a new token, from the network");
    assert_eq!(exchanges(&emulator), (2, 2), "{name}");
    let log = log_of(&file).join("\n");
    assert!(log.contains(why), "{name}: the log lacks {why:?}:\n{log}");

    if rewritten {
        let third = token(&credential(&emulator, &file)).await;
        assert_eq!(
            third, second,
            "{name}: the file was replaced by a valid one"
        );
        assert_eq!(exchanges(&emulator), (2, 2), "{name}");
    } else {
        assert_eq!(std::fs::read(&file).ok(), damaged, "{name}: left alone");
    }
}

fn edit(file: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(file).unwrap();
    change(&mut bytes);
    // Rewritten in place, so the file keeps its mode.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(file)
        .unwrap();
    out.write_all(&bytes).unwrap();
}

#[tokio::test]
async fn a_truncated_file_is_ignored() {
    survives(
        "truncated",
        |f| edit(f, |b| b.truncate(b.len() / 2)),
        "failed authentication",
        true,
    )
    .await;
    survives(
        "truncated-header",
        |f| edit(f, |b| b.truncate(10)),
        "truncated",
        true,
    )
    .await;
}

#[tokio::test]
async fn a_tampered_byte_is_detected() {
    survives(
        "tampered",
        |f| edit(f, |b| *b.last_mut().unwrap() ^= 0x40),
        "failed authentication (tampered or corrupted)",
        true,
    )
    .await;
    survives(
        "tampered-middle",
        |f| {
            edit(f, |b| {
                let middle = b.len() / 2;
                b[middle] ^= 1;
            })
        },
        "failed authentication (tampered or corrupted)",
        true,
    )
    .await;
}

#[tokio::test]
async fn another_version_and_garbage_are_ignored() {
    survives(
        "version",
        |f| edit(f, |b| b[6] = 2),
        "format version 2 is not supported",
        true,
    )
    .await;
    survives(
        "garbage",
        |f| {
            edit(f, |b| {
                b.iter_mut().for_each(|x| *x = x.wrapping_mul(31) ^ 0x5a)
            })
        },
        "not a token cache file",
        true,
    )
    .await;
}

#[tokio::test]
async fn a_file_sealed_with_another_system_access_token_is_ignored() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("other-key").join("cache").join(FILE);
    // Another job (another System.AccessToken) left a file at the same place.
    let other_job = Emulator::start_with(EmulatorConfig::default())
        .await
        .unwrap();
    assert_ne!(
        other_job.config().system_access_token,
        emulator.config().system_access_token
    );
    let theirs = token(&credential(&other_job, &file)).await;

    let ours = token(&credential(&emulator, &file)).await;
    assert_ne!(ours, theirs);
    assert_eq!(
        exchanges(&emulator),
        (1, 1),
        "authenticated over the network"
    );
    let log = log_of(&file).join("\n");
    assert!(
        log.contains("sealed with another System.AccessToken"),
        "{log}"
    );
    // The file is now ours: theirs can no longer read it, we can.
    assert_eq!(token(&credential(&emulator, &file)).await, ours);
    assert_eq!(exchanges(&emulator), (1, 1));
}

#[cfg(unix)]
#[tokio::test]
async fn loose_permissions_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    survives(
        "loose-file",
        |f| chmod(f, 0o644),
        "refused: the file has mode 0644",
        false,
    )
    .await;
    survives(
        "loose-folder",
        |f| chmod(f.parent().unwrap(), 0o755),
        "refused: its folder has mode 0755",
        false,
    )
    .await;

    // A folder of others (/tmp-like) is refused before anything is created in it.
    let emulator = Emulator::start().await.unwrap();
    let shared = scratch("shared-folder");
    chmod(&shared, 0o777);
    let file = shared.join(FILE);
    token(&credential(&emulator, &file)).await;
    assert!(!file.exists());
    let log = log_of(&file).join("\n");
    assert!(log.contains("refused: its folder has mode 0777"), "{log}");
}

#[tokio::test]
async fn no_secret_is_in_the_file_in_clear_text() {
    let emulator = Emulator::start().await.unwrap();
    let file = scratch("secrets").join("cache").join(FILE);
    let credential = credential(&emulator, &file);
    let access = token(&credential).await;
    let cae = credential
        .get_token(
            &["https://vault.azure.net/.default"],
            Some(
                TokenRequestContext {
                    enable_cae: true,
                    ..Default::default()
                }
                .into(),
            ),
        )
        .await
        .unwrap();
    let raw = std::fs::read(&file).unwrap();
    let system = emulator.config().system_access_token.clone();
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, secret) in [
        ("access token", access.as_str()),
        ("CAE access token", cae.token.secret()),
        ("System.AccessToken", system.as_str()),
    ] {
        needles.push((what.to_owned(), secret.as_bytes().to_vec()));
        needles.push((
            format!("{what}, base64"),
            STANDARD.encode(secret).into_bytes(),
        ));
        needles.push((
            format!("{what}, base64url"),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ));
        // Every part of a JWT (its signature is what makes it usable), and a 16-byte slice.
        for (i, part) in secret.split('.').enumerate() {
            needles.push((format!("{what}, part {i}"), part.as_bytes().to_vec()));
        }
        let middle = secret.len() / 2;
        needles.push((
            format!("{what}, 16 bytes"),
            secret.as_bytes()[middle - 8..middle + 8].to_vec(),
        ));
    }
    for (what, needle) in &needles {
        assert!(
            needle.len() >= 8 && !raw.windows(needle.len()).any(|w| w == needle.as_slice()),
            "{what} is in the file"
        );
    }
    for word in ["Bearer", "storage.azure.com", "vault", "tenant", "expires"] {
        assert!(
            !raw.windows(word.len()).any(|w| w == word.as_bytes()),
            "{word} is in the file: the entries are not sealed"
        );
    }
}
