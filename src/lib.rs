#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod assertion;
mod cache;
mod chain;
mod clock;
mod credential;
mod endpoint;
mod error;
mod exchange;
mod flight;
mod http;
mod jwt;
mod persistent_cache;
mod request;
mod tenant;
mod timeout;
mod token;
#[cfg(feature = "reqwest")]
mod transport;

// The fuzz targets' bodies: cargo-fuzz builds with `--cfg fuzzing`; the tests replay the corpus.
#[cfg(any(fuzzing, test))]
#[cfg_attr(fuzzing, doc(hidden))]
pub mod fuzzing;
#[cfg(test)]
mod tests;

pub use assertion::{AzurePipelinesAssertion, AzurePipelinesAssertionOptions};
pub use chain::{
    ChainMember, ChainedTokenCredential, PipelineAwareCredential, PipelineAwareCredentialOptions,
};
pub use credential::{AzurePipelinesCredential, AzurePipelinesCredentialOptions};
pub use error::is_unavailable;
pub use persistent_cache::PersistentCacheOptions;
pub use request::TokenRequestContext;
pub use token::AccessTokenInfo;
