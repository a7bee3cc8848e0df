//! A scenario's `load:` block: how `roundtrip load` runs it (streams, the in-flight cap)
//! and the aggregate SLAs it must meet. Functional runs ignore it.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DurationSpec;

/// How the scenario runs under `roundtrip load` (rate and duration come from the
/// command line); functional runs ignore it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Events go round-robin to this many streams (1 to 4096), each with its own
    /// sequence numbers, sent in order: loss, duplicates and reordering are accounted
    /// per stream. `{{ stream }}` is an event's stream: make it the key, partition or
    /// subject that the system keeps in order. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<u32>,
    /// Refuse to send an event while this many are in flight (sent, and neither arrived
    /// nor declared lost); refused events are counted, not sent later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// The aggregate SLAs the run must meet (exit 1 otherwise). Without any, a load run
    /// passes when nothing is lost and nothing is late, as a functional run would.
    #[serde(default, skip_serializing_if = "LoadThresholds::is_empty")]
    pub thresholds: LoadThresholds,
}

/// Aggregate SLAs over a whole load run, each checked for every expectation that
/// something arrives. Latency is measured from each event's intended send time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadThresholds {
    /// The median latency is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<DurationSpec>,
    /// The 90th percentile latency is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<DurationSpec>,
    /// The 99th percentile latency is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<DurationSpec>,
    /// The 99.9th percentile latency is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999: Option<DurationSpec>,
    /// The largest latency is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<DurationSpec>,
    /// At least this share of the events sent arrived (`100%`, `99.9%`), or this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<Limit>,
    /// At most this many (or this share of the events sent) were lost. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<Limit>,
    /// At most this many arrived after their SLA. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<Limit>,
    /// At most this many duplicate arrivals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<Limit>,
    /// At most this many arrivals overtaken by a later event of their stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reordered: Option<Limit>,
    /// At most this many sends failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_errors: Option<Limit>,
    /// At most this many events were refused by `max_in_flight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Limit>,
}

impl LoadThresholds {
    /// Whether none is given.
    pub fn is_empty(&self) -> bool {
        *self == LoadThresholds::default()
    }
}

/// A count (`0`, `25`) or a share of the events sent (`"0.1%"`, `"100%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// So many events.
    Count(u64),
    /// So many percent of the events sent (0 to 100).
    Percent(f64),
}

impl Limit {
    /// The limit as a number of events, out of `of`.
    pub fn of(self, of: u64) -> f64 {
        match self {
            Limit::Count(n) => n as f64,
            Limit::Percent(p) => p / 100.0 * of as f64,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Count(n) => write!(f, "{n}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Count(n) => s.serialize_u64(*n),
            Limit::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count such as `0` or a share such as `\"0.1%\"`")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Limit, E> {
                Ok(Limit::Count(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Limit, E> {
                u64::try_from(n)
                    .map(Limit::Count)
                    .map_err(|_| E::custom(format_args!("`{n}`: a limit is 0 or more")))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Limit, E> {
                Err(E::custom(format_args!(
                    "`{n}`: a count is a whole number; for a share write it with `%`, e.g. `\"{n}%\"`"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Limit, E> {
                parse_limit(text).map_err(E::custom)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// `0`, `25`, `0.1%`, `100%`.
pub fn parse_limit(text: &str) -> Result<Limit, String> {
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not a share; write it like `0.1%` or `100%`"))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("`{text}`: a share is between 0% and 100%"));
        }
        return Ok(Limit::Percent(p));
    }
    t.parse().map(Limit::Count).map_err(|_| {
        format!("`{text}` is not a limit; write a count such as `0` or a share such as `0.1%`")
    })
}

impl JsonSchema for Limit {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Limit".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A count (`0`, `25`) or a share of the events sent (`\"0.1%\"`).",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*%?\\s*$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_counts_or_shares() {
        assert_eq!(parse_limit("0"), Ok(Limit::Count(0)));
        assert_eq!(parse_limit(" 0.1% "), Ok(Limit::Percent(0.1)));
        assert!(parse_limit("101%").expect_err("above").contains("between"));
        assert!(parse_limit("few").expect_err("no").contains("`0.1%`"));
        assert_eq!(Limit::Percent(1.0).of(1000), 10.0);
        assert_eq!(Limit::Percent(0.5).to_string(), "0.5%");
        let json: Limit = serde_json::from_str("\"2%\"").expect("a share");
        assert_eq!(json, Limit::Percent(2.0));
        let json: Limit = serde_json::from_str("3").expect("a count");
        assert_eq!(json, Limit::Count(3));
        assert!(serde_json::from_str::<Limit>("1.5").is_err());
        assert!(serde_json::from_str::<Limit>("-1").is_err());
    }
}
