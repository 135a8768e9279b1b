//! TLS for tests: certificates generated in the test with `rcgen` (a CA, a server certificate for
//! `127.0.0.1` and `localhost`, a client certificate, and a second CA nobody trusts) written into
//! a temp dir, and the server arguments that open a TLS port beside the plain one.
//!
//! A TLS server keeps its plain loopback port for the harness (seeding, workload, key-by-key
//! comparison through redis-rs); shardsync is given only the TLS port (`rediss://`), where a
//! plain-text client is refused, so everything shardsync does there went through TLS. With
//! `tls-cluster yes` a node announces its TLS port to TLS clients and its plain port to plain
//! ones (Redis 7.0), so the harness and shardsync each see their own ports.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

use super::server::{RedisServer, ServerKind, pick_free_port};

/// Certificate files of one test.
pub struct TestPki {
    dir: TempDir,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).expect("self-sign CA").pem();
    (params, key, pem)
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    names: &[&str],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = usages;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

impl TestPki {
    /// Generates every file (a few ms); the server certificate is valid for `127.0.0.1` and
    /// `localhost`.
    pub fn new() -> TestPki {
        Self::with_server_names(&["127.0.0.1", "localhost"])
    }

    /// Like [`TestPki::new`] with a server certificate valid for `names` only.
    pub fn with_server_names(names: &[&str]) -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("shardsync-pki-")
            .tempdir()
            .expect("pki temp dir");
        let (ca_params, ca_key, ca_pem) = ca("shardsync test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        // Redis also presents its server certificate as a client (cluster bus, replication).
        let (server_pem, server_key) = leaf(
            &issuer,
            "shardsync test server",
            names,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_pem, client_key) = leaf(
            &issuer,
            "shardsync test client",
            &["shardsync-client"],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let (_, _, other_ca_pem) = ca("a CA nobody trusts");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write pki file");
        };
        write("ca.pem", &ca_pem);
        write("server.pem", &server_pem);
        write("server.key", &server_key);
        write("client.pem", &client_pem);
        write("client.key", &client_key);
        write("other-ca.pem", &other_ca_pem);
        TestPki { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of one of the files: `ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key`, `other-ca.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`TestPki::path`] as a `&str`-able string for command lines.
    pub fn arg(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_string()
    }

    /// Server arguments opening `tls_port` with the server certificate; `auth_clients` makes
    /// the server require a client certificate signed by the CA (mutual TLS).
    pub fn server_args(&self, tls_port: u16, auth_clients: bool) -> Vec<String> {
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &self.arg("server.pem"),
            "--tls-key-file",
            &self.arg("server.key"),
            "--tls-ca-cert-file",
            &self.arg("ca.pem"),
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// A server with a TLS port beside its plain one.
pub struct TlsServer {
    pub server: RedisServer,
    pub tls_port: u16,
}

impl TlsServer {
    /// Starts `kind` (it must be built with TLS: Debian's redis-server 7.0 is) with `extra` args.
    pub fn start(kind: ServerKind, pki: &TestPki, auth_clients: bool, extra: &[&str]) -> TlsServer {
        let tls_port = pick_free_port(false);
        let mut args = pki.server_args(tls_port, auth_clients);
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = RedisServer::start_with(kind, &refs);
        TlsServer { server, tls_port }
    }

    /// `rediss://127.0.0.1:TLS_PORT` (with the password, if any).
    pub fn url(&self) -> String {
        tls_url(self.server.password(), self.tls_port)
    }
}

/// `rediss://[:password@]127.0.0.1:port`.
pub fn tls_url(password: Option<&str>, port: u16) -> String {
    match password {
        Some(pw) => format!("rediss://:{pw}@127.0.0.1:{port}"),
        None => format!("rediss://127.0.0.1:{port}"),
    }
}
