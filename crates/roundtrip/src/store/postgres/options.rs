//! The store's URL: `postgres://USER:PASSWORD@HOST:PORT/DATABASE?schema=roundtrip&…`.
//!
//! Everything but roundtrip's own parameters (`schema`, `pool`, `migrate`, `max_batch`,
//! `listen`, `poll`) and the TLS ones (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`:
//! see [`Tls`](super::Tls)) goes to the driver as it is (`connect_timeout`,
//! `application_name`, …: the libpq names that tokio-postgres understands). The password never reaches a message:
//! [`PostgresOptions::location`] is the URL with it masked.

use std::str::FromStr;

/// Settings of a [`PostgresStore`](super::PostgresStore), parsed from its URL.
#[derive(Clone)]
pub struct PostgresOptions {
    /// The connection settings for the driver.
    pub config: tokio_postgres::Config,
    /// The schema that holds roundtrip's tables (default `roundtrip`), so a shared
    /// database keeps them apart from everything else.
    pub schema: String,
    /// Read connections kept open (default 4); the writer has one of its own.
    pub pool: usize,
    /// Bring the schema up to date at open (default). With `migrate=false` the store
    /// refuses a schema that is not current: `roundtrip migrate` updates it, as its own
    /// step, before any service or runner opens it.
    pub migrate: bool,
    /// The most writes committed in one transaction (default 4096).
    pub max_batch: usize,
    /// How many observations a subscriber may fall behind before it lags (default
    /// 16384).
    pub feed_capacity: usize,
    /// Wake up on other processes' commits with LISTEN/NOTIFY (default). Off
    /// (`listen=false`) where LISTEN cannot work (it silently receives nothing through a
    /// transaction-pooling PgBouncer): the feed then polls every `poll`.
    pub listen: bool,
    /// How often the feed reads other processes' commits without a wake-up (default 1 s;
    /// a safety net while listening, the only way in when not).
    pub poll: std::time::Duration,
    /// TLS to the server (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`).
    pub tls: super::tls::Tls,
    /// The URL, password masked, for messages.
    pub location: String,
    /// For tests of commit ordering only (never set from a URL): the writer holds each
    /// transaction open for a random time in this range, once right after it begins
    /// and once more after its inserts, before it commits.
    #[doc(hidden)]
    pub hold_in_transaction: Option<(std::time::Duration, std::time::Duration)>,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the driver's config: it holds the password.
        f.debug_struct("PostgresOptions")
            .field("location", &self.location)
            .field("schema", &self.schema)
            .field("pool", &self.pool)
            .field("migrate", &self.migrate)
            .field("max_batch", &self.max_batch)
            .field("feed_capacity", &self.feed_capacity)
            .field("listen", &self.listen)
            .field("poll", &self.poll)
            .field("tls", &self.tls.mode())
            .finish()
    }
}

/// roundtrip's own URL parameters.
const OWN: &[&str] = &["schema", "pool", "migrate", "max_batch", "listen", "poll"];

