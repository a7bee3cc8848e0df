//! The Postgres schema: versioned migrations, applied in one transaction under an
//! advisory lock, so that several processes opening one database at once (listener
//! services, runners) migrate it once.
//!
//! Every table lives in the store's own schema (`?schema=`, default `roundtrip`).
//! `schema_version` holds one row, the number of [`MIGRATIONS`] applied; a database
//! written by a newer roundtrip is refused rather than misread.
//!
//! ## Sequence numbers in commit order
//! An observation's `seq` is taken from the one-row table `observation_seq` by the
//! transaction that inserts it (`UPDATE … SET next = next + n RETURNING`). The row lock
//! is held until that transaction commits, so the next writer (another process, too)
//! takes its numbers only after the first committed: **sequence order is commit order**,
//! across every writer. A reader that follows `seq > last_seen` can therefore never skip
//! a row that commits late, which a `BIGSERIAL` (numbers taken at insert) would allow.
//! The price is that writers' commits are serialised, one batch at a time per database;
//! each batch carries up to [`PostgresOptions::max_batch`] writes.
//!
//! Strings that may come from the system under test or from a suite (channels,
//! correlation ids, message ids, keys, names) are stored as `bytea`: Postgres `text`
//! cannot hold a NUL character, and one such value would otherwise fail a whole batch.
//! JSON documents (headers, metadata, results, summaries) are `text`: serde escapes
//! every control character.
//!
//! [`PostgresOptions::max_batch`]: super::PostgresOptions::max_batch

use tokio_postgres::Client;

/// The ordered migrations; the schema version is the number applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE runs (
        run_id      text PRIMARY KEY,
        suite       bytea NOT NULL,
        suite_path  bytea NOT NULL,
        started_at  bigint NOT NULL,
        finished_at bigint,
        status      text NOT NULL,
        owner       bytea,
        summary     text -- the RunSummary as JSON, once finished
    );
    CREATE INDEX runs_by_start ON runs (started_at);

    CREATE TABLE sent_events (
        run_id         text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        scenario       bytea NOT NULL,
        idx            bigint NOT NULL,
        channel        bytea NOT NULL,
        correlation_id bytea NOT NULL,
        sent_at        bigint NOT NULL,
        sent_mono      bigint NOT NULL,
        size           bigint NOT NULL,
        error          bytea,
        PRIMARY KEY (run_id, scenario, idx)
    );

    CREATE TABLE observation_seq (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        next     bigint NOT NULL
    );
    INSERT INTO observation_seq (next) VALUES (1);

    CREATE TABLE observations (
        seq            bigint PRIMARY KEY,
        run_id         text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        channel        bytea NOT NULL,
        correlation_id bytea,
        payload        bytea NOT NULL,
        payload_size   bigint NOT NULL,
        truncated      boolean NOT NULL,
        is_json        boolean NOT NULL,
        headers        text NOT NULL,
        message_id     bytea,
        key            bytea,
        meta           text NOT NULL,
        received_at    bigint NOT NULL,
        received_mono  bigint
    );
    CREATE INDEX observations_by_run ON observations (run_id, seq);

    CREATE TABLE scenario_results (
        id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        name   bytea NOT NULL,
        result text NOT NULL, -- the ScenarioResult as JSON
        UNIQUE (run_id, name)
    );
    ",
    // 2: load runs' parts, per worker (`joined`, each `interval`, `finished`).
    "
    CREATE TABLE load_parts (
        run_id text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        worker integer NOT NULL,
        kind   text NOT NULL,
        idx    bigint NOT NULL,
        body   text NOT NULL,
        PRIMARY KEY (run_id, worker, kind, idx)
    );
    ",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock that serialises migrations of one schema (its name's hash, taken
/// inside the migrating transaction and released by its commit).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('roundtrip migrate ' || $1))";

/// Why a database could not be used as a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Written by a newer roundtrip.
    #[error(
        "store schema version {found} is newer than this roundtrip supports ({supported}); \
         upgrade roundtrip"
    )]
    TooNew {
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// Older than this build, and the URL said `migrate=false`.
    #[error(
        "store schema version {found} is older than this roundtrip's ({supported}), and the \
         URL says `migrate=false`: run `roundtrip migrate --store URL` first"
    )]
    NotMigrated {
        /// The version found (0: no roundtrip tables yet).
        found: i64,
        /// The version this build writes.
        supported: i64,
    },
    /// The schema holds tables, but not roundtrip's.
    #[error(
        "schema `{0}` holds tables that are not a roundtrip store; nothing was changed \
         (name another with `?schema=`)"
    )]
    Foreign(String),
    /// A statement failed.
    #[error("a statement of the schema check or migration failed")]
    Sql(#[from] tokio_postgres::Error),
}

/// The schema's version (0 when it has no roundtrip tables), refusing a foreign one.
async fn version(client: &Client, schema: &str) -> Result<i64, SchemaError> {
    // One statement, so one snapshot: asked in two, another process's migration could
    // commit in between and its tables look like a foreign schema's.
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                     WHERE table_schema = $1 AND table_name = 'schema_version'),
                 (SELECT count(*) FROM information_schema.tables WHERE table_schema = $1)",
            &[&schema],
        )
        .await?;
    let (has_version, others): (bool, i64) = (row.get(0), row.get(1));
    if has_version {
        let row = client
            .query_opt(
                &format!("SELECT version FROM \"{schema}\".schema_version"),
                &[],
            )
            .await?;
        return Ok(row.map_or(0, |r| r.get::<_, i64>(0)));
    }
    if others > 0 {
        return Err(SchemaError::Foreign(schema.to_owned()));
    }
    Ok(0)
}

/// Brings `schema` up to [`SCHEMA_VERSION`] (or, without `apply`, checks that it is);
/// returns the version it was at.
pub(super) async fn migrate(
    client: &mut Client,
    schema: &str,
    apply: bool,
) -> Result<i64, SchemaError> {
    let found = version(client, schema).await?;
    if found > SCHEMA_VERSION {
        return Err(SchemaError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    if !apply {
        return Err(SchemaError::NotMigrated {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let tx = client.transaction().await?;
    tx.execute(MIGRATION_LOCK, &[&schema]).await?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await?;
    tx.batch_execute(&format!("SET LOCAL search_path TO \"{schema}\""))
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")
        .await?;
    // Another process may have migrated while this one waited for the lock.
    let now = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await?
        .map_or(0, |r| r.get::<_, i64>(0));
    if now > SCHEMA_VERSION {
        return Err(SchemaError::TooNew {
            found: now,
            supported: SCHEMA_VERSION,
        });
    }
    for step in &MIGRATIONS[usize::try_from(now).unwrap_or(0)..] {
        tx.batch_execute(step).await?;
    }
    tx.execute("DELETE FROM schema_version", &[]).await?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await?;
    tx.commit().await?;
    Ok(found)
}
