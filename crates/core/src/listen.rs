//! Loading a listener service's config (`roundtrip listen CONFIG`), with the same
//! diagnostics as suite files: YAML → [`ListenConfig`], `env(…)` rendered in its channels
//! and store URL, then its semantic checks (channels as a suite checks them, the API
//! address and token variables, the run rule).
//!
//! ```
//! let err = roundtrip_core::listen::parse(
//!     "listen.yaml",
//!     "name: staging\napi: { listen: '0.0.0.0:7070' }\nchannels:\n  out: { webhook: { listen: '0.0.0.0:0' } }\n",
//! )
//! .expect_err("an unguarded public API");
//! assert!(err.to_string().contains("no token guards it"));
//! ```

use std::path::{Path, PathBuf};

use crate::model::listen::ListenConfig;
use crate::suite::{Document, SuiteError, decode_document, env, read_document, validate};
use crate::vars::Vars;

/// A loaded, validated listener config and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedListenConfig {
    /// The config.
    pub config: ListenConfig,
    /// The file it was read from, as given.
    pub path: PathBuf,
    /// The directory relative paths (`dir` channels) are resolved against.
    pub base_dir: PathBuf,
}

/// Reads, parses and validates the config at `path`, `env(…)` read from `vars`.
pub fn load_with(path: &Path, vars: &Vars) -> Result<LoadedListenConfig, SuiteError> {
    let text = read_document(path, Document::ListenConfig)?;
    let config = parse_with(&path.display().to_string(), &text, vars)?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(LoadedListenConfig {
        config,
        path: path.to_path_buf(),
        base_dir,
    })
}

/// Parses and validates config text, `env(…)` read from the process environment.
pub fn parse(source_name: &str, text: &str) -> Result<ListenConfig, SuiteError> {
    parse_with(source_name, text, &Vars::from_process())
}

/// [`parse`], with `env(…)` read from `vars`.
pub fn parse_with(source_name: &str, text: &str, vars: &Vars) -> Result<ListenConfig, SuiteError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut config, index) =
        decode_document::<ListenConfig>(Document::ListenConfig, source_name, text)?;
    let locator = validate::Locator::new(source_name, text, &index);
    let mut diagnostics = env::render_listen(&mut config, vars, &locator);
    diagnostics.extend(validate::validate_listen(&config, &locator));
    if diagnostics.is_empty() {
        Ok(config)
    } else {
        Err(SuiteError::from_diagnostics(diagnostics))
    }
}

/// The JSON Schema of the listener config format (`schema/listen.schema.json`).
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(ListenConfig).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "\
name: staging
api:
  listen: 127.0.0.1:0
channels:
  out: { webhook: { listen: '127.0.0.1:0', path: /hook } }
