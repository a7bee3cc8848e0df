//! Items and attributes: what a run, an observation (with its payload parts), a sent
//! event and a scenario result look like in the table, both ways.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use roundtrip_core::observation::{Observation, Payload};

use crate::store::{RunRecord, StoreError};

/// The name of the TTL attribute (a Number of Unix seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Payload bytes per item: DynamoDB items are at most 400 KB with their attributes.
pub(crate) const PART_BYTES: usize = 350 * 1024;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn run_pk(run_id: &str) -> String {
    format!("run#{run_id}")
}

pub(crate) fn obs_sk(seq: u64) -> String {
    format!("obs#{seq:020}")
}

/// Reads a string attribute.
fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// Reads a number attribute.
pub(crate) fn get_n<T: std::str::FromStr>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
    operation: &'static str,
) -> Result<T, StoreError> {
    let text =
        get_s(item, name).ok_or_else(|| io(operation, format!("an item has no `{name}`")))?;
    serde_json::from_str(text).map_err(|e| io(operation, e))
}

pub(crate) fn encode<T: serde::Serialize>(
    value: &T,
    operation: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| io(operation, e))
}

pub(crate) fn run_record(item: &HashMap<String, AttributeValue>) -> Result<RunRecord, StoreError> {
    decode(item, "record", "read a run")
}

/// The items of one observation: the first carries everything, later ones payload parts.
pub(crate) fn observation_items(
    o: &Observation,
    write_id: &str,
    expires_at: &AttributeValue,
) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
    let headers = encode(&o.headers, "encode headers")?;
    let mut parts = o.payload.bytes.chunks(PART_BYTES);
    let first = parts.next().unwrap_or_default();
    let mut item = HashMap::from([
        ("pk".to_owned(), s(run_pk(&o.run_id))),
        ("sk".to_owned(), s(obs_sk(o.seq))),
        ("seq".to_owned(), n(o.seq)),
        ("ch".to_owned(), s(&o.channel)),
        ("body".to_owned(), AttributeValue::B(Blob::new(first))),
        ("size".to_owned(), n(o.payload.size)),
        (
            "trunc".to_owned(),
            AttributeValue::Bool(o.payload.truncated),
        ),
        (
            "json".to_owned(),
            AttributeValue::Bool(o.payload.json.is_some()),
        ),
        ("hdr".to_owned(), s(headers)),
        ("at".to_owned(), n(o.received_at)),
        ("wid".to_owned(), s(write_id)),
        (TTL_ATTRIBUTE.to_owned(), expires_at.clone()),
    ]);
    let meta = (!o.meta.is_empty())
        .then(|| encode(&o.meta, "encode metadata"))
        .transpose()?;
    let optional = [
        ("cid", o.correlation_id.as_ref()),
        ("mid", o.message_id.as_ref()),
        ("key", o.key.as_ref()),
        ("meta", meta.as_ref()),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            item.insert(name.to_owned(), s(v));
        }
    }
    if let Some(mono) = o.received_mono {
        item.insert("mono".to_owned(), n(mono));
    }
    let rest: Vec<&[u8]> = parts.collect();
    item.insert("parts".to_owned(), n(rest.len()));
    let mut items = vec![item];
    for (i, part) in rest.into_iter().enumerate() {
        let mut part = HashMap::from([
            ("pk".to_owned(), s(run_pk(&o.run_id))),
            ("sk".to_owned(), s(format!("{}#{}", obs_sk(o.seq), i + 1))),
            ("body".to_owned(), AttributeValue::B(Blob::new(part))),
            ("wid".to_owned(), s(write_id)),
            (TTL_ATTRIBUTE.to_owned(), expires_at.clone()),
        ]);
        // Parts carry the correlation too, so a filtered query returns them with it.
        if let Some(cid) = &o.correlation_id {
            part.insert("cid".to_owned(), s(cid));
        }
        items.push(part);
    }
    Ok(items)
}

