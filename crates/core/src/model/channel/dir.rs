//! `dir`: a directory, files written into it (producer) or appearing in it (listener); the
//! local stand-in for an object store. The `file_name` is rendered per event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ByteSize, Capabilities, ChannelOptions, EventTemplate, EventTemplates, Problem,
    without_templates,
};

/// `dir` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirChannel {
    /// The directory, relative to the suite file's directory. Created if missing.
    pub path: String,
    /// Producer: the file name template; defaults to `{{ correlation_id }}.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Listener: only files whose name ends with this suffix are observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Listener: payloads larger than this are recorded truncated and marked so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

impl ChannelOptions for DirChannel {
    fn transport(&self) -> &'static str {
        "dir"
    }

    fn capabilities(&self) -> Capabilities {
        // The correlation id travels in the file name.
        Capabilities {
            headers: false,
            ..Capabilities::BOTH_WAYS
        }
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn event_templates(&self) -> EventTemplates<'_> {
        EventTemplates {
            key: Some(EventTemplate {
                key: "file_name",
                written: self.file_name.as_deref(),
                default: "{{ correlation_id }}.json",
            }),
            fifo: None,
        }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if let Some(name) = &self.file_name {
            let literal = without_templates(name, "");
            if name.trim().is_empty()
                || literal.contains(['/', '\\', '\0'])
                || matches!(literal.as_str(), "." | "..")
            {
                out.push(Problem::value(
                    &["file_name"],
                    format!("`file_name` must be a plain file name, not `{name}`"),
                    "files are written inside the channel's `path`: give a name without \
                     `/`, such as `{{ correlation_id }}.json`",
                ));
            }
        }
        out
    }
}