impl PostgresOptions {
    /// Parses `postgres://…` or `postgresql://…`.
    pub fn from_url(url: &str) -> Result<PostgresOptions, String> {
        // Not echoed when it does not parse: a password with an unencoded `?`, `/` or
        // `#` would defeat the masking.
        let parsed = url::Url::parse(url).map_err(|e| {
            format!(
                "the store URL is not a valid URL ({e}); write it like \
                 `postgres://USER:PASSWORD@HOST:5432/DATABASE`, with `?`, `/`, `#` and `@` \
                 in the password percent-encoded (`%3F`, `%2F`, `%23`, `%40`)"
            )
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "a Postgres store URL starts with `postgres://`, not `{}://`",
                parsed.scheme()
            ));
        }
        let location = roundtrip_core::redact::url(url);
        let mut options = PostgresOptions {
            config: tokio_postgres::Config::new(),
            schema: "roundtrip".to_owned(),
            pool: 4,
            migrate: true,
            max_batch: 4096,
            feed_capacity: 16_384,
            listen: true,
            poll: std::time::Duration::from_secs(1),
            tls: super::tls::Tls::default(),
            location,
            hold_in_transaction: None,
        };
        // The driver's parameters are passed on exactly as written (re-encoding would
        // turn a space into a `+` that the driver does not decode).
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut passed = Vec::new();
        let mut tls = super::tls::TlsParams::default();
        for segment in query.split('&').filter(|s| !s.is_empty()) {
            let Some((key, value)) = url::form_urlencoded::parse(segment.as_bytes()).next() else {
                continue;
            };
            match key.as_ref() {
                "schema" => options.schema = schema_name(&value)?,
                "pool" => options.pool = number(&key, &value, 1, 64)?,
                "max_batch" => options.max_batch = number(&key, &value, 1, 100_000)?,
                "migrate" => options.migrate = boolean(&key, &value)?,
                "listen" => options.listen = boolean(&key, &value)?,
                "poll" => options.poll = poll(&value)?,
                key if tls.take(key, &value)? => {}
                _ => passed.push(segment),
            }
        }
        let driver = if passed.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        // The driver ends the user and password at the first `@`, so a password with an
        // unencoded `@` would send the rest of it to DNS as part of the host name.
        if let Some((_, rest)) = base.split_once("://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.matches('@').count() > 1 {
                return Err(format!(
                    "`{}` has more than one `@` before its host: write an `@` in the user \
                     name or password as `%40`",
                    options.location
                ));
            }
        }
        options.config = tokio_postgres::Config::from_str(&driver).map_err(|e| {
            format!(
                "`{}` is not a Postgres connection URL: {} (roundtrip's own parameters are \
                 {}; the others are libpq's, such as `connect_timeout`)",
                options.location,
                crate::error::error_chain(&e),
                OWN.iter()
                    .chain(super::tls::TlsParams::NAMES)
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        options.tls = tls.build()?;
        options.config.ssl_mode(options.tls.mode().driver());
        if options.config.get_hosts().is_empty() {
            options.config.host("127.0.0.1");
        }
        // A server offers no TLS over a Unix socket: there, as in libpq, `sslmode` does
        // not apply (`require` would otherwise refuse every local connection).
        #[cfg(unix)]
        if options
            .config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)))
        {
            options
                .config
                .ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        if options.config.get_connect_timeout().is_none() {
            options
                .config
                .connect_timeout(std::time::Duration::from_secs(10));
        }
        if options.config.get_application_name().is_none() {
            options.config.application_name("roundtrip");
        }
        Ok(options)
    }
}

