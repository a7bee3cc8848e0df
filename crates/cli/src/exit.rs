//! The documented exit codes.

/// Every expectation passed.
pub const OK: u8 = 0;
/// At least one expectation failed (or a scenario could not be evaluated).
pub const FAILED: u8 = 1;
/// Usage error or invalid suite file.
pub const USAGE: u8 = 2;
/// The harness itself failed: SUT did not start, port in use, store unwritable, channel
/// unreachable.
pub const HARNESS: u8 = 3;
