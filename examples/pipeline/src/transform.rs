//! What the processing step does to an event: validation, the uppercase transform and the
//! dead-letter form.
//!
//! - An event is **invalid** if it has `"poison": true`, `"valid": false`, or a negative
//!   number in `qty` (all top-level fields). Its dead-letter form is the original event
//!   plus `"error": "<reason>"`.
//! - A valid event is **transformed**: every string value, at any depth, is uppercased,
//!   except the top-level `id` and every field (at any depth) named in the keep-case list;
//!   then `"status": "processed"` and `"processed_at": "<RFC 3339 UTC>"` are set. Keys are
//!   kept as they are.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Options of the transform.
#[derive(Debug, Clone)]
pub struct TransformConfig {
    /// Fields whose values are never uppercased, at any depth.
    pub keep_case: Vec<String>,
}

/// Why an event is invalid, or `None` if it is valid.
pub fn invalid_reason(event: &Map<String, Value>) -> Option<String> {
    if event.get("poison") == Some(&Value::Bool(true)) {
        return Some("poison event".to_owned());
    }
    if event.get("valid") == Some(&Value::Bool(false)) {
        return Some("the event is marked invalid (`valid` is false)".to_owned());
    }
    if let Some(qty) = event.get("qty").and_then(Value::as_f64)
        && qty < 0.0
    {
        return Some(format!("`qty` must not be negative, got {qty}"));
    }
    None
}

/// The transformed form of a valid event, processed at `processed_at`.
pub fn transform(
    event: Map<String, Value>,
    config: &TransformConfig,
    processed_at: SystemTime,
) -> Map<String, Value> {
    let mut out = Map::with_capacity(event.len() + 2);
    for (key, value) in event {
        let value = if key == "id" || keeps_case(config, &key) {
            value
        } else {
            uppercase(value, config)
        };
        out.insert(key, value);
    }
    out.insert("status".to_owned(), Value::from("processed"));
    out.insert(
        "processed_at".to_owned(),
        Value::from(rfc3339(processed_at)),
    );
    out
}

/// The dead-letter form of an event: the original plus `"error": reason`.
pub fn dead_letter(mut event: Map<String, Value>, reason: &str) -> Map<String, Value> {
    event.insert("error".to_owned(), Value::from(reason));
    event
}

fn keeps_case(config: &TransformConfig, key: &str) -> bool {
    config.keep_case.iter().any(|kept| kept == key)
}

fn uppercase(value: Value, config: &TransformConfig) -> Value {
    match value {
        Value::String(s) => Value::String(s.to_uppercase()),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| uppercase(item, config))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| {
                    let value = if keeps_case(config, &key) {
                        value
                    } else {
                        uppercase(value, config)
                    };
                    (key, value)
                })
                .collect(),
        ),
        other => other,
    }
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T12:30:00.250Z`. Times
/// before 1970 are written as the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn config() -> TransformConfig {
        TransformConfig {
            keep_case: vec!["id".to_owned(), "correlationId".to_owned()],
        }
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn strings_are_uppercased_recursively_and_status_is_added() {
        let event = object(json!({
            "id": "abc-1",
            "item": "widget",
            "qty": 2,
            "tags": ["red", {"shade": "dark"}],
            "nested": {"note": "héllo", "id": "inner-x", "correlationId": "c-1", "ok": true},
            "correlationId": "order-7",
        }));
        let out = transform(event, &config(), at(1_700_000_000, 5));
        assert_eq!(
            Value::Object(out),
            json!({
                "id": "abc-1",
                "item": "WIDGET",
                "qty": 2,
                "tags": ["RED", {"shade": "DARK"}],
                "nested": {"note": "HÉLLO", "id": "inner-x", "correlationId": "c-1", "ok": true},
                "correlationId": "order-7",
                "status": "processed",
                "processed_at": "2023-11-14T22:13:20.005Z",
            })
        );
    }

    #[test]
    fn keys_keep_their_order_and_case() {
        let event = object(json!({"zeta": "a", "Alpha": "b"}));
        let out = transform(event, &config(), at(0, 0));
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, ["zeta", "Alpha", "status", "processed_at"]);
    }

    #[test]
    fn the_top_level_id_keeps_its_case_even_without_keep_case() {
        let config = TransformConfig {
            keep_case: vec!["sku".to_owned()],
        };
        let event = object(json!({"id": "abc", "sku": "x-1", "name": "n", "inner": {"id": "y"}}));
        let out = transform(event, &config, at(0, 0));
        assert_eq!(out["id"], "abc");
        assert_eq!(out["sku"], "x-1");
        assert_eq!(out["name"], "N");
        assert_eq!(out["inner"]["id"], "Y");
    }

    #[test]
    fn an_existing_status_is_overwritten() {
        let event = object(json!({"status": "new"}));
        let out = transform(event, &config(), at(0, 0));
        assert_eq!(out["status"], "processed");
    }

    #[test]
    fn invalid_events_are_recognised() {
        for (event, reason) in [
            (json!({"poison": true}), "poison"),
            (json!({"valid": false, "item": "x"}), "invalid"),
            (json!({"qty": -1}), "negative"),
            (json!({"qty": -0.5}), "negative"),
        ] {
            let got = invalid_reason(&object(event.clone()));
            let got = got.unwrap_or_else(|| panic!("{event} should be invalid"));
            assert!(got.contains(reason), "{event}: {got}");
        }
    }

    #[test]
    fn valid_events_are_not_rejected() {
        for event in [
            json!({}),
            json!({"poison": false, "valid": true, "qty": 0}),
            json!({"qty": 3}),
            json!({"qty": "-1"}),
            json!({"poison": "true", "valid": "false"}),
            json!({"nested": {"poison": true, "qty": -1}}),
        ] {
            assert_eq!(invalid_reason(&object(event.clone())), None, "{event}");
        }
    }

    #[test]
    fn a_dead_letter_is_the_original_plus_an_error() {
        let event = object(json!({"item": "gadget", "qty": -1}));
        let out = dead_letter(event, "`qty` must not be negative, got -1");
        assert_eq!(
            Value::Object(out),
            json!({"item": "gadget", "qty": -1, "error": "`qty` must not be negative, got -1"})
        );
    }

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 999)), "2000-02-29T00:00:00.999Z");
        assert_eq!(rfc3339(at(1_709_251_199, 0)), "2024-02-29T23:59:59.000Z");
        assert_eq!(rfc3339(at(4_102_444_800, 1)), "2100-01-01T00:00:00.001Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
