//! TLS client settings of one side (`rediss://`): the CA certificates trusted, an optional client
//! certificate and key (mutual TLS), the name server certificates are checked against, and the
//! opt-in `insecure` mode. Built once from the configuration ([`TlsClient::new`]); every
//! connection of that side (replication link, writers, helpers, every cluster node) uses the same
//! client through [`crate::net::stream::connect`]. Also turns rustls failures into messages that
//! say what to change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct};

/// TLS options of one side as written in the config file (`[source.tls]`, `[target.tls]`) or
/// given as flags. All optional: without a CA file the system's CA certificates are trusted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) that signed the server certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for servers that check clients (`tls-auth-clients yes`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name the server certificates must be valid for (default: the URL's host).
    pub server_name: Option<String>,
    /// Accept any server certificate (no verification). Only when asked for.
    #[serde(default)]
    pub insecure: bool,
}

impl TlsOptions {
    /// True when any option is set.
    pub fn is_set(&self) -> bool {
        *self != TlsOptions::default()
    }

    /// `self`'s values where set, else `other`'s (`insecure` when either says so).
    pub fn or(self, other: TlsOptions) -> TlsOptions {
        TlsOptions {
            ca_file: self.ca_file.or(other.ca_file),
            cert_file: self.cert_file.or(other.cert_file),
            key_file: self.key_file.or(other.key_file),
            server_name: self.server_name.or(other.server_name),
            insecure: self.insecure || other.insecure,
        }
    }
}

/// A side's ready TLS client: the rustls configuration and the server name to verify. Cheap to
/// clone (every endpoint of the side holds one).
#[derive(Clone)]
pub struct TlsClient(Arc<Inner>);

struct Inner {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    /// "source" or "target": the flags named in error messages.
    side: &'static str,
    opts: TlsOptions,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let this = &self.0;
        f.debug_struct("TlsClient")
            .field("side", &this.side)
            .field("server_name", &this.name)
            .field("options", &this.opts)
            .finish()
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        a.side == b.side && a.name == b.name && a.opts == b.opts
    }
}
impl Eq for TlsClient {}

/// Why a TLS client cannot be built from its options; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS setup: {0}")]
    Setup(String),
    /// A PEM file that cannot be used: `setting` is e.g. `target.tls.ca_file`.
    #[error("{setting} {}: {why}", path.display())]
    File {
        setting: String,
        path: PathBuf,
        why: String,
    },
    #[error("{side}.tls.cert_file / key_file: the key does not fit the certificate ({why})")]
    KeyMismatch { side: String, why: String },
    #[error(
        "{side}.tls: a client certificate needs both cert_file and key_file (--{side}-tls-cert-file and --{side}-tls-key-file)"
    )]
    HalfPair { side: String },
    #[error("{side}.tls.server_name {name:?} is not a host name or an IP address")]
    ServerName { side: String, name: String },
}

fn file_error(side: &str, key: &str, path: &Path, why: String) -> TlsSetupError {
    TlsSetupError::File {
        setting: format!("{side}.tls.{key}"),
        path: path.to_path_buf(),
        why,
    }
}

impl TlsClient {
    /// Builds the client of `side` ("source"/"target") for a deployment reached at `host`. Reads
    /// the certificate files now: a missing or unreadable file is an error naming it.
    pub fn new(
        side: &'static str,
        host: &str,
        opts: &TlsOptions,
    ) -> Result<TlsClient, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Setup(e.to_string()))?;
        let builder = if opts.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(roots(side, opts.ca_file.as_deref())?)
        };
        let config = match (&opts.cert_file, &opts.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(side, "cert_file", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    file_error(
                        side,
                        "key_file",
                        key,
                        format!("no readable PEM private key ({e})"),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsSetupError::KeyMismatch {
                        side: side.to_string(),
                        why: e.to_string(),
                    }
                })?
            }
            _ => {
                return Err(TlsSetupError::HalfPair {
                    side: side.to_string(),
                });
            }
        };
        let name_text = opts.server_name.clone().unwrap_or_else(|| host.to_string());
        let name =
            ServerName::try_from(name_text.clone()).map_err(|_| TlsSetupError::ServerName {
                side: side.to_string(),
                name: name_text.clone(),
            })?;
        Ok(TlsClient(Arc::new(Inner {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
            side,
            opts: opts.clone(),
        })))
    }

    /// The options this client was built from.
    pub fn options(&self) -> &TlsOptions {
        &self.0.opts
    }

    /// "source" or "target".
    pub fn side(&self) -> &'static str {
        self.0.side
    }

    /// The name server certificates are checked against.
    pub fn server_name(&self) -> String {
        self.0.name.to_str().into_owned()
    }

    /// Runs the TLS handshake over `tcp`.
    pub async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        self.0.connector.connect(self.0.name.clone(), tcp).await
    }

    /// `e` with what to do about it when it is a TLS failure (any other error as it is).
    pub fn explain(&self, e: &std::io::Error) -> String {
        explain(self.0.side, &self.server_name(), e)
    }
}

