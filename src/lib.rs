#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod assertion;
mod cache;
mod claims;
pub mod clock;
mod context;
mod credential;
mod endpoint;
mod error;
mod exchange;
mod http;
pub mod jwt;
mod single_flight;
mod tenant;
mod token;

#[cfg(feature = "emulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "emulator")))]
pub mod emulator;

pub use assertion::{AzurePipelinesAssertion, AzurePipelinesAssertionOptions};
pub use context::TokenRequestContext;
pub use credential::{AzurePipelinesCredential, AzurePipelinesCredentialOptions};
pub use error::is_unavailable;
pub use token::AccessTokenInfo;
