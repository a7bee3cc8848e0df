//! Errors that end a run before it can judge the SUT, and how they map to exit codes.

use crate::store::StoreError;
use crate::transport::PlanError;
use crate::transport::{ListenError, ProduceError};

/// Why a run could not be carried out. A failed expectation is not an error: it is a
/// verdict in the run summary.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The suite asks for something this build cannot do (a compiled-out transport, a
    /// channel used the wrong way round). A usage error: exit code 2.
    #[error("plan the run")]
    Plan(#[from] PlanError),
    /// A listener could not start (port in use, directory not creatable). Exit code 3.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// A producer could not connect to its broker. Exit code 3.
    #[error("connect a producer")]
    Connect(#[source] ProduceError),
    /// The store failed. Exit code 3.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A load's input could not be reached: its first sends all failed to connect, and
    /// none succeeded. Exit code 3.
    #[error("send to the input: {message}")]
    Input {
        /// What happened and what to check.
        message: String,
    },
    /// The SUT did not start or never became ready. Exit code 3.
    #[error("start the system under test: {message}")]
    Sut {
        /// What happened, with the last lines of its output.
        message: String,
    },
    /// The listener service named by `--remote` could not be asked what it records.
    /// Exit code 3, or 2 when the configuration is at fault ([`RemoteError::usage`]).
    ///
    /// [`RemoteError::usage`]: crate::remote::RemoteError::usage
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    /// The scenario cannot run under load (`roundtrip load`): none of that name, or not
    /// of the shape a load needs. A usage error: exit code 2.
    #[error("{message}")]
    Load {
        /// What is wrong and what to do.
        message: String,
    },
    /// The workers of a shared load run (`roundtrip load --workers`) could not work
    /// together: not all of them joined in time, or their parts do not add up. Exit
    /// code 3.
    #[error("share the load run: {message}")]
    Workers {
        /// What happened and what to do.
        message: String,
    },
    /// A template in a channel could not be rendered (e.g. an unset environment
    /// variable). A usage error: exit code 2.
    #[error("render `{what}`: {message}")]
    Template {
        /// What was being rendered.
        what: String,
        /// Why.
        message: String,
    },
}

impl HarnessError {
    /// The documented exit code: 2 for usage and suite errors, 3 for infrastructure.
    pub fn exit_code(&self) -> i32 {
        match self {
            HarnessError::Plan(_) | HarnessError::Template { .. } | HarnessError::Load { .. } => 2,
            HarnessError::Remote(e) if e.usage => 2,
            HarnessError::Listen(_)
            | HarnessError::Connect(_)
            | HarnessError::Store(_)
            | HarnessError::Remote(_)
            | HarnessError::Sut { .. }
            | HarnessError::Input { .. }
            | HarnessError::Workers { .. } => 3,
        }
    }
}

/// An error with its sources on one line, `a: b: c`; a source whose text the line
/// already holds (an error that prints its source too) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