/// A person-readable reason for a TLS failure of `side`, naming the setting to change.
pub fn explain(side: &str, name: &str, e: &std::io::Error) -> String {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnknownRevocationStatus => format!(
                "TLS: the server's certificate is not signed by a CA shardsync trusts ({err}); give the CA certificate that signed it with --{side}-tls-ca-file (config {side}.tls.ca_file)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "TLS: the server's certificate is not valid for the name {name:?} ({err}); connect with a host name the certificate lists, or set --{side}-tls-server-name (config {side}.tls.server_name) to one of its names"
                )
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => format!(
                "TLS: the server's certificate is outside its validity period ({err}); renew it, or check this machine's clock"
            ),
            _ => format!(
                "TLS: the server's certificate was rejected ({err}); check the server's tls-cert-file and --{side}-tls-ca-file"
            ),
        },
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) => format!(
            "TLS: the server refused the connection ({err}); it checks client certificates (tls-auth-clients): give one with --{side}-tls-cert-file and --{side}-tls-key-file (config {side}.tls.cert_file / key_file)"
        ),
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::DecryptError,
        ) => format!(
            "TLS: the server rejected shardsync's client certificate ({err}); give a certificate signed by a CA the server trusts (its tls-ca-cert-file) with --{side}-tls-cert-file"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "TLS: the server did not answer in TLS ({err}); is this the server's tls-port? For a port without TLS use redis:// instead of rediss://"
        ),
        _ => format!("TLS: {err}"),
    }
}

/// The trusted CA certificates: those of `ca_file`, or the system's.
fn roots(side: &str, ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsSetupError> {
    let mut store = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(side, "ca_file", path)? {
                store.add(cert).map_err(|e| {
                    file_error(
                        side,
                        "ca_file",
                        path,
                        format!("not a usable CA certificate ({e})"),
                    )
                })?;
            }
        }
        None => {
            // Unreadable system certificates leave the store short; connections then fail with
            // "not signed by a CA shardsync trusts", which names the fix (a CA file).
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    Ok(store)
}

/// Every certificate of a PEM file; an error when it has none.
fn read_certs(
    side: &str,
    key: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(side, key, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(
            side,
            key,
            path,
            "no PEM certificate in the file".into(),
        ));
    }
    Ok(certs)
}

/// `insecure`: accepts any server certificate; the handshake's signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;

    #[test]
    fn rediss_urls_and_options() {
        let plain = Endpoint::parse("source.url", "redis://127.0.0.1:7000").unwrap();
        assert!(plain.tls.is_none());
        let tls = Endpoint::parse("source.url", "rediss://:pw@127.0.0.1:7000").unwrap();
        let client = tls.tls.as_ref().unwrap();
        assert_eq!(
            (client.side(), client.server_name()),
            ("source", "127.0.0.1".into())
        );
        // Options need rediss://; --tls-insecure alone leaves a redis:// side alone.
        let opts = TlsOptions {
            server_name: Some("redis.example".into()),
            ..Default::default()
        };
        let err = plain
            .clone()
            .with_tls("source", opts.clone(), false)
            .unwrap_err();
        assert!(err.to_string().contains("rediss://127.0.0.1:7000"), "{err}");
        assert!(
            plain
                .clone()
                .with_tls("source", Default::default(), true)
                .unwrap()
                .tls
                .is_none()
        );
        let named = tls.clone().with_tls("source", opts, false).unwrap();
        assert_eq!(named.tls.unwrap().server_name(), "redis.example");
        let insecure = tls
            .clone()
            .with_tls("source", Default::default(), true)
            .unwrap();
        assert!(insecure.tls.unwrap().options().insecure);
        // A certificate without its key, and a missing CA file, are named.
        let half = TlsOptions {
            cert_file: Some("/nonexistent/client.pem".into()),
            ..Default::default()
        };
        let err = TlsClient::new("target", "h", &half)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--target-tls-key-file"), "{err}");
        let missing = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = TlsClient::new("target", "h", &missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target.tls.ca_file /nonexistent/ca.pem"),
            "{err}"
        );
        let err = TlsClient::new(
            "source",
            "h",
            &TlsOptions {
                server_name: Some("not a name!".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server_name"), "{err}");
    }

    #[test]
    fn explains_rustls_errors() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let unknown = explain(
            "source",
            "h",
            &io(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        );
        assert!(unknown.contains("--source-tls-ca-file"), "{unknown}");
        let name = explain(
            "target",
            "db.example",
            &io(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
        );
        assert!(name.contains("\"db.example\"") && name.contains("--target-tls-server-name"));
        let required = explain(
            "source",
            "h",
            &io(rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired,
            )),
        );
        assert!(required.contains("--source-tls-cert-file"), "{required}");
        let other = std::io::Error::other("plain");
        assert_eq!(explain("source", "h", &other), "plain");
    }
}