impl PostgresOptions {
    /// Checks what the URL parser checks, for options built in code: the schema name
    /// (it is written into SQL), the pool size and the poll interval.
    pub fn validate(&self) -> Result<(), String> {
        schema_name(&self.schema)?;
        if self.pool == 0 {
            return Err("the read pool needs at least 1 connection (`pool=1`)".to_owned());
        }
        if self.poll < std::time::Duration::from_millis(10) {
            return Err("`poll` must be at least 10ms".to_owned());
        }
        if self.max_batch == 0 {
            return Err("`max_batch` must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// A schema name roundtrip accepts: lowercase ASCII letters, digits and `_`, starting
/// with a letter, at most 63 bytes (Postgres' identifier limit), not `pg_…` (reserved for
/// the system). It is still written quoted, so a keyword (`user`) works too.
fn schema_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.starts_with("pg_")
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`schema={value}` is not a schema name roundtrip uses: lowercase letters, digits \
             and `_`, starting with a letter but not `pg_`, at most 63 (e.g. \
             `schema=roundtrip`)"
        ))
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{key}={value}` must be `true` or `false`")),
    }
}

fn poll(value: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    humantime::parse_duration(value)
        .ok()
        .filter(|d| (Duration::from_millis(10)..=Duration::from_secs(3600)).contains(d))
        .ok_or_else(|| {
            format!("`poll={value}` must be a duration from 10ms to 1h, e.g. `poll=250ms`")
        })
}

fn number(key: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("`{key}={value}` must be a number from {min} to {max}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_connection_and_roundtrip_s_parameters() {
        let o = PostgresOptions::from_url(
            "postgres://rt:s3cret@db.internal:6543/results?schema=ci_runs&pool=8&migrate=false&sslmode=require&max_batch=500&listen=false&poll=250ms",
        )
        .expect("parses");
        assert_eq!(o.schema, "ci_runs");
        assert_eq!((o.pool, o.migrate, o.max_batch), (8, false, 500));
        assert_eq!(
            (o.listen, o.poll),
            (false, std::time::Duration::from_millis(250))
        );
        assert_eq!(o.config.get_dbname(), Some("results"));
        assert_eq!(o.config.get_user(), Some("rt"));
        assert_eq!(o.config.get_ports(), [6543]);
        assert_eq!(
            o.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(o.tls.mode(), super::super::SslMode::Require);
        assert!(!o.location.contains("s3cret"), "{}", o.location);
        assert!(!format!("{o:?}").contains("s3cret"));
        let plain =
            PostgresOptions::from_url("postgresql://postgres@127.0.0.1/test").expect("parses");
        assert_eq!(
            (plain.schema.as_str(), plain.pool, plain.migrate),
            ("roundtrip", 4, true)
        );
    }

    #[test]
    fn an_unencoded_at_in_a_password_is_refused_without_showing_it() {
        let err = PostgresOptions::from_url("postgres://rt:hun@ter2@127.0.0.1:5432/test")
            .expect_err("two @");
        assert!(
            err.contains("write an `@` in the user name or password as `%40`"),
            "{err}"
        );
        assert!(!err.contains("ter2") && !err.contains("hun@"), "{err}");
        PostgresOptions::from_url("postgres://rt:hun%40ter2@127.0.0.1:5432/test")
            .expect("an encoded @");
    }

    #[test]
    fn a_unix_socket_takes_no_tls() {
        let local = PostgresOptions::from_url(
            "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test?sslmode=require",
        )
        .expect("parses");
        assert_eq!(
            local.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        // One TCP host among them: TLS as the URL says.
        let mixed = PostgresOptions::from_url(
            "postgres://postgres@%2Fvar%2Frun%2Fpostgresql,db.internal/test?sslmode=require",
        )
        .expect("parses");
        assert_eq!(
            mixed.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        let err = |url: &str| PostgresOptions::from_url(url).expect_err(url);
        assert!(err("postgres://h/db?schema=Robert%27);--").contains("not a schema name"));
        assert!(err("postgres://h/db?pool=0").contains("from 1 to 64"));
        assert!(err("postgres://h/db?migrate=yes").contains("`true` or `false`"));
        assert!(err("postgres://h/db?poll=1ms").contains("from 10ms to 1h"));
        assert!(err("postgres://h/db?sslmode=verify-full").contains("`sslrootcert=PATH`"));
        assert!(err("postgres://h/db?sslmode=on").contains("not a mode"));
        let broken = err("postgres://rt:pa?ss/wd#@db/x");
        assert!(!broken.contains("ss/wd"), "{broken}");
        assert!(broken.contains("percent-encoded"), "{broken}");
        let o = PostgresOptions::from_url("postgres://h/db?application_name=my%20app&schema=s1")
            .expect("parses");
        assert_eq!(o.config.get_application_name(), Some("my app"));
        assert_eq!(o.schema, "s1");
        let unknown = err("postgres://u:hunter2@h/db?colour=red");
        assert!(
            unknown.contains("roundtrip's own parameters are `schema`"),
            "{unknown}"
        );
        assert!(!unknown.contains("hunter2"), "{unknown}");
    }
}
