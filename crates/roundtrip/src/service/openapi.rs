//! The API's OpenAPI 3.0 document, served at `/openapi.json` and committed at
//! `schema/openapi.json` (a test fails when it drifts). The bodies' schemas are generated
//! from the types the handlers answer with (`api.rs`); the paths are written here, beside
//! the router, and a test asks the router for every one of them.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::api::{DeletedBody, ErrorBody, ObservationsBody, Readiness, RunsBody, ServiceBody};
use crate::store::RunRecord;

/// The document.
pub fn document() -> Value {
    let mut generator: SchemaGenerator =
        SchemaSettings::openapi3().for_serialize().into_generator();
    let error = generator.subschema_for::<ErrorBody>().to_value();
    let readiness = generator.subschema_for::<Readiness>().to_value();
    let service = generator.subschema_for::<ServiceBody>().to_value();
    let runs = generator.subschema_for::<RunsBody>().to_value();
    let run = generator.subschema_for::<RunRecord>().to_value();
    let observations = generator.subschema_for::<ObservationsBody>().to_value();
    let deleted = generator.subschema_for::<DeletedBody>().to_value();
    let schemas = generator.take_definitions(true);

    let json_body = |description: &str, schema: &Value| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let text_body = |description: &str| json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } });
    let unauthorized = json_body(
        "No token, or a wrong one (with `WWW-Authenticate: Bearer`).",
        &error,
    );
    let unavailable = json_body("The store failed, or the request took too long.", &error);
    let bad_query = text_body("A query parameter that is unknown or not of its type.");
    let not_found = json_body("No such run.", &error);
    let run_param = json!({
        "name": "run", "in": "path", "required": true,
        "description": "The run id.", "schema": { "type": "string" }
    });
    let integer = |name: &str, description: &str| {
        json!({
            "name": name, "in": "query", "required": false, "description": description,
            "schema": { "type": "integer", "format": "int64", "minimum": 0, "maximum": 9_007_199_254_740_991_u64 }
        })
    };
    let string = |name: &str, description: &str| {
        json!({
            "name": name, "in": "query", "required": false, "description": description,
            "schema": { "type": "string" }
        })
    };
    let public = json!([]);

    let mut paths = Map::new();
    paths.insert(
        "/healthz".into(),
        json!({ "get": {
            "summary": "Liveness: the process answers.",
            "security": public,
            "responses": { "200": text_body("`ok`") }
        }}),
    );
    paths.insert(
        "/readyz".into(),
        json!({ "get": {
            "summary": "Readiness: every listener subscribed and the store answering.",
            "security": public,
            "responses": {
                "200": json_body("Ready.", &readiness),
                "503": json_body("Not ready: the body says what is not.", &readiness)
            }
        }}),
    );
    paths.insert(
        "/metrics".into(),
        json!({ "get": {
            "summary": "Prometheus metrics, per channel.",
            "responses": {
                "200": text_body("The Prometheus text format, version 0.0.4."),
                "401": unauthorized, "503": unavailable
            }
        }}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({ "get": {
            "summary": "This document.",
            "responses": {
                "200": json_body("The OpenAPI document.", &json!({ "type": "object" })),
                "401": unauthorized, "503": unavailable
            }
        }}),
    );
    paths.insert(
        "/v1/service".into(),
        json!({ "get": {
            "summary": "The service: its name, its own run, its channels.",
            "responses": {
                "200": json_body("The service.", &service),
                "401": unauthorized, "503": unavailable
            }
        }}),
    );
    paths.insert(
        "/v1/runs".into(),
        json!({ "get": {
            "summary": "The newest runs, newest first.",
            "parameters": [integer("limit", "How many (default 50, at most 1000).")],
            "responses": {
                "200": json_body("The runs.", &runs),
                "400": bad_query, "401": unauthorized, "503": unavailable
            }
        }}),
    );
    paths.insert(
        "/v1/runs/{run}".into(),
        json!({ "get": {
            "summary": "One run.",
            "parameters": [run_param],
            "responses": {
                "200": json_body("The run.", &run),
                "401": unauthorized, "404": not_found, "503": unavailable
            }
        }}),
    );
    paths.insert(
        "/v1/runs/{run}/observations".into(),
        json!({ "get": {
            "summary": "A run's observations, in sequence order, a page at a time.",
            "parameters": [
                run_param,
                integer("after", "Only observations after this sequence number (a page's `next`)."),
                integer("limit", "How many (default 100, at most 1000)."),
                string("channel", "Only this channel's."),
                string("correlation_id", "Only those that carry this correlation id.")
            ],
            "responses": {
                "200": json_body("A page.", &observations),
                "400": bad_query, "401": unauthorized, "404": not_found, "503": unavailable
            }
        }}),
    );
    paths.insert("/v1/runs/{run}/events".into(), json!({ "get": {
        "summary": "A run's observations as server-sent events, as they are recorded.",
        "description": "One `observation` event per observation, its `id` the sequence number and its data the observation as JSON. `Last-Event-ID` (or `after`) resumes after that event: nothing skipped, nothing repeated. A comment every 15 s keeps it open. A run not in the store yet streams once it is.",
        "parameters": [
            run_param,
            integer("after", "Resume after this sequence number (`Last-Event-ID` wins)."),
            { "name": "Last-Event-ID", "in": "header", "required": false,
              "description": "The id of the last event received.",
              "schema": { "type": "string" } }
        ],
        "responses": {
            "200": { "description": "The stream.", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
            "400": { "description": "A `Last-Event-ID` that is not a sequence number, or a bad query.",
                     "content": { "application/json": { "schema": error }, "text/plain": { "schema": { "type": "string" } } } },
            "401": unauthorized, "404": not_found, "503": unavailable
        }
    }}));
    paths.insert("/v1/retention".into(), json!({ "post": {
        "summary": "Delete the runs older than the retention now (Postgres). Needs an admin token.",
        "responses": {
            "200": json_body("What was deleted.", &deleted),
            "401": unauthorized,
            "403": json_body("A read token: this needs an admin token.", &error),
            "409": json_body("This store does not delete old runs (SQLite, DynamoDB).", &error),
            "503": unavailable
        }
    }}));

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "roundtrip listener service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "What a `roundtrip listen` service recorded, for test runs that wait on it. See docs/deploy.md."
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas
        }
    })
}

