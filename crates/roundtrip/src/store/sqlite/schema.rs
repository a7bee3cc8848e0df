//! The SQLite schema: connection settings and versioned migrations.
//!
//! The schema version lives in `PRAGMA user_version`; [`MIGRATIONS`] is the ordered list
//! of steps, migration `i` (0-based) taking the schema from version `i` to `i + 1`. They
//! are applied at open, in one `BEGIN IMMEDIATE` transaction, so two processes opening
//! the same new file do not both migrate it. A store written by a newer roundtrip (a
//! higher version than [`SCHEMA_VERSION`]) is refused rather than misread.
//!
//! ## Keys, chosen for the write path
//! - `observations` is keyed by `seq INTEGER PRIMARY KEY` (the rowid): inserts append to
//!   the right edge of the table's B-tree. Its only secondary index is `(run_id, seq)`;
//!   run ids are UUIDv7 (time-ordered), so that index is append-mostly as well. There is
//!   deliberately no index on correlation ids: they are random (UUIDv4), an index on them
//!   rewrites a random page per row (≈10× slower ingest), and nothing needs it — the
//!   engine matches in memory from the feed and reports scan one run.
//! - Rows are never deleted, so `seq` (the rowid, without `AUTOINCREMENT`) is strictly
//!   increasing. Anything that deletes observations in future must keep the highest row
//!   or switch to `AUTOINCREMENT`, or sequence numbers could be handed out twice.
//! - Payloads are BLOBs (exact bytes, possibly empty); headers are JSON text
//!   (`[["name","value"],…]`); scenario results and run summaries are JSON documents.

use std::time::Duration;

use rusqlite::Connection;

/// Marks a file as a roundtrip store (`PRAGMA application_id`, "RTRP").
pub(super) const APPLICATION_ID: i32 = 0x5254_5250;

/// The ordered migrations; the schema version is the number applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY NOT NULL,
        suite       TEXT NOT NULL,
        suite_path  TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        status      TEXT NOT NULL,
        summary     TEXT -- the RunSummary as JSON, once finished
    );
    CREATE INDEX runs_by_start ON runs (started_at);

    CREATE TABLE sent_events (
        run_id         TEXT NOT NULL REFERENCES runs (run_id),
        scenario       TEXT NOT NULL,
        idx            INTEGER NOT NULL,
        channel        TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        sent_at        INTEGER NOT NULL,
        sent_mono      INTEGER NOT NULL,
        size           INTEGER NOT NULL,
        error          TEXT,
        PRIMARY KEY (run_id, scenario, idx)
    ) WITHOUT ROWID;

    CREATE TABLE observations (
        seq            INTEGER PRIMARY KEY,
        run_id         TEXT NOT NULL REFERENCES runs (run_id),
        channel        TEXT NOT NULL,
        correlation_id TEXT,
        payload        BLOB NOT NULL,
        payload_size   INTEGER NOT NULL,
        truncated      INTEGER NOT NULL,
        is_json        INTEGER NOT NULL,
        headers        TEXT NOT NULL,
        message_id     TEXT,
        key            TEXT,
        received_at    INTEGER NOT NULL,
        received_mono  INTEGER
    );
    CREATE INDEX observations_by_run ON observations (run_id, seq);

    CREATE TABLE scenario_results (
        id     INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (run_id),
        name   TEXT NOT NULL,
        result TEXT NOT NULL, -- the ScenarioResult as JSON
        UNIQUE (run_id, name)
    );
    ",
    // 2: each observation's transport metadata (`[[\"topic\",\"out/1\"],…]`).
    "ALTER TABLE observations ADD COLUMN meta TEXT NOT NULL DEFAULT '[]';",
    // 3: the process that runs each run (`roundtrip runs` tells a dead run from a live one).
    "ALTER TABLE runs ADD COLUMN owner TEXT;",
    // 4: load runs' parts, per worker (`joined`, each `interval`, `finished`).
    "
    CREATE TABLE load_parts (
        run_id TEXT NOT NULL REFERENCES runs (run_id),
        worker INTEGER NOT NULL,
        kind   TEXT NOT NULL,
        idx    INTEGER NOT NULL,
        body   TEXT NOT NULL,
        PRIMARY KEY (run_id, worker, kind, idx)
    ) WITHOUT ROWID;
    ",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why a file could not be used as a store (the source of [`StoreError::Open`]).