";

    fn messages(text: &str) -> Vec<String> {
        parse_with("l.yaml", text, &Vars::default())
            .expect_err("invalid")
            .diagnostics
            .into_iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect()
    }

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let config = parse_with("l.yaml", VALID, &Vars::default()).expect("valid");
        assert_eq!(config.run.header.as_deref(), Some("x-roundtrip-run"));
        assert_eq!(config.record, crate::model::listen::RecordPolicy::All);
        assert!(config.channels.contains_key("out"));
    }

    #[test]
    fn a_misspelt_key_is_located_and_named_in_the_config() {
        let err = parse_with("l.yaml", &VALID.replace("api:", "apii:"), &Vars::default())
            .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.contains("unknown key `apii` in the listener config"),
            "{text}"
        );
        assert!(text.contains("l.yaml:2:1"), "{text}");
    }

    #[test]
    fn an_empty_file_says_what_a_config_needs() {
        let text = parse_with("l.yaml", "", &Vars::default())
            .expect_err("empty")
            .to_string();
        assert!(text.contains("the listener config file is empty"), "{text}");
        assert!(text.contains("schema/listen.schema.json"), "{text}");
    }

    #[test]
    fn a_public_api_needs_a_token() {
        let public = VALID.replace("listen: 127.0.0.1:0\n", "listen: 0.0.0.0:7070\n");
        assert_eq!(
            messages(&public),
            ["3:11 the API listens on `0.0.0.0:7070`, beyond this host, and no token guards it"]
        );
        let guarded = public.replace(
            "listen: 0.0.0.0:7070\n",
            "listen: 0.0.0.0:7070\n  tokens: { read: [RT_READ] }\n",
        );
        parse_with("l.yaml", &guarded, &Vars::default()).expect("a guarded public API");
    }

    #[test]
    fn token_sources_are_variable_names_named_once() {
        let text = VALID.replace(
            "listen: 127.0.0.1:0\n",
            "listen: 127.0.0.1:0\n  tokens: { read: [RT_A, 's3cr3t-token'], admin: [RT_A] }\n",
        );
        assert_eq!(
            messages(&text),
            [
                "4:26 `s3cr3t-token` is not an environment variable's name",
                "4:51 `RT_A` is named twice (under `read` and `admin`)",
            ]
        );
    }

    #[test]
    fn the_api_address_is_an_ip_and_port() {
        assert_eq!(
            messages(&VALID.replace("listen: 127.0.0.1:0\n", "listen: localhost:7070\n")),
            ["3:11 `api.listen` must be an IP address and port, not `localhost:7070`"]
        );
    }

    #[test]
    fn channels_are_checked_as_in_a_suite_and_must_be_listenable() {
        let text = VALID.replace(
            "  out: { webhook: { listen: '127.0.0.1:0', path: /hook } }\n",
            "  in: { http: { url: 'http://x' } }\n  out: { webhook: { listen: '127.0.0.1:0', path: 'a b' } }\n",
        );
        let found = messages(&text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("which roundtrip only sends to"),
            "{found:?}"
        );
        assert!(found[1].starts_with("6:"), "{found:?}");
    }

    #[test]
    fn a_headerless_channel_needs_a_run_field() {
        let text = VALID.replace(
            "  out: { webhook: { listen: '127.0.0.1:0', path: /hook } }\n",
            "  out: { dir: { path: out } }\n",
        );
        assert!(messages(&text)[0].contains("the run id cannot travel in one"));
        let by_field = text.replace(
            "channels:",
            "run: { json: $.run }\ncorrelate: { json: $.id }\nchannels:",
        );
        parse_with("l.yaml", &by_field, &Vars::default()).expect("a run field");
    }

    #[test]
    fn api_tls_names_both_files() {
        let with = |tls: &str| {
            VALID.replace(
                "listen: 127.0.0.1:0\n",
                &format!("listen: 127.0.0.1:0\n  tls: {tls}\n"),
            )
        };
        let config = parse_with(
            "l.yaml",
            &with("{ cert: c.pem, key: k.pem }"),
            &Vars::default(),
        )
        .expect("both files");
        let tls = config.api.tls.expect("tls");
        assert_eq!((tls.cert.as_str(), tls.key.as_str()), ("c.pem", "k.pem"));
        let found = messages(&with("{ cert: c.pem }"));
        assert!(
            found[0].contains("missing key `key` in `api.tls`"),
            "{found:?}"
        );
        let found = messages(&with("{ cert: '', key: k.pem }"));
        assert!(found[0].contains("`api.tls.cert` is empty"), "{found:?}");
    }

    #[test]
    fn a_webhook_cannot_take_the_api_address() {
        let text = VALID
            .replace("listen: 127.0.0.1:0\n", "listen: 127.0.0.1:7070\n")
            .replace("listen: '127.0.0.1:0'", "listen: '127.0.0.1:7070'");
        assert_eq!(
            messages(&text),
            ["5:29 channel `out` listens on `127.0.0.1:7070`, the API's address"]
        );
    }

    #[test]
    fn the_run_rule_names_exactly_one_valid_source() {
        assert_eq!(
            messages(&VALID.replace("channels:", "run: {}\nchannels:")),
            ["4:1 `run` names no rule"]
        );
        assert!(
            messages(&VALID.replace("channels:", "run: { json: 'run' }\nchannels:"))[0]
                .contains("invalid JSONPath")
        );
    }

    #[test]
    fn env_is_rendered_in_the_store_and_an_unset_variable_is_located() {
        let text = VALID.replace("api:", "store: '{{ env(\"RT_STORE\") }}'\napi:");
        assert_eq!(
            messages(&text),
            ["2:8 environment variable `RT_STORE` is not set"]
        );
        let mut vars = Vars::default();
        vars.set_arg("RT_STORE=sqlite::memory:")
            .expect("a variable");
        let config = parse_with("l.yaml", &text, &vars).expect("rendered");
        assert_eq!(config.store.as_deref(), Some("sqlite::memory:"));
    }

    #[test]
    fn the_schema_describes_the_config() {
        let schema = json_schema();
        assert_eq!(schema["title"], "ListenConfig");
        assert!(schema["$defs"]["ApiConfig"]["properties"]["tokens"].is_object());
    }
}
