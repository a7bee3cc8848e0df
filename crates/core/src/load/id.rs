//! The correlation id of a load event: run, worker, stream and sequence number packed into
//! a UUID (RFC 9562 version 8), so that an arrival says which event it is with no
//! per-event state on the send side, and a correlation id stays a UUID (it is still the
//! trace id of `traceparent`, and still fits every transport that carries one).
//!
//! Layout, most significant bits first: 32 bits of run tag (a hash of the run id, so an
//! arrival from another run is told apart), 16 bits of worker, the version (4 bits, `8`),
//! 12 bits of stream, the variant (2 bits, `10`), 62 bits of sequence number.
//!
//! ```
//! use roundtrip_core::load::LoadId;
//!
//! let id = LoadId { run_tag: LoadId::tag_of("run-1"), worker: 2, stream: 7, seq: 41 };
//! let text = id.to_string();
//! assert_eq!(LoadId::parse(&text), Some(id));
//! assert_eq!(text.as_bytes()[14], b'8'); // a version-8 UUID
//! ```

use std::fmt;

/// How many streams a load run may have: the id has 12 bits for the stream.
pub const MAX_STREAMS: u32 = 1 << 12;
/// How many workers a load run may have: the id has 16 bits for the worker.
pub const MAX_WORKERS: u32 = 1 << 16;
/// One more than the largest sequence number the id can carry (62 bits).
pub const SEQ_LIMIT: u64 = 1 << 62;

/// What a load event's correlation id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoadId {
    /// The run's tag ([`LoadId::tag_of`] its id).
    pub run_tag: u32,
    /// The worker that sent it.
    pub worker: u16,
    /// Its stream, below [`MAX_STREAMS`].
    pub stream: u16,
    /// Its sequence number within the stream, below [`SEQ_LIMIT`].
    pub seq: u64,
}

impl LoadId {
    /// The tag of a run: 32 bits of FNV-1a over its id.
    pub fn tag_of(run_id: &str) -> u32 {
        run_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
    }

    /// The id's 128 bits. The stream and sequence number are masked to their widths (the
    /// engine never makes larger ones: streams and events are bounded when a load is
    /// planned).
    pub fn to_u128(self) -> u128 {
        let stream = u128::from(self.stream) & 0xfff;
        let seq = u128::from(self.seq) & u128::from(SEQ_LIMIT - 1);
        (u128::from(self.run_tag) << 96)
            | (u128::from(self.worker) << 80)
            | (0x8 << 76)
            | (stream << 64)
            | (0b10 << 62)
            | seq
    }

    /// The id a UUID's bits carry, if they are a load id's (version 8, RFC variant).
    pub fn from_u128(bits: u128) -> Option<LoadId> {
        if (bits >> 76) & 0xf != 0x8 || (bits >> 62) & 0b11 != 0b10 {
            return None;
        }
        Some(LoadId {
            run_tag: (bits >> 96) as u32,
            worker: ((bits >> 80) & 0xffff) as u16,
            stream: ((bits >> 64) & 0xfff) as u16,
            seq: (bits & u128::from(SEQ_LIMIT - 1)) as u64,
        })
    }

    /// The id `text` carries, if it is a load id in any UUID spelling.
    pub fn parse(text: &str) -> Option<LoadId> {
        let uuid = uuid::Uuid::try_parse(text).ok()?;
        LoadId::from_u128(uuid.as_u128())
    }
}

/// The lowercase hyphenated UUID.
impl fmt::Display for LoadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_u128(self.to_u128()).hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_id_reads_back_as_written(tag: u32, worker: u16, stream in 0u16..4096, seq in 0u64..SEQ_LIMIT) {
            let id = LoadId { run_tag: tag, worker, stream, seq };
            let text = id.to_string();
            prop_assert_eq!(LoadId::parse(&text), Some(id));
            prop_assert_eq!(LoadId::parse(&text.to_uppercase()), Some(id));
            let uuid = uuid::Uuid::try_parse(&text).expect("a UUID");
            prop_assert_eq!(uuid.get_version_num(), 8);
            prop_assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn other_uuids_are_not_load_ids() {
        assert_eq!(LoadId::parse(&uuid::Uuid::now_v7().to_string()), None);
        assert_eq!(LoadId::parse(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(LoadId::parse("not a uuid"), None);
        assert_eq!(LoadId::parse(""), None);
    }

    #[test]
    fn runs_have_different_tags() {
        assert_ne!(LoadId::tag_of("run-1"), LoadId::tag_of("run-2"));
        assert_eq!(LoadId::tag_of("run-1"), LoadId::tag_of("run-1"));
    }
}