///
/// [`StoreError::Open`]: crate::store::StoreError::Open
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file was written by a newer roundtrip.
    #[error(
        "store schema version {found} is newer than this roundtrip supports ({supported}); \
         upgrade roundtrip"
    )]
    TooNew {
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The file is an SQLite database that some other program owns.
    #[error(
        "the file is an SQLite database, but not a roundtrip store; it was not changed \
         (give `--store` a new path)"
    )]
    Foreign,
    /// SQLite's integrity check found damage.
    #[error(
        "the store is damaged (SQLite's integrity check: {0}); nothing was written to it: \
         keep it for inspection and give `--store` a new path"
    )]
    Corrupt(String),
    /// A step of the schema setup failed.
    #[error("{step}")]
    Sqlite {
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(rusqlite::Error) -> SchemaError {
    move |source| SchemaError::Sqlite { step, source }
}

/// Settings every connection gets.
pub(super) fn configure_common(conn: &Connection, busy: Duration) -> Result<(), SchemaError> {
    conn.busy_timeout(busy)
        .map_err(step("set the busy timeout"))?;
    // The writer caches its few statements; readers a few more.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Checks, before anything is written, that the file is empty or a roundtrip store of a
/// version this build reads, and (for a store that has data) that SQLite's quick
/// integrity check passes. A foreign database is refused unchanged: it is not switched
/// to WAL, nor marked.
pub(super) fn inspect(conn: &Connection) -> Result<(), SchemaError> {
    let pragma = |name: &'static str| {
        conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0))
            .map_err(step("read the store's header"))
    };
    let application_id = pragma("application_id")?;
    let version = pragma("user_version")?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(step("inspect the database"))?;
    if application_id != i64::from(APPLICATION_ID) {
        if application_id != 0 || tables > 0 || version != 0 {
            return Err(SchemaError::Foreign);
        }
        return Ok(()); // a new, empty file
    }
    if version > SCHEMA_VERSION {
        return Err(SchemaError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(step("check the store's integrity"))?;
    if verdict != "ok" {
        return Err(SchemaError::Corrupt(verdict));
    }
    Ok(())
}

/// Settings of the writing connection: WAL (file stores), durability, foreign keys.
pub(super) fn configure_writer(
    conn: &Connection,
    busy: Duration,
    synchronous: &str,
    file: bool,
) -> Result<(), SchemaError> {
    configure_common(conn, busy)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(step("enable foreign keys"))?;
    if file {
        // Readers on other connections then never block the writer, nor it them.
        conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get::<_, String>(0))
            .map_err(step("enable the write-ahead log"))?;
    }
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(step("set the synchronous mode"))?;
    conn.pragma_update(None, "temp_store", "memory")
        .map_err(step("set the temp store"))?;
    Ok(())
}

/// Brings the schema up to [`SCHEMA_VERSION`], or refuses a newer or foreign file.
pub(super) fn migrate(conn: &Connection) -> Result<(), SchemaError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(step("begin the schema transaction"))?;
    match migrate_in_transaction(conn) {
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(step("commit the schema migrations")),
        Err(e) => {
            // Rolling back can only fail if SQLite already did; the first error matters.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn migrate_in_transaction(conn: &Connection) -> Result<(), SchemaError> {
    let pragma = |name: &'static str| {
        conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0))
            .map_err(step("read the schema version"))
    };
    let version = pragma("user_version")?;
    let application_id = pragma("application_id")?;
    // Whose file it is comes first: another program's `user_version` means nothing here.
    if application_id != i64::from(APPLICATION_ID) {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(step("inspect the database"))?;
        if application_id != 0 || tables > 0 || version != 0 {
            return Err(SchemaError::Foreign);
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(step("mark the file as a roundtrip store"))?;
    }
    if version > SCHEMA_VERSION {
        return Err(SchemaError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let start = usize::try_from(version).unwrap_or(0);
    for sql in &MIGRATIONS[start..] {
        conn.execute_batch(sql)
            .map_err(step("apply a schema migration"))?;
    }
    if start < MIGRATIONS.len() {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(step("record the schema version"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_new_database_once() {
        let conn = Connection::open_in_memory().expect("open");
        migrate(&conn).expect("first migration");
        migrate(&conn).expect("a second open is a no-op");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_1_store_migrates_and_keeps_its_observations() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(MIGRATIONS[0])
            .expect("the version 1 schema");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .expect("marker");
        conn.execute_batch(
            "INSERT INTO runs VALUES ('r', 's', 'p', 0, NULL, 'running', NULL);
             INSERT INTO observations (run_id, channel, payload, payload_size, truncated,
                 is_json, headers, received_at) VALUES ('r', 'c', x'00', 1, 0, 0, '[]', 0);",
        )
        .expect("a version 1 row");
        migrate(&conn).expect("migrate to the current version");
        let meta: String = conn
            .query_row("SELECT meta FROM observations", [], |r| r.get(0))
            .expect("the new column");
        assert_eq!(meta, "[]");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let conn = Connection::open_in_memory().expect("open");
        migrate(&conn).expect("migrate");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        let err = migrate(&conn).expect_err("newer schema");
        assert!(matches!(err, SchemaError::TooNew { found, .. } if found == SCHEMA_VERSION + 1));
    }

    #[test]
    fn refuses_a_foreign_database() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (x)").expect("table");
        assert!(matches!(migrate(&conn), Err(SchemaError::Foreign)));
        assert!(matches!(inspect(&conn), Err(SchemaError::Foreign)));
        // Another program's version number is not ours to judge.
        let conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "user_version", 42)
            .expect("version");
        assert!(matches!(inspect(&conn), Err(SchemaError::Foreign)));
        assert!(matches!(migrate(&conn), Err(SchemaError::Foreign)));
    }
}
