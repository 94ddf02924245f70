#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod assertion;
mod cache;
mod chain;
mod claims;
pub mod clock;
mod context;
mod credential;
mod endpoint;
mod error;
mod exchange;
mod http;
pub mod jwt;
#[cfg(feature = "persistent-cache")]
mod persistent_cache;
mod single_flight;
mod tenant;
mod timeout;
mod token;

#[cfg(feature = "emulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "emulator")))]
pub mod emulator;

// Not public API: the pure parsers, exposed for the fuzz targets and property tests.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use assertion::{AzurePipelinesAssertion, AzurePipelinesAssertionOptions};
pub use chain::{ChainedTokenCredential, PipelineAwareCredential, PipelineAwareCredentialOptions};
pub use context::TokenRequestContext;
pub use credential::{AzurePipelinesCredential, AzurePipelinesCredentialOptions};
pub use error::is_unavailable;
#[cfg(feature = "persistent-cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "persistent-cache")))]
pub use persistent_cache::PersistentCacheOptions;
pub use token::AccessTokenInfo;
