//! Reporters: they render a [`RunSummary`](roundtrip_core::run::RunSummary) (live from the engine, or re-read from the
//! store by `roundtrip report`) and never reach back into the engine.
//!
//! - [`text`]: the human rendering of verdicts and evidence, shared by the terminal,
//!   JUnit failure bodies and the library's error messages;
//! - [`junit`]: JUnit XML, one testcase per scenario;
//! - [`json`]: the versioned JSON report (`docs/report-format.md`);
//! - [`load`]: a load run's account, and the live view's line per interval;
//! - [`html`]: one self-contained HTML file (charts inlined, no network request).

pub mod html;
pub mod json;
pub mod junit;
pub mod load;
pub mod text;

#[cfg(test)]
mod tests;
