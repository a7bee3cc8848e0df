//! The typed stream of run events. The engine emits them; reporters (the terminal
//! display, the CLI's progress bar) consume them and never reach back into the engine.

use roundtrip_core::observation::UnixNanos;
use roundtrip_core::run::{RunSummary, ScenarioResult};

/// Something that happened during a run, in the order it happened.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run was created in the store.
    RunStarted {
        /// The run id.
        run_id: String,
        /// The suite name.
        suite: String,
        /// How many scenarios will run.
        scenarios: usize,
        /// Wall-clock start.
        started_at: UnixNanos,
    },
    /// A listener is subscribed and recording.
    ListenerReady {
        /// The channel.
        channel: String,
        /// The transport.
        transport: String,
        /// Where it listens.
        endpoint: String,
    },
    /// The SUT process started and passed its readiness probe.
    SutReady {
        /// Its process id.
        pid: u32,
        /// Time from spawn to ready, in ns.
        ready_after_ns: u64,
    },
    /// A scenario began sending.
    ScenarioStarted {
        /// The scenario name.
        name: String,
    },
    /// A scenario has its verdict.
    ScenarioFinished(ScenarioResult),
    /// The run ended; the summary is also in the store.
    RunFinished(RunSummary),
}
