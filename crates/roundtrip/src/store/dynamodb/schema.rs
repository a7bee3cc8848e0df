//! The table: created (with its index and TTL) when `create=true`, else checked.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use super::rows::{TTL_ATTRIBUTE, io, n, run_pk, s};
use crate::aws::{error_code, service_error};
use crate::store::StoreError;

/// The index that lists runs by start time.
pub const RUNS_INDEX: &str = "runs_by_start";

pub(crate) async fn ensure_table(client: &Client, table: &str, create: bool) -> Result<(), String> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => return Ok(()),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") && create => {}
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
            return Err(format!(
                "table `{table}` does not exist; create it (see docs/stores/dynamodb.md) or \
                 drop `create=false` from the URL"
            ));
        }
        Err(e) => return Err(format!("describe table `{table}`: {}", service_error(&e))),
    }
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| e.to_string())
    };
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(|e| e.to_string())
    };
    let index = GlobalSecondaryIndex::builder()
        .index_name(RUNS_INDEX)
        .key_schema(key("gpk", KeyType::Hash)?)
        .key_schema(key("gsk", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("sk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("gpk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("gsk", ScalarAttributeType::N)?)
        .global_secondary_indexes(index)
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Another process created it meanwhile.
        Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
        Err(e) => return Err(format!("create table `{table}`: {}", service_error(&e))),
    }
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(Duration::from_secs(120))
        .await
        .map_err(|e| format!("wait for table `{table}`: {e}"))?;
    let ttl = client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .send()
        .await;
    match ttl {
        Ok(_) => Ok(()),
        // Another process enabled it meanwhile (DynamoDB refuses enabling it twice).
        Err(e) if service_error(&e).contains("already enabled") => Ok(()),
        Err(e) => Err(format!(
            "enable TTL on table `{table}`: {}",
            service_error(&e)
        )),
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) table: String,
    pub(crate) ttl: Duration,
    /// Runs known to exist (created or read here).
    pub(crate) runs: Mutex<HashSet<String>>,
    /// The next sent-event order number.
    pub(crate) order: AtomicU64,
}

impl Shared {
    pub(crate) fn expires_at(&self) -> AttributeValue {
        let at = SystemTime::now() + self.ttl;
        n(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    /// Fails with `NoSuchRun` unless the run exists (remembered once seen).
    pub(crate) async fn require_run(&self, run_id: &str) -> Result<(), StoreError> {
        if self.lock_runs().contains(run_id) {
            return Ok(());
        }
        if self.read_run(run_id).await?.is_some() {
            self.lock_runs().insert(run_id.to_owned());
            Ok(())
        } else {
            Err(StoreError::NoSuchRun(run_id.to_owned()))
        }
    }

    pub(crate) fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) async fn read_run(
        &self,
        run_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(run_pk(run_id)))
            .key("sk", s("run"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| io("read a run", service_error(&e)))?;
        Ok(out.item)
    }

    /// Every item of a run whose sort key lies between `from` and `to`, in key order,
    /// strongly consistent; stops once `enough` says so. (`$` sorts right after `#`, so
    /// `scen#`…`scen$` spans every `scen#…` key.)
    pub(crate) async fn query(
        &self,
        run_id: &str,
        from: &str,
        to: &str,
        enough: impl FnMut(&HashMap<String, AttributeValue>) -> bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        self.query_where(run_id, from, to, None, enough).await
    }

    /// [`Shared::query`], keeping only the items of one correlation id when given.
    pub(crate) async fn query_where(
        &self,
        run_id: &str,
        from: &str,
        to: &str,
        correlation_id: Option<&str>,
        mut enough: impl FnMut(&HashMap<String, AttributeValue>) -> bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .consistent_read(true)
                .set_filter_expression(correlation_id.map(|_| "cid = :cid".to_owned()))
                .expression_attribute_values(":pk", s(run_pk(run_id)))
                .expression_attribute_values(":from", s(from))
                .expression_attribute_values(":to", s(to));
            if let Some(cid) = correlation_id {
                request = request.expression_attribute_values(":cid", s(cid));
            }
            let out = request
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| io("query the store", service_error(&e)))?;
            for item in out.items.unwrap_or_default() {
                let stop = enough(&item);
                items.push(item);
                if stop {
                    return Ok(items);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}
