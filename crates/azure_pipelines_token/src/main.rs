//! `azure-pipelines-token`: prints a Microsoft Entra access token for the service connection of
//! an Azure Pipelines step, for scripts and tools that have no Azure SDK support (curl,
//! terraform, cargo, ...).
//!
//! A thin wrapper over `AzurePipelinesCredential`, in three steps: parse the command line and
//! decide the run from it and the environment (`plan`), then get the token on a runtime built
//! for that (`fetch`), then print it (`output`). See `--help` and the README.

#![forbid(unsafe_code)]
#![warn(unreachable_pub, rust_2018_idioms)]

mod args;
mod fetch;
mod output;
mod plan;
mod tid;

use args::{Args, NAME};
use clap::Parser as _;
use plan::{Failure, Plan};
use std::{io, process::ExitCode};
use time::UtcOffset;

fn main() -> ExitCode {
    // The local offset can only be read while the process has a single thread (time's guard
    // against a libc data race), so read it before anything could start one. UTC if unknown.
    let local_offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    let args = Args::parse(); // usage errors exit 2 here
    match run(args, local_offset) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let code = failure.exit_code();
            match failure {
                // Worded and laid out by clap, as the usage errors of `Args::parse`.
                Failure::Usage(error) => {
                    let _ = error.print();
                }
                Failure::Credential { message, .. } | Failure::Other(message) => {
                    eprintln!("{NAME}: {message}");
                }
            }
            ExitCode::from(code)
        }
    }
}

/// Decides, gets the token, prints it.
fn run(args: Args, local_offset: UtcOffset) -> Result<(), Failure> {
    let plan = Plan::new(args, |name| std::env::var(name).ok())?;
    for warning in &plan.warnings {
        eprintln!("{NAME}: warning: {warning}");
    }

    // Everything up to here read only the arguments and the environment. A token from the
    // persistent cache file is printed without a runtime or an HTTP client ever being built.
    let fetched = fetch::fetch_blocking(&plan)?;

    let info = &fetched.info;
    // The tenant that issued the token (its `tid`), else the one it was requested from, else the
    // service connection's own.
    let tenant = tid::token_tenant(info.token.secret())
        .or_else(|| plan.tenant.clone())
        .unwrap_or(fetched.configured_tenant);
    let printed = output::Printed {
        token: info.token.secret(),
        expires_on: info.expires_on,
        token_type: &info.token_type,
        tenant: &tenant,
    };
    output::print(
        &mut io::stdout().lock(),
        &plan.output,
        &printed,
        local_offset,
    )
    .map_err(|e| Failure::Other(format!("could not write to standard output: {e}")))
}
