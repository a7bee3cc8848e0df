//! # roundtrip-core
//!
//! The pure heart of roundtrip: the suite file model and its loader, the matchers, the
//! expectation state machine, correlation rules and latency statistics. Nothing here does
//! IO beyond reading a suite file's text, and nothing depends on tokio or a broker client,
//! so everything is unit- and property-tested in isolation.
//!
//! The layers above (`roundtrip`: store, transports, engine, reporters) feed this crate
//! with observations and the clock, and render what it decides.

pub mod correlate;
pub mod escape;
pub mod expect;
pub mod latency;
pub mod listen;
pub mod load;
pub mod matcher;
pub mod model;
pub mod observation;
pub mod redact;
pub mod run;
pub mod suite;
pub mod template;
pub mod vars;
pub mod verdict;
