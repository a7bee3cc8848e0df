//! What the store benchmarks share: the observation they record.

use roundtrip::core::observation::{NewObservation, Payload};

/// The `n`th benchmark observation of `run_id`: a ~200 B JSON body with a correlation id
/// in its header.
pub fn observation(run_id: &str, n: u64) -> NewObservation {
    let correlation = format!("{:032x}", u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let body = format!(
        r#"{{"id":"{correlation}","item":"WIDGET","qty":{},"note":"benchmark payload ........................................"}}"#,
        n % 10
    );
    NewObservation {
        run_id: run_id.to_owned(),
        channel: "orders_out".to_owned(),
        correlation_id: Some(correlation.clone()),
        payload: Payload::from_bytes(body.into_bytes(), 1 << 20),
        headers: vec![("x-correlation-id".to_owned(), correlation)],
        message_id: None,
        key: None,
        meta: Vec::new(),
        received_at: 1_700_000_000_000_000_000,
        received_mono: Some(n),
    }
}