/// The documented paths, with their methods, for the test that asks the router.
#[cfg(test)]
pub(crate) fn operations() -> Vec<(String, String)> {
    let doc = document();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
            out.push((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use roundtrip_core::listen::{LoadedListenConfig, parse_with};
    use roundtrip_core::vars::Vars;

    use super::*;
    use crate::service::{RunningService, ServiceOptions, Tokens};

    /// The CI drift check: the committed document must be what the code generates.
    #[test]
    fn the_committed_openapi_document_is_up_to_date() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/openapi.json");
        let generated = serde_json::to_string_pretty(&document()).expect("serializes") + "\n";
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).expect("write the document");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "schema/openapi.json is out of date with the API; regenerate it with \
             `UPDATE_SCHEMA=1 cargo test -p roundtrip --lib openapi` and commit it"
        );
    }

    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let text = "name: t\napi: { listen: '127.0.0.1:0' }\nchannels:\n  out: { webhook: { listen: '127.0.0.1:0' } }\n";
        let loaded = LoadedListenConfig {
            config: parse_with("t.yaml", text, &Vars::default()).expect("a config"),
            path: PathBuf::from("t.yaml"),
            base_dir: PathBuf::from("."),
        };
        let store = crate::store::open("sqlite::memory:")
            .await
            .expect("a store");
        let service = RunningService::start(
            &loaded,
            Arc::clone(&store),
            ServiceOptions {
                store_url: "sqlite::memory:".to_owned(),
                tokens: Tokens::none(),
            },
        )
        .await
        .expect("the service starts");
        let base = format!("http://{}", service.api_addr());
        let client = reqwest::Client::new();
        let operations = operations();
        assert_eq!(operations.len(), 10, "{operations:?}");
        for (method, path) in operations {
            let url = format!("{base}{}", path.replace("{run}", service.home_run()));
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
            let response = client
                .request(method.clone(), &url)
                .send()
                .await
                .expect("answers");
            let status = response.status().as_u16();
            // 409: retention on SQLite, documented. Never "no such endpoint" or 405.
            assert!(status == 200 || status == 409, "{method} {path}: {status}");
        }
        service.stop().await.expect("stops");
    }
}
