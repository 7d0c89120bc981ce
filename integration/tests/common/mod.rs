//! Shared by the integration tests: a temporary directory, a small PKI made with rcgen, and
//! a raw MQTT 5.0 client.

#![allow(dead_code)] // Each test crate uses its own part of this.

pub(crate) mod client;
pub(crate) mod nats_client;
pub(crate) mod nats_server;
pub(crate) mod raw;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jetmq-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    /// Writes `text` to `name` in the directory and returns the file's path.
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, a server certificate for `localhost` and 127.0.0.1 signed by it, a client
/// certificate (`CN=device-1,O=jetmq tests`) signed by it, and a client certificate signed by
/// another CA; all written as PEM files.
pub(crate) struct Pki {
    pub(crate) dir: TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    pub(crate) rogue_cert: PathBuf,
    pub(crate) rogue_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA cert");
    (cert, key)
}

fn client(cn: &str, ca: &rcgen::Certificate, ca_key: &KeyPair) -> (String, String) {
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "jetmq tests");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca, ca_key).expect("client cert");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let (ca_cert, ca_key) = ca("jetmq test CA");
        let server_key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .expect("server cert");
        let (client_cert, client_key) = client("device-1", &ca_cert, &ca_key);
        let (rogue_ca, rogue_ca_key) = ca("someone else's CA");
        let (rogue_cert, rogue_key) = client("intruder", &rogue_ca, &rogue_ca_key);
        Self {
            ca: dir.write("ca.pem", &ca_cert.pem()),
            server_cert: dir.write("server.pem", &server.pem()),
            server_key: dir.write("server.key", &server_key.serialize_pem()),
            client_cert: dir.write("client.pem", &client_cert),
            client_key: dir.write("client.key", &client_key),
            rogue_cert: dir.write("rogue.pem", &rogue_cert),
            rogue_key: dir.write("rogue.key", &rogue_key),
            dir,
        }
    }

    /// A client configuration trusting the test CA, presenting `identity` (cert, key) if given.
    pub(crate) fn client_config(
        &self,
        identity: Option<(&Path, &Path)>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).expect("CA file") {
            roots.add(cert.expect("CA cert")).expect("CA usable");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .expect("client cert file")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certs");
                let key = PrivateKeyDer::from_pem_file(key).expect("client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client identity")
            }
        };
        Arc::new(config)
    }
}

/// A path as a TOML literal string.
pub(crate) fn toml_path(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// The shell a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shell {
    /// `jetmq`: the tokio server.
    Tokio,
    /// `jetmq-mio`: the same core on a mio loop (on a thread of its own here).
    Mio,
}

/// A running server of either shell.
pub(crate) struct Server {
    /// The addresses its listeners are bound to, in configuration order.
    pub(crate) local_addrs: Vec<std::net::SocketAddr>,
    /// Where it serves Prometheus metrics, when configured.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    running: Running,
}

enum Running {
    Tokio(jetmq::server::ServerHandle),
    Mio(jetmq_mio::Running),
}

impl Server {
    /// Stops the server gracefully and waits until it has.
    pub(crate) async fn shutdown(self) -> std::io::Result<()> {
        match self.running {
            Running::Tokio(h) => h.shutdown().await,
            Running::Mio(r) => tokio::task::spawn_blocking(move || r.stop())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Starts `config` on `shell` with `store`.
pub(crate) async fn start(
    shell: Shell,
    config: jetmq::config::ServerConfig,
    store: std::sync::Arc<dyn jetmq::store::StoreBackend>,
) -> std::io::Result<Server> {
    match shell {
        Shell::Tokio => {
            let h = jetmq::server::start(config, store).await?;
            Ok(Server {
                local_addrs: h.local_addrs.clone(),
                metrics_addr: h.metrics_addr,
                running: Running::Tokio(h),
            })
        }
        Shell::Mio => {
            let r = jetmq_mio::spawn(config, store)?;
            Ok(Server {
                local_addrs: r.local_addrs.clone(),
                metrics_addr: r.metrics_addr,
                running: Running::Mio(r),
            })
        }
    }
}

/// Runs each listed `async fn name(shell: Shell)` as two tests, `on_tokio::name` and
/// `on_mio::name`.
#[macro_export]
macro_rules! for_each_shell {
    ($($name:ident),* $(,)?) => {
        mod on_tokio {
            $(
                #[::tokio::test]
                async fn $name() {
                    super::$name($crate::common::Shell::Tokio).await;
                }
            )*
        }
        mod on_mio {
            $(
                #[::tokio::test]
                async fn $name() {
                    super::$name($crate::common::Shell::Mio).await;
                }
            )*
        }
    };
}

/// Starts `shell` on a free loopback port with the configuration `toml` (on top of the
/// defaults, no data directory) and `store`; returns it and its port.
pub(crate) async fn serve_with(
    shell: Shell,
    toml: &str,
    store: std::sync::Arc<dyn jetmq::store::StoreBackend>,
) -> (Server, u16) {
    let mut config = jetmq::config::ServerConfig {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        data_dir: None,
        ..jetmq::config::ServerConfig::default()
    };
    config.apply_toml(toml).expect("valid configuration");
    let server = start(shell, config, store)
        .await
        .expect("the server starts");
    let port = server.local_addrs[0].port();
    (server, port)
}

/// [`serve_with`] on a store in memory.
pub(crate) async fn serve(shell: Shell, toml: &str) -> (Server, u16) {
    serve_with(
        shell,
        toml,
        Arc::new(jetmq::store::MemoryBackend::default()),
    )
    .await
}