/// Reassembles observations from their items (in key order).
pub(crate) fn observations_from(
    run_id: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) -> Result<Vec<Observation>, StoreError> {
    const OP: &str = "read observations";
    let mut out: Vec<Observation> = Vec::new();
    // The last observation's write id and its parts: (expected, joined).
    let mut open: Option<(String, u64, u64)> = None;
    let complete = |open: &Option<(String, u64, u64)>, o: Option<&Observation>| match (open, o) {
        (Some((_, expected, joined)), Some(o)) if expected != joined => Err(io(
            OP,
            format!(
                "observation {} has {joined} of its {expected} payload parts",
                o.seq
            ),
        )),
        _ => Ok(()),
    };
    for item in items {
        let body = item
            .get("body")
            .and_then(|b| b.as_b().ok())
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        let wid = get_s(&item, "wid").unwrap_or_default().to_owned();
        let Some(seq) = get_n::<u64>(&item, "seq") else {
            // A payload part, `obs#<seq>#<n>`: it belongs to the observation before it
            // only if that one has its seq and was the same write. Parts whose
            // observation is not (yet) visible, written ahead of it or left by a write
            // that lost its key to another writer, are not part of anything.
            let part_seq = get_s(&item, "sk")
                .and_then(|sk| sk.strip_prefix("obs#"))
                .and_then(|rest| rest.split('#').next())
                .and_then(|seq| seq.parse::<u64>().ok());
            if let (Some(o), Some((owner, _, joined))) = (out.last_mut(), open.as_mut())
                && Some(o.seq) == part_seq
                && *owner == wid
            {
                o.payload.bytes.extend_from_slice(&body);
                *joined += 1;
            }
            continue;
        };
        complete(&open, out.last())?;
        open = Some((wid, get_n(&item, "parts").unwrap_or(0), 0));
        let headers: Vec<(String, String)> = decode(&item, "hdr", OP)?;
        // Items written before metadata was recorded have none.
        let meta: Vec<(String, String)> = match get_s(&item, "meta") {
            Some(_) => decode(&item, "meta", OP)?,
            None => Vec::new(),
        };
        let flag = |name: &str| item.get(name).and_then(|v| v.as_bool().ok()).copied();
        out.push(Observation {
            seq,
            run_id: run_id.to_owned(),
            channel: get_s(&item, "ch").unwrap_or_default().to_owned(),
            correlation_id: get_s(&item, "cid").map(str::to_owned),
            payload: Payload {
                bytes: body,
                size: get_n(&item, "size").unwrap_or_default(),
                truncated: flag("trunc").unwrap_or(false),
                // Set once the parts are joined, below.
                json: flag("json")
                    .unwrap_or(false)
                    .then_some(serde_json::Value::Null),
            },
            headers,
            message_id: get_s(&item, "mid").map(str::to_owned),
            key: get_s(&item, "key").map(str::to_owned),
            meta,
            received_at: get_n(&item, "at").unwrap_or_default(),
            received_mono: get_n(&item, "mono"),
        });
    }
    complete(&open, out.last())?;
    for o in &mut out {
        if o.payload.json.is_some() {
            o.payload.json = serde_json::from_slice(&o.payload.bytes).ok();
        }
    }
    Ok(out)
}

pub(crate) fn io(
    operation: &'static str,
    why: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Io {
        operation,
        source: why.into(),
    }
}

#[cfg(test)]
mod tests {
    use roundtrip_core::observation::NewObservation;

    use super::*;

    #[test]
    fn large_payloads_are_split_and_joined() {
        let new = |body: Vec<u8>| NewObservation {
            run_id: "r".to_owned(),
            channel: "c".to_owned(),
            correlation_id: Some("id".to_owned()),
            payload: Payload::from_bytes(body, 2 << 20),
            headers: vec![("h".to_owned(), "v".to_owned())],
            message_id: None,
            key: Some("k".to_owned()),
            meta: Vec::new(),
            received_at: 7,
            received_mono: Some(9),
        };
        let o = new((0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect()).committed(42);
        let items = observation_items(&o, "w", &n(1)).expect("items");
        assert_eq!(items.len(), 3, "1 MiB in 350 KiB parts");
        assert_eq!(
            observations_from("r", items.clone()).expect("joined"),
            vec![o.clone()]
        );

        // Parts of a write not visible yet (its main item comes later) are nothing.
        let next = new(vec![7; PART_BYTES + 1]).committed(43);
        let mut next_items = observation_items(&next, "w2", &n(1)).expect("items");
        let mut read = items.clone();
        read.push(next_items.remove(1));
        assert_eq!(observations_from("r", read).expect("read"), vec![o.clone()]);

        // A part of another write at the same key is not joined.
        let mut foreign = items.clone();
        foreign[1].insert("wid".to_owned(), s("someone else"));
        let err = observations_from("r", foreign).expect_err("a part is missing");
        assert!(err.to_string().contains("read observations"), "{err}");
    }
}
