//! What the NATS load benchmarks share: a suite whose input and output are one NATS
//! subject on loopback, so NATS itself is the system under test.

use std::path::{Path, PathBuf};

/// The local NATS server (`scripts/services.sh start`).
pub const URL: &str = "nats://127.0.0.1:4222";

/// `prefix` with a random suffix: a subject no other run uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Writes, under `dir`, a suite with one scenario `loop`: an event of ~150 B sent to a
/// fresh subject and expected back on it within `within`, over `streams` streams.
pub fn suite_file(dir: &Path, within: &str, streams: u32) -> PathBuf {
    let subject = unique("bench.load");
    let yaml = format!(
        "name: load through NATS\n\
         channels:\n  \
           loop: {{ nats: {{ url: \"{URL}\", subject: \"{subject}\" }} }}\n\
         scenarios:\n  \
           - name: loop\n    \
             send:\n      - to: loop\n        body: {{ item: \"part {{{{ seq }}}}\", pad: \"{pad}\" }}\n    \
             expect:\n      - on: loop\n        within: {within}\n    \
             load:\n      streams: {streams}\n",
        pad = "x".repeat(100)
    );
    let path = dir.join("load-nats.yaml");
    std::fs::write(&path, yaml).expect("write the suite");
    path
}
