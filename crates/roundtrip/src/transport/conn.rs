//! What every broker driver shares: credentials from environment variables, TLS files,
//! timeouts, and redacted endpoints for reports.

use std::path::PathBuf;
use std::time::Duration;

use roundtrip_core::model::{AuthOptions, DurationSpec, TlsOptions};

use super::{DriverContext, PlanError};

/// How long connecting may take when the channel sets no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel's connect timeout, or [`DEFAULT_CONNECT_TIMEOUT`].
pub fn timeout(spec: Option<DurationSpec>) -> Duration {
    spec.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0)
}

/// Credentials read from the environment variables a channel's `auth` names.
///
/// `Debug` prints only which secrets are set, never their values.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// A token.
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Credentials")
            .field("username", &set(&self.username))
            .field("password", &set(&self.password))
            .field("token", &set(&self.token))
            .finish()
    }
}

impl Credentials {
    /// Reads the variables `auth` names; an unset variable is a plan error naming it.
    pub fn from_env(channel: &str, auth: Option<&AuthOptions>) -> Result<Credentials, PlanError> {
        let Some(auth) = auth else {
            return Ok(Credentials::default());
        };
        let read = |key: &str, var: &Option<String>| -> Result<Option<String>, PlanError> {
            let Some(var) = var else { return Ok(None) };
            std::env::var(var)
                .map(Some)
                .map_err(|_| PlanError::Invalid {
                    channel: channel.to_owned(),
                    message: format!(
                        "`auth.{key}` names the environment variable `{var}`, which is not set \
                     (or not UTF-8); export it before running"
                    ),
                })
        };
        Ok(Credentials {
            username: read("username_env", &auth.username_env)?,
            password: read("password_env", &auth.password_env)?,
            token: read("token_env", &auth.token_env)?,
        })
    }
}

/// TLS files resolved against the suite's directory, checked to exist at plan time.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA bundle.
    pub ca: Option<PathBuf>,
    /// The client certificate and its key.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// Resolves and checks the files `tls` names.
    pub fn resolve(
        channel: &str,
        tls: Option<&TlsOptions>,
        ctx: &DriverContext,
    ) -> Result<Option<TlsFiles>, PlanError> {
        let Some(tls) = tls else { return Ok(None) };
        let file = |key: &str, path: &Option<String>| -> Result<Option<PathBuf>, PlanError> {
            let Some(path) = path else { return Ok(None) };
            let resolved = ctx.base_dir.join(path);
            if resolved.is_file() {
                Ok(Some(resolved))
            } else {
                Err(PlanError::Invalid {
                    channel: channel.to_owned(),
                    message: format!(
                        "`tls.{key}` names `{}`, which is not a readable file (paths are \
                         relative to the suite file)",
                        resolved.display()
                    ),
                })
            }
        };
        let ca = file("ca", &tls.ca)?;
        let client = match (file("cert", &tls.cert)?, file("key", &tls.key)?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        };
        Ok(Some(TlsFiles { ca, client }))
    }
}

/// A URL (or a comma-separated list of them) without secrets, for endpoints shown in
/// logs and reports: a password becomes `***`, user info without a password (a token)
/// becomes `***`, and a query string (where some clients take credentials) is dropped.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(roundtrip_core::redact::url)
        .collect::<Vec<_>>()
        .join(",")
}

/// Selects rustls' crypto provider for the process (aws-lc-rs), once. The broker
/// clients link rustls with more than one provider compiled in, and rustls then refuses
/// to guess: without this, the first TLS connection panics.
pub fn ensure_crypto_provider() {
    #[cfg(feature = "_rustls")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err means another part of the process installed one first: fine.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        });
    }
}

/// The headers a produced message carries, plus its content type.
pub fn headers_with_content_type(
    headers: &[(String, String)],
    content_type: &str,
) -> Vec<(String, String)> {
    let mut all = headers.to_vec();
    if !all
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        all.push(("content-type".to_owned(), content_type.to_owned()));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("127.0.0.1:9092"), "127.0.0.1:9092");
        assert_eq!(redact("nats://s3cr3t-token@h:4222"), "nats://***@h:4222");
        assert_eq!(
            redact("nats://u:p1@a:4222,nats://u:p2@b:4222"),
            "nats://u:***@a:4222,nats://u:***@b:4222"
        );
        assert_eq!(
            redact("redis://h:6379/0?password=p"),
            "redis://h:6379/0?password=***"
        );
    }

    #[test]
    fn unset_credential_variables_name_the_variable() {
        let auth = AuthOptions {
            username_env: Some("ROUNDTRIP_TEST_SURELY_UNSET_USER".into()),
            password_env: None,
            token_env: None,
        };
        let err = Credentials::from_env("c", Some(&auth)).expect_err("unset");
        assert!(
            err.to_string()
                .contains("`ROUNDTRIP_TEST_SURELY_UNSET_USER`, which is not set"),
            "{err}"
        );
    }

    #[test]
    fn credentials_debug_never_prints_secrets() {
        let c = Credentials {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            token: None,
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<set>"),
            "{shown}"
        );
    }
}
