//! TLS to Postgres with rustls, under libpq's rules: see [`Tls`].

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// How a connection uses TLS (`sslmode`), after libpq's rules were applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// When the server offers it, without checking its certificate.
    Prefer,
    /// Always, without checking the server's certificate.
    Require,
    /// Always, with the server's certificate signed by a trusted root.
    VerifyCa,
    /// Always, with the certificate signed by a trusted root and issued for the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err("`sslmode=allow` (plain first, TLS only if refused) is not \
                            offered: use `prefer` (TLS first, plain if the server has none), \
                            `disable`, or a mode that requires TLS"
                    .to_owned());
            }
            other => {
                return Err(format!(
                    "`sslmode={other}` is not a mode: disable, prefer, require, verify-ca or \
                     verify-full"
                ));
            }
        })
    }

    /// The name the URL spells it with.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What the driver is told: whether TLS is attempted, and required.
    pub(super) fn driver(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// The TLS parameters of a store URL, as written.
#[derive(Debug, Default)]
pub(super) struct TlsParams {
    mode: Option<String>,
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsParams {
    /// The URL parameters this module reads.
    pub const NAMES: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

    /// Takes `key=value` when it is a TLS parameter (`Ok(false)` otherwise). A parameter
    /// given twice is refused: the last one winning would let `…&sslmode=disable` at the
    /// end of a URL silently undo a `verify-full` before it.
    pub fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let slot = match key {
            "sslmode" => &mut self.mode,
            "sslrootcert" => &mut self.root,
            "sslcert" => &mut self.cert,
            "sslkey" => &mut self.key,
            _ => return Ok(false),
        };
        if slot.is_some() {
            return Err(format!("`{key}` is given twice: give it once"));
        }
        *slot = Some(value.to_owned());
        Ok(true)
    }

    /// Applies libpq's rules and reads the files named.
    pub fn build(self) -> Result<Tls, String> {
        let system = self.root.as_deref() == Some("system");
        let mode = match self.mode.as_deref() {
            None if system => SslMode::VerifyFull,
            None => SslMode::Prefer,
            Some(mode) => SslMode::parse(mode)?,
        };
        if system && mode != SslMode::VerifyFull {
            return Err(format!(
                "`sslrootcert=system` trusts every public authority, so it needs \
                 `sslmode=verify-full` (not `{}`), as in libpq",
                mode.as_str()
            ));
        }
        if let (Some(root), SslMode::Disable | SslMode::Prefer) = (self.root.as_deref(), mode) {
            return Err(format!(
                "`sslrootcert={root}` names the authority to check the server's certificate \
                 against, but {} checks none: say `sslmode=verify-full` (or `verify-ca`, \
                 which does not check the host name)",
                match self.mode {
                    Some(_) => format!("`sslmode={}`", mode.as_str()),
                    None => "the default `sslmode`, `prefer`,".to_owned(),
                }
            ));
        }
        if mode == SslMode::Disable && (self.cert.is_some() || self.key.is_some()) {
            return Err(
                "`sslcert` and `sslkey` identify the client in a TLS handshake, and \
                        `sslmode=disable` makes none: drop them, or choose a mode that uses \
                        TLS"
                .to_owned(),
            );
        }
        let mode = match mode {
            SslMode::Require if self.root.is_some() => SslMode::VerifyCa,
            mode => mode,
        };
        if mode == SslMode::Disable {
            return Ok(Tls { mode, config: None });
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(Unverified(Arc::clone(&provider)))
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let Some(root) = self.root.as_deref() else {
                    return Err(format!(
                        "`sslmode={}` checks the server's certificate, so it needs the \
                         authority that signed it: `sslrootcert=PATH` (a PEM file) or \
                         `sslrootcert=system` (the system's trusted roots)",
                        mode.as_str()
                    ));
                };
                let roots = Arc::new(roots(root)?);
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                        .build()
                        .map_err(|e| format!("`sslrootcert={root}` cannot be used: {e}"))?;
                if mode == SslMode::VerifyCa {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (self.cert.as_deref(), self.key.as_deref()) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates("sslcert", cert)?;
                let private = crate::pem::private_key(Path::new(key))
                    .map_err(|why| format!("`sslkey={key}` {why}"))?;
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    format!("`sslcert={cert}` and `sslkey={key}` are not a key pair: {e}")
                })?
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "`sslcert` and `sslkey` go together: name both PEM files, the \
                            client's certificate and its private key"
                        .to_owned(),
                );
            }
        };
        // What libpq 17 offers; a server that negotiates TLS directly requires it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Tls {
            mode,
            config: Some(Arc::new(config)),
        })
    }
}

