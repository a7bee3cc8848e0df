//! The table: created (with its index and TTL) when `create=true`, else checked.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use crate::aws::{error_code, service_error};

/// The name of the TTL attribute (a Number of Unix seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

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
