//! The transport conformance suite: every broker driver against its real server.
//!
//! Run with `cargo test -p roundtrip --features full --test brokers` after
//! `scripts/services.sh start`. A server that is not reachable fails these tests; it
//! never skips them. Each test uses its own subject, stream, queue or topic (a fresh
//! uuid), so tests run in parallel against one server without seeing each other.
//!
//! The checks, for each driver (see `checks.rs`):
//! - a correlated round trip, sent the moment the listener's `start` returned (that is
//!   the readiness proof: no sleeps anywhere), headers preserved where the transport has
//!   them;
//! - binary and 1 MiB payloads, byte for byte;
//! - 10,000 messages: none lost (or, for at-most-once transports, a loss is never
//!   silent: it shows as a gap);
//! - durable transports: a listener killed mid-stream and restarted loses nothing, and
//!   what the broker redelivered is counted;
//! - ordering per key where the transport promises it;
//! - an unreachable server fails `start` and `connect` with a clear message.

#[cfg(any(feature = "_broker", feature = "aws"))]
mod cases;
#[cfg(any(feature = "_broker", feature = "aws"))]
mod checks;
