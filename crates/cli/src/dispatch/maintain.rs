//! `roundtrip migrate` and `roundtrip gc`: the store's upkeep, as steps of their own.

use super::store_failed;
use crate::args::{GcArgs, MigrateArgs};
use crate::display::out;
use crate::exit;
use roundtrip_core::escape::escape;

/// The store's schema brought up to date. SQLite migrates at open, so opening it is the
/// whole step; a DynamoDB table has no schema to migrate.
pub async fn migrate(args: MigrateArgs) -> u8 {
    let url = args.store.store.as_str();
    #[cfg(feature = "postgres")]
    if roundtrip::store::is_postgres_url(url) {
        use roundtrip::store::postgres::{PostgresOptions, SCHEMA_VERSION, migrate};
        let options = match PostgresOptions::from_url(url) {
            Ok(o) => o,
            Err(message) => {
                return store_failed(&roundtrip::store::StoreError::invalid(url, message));
            }
        };
        return match migrate(&options).await {
            Ok(from) if from == SCHEMA_VERSION => {
                out(&format!(
                    "{}: schema version {SCHEMA_VERSION}, up to date",
                    escape(&options.location)
                ));
                exit::OK
            }
            Ok(from) => {
                out(&format!(
                    "{}: migrated from schema version {from} to {SCHEMA_VERSION}",
                    escape(&options.location)
                ));
                exit::OK
            }
            Err(e) => store_failed(&e),
        };
    }
    match roundtrip::store::open(url).await {
        Ok(store) => {
            if let Err(e) = store.close().await {
                return store_failed(&e);
            }
            out(&format!(
                "{}: up to date",
                escape(&roundtrip_core::redact::url(url))
            ));
            exit::OK
        }
        Err(e) => store_failed(&e),
    }
}

/// Old runs deleted (Postgres only).
pub async fn gc(args: GcArgs) -> u8 {
    let url = args.store.store.as_str();
    let is_postgres = roundtrip::store::is_postgres_url(url);
    if !is_postgres {
        eprintln!(
            "error: `roundtrip gc` deletes old runs from a Postgres store; an SQLite store is \
             a file (delete it, or start a new one with `--store`), and DynamoDB expires \
             items itself (`ttl=` in its URL)"
        );
        return exit::USAGE;
    }
    #[cfg(feature = "postgres")]
    {
        use roundtrip::store::postgres::{PostgresOptions, gc};
        let options = match PostgresOptions::from_url(url) {
            Ok(o) => o,
            Err(message) => {
                return store_failed(&roundtrip::store::StoreError::invalid(url, message));
            }
        };
        match gc(&options, args.older_than).await {
            Ok(deleted) => {
                out(&format!(
                    "{}: deleted {} run(s) older than {} and their {} observation(s)",
                    escape(&options.location),
                    deleted.runs,
                    humantime::format_duration(args.older_than),
                    deleted.observations
                ));
                exit::OK
            }
            Err(e) => store_failed(&e),
        }
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = args.older_than;
        eprintln!(
            "error: the `postgres` store backend is not compiled into this build of \
             roundtrip; rebuild with `--features postgres`"
        );
        exit::USAGE
    }
}