/// The certificates of a PEM file, at least one.
fn certificates(param: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    crate::pem::certificates(Path::new(path)).map_err(|why| format!("`{param}={path}` {why}"))
}

/// The trusted roots `sslrootcert` names.
fn roots(root: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if root == "system" {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "`sslrootcert=system`: no trusted roots were found on this system ({}); \
                 name a PEM file instead",
                found
                    .errors
                    .first()
                    .map_or_else(|| "the store is empty".to_owned(), ToString::to_string)
            ));
        }
        return Ok(store);
    }
    for certificate in certificates("sslrootcert", root)? {
        store
            .add(certificate)
            .map_err(|e| format!("`sslrootcert={root}` holds a certificate rustls refuses: {e}"))?;
    }
    Ok(store)
}

/// The TLS connector of a Postgres store: what the driver uses for every connection the
/// store opens (the writer's, the pool's, the feed's), with rustls, under libpq's rules
/// for `sslmode` and `sslrootcert`.
///
/// | `sslmode` | TLS | the server's certificate |
/// |---|---|---|
/// | `disable` | never | — |
/// | `prefer` (default) | when the server offers it | not checked |
/// | `require` | always | not checked, unless `sslrootcert` is given: then as `verify-ca` |
/// | `verify-ca` | always | signed by a root in `sslrootcert` |
/// | `verify-full` | always | signed so, and issued for the host name in the URL |
///
/// `sslrootcert` is a PEM file or `system` (the system's trusted roots; as in libpq 16,
/// it makes `verify-full` the default and refuses weaker modes). `sslcert` and `sslkey`
/// (PEM) identify the client, for servers that ask for a certificate. Unlike libpq,
/// roundtrip reads no default files from `~/.postgresql/`: a file is used only when the
/// URL names it. `allow` (plain first) is not offered: `prefer` tries TLS first.
///
/// Authentication uses SCRAM without channel binding (the `-PLUS` variant is not
/// offered), so `channel_binding=require` is refused by the driver.
#[derive(Clone)]
pub struct Tls {
    mode: SslMode,
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("mode", &self.mode).finish()
    }
}

impl Default for Tls {
    /// libpq's default, `prefer`, with nothing checked.
    fn default() -> Tls {
        TlsParams::default()
            .build()
            .unwrap_or_else(|_| Tls::plain())
    }
}

impl Tls {
    /// The mode in effect (`require` with a root certificate is `verify-ca`).
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// No TLS: what `prefer` falls back to when the server offers TLS that no handshake
    /// completes (as libpq retries without it).
    pub(super) fn plain() -> Tls {
        Tls {
            mode: SslMode::Disable,
            config: None,
        }
    }
}

/// A TLS handshake that failed (or could not start): the error the driver wraps, so the
/// store can tell it from a refused connection or a wrong password.
#[derive(Debug)]
pub struct Handshake(io::Error);

impl std::fmt::Display for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rustls")
    }
}

impl std::error::Error for Handshake {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl Handshake {
    /// Whether `e`, or an error it was caused by, is a TLS handshake that failed.
    pub(super) fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        std::iter::successors(Some(e), |e| e.source()).any(<dyn std::error::Error>::is::<Handshake>)
    }
}

/// Accepts any certificate (`prefer`, `require`), but still checks that the server holds
/// its key: the handshake's signatures are verified.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain to a trusted root is checked, the host name is not. (webpki
/// checks the name only once the chain is valid, so a name error means a valid chain.)
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, io::Error> {
        // A name TLS cannot use (a Unix socket's directory) fails only if TLS is tried.
        Ok(Connect {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_owned()).ok(),
            domain: domain.to_owned(),
        })
    }
}

