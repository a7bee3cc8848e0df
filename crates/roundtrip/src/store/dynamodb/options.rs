//! The store's URL: `dynamodb://TABLE?region=…&endpoint=…&ttl=30d&create=true`.

use std::time::Duration;

/// Items expire this long after they were written, unless the URL says `ttl=…`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Settings of a [`DynamoStore`](super::DynamoStore), parsed from a `dynamodb://` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamoOptions {
    /// The table.
    pub table: String,
    /// The region (default: the standard configuration).
    pub region: Option<String>,
    /// The endpoint URL, for an emulator (default: the standard configuration).
    pub endpoint: Option<String>,
    /// How long items live before DynamoDB's TTL removes them.
    pub ttl: Duration,
    /// Create the table (on-demand billing, TTL on) when it does not exist.
    pub create: bool,
    /// How many observations a subscriber may fall behind before it lags.
    pub feed_capacity: usize,
}

impl DynamoOptions {
    /// Parses `dynamodb://TABLE?region=R&endpoint=URL&ttl=30d&create=false`.
    pub fn from_url(url: &str) -> Result<DynamoOptions, String> {
        let rest = url
            .strip_prefix("dynamodb://")
            .ok_or("a DynamoDB store URL starts with `dynamodb://`")?;
        let (table, query) = rest.split_once('?').unwrap_or((rest, ""));
        let table = table.trim_end_matches('/');
        if table.len() < 3
            || table.len() > 255
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "`{table}` is not a DynamoDB table name (3–255 of A–Z, a–z, 0–9, `_`, `-`, \
                 `.`); write it like `dynamodb://roundtrip-results`"
            ));
        }
        let mut options = DynamoOptions {
            table: table.to_owned(),
            region: None,
            endpoint: None,
            ttl: DEFAULT_TTL,
            create: true,
            feed_capacity: 16_384,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "region" => options.region = Some(value.to_owned()),
                "endpoint" => options.endpoint = Some(value.to_owned()),
                "ttl" => {
                    options.ttl = humantime::parse_duration(value).map_err(|e| {
                        format!("`ttl={value}` is not a duration ({e}); write e.g. `ttl=30d`")
                    })?;
                }
                "create" => {
                    options.create = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("`create={value}` must be `true` or `false`")),
                    };
                }
                _ => {
                    return Err(format!(
                        "unknown store URL parameter `{key}`; the parameters are `region`, \
                         `endpoint`, `ttl` and `create`"
                    ));
                }
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_table_and_options() {
        let o = DynamoOptions::from_url(
            "dynamodb://roundtrip-results?region=eu-west-1&endpoint=http://127.0.0.1:5055&ttl=7d&create=false",
        )
        .expect("parses");
        assert_eq!(o.table, "roundtrip-results");
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:5055"));
        assert_eq!(o.ttl, Duration::from_secs(7 * 24 * 3600));
        assert!(!o.create);
        let plain = DynamoOptions::from_url("dynamodb://results").expect("parses");
        assert_eq!((plain.ttl, plain.create), (DEFAULT_TTL, true));
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        let err = |url: &str| DynamoOptions::from_url(url).expect_err(url);
        assert!(err("dynamodb://a b").contains("not a DynamoDB table name"));
        assert!(err("dynamodb://tbl?ttl=forever").contains("write e.g. `ttl=30d`"));
        assert!(err("dynamodb://tbl?colour=red").contains("unknown store URL parameter `colour`"));
        assert!(err("dynamodb://tbl?create=yes").contains("`true` or `false`"));
    }
}
