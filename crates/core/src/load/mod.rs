//! Load and soak runs: the open-loop schedule ([`Profile`]), event ids that carry
//! run, worker, stream and sequence number ([`LoadId`]), exact per-stream accounting in
//! bounded memory ([`StreamWindow`], [`Accountant`]), HDR histograms that merge
//! ([`Hist`]), and the report with its aggregate SLAs ([`LoadReport`], [`evaluate`]).
//!
//! The engine (`roundtrip load`) sends on the schedule, feeds the accountant with what it
//! sent and what the listeners received, and ticks it with the clock; everything it
//! decides is decided here, from those inputs alone.

mod account;
mod hist;
mod id;
mod profile;
mod report;
mod window;

pub use account::{
    AccountConfig, Accountant, FlowKind, FlowSpec, LOST_RANGES, MAX_POINTS, MAX_WINDOW, Snapshot,
};
pub use hist::{HIST_MAX_NS, Hist, HistStats};
pub use id::{LoadId, MAX_STREAMS, MAX_WORKERS, SEQ_LIMIT};
pub use profile::{MAX_EVENTS, MAX_RATE, Profile, Stage};
pub use report::{
    Examples, FlowCounts, FlowPoint, FlowReport, IntervalPoint, LoadReport, SendCounts, SendReport,
    ThresholdResult, WORKER_POINTS, evaluate, share,
};
pub use window::{Arrival, Settled, StreamWindow};