/// One connection's TLS handshake, to the host it is for.
#[derive(Debug)]
pub struct Connect {
    config: Option<Arc<ClientConfig>>,
    name: Option<ServerName<'static>>,
    domain: String,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = Handshake;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>, Handshake>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| Handshake(io::Error::other("TLS is off (`sslmode=disable`)")))?;
            let name = self.name.ok_or_else(|| {
                Handshake(io::Error::other(format!(
                    "`{}` is not a host name or address a certificate can be checked for",
                    self.domain
                )))
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(Handshake)?;
            Ok(TlsStream(stream))
        })
    }
}

/// A TLS connection to Postgres.
#[derive(Debug)]
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(params: &[(&str, &str)]) -> Result<Tls, String> {
        let mut tls = TlsParams::default();
        for (k, v) in params {
            if !tls.take(k, v)? {
                panic!("{k} is not a TLS parameter");
            }
        }
        tls.build()
    }

    #[test]
    fn modes_follow_libpq() {
        assert_eq!(build(&[]).expect("default").mode(), SslMode::Prefer);
        for mode in ["disable", "prefer", "require"] {
            assert_eq!(
                build(&[("sslmode", mode)]).expect(mode).mode().as_str(),
                mode
            );
        }
        assert!(
            build(&[("sslmode", "disable")])
                .expect("disable")
                .config
                .is_none()
        );
        let err = build(&[("sslmode", "verify-full")]).expect_err("no root");
        assert!(err.contains("sslrootcert=PATH"), "{err}");
        let err = build(&[("sslmode", "verify-ca")]).expect_err("no root");
        assert!(err.contains("sslrootcert=system"), "{err}");
        let err = build(&[("sslmode", "allow")]).expect_err("allow");
        assert!(err.contains("use `prefer`"), "{err}");
        let err = build(&[("sslmode", "Require")]).expect_err("case");
        assert!(err.contains("not a mode"), "{err}");
    }

    #[test]
    fn a_root_needs_a_mode_that_checks() {
        for weak in ["prefer", "disable"] {
            let err = build(&[("sslmode", weak), ("sslrootcert", "/etc/ca.pem")]).expect_err(weak);
            assert!(
                err.contains("checks none: say `sslmode=verify-full`"),
                "{err}"
            );
        }
        // With no mode written, a root is still not silently ignored.
        let err = build(&[("sslrootcert", "/etc/ca.pem")]).expect_err("default mode");
        assert!(
            err.contains("the default `sslmode`, `prefer`, checks none"),
            "{err}"
        );
    }

    #[test]
    fn the_client_offers_postgres_alpn() {
        let tls = build(&[("sslmode", "require")]).expect("require");
        let config = tls.config.expect("a TLS config");
        assert_eq!(config.alpn_protocols, [b"postgresql".to_vec()]);
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        let err = build(&[("sslmode", "verify-full"), ("sslmode", "disable")])
            .expect_err("a downgrade at the end");
        assert!(err.contains("`sslmode` is given twice"), "{err}");
        let err = build(&[
            ("sslmode", "disable"),
            ("sslcert", "c.pem"),
            ("sslkey", "k.pem"),
        ])
        .expect_err("a client certificate without TLS");
        assert!(err.contains("`sslmode=disable` makes none"), "{err}");
    }

    #[test]
    fn system_roots_need_verify_full() {
        for weak in ["require", "verify-ca", "prefer"] {
            let err = build(&[("sslmode", weak), ("sslrootcert", "system")]).expect_err(weak);
            assert!(err.contains("needs `sslmode=verify-full`"), "{err}");
        }
        // The system's store may be empty on a bare machine; either way it is verify-full
        // or an error that says what to do.
        match build(&[("sslrootcert", "system")]) {
            Ok(tls) => assert_eq!(tls.mode(), SslMode::VerifyFull),
            Err(e) => assert!(e.contains("name a PEM file"), "{e}"),
        }
    }

    #[test]
    fn files_are_named_when_they_cannot_be_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().expect("utf-8");
        let err = build(&[("sslmode", "verify-full"), ("sslrootcert", missing)])
            .expect_err("missing root");
        assert!(err.contains(&format!("`sslrootcert={missing}`")), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let empty = empty.to_str().expect("utf-8");
        let err = build(&[("sslrootcert", empty), ("sslmode", "require")]).expect_err("empty");
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = build(&[("sslcert", empty)]).expect_err("lone cert");
        assert!(err.contains("go together"), "{err}");
    }
}
