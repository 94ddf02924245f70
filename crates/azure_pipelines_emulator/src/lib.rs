#![doc = include_str!("../README.md")]
// It plays the services, so it reads the real clock; clippy.toml's clock ban is the library's.
#![allow(clippy::disallowed_methods)]
#![warn(missing_docs)]

mod body;
mod config;
mod control;
mod emulator;
mod entra;
mod jwt;
mod keyvault;
mod managed_identity;
mod oidc;
mod server;
mod state;
mod tls;
mod util;
mod wire;

pub use config::{EmulatorConfig, KEY_VAULT_HOST, OIDC_AUDIENCE};
pub use control::{ConnectionFault, Control, Counters, Endpoint, Fault, FaultTrigger, Hold};
pub use emulator::Emulator;
pub use jwt::OidcClaims;
