//! # roundtrip
//!
//! End-to-end tests for asynchronous, event-driven systems. Producers send events into
//! the system under test (SUT); listeners, subscribed before anything is sent, record
//! every message that comes out into a durable store; expectations decide, by content,
//! correlation id and deadline (the SLA), whether the right things arrived — or did not.
//!
//! This crate is the engine behind the `roundtrip` command line, and a library for
//! `#[tokio::test]`s. The pure model and logic live in [`roundtrip_core`].

#[cfg(any(feature = "aws", feature = "dynamodb"))]
pub mod aws;
pub mod clock;
pub mod engine;
pub mod error;
pub mod harness;
pub mod owner;
#[cfg(any(feature = "postgres", feature = "tls"))]
mod pem;
pub mod protocol;
pub mod remote;
pub mod report;
mod serve;
pub mod service;
pub mod store;
pub mod transport;

pub use roundtrip_core as core;
