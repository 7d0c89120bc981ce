//! jetmq's NATS authentication against real nats-servers, each configured for one way of
//! authenticating: a token, users with passwords, nkey users, and operator mode with a
//! memory resolver for `.creds` files (the test makes its own operator, account and user keys
//! and JWTs). In each a jetmq node connects and works: an MQTT publish is bridged to a NATS
//! subscriber and a persistent session's queued message comes back from JetStream. The
//! command line's options (`--nats-creds`, `--nats-nkey`, `--nats-tls-*`) authenticate too.
//! Bad or missing credentials stop the start-up with a message naming the setting and the
//! remedy, never quoting a secret. And with the documented permissions, jetmq's NATS user
//! cannot delete, purge or read a stream that is not jetmq's, nor delete jetmq's own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jetmq::config::{CommandLine, ServerConfig};
use jetmq::jetstream::JetStreamBackend;
use jetmq::nats_config::{NatsConfig, NatsKey};
use jetmq_core::nats::{ConnectOptions, Event};
use rumqttc::QoS;
use serde_json::json;

mod common;
use common::client::client;
use common::nats_client::Peer;
use common::nats_server::{
    free_port, jetmq_permissions, test_app_subjects, until_answered, NatsServer, ADMIN_PASSWORD,
    ADMIN_USER, JETMQ_PASSWORD, JETMQ_USER,
};
use common::{Pki, Shell, TempDir};

/// The NATS configuration of a `[nats]` table.
fn nats_config(toml: &str) -> NatsConfig {
    let mut config = ServerConfig::default();
    config.apply_toml(toml).expect("a valid [nats] table");
    config.nats.expect("a NATS server")
}

/// A jetmq node on `shell` configured by the `[nats]` table `toml` works through NATS:
/// `peer` (subscribed to the test's subjects) gets an MQTT publish through the bridge, and a
/// persistent session's QoS 1 message waits in JetStream until its client comes back.
async fn works(shell: Shell, toml: &str, peer: &mut Peer) {
    works_with(shell, toml, &nats_config(toml), peer).await;
}

/// [`works`], with the NATS configuration given.
async fn works_with(shell: Shell, toml: &str, nats: &NatsConfig, peer: &mut Peer) {
    let backend = JetStreamBackend::connect(nats, "auth-store").expect("connect");
    until_answered(&backend);
    let (server, port) = common::serve_with(shell, toml, Arc::new(backend)).await;
    peer.subscribe("auth.>").await;

    let mut sub = client("auth-s", port, false).await;
    sub.subscribe("auth/#", QoS::AtLeastOnce).await;
    drop(sub);
    let mut publisher = client("auth-p", port, true).await;
    publisher
        .publish("auth/one", QoS::AtLeastOnce, false, "hello")
        .await; // PUBACK: stored in JetStream for auth-s
    let bridged = peer.next_message().await;
    assert_eq!(
        (bridged.subject.as_ref(), &bridged.payload[..]),
        ("auth.one", &b"hello"[..]),
        "the MQTT publish reached the NATS subscriber"
    );
    let mut sub = client("auth-s", port, false).await;
    assert!(sub.session_present, "the session is kept in JetStream");
    let got = sub.next().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.qos),
        ("auth/one", &b"hello"[..], QoS::AtLeastOnce)
    );
    drop((sub, publisher));
    server.shutdown().await.expect("clean stop");
}

/// Writes `seed` to `name` in `dir` as `nk -gen user` does (the seed and a newline).
fn seed_file(dir: &TempDir, name: &str, pair: &nkeys::KeyPair) -> PathBuf {
    dir.write(name, &format!("{}\n", pair.seed().expect("a seed")))
}

/// A `.creds` file as nsc writes it.
fn creds_text(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JWT for `subject`, issued by `issuer`: header `{"typ":"JWT","alg":"ed25519-nkey"}`, the
/// claims with `nats`, each base64url without padding, signed by the issuer's nkey over
/// `header.claims`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    jwt_with(issuer, subject, name, nats, None)
}

/// [`jwt`], expiring at `exp` (Unix seconds) when given.
fn jwt_with(
    issuer: &nkeys::KeyPair,
    subject: &str,
    name: &str,
    nats: serde_json::Value,
    exp: Option<u64>,
) -> String {
    let mut claims = json!({
        "jti": format!("{name}-{}", now_secs()),
        "iat": now_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    if let Some(exp) = exp {
        claims["exp"] = json!(exp);
    }
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let sig = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64(&sig))
}

/// The `nats` claims of a user with `permissions` (publish, subscribe allow lists), or
/// unrestricted.
fn user_claims(permissions: Option<(Vec<String>, Vec<String>)>) -> serde_json::Value {
    let mut nats = json!({ "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2 });
    if let Some((publish, subscribe)) = permissions {
        nats["pub"] = json!({ "allow": publish });
        nats["sub"] = json!({ "allow": subscribe });
    }
    nats
}

/// An operator, a system account, an account with JetStream, and users of it, for a
/// nats-server in operator mode with a memory resolver.
struct Operator {
    operator: nkeys::KeyPair,
    system: nkeys::KeyPair,
    account: nkeys::KeyPair,
}

impl Operator {
    fn new() -> Self {
        Self {
            operator: nkeys::KeyPair::new_operator(),
            system: nkeys::KeyPair::new_account(),
            account: nkeys::KeyPair::new_account(),
        }
    }

    /// nats-server's configuration: the operator's JWT, and the accounts' preloaded (the
    /// system account, which JetStream needs, and jetmq's).
    fn server_config(&self) -> String {
        let operator = jwt(
            &self.operator,
            &self.operator.public_key(),
            "jetmq-test-operator",
            json!({ "type": "operator", "version": 2 }),
        );
        let account = jwt(
            &self.operator,
            &self.account.public_key(),
            "jetmq-test-account",
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
                },
                "default_permissions": { "pub": {}, "sub": {} },
                "type": "account",
                "version": 2
            }),
        );
        let system = jwt(
            &self.operator,
            &self.system.public_key(),
            "SYS",
            json!({
                "limits": { "subs": -1, "data": -1, "payload": -1, "imports": -1,
                            "exports": -1, "wildcards": true, "conn": -1, "leaf": -1 },
                "type": "account",
                "version": 2
            }),
        );
        format!(
            "operator: {operator:?}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system:?}\n  {}: {account:?}\n}}\n",
            self.account.public_key(),
            sys = self.system.public_key(),
        )
    }

    /// A `.creds` file in `dir` for a new user of the account, with `permissions` (or none).
    fn creds(
        &self,
        dir: &TempDir,
        name: &str,
        permissions: Option<(Vec<String>, Vec<String>)>,
    ) -> PathBuf {
        let user = nkeys::KeyPair::new_user();
        let token = jwt(
            &self.account,
            &user.public_key(),
            name,
            user_claims(permissions),
        );
        dir.write(
            &format!("{name}.creds"),
            &creds_text(&token, &user.seed().expect("a seed")),
        )
    }
}

/// jetmq's permissions as JWT claims (the same lists as the test users').
fn jetmq_claims() -> Option<(Vec<String>, Vec<String>)> {
    Some(jetmq_permissions("$JS.API", &test_app_subjects()))
}

/// Token authentication: `nats.token`, and a token in the URL (`nats://token@host:port`).
async fn a_token(shell: Shell) {
    let dir = TempDir::new("auth-token");
    let token = "t0ken-never-printed";
    let nats = NatsServer::with_auth(
        free_port(),
        &dir.0,
        &format!("authorization {{ token: {token:?} }}"),
    );
    let options = ConnectOptions {
        auth_token: Some(token.into()),
        ..ConnectOptions::default()
    };
    let mut peer = Peer::connect(nats.port, options, None).await;
    works(
        shell,
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:{}\"\ntoken = \"{token}\"\n",
            nats.port
        ),
        &mut peer,
    )
    .await;
    let in_url = nats_config(&format!(
        "[nats]\nurl = \"nats://{token}@127.0.0.1:{}\"\n",
        nats.port
    ));
    assert_eq!(in_url.token.as_deref(), Some(token));
    let backend = JetStreamBackend::connect(&in_url, "auth-url").expect("connect");
    until_answered(&backend);
}

/// User and password (the `[nats]` keys; the URL form is what the other tests use), with
/// exactly the documented permissions.
async fn a_user_and_password(shell: Shell) {
    let dir = TempDir::new("auth-users");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let admin = ConnectOptions {
        user: Some(ADMIN_USER.into()),
        pass: Some(ADMIN_PASSWORD.into()),
        ..ConnectOptions::default()
    };
    let mut peer = Peer::connect(nats.port, admin, None).await;
    works(
        shell,
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:{}\"\nuser = \"{JETMQ_USER}\"\npassword = \
             \"{JETMQ_PASSWORD}\"\n",
            nats.port
        ),
        &mut peer,
    )
    .await;
}

/// nkey users: jetmq's seed file (`nats.nkey_seed_file`), whose public key the server lists
/// with the documented permissions; it signs the server's nonce.
async fn an_nkey_seed_file(shell: Shell) {
    let dir = TempDir::new("auth-nkey");
    let jetmq = nkeys::KeyPair::new_user();
    let admin = nkeys::KeyPair::new_user();
    let nats = NatsServer::with_auth(
        free_port(),
        &dir.0,
        &format!(
            "authorization {{ users: [\n  {{ nkey: {}, {} }}\n  {{ nkey: {} }}\n] }}",
            jetmq.public_key(),
            common::nats_server::jetmq_permissions_block(),
            admin.public_key()
        ),
    );
    let admin_seed = seed_file(&dir, "admin.nk", &admin);
    let admin_key = NatsKey::from_seed_file(&admin_seed, "test").expect("the admin's seed");
    let options = ConnectOptions {
        nkey: Some(admin_key.public_key.clone()),
        ..ConnectOptions::default()
    };
    let mut peer = Peer::connect(nats.port, options, Some(admin_key.signer())).await;
    let seed = seed_file(&dir, "jetmq.nk", &jetmq);
    works(
        shell,
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:{}\"\nnkey_seed_file = {}\n",
            nats.port,
            common::toml_path(&seed)
        ),
        &mut peer,
    )
    .await;
}

/// Operator mode with a memory resolver: jetmq's `.creds` file (`nats.creds_file`), a user
/// JWT carrying the documented permissions, issued by an account with JetStream; it signs
/// the server's nonce.
async fn a_creds_file_in_operator_mode(shell: Shell) {
    let dir = TempDir::new("auth-creds");
    let operator = Operator::new();
    let nats = NatsServer::with_auth(free_port(), &dir.0, &operator.server_config());
    let admin = NatsKey::from_creds_file(&operator.creds(&dir, "admin", None), "test")
        .expect("the admin's creds");
    let options = ConnectOptions {
        jwt: admin.jwt.clone(),
        ..ConnectOptions::default()
    };
    let mut peer = Peer::connect(nats.port, options, Some(admin.signer())).await;
    let creds = operator.creds(&dir, "jetmq", jetmq_claims());
    works(
        shell,
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:{}\"\ncreds_file = {}\n",
            nats.port,
            common::toml_path(&creds)
        ),
        &mut peer,
    )
    .await;
}

/// The configuration of a command line with `--nats url` (if given) and the NATS options
/// `set` sets.
fn command_line(
    url: Option<&str>,
    set: impl FnOnce(&mut CommandLine),
) -> Result<ServerConfig, String> {
    let mut cli = CommandLine {
        nats: url.map(str::to_owned),
        ..CommandLine::default()
    };
    set(&mut cli);
    ServerConfig::load(&cli).map_err(|e| e.to_string())
}

/// `--nats-creds`, `--nats-nkey` and `--nats-tls-ca/cert/key` authenticate jetmq like the
/// `[nats]` keys: a node started so works.
#[tokio::test]
async fn command_line_options_authenticate() {
    let dir = TempDir::new("auth-cli");
    let operator = Operator::new();
    let nats = NatsServer::with_auth(free_port(), &dir.0, &operator.server_config());
    let admin = NatsKey::from_creds_file(&operator.creds(&dir, "admin", None), "test")
        .expect("the admin's creds");
    let options = ConnectOptions {
        jwt: admin.jwt.clone(),
        ..ConnectOptions::default()
    };
    let mut peer = Peer::connect(nats.port, options, Some(admin.signer())).await;
    let creds = operator.creds(&dir, "jetmq", jetmq_claims());
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let config =
        command_line(Some(&url), |c| c.nats_creds = Some(creds.clone())).expect("valid options");
    let from_cli = config.nats.expect("a NATS server");
    assert_eq!(
        from_cli.key.as_ref().map(|k| k.path.as_path()),
        Some(creds.as_path())
    );
    // A node on the command line's settings (the TOML names the same server).
    works_with(
        Shell::Tokio,
        &format!(
            "[nats]\nurl = \"{url}\"\ncreds_file = {}\n",
            common::toml_path(&creds)
        ),
        &from_cli,
        &mut peer,
    )
    .await;

    // --nats-nkey against nkey users.
    let dir = TempDir::new("auth-cli-nkey");
    let jetmq = nkeys::KeyPair::new_user();
    let nats = NatsServer::with_auth(
        free_port(),
        &dir.0,
        &format!(
            "authorization {{ users: [ {{ nkey: {}, {} }} ] }}",
            jetmq.public_key(),
            common::nats_server::jetmq_permissions_block()
        ),
    );
    let seed = seed_file(&dir, "jetmq.nk", &jetmq);
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let config = command_line(Some(&url), |c| c.nats_nkey = Some(seed)).expect("valid options");
    let backend =
        JetStreamBackend::connect(&config.nats.expect("NATS"), "cli-nkey").expect("connect");
    until_answered(&backend);

    // --nats-tls-ca, --nats-tls-cert and --nats-tls-key against a server that maps client
    // certificates to users.
    let pki = Pki::new("auth-cli-tls");
    let dir = TempDir::new("auth-cli-tls-js");
    let nats = NatsServer::with_tls(free_port(), &dir.0, &pki, false);
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let config = command_line(Some(&url), |c| {
        c.nats_tls_ca = Some(pki.ca.clone());
        c.nats_tls_cert = Some(pki.client_cert.clone());
        c.nats_tls_key = Some(pki.client_key.clone());
    })
    .expect("valid options");
    let backend =
        JetStreamBackend::connect(&config.nats.expect("NATS"), "cli-tls").expect("connect");
    until_answered(&backend);
}

/// Asserts that `message` names `setting` and says `remedy`, and quotes none of `secrets`.
fn names_without_secrets(message: &str, setting: &str, remedy: &str, secrets: &[&str]) {
    assert!(message.contains(setting), "names {setting}: {message}");
    assert!(message.contains(remedy), "says {remedy:?}: {message}");
    for secret in secrets {
        assert!(!message.contains(secret), "quotes a secret: {message}");
    }
}

/// Key files that are missing or wrong stop the configuration, naming the setting, the file
/// and the remedy, and never quoting the file's content.
#[test]
fn bad_or_missing_key_files_stop_the_configuration() {
    let dir = TempDir::new("auth-bad-files");
    let toml = |line: &str| {
        let mut c = ServerConfig::default();
        c.apply_toml(&format!(
            "[nats]\nurl = \"nats://127.0.0.1:4222\"\n{line}\n"
        ))
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let missing = dir.0.join("nowhere").join("jetmq.creds");
    let e = toml(&format!("creds_file = {}", common::toml_path(&missing))).expect_err("missing");
    names_without_secrets(&e, "nats.creds_file", "no such file", &[]);
    names_without_secrets(&e, &missing.to_string_lossy(), "nsc", &[]);
    let e = command_line(Some("nats://127.0.0.1:4222"), |c| {
        c.nats_creds = Some(missing.clone());
    })
    .expect_err("missing");
    names_without_secrets(&e, "--nats-creds", "no such file", &[]);
    let e = command_line(None, |c| c.nats_creds = Some(missing.clone())).expect_err("no server");
    names_without_secrets(&e, "--nats-creds", "--nats URL", &[]);
    let e =
        toml(&format!("nkey_seed_file = {}", common::toml_path(&missing))).expect_err("missing");
    names_without_secrets(&e, "nats.nkey_seed_file", "no such file", &[]);

    // Not a seed; an account's seed; a creds file whose seed is another user's; an expired
    // user JWT; a creds file without its seed.
    let garbage = "SUNOTASEEDBUTLOOKSSECRETXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
    let path = dir.write("garbage.nk", garbage);
    let e = toml(&format!("nkey_seed_file = {}", common::toml_path(&path))).expect_err("garbage");
    names_without_secrets(&e, "nats.nkey_seed_file", "does not decode", &[garbage]);
    let account = nkeys::KeyPair::new_account();
    let account_seed = account.seed().expect("a seed");
    let path = dir.write("account.nk", &account_seed);
    let e = toml(&format!("nkey_seed_file = {}", common::toml_path(&path))).expect_err("account");
    names_without_secrets(&e, "nats.nkey_seed_file", "an account's", &[&account_seed]);

    let user = nkeys::KeyPair::new_user();
    let other = nkeys::KeyPair::new_user();
    let other_seed = other.seed().expect("a seed");
    let token = jwt(&account, &user.public_key(), "u", user_claims(None));
    let path = dir.write("mismatch.creds", &creds_text(&token, &other_seed));
    let e = toml(&format!("creds_file = {}", common::toml_path(&path))).expect_err("mismatch");
    names_without_secrets(
        &e,
        "nats.creds_file",
        "not the key of its JWT",
        &[&other_seed],
    );
    let user_seed = user.seed().expect("a seed");
    let expired = jwt_with(
        &account,
        &user.public_key(),
        "u",
        user_claims(None),
        Some(now_secs() - 60),
    );
    let path = dir.write("expired.creds", &creds_text(&expired, &user_seed));
    let e = toml(&format!("creds_file = {}", common::toml_path(&path))).expect_err("expired");
    names_without_secrets(&e, "nats.creds_file", "expired", &[&user_seed]);
    let path = dir.write(
        "no-seed.creds",
        &format!("-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n"),
    );
    let e = toml(&format!("creds_file = {}", common::toml_path(&path))).expect_err("no seed");
    names_without_secrets(&e, "nats.creds_file", "no nkey seed", &[]);

    // Two ways at once; a URL that does not parse keeps its password to itself.
    let good = dir.write("good.creds", &creds_text(&token, &user_seed));
    let e = toml(&format!(
        "token = \"tok-secret\"\ncreds_file = {}",
        common::toml_path(&good)
    ))
    .expect_err("two ways");
    names_without_secrets(
        &e,
        "nats.token",
        "nats.creds_file",
        &["tok-secret", &user_seed],
    );
    let mut c = ServerConfig::default();
    let e = c
        .apply_toml("[nats]\nurl = \"nats://jetmq:pa55-secret@127.0.0.1\"\n")
        .expect_err("no port")
        .to_string();
    names_without_secrets(&e, "nats.url", "nats://", &["pa55-secret"]);
    let c = command_line(Some("nats://jetmq:pa55-secret@127.0.0.1"), |_| {}).expect_err("no port");
    names_without_secrets(&c, "--nats", "nats://", &["pa55-secret"]);
    // A good file loads, and the configuration's Debug shows no secret.
    let mut c = ServerConfig::default();
    c.apply_toml(&format!(
        "[nats]\nurl = \"nats://127.0.0.1:4222\"\ncreds_file = {}\n",
        common::toml_path(&good)
    ))
    .expect("a good creds file");
    let debug = format!("{:?}", c.nats);
    assert!(
        !debug.contains(&user_seed) && !debug.contains(&token),
        "{debug}"
    );
}

/// Starting a node configured by `toml` (`jetstream`: its state in JetStream, else the
/// bridge only) on `shell` fails; returns the error.
async fn start_fails(shell: Shell, toml: &str) -> String {
    let mut config = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        data_dir: None,
        ..ServerConfig::default()
    };
    config.apply_toml(toml).expect("a valid configuration");
    if let Some(nats) = config.nats.as_mut() {
        nats.api_timeout = Duration::from_secs(5);
    }
    let store = jetmq::store::open(&config).expect("the store opens");
    let started = std::time::Instant::now();
    let result = common::start(shell, config, store).await;
    let Err(e) = result else {
        panic!("the server started with bad credentials: {toml}");
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after a timeout"
    );
    e.to_string()
}

/// Credentials a NATS server refuses stop the start-up, on both shells, whether jetmq keeps
/// its state in JetStream or only bridges: the message names the setting to fix and the
/// remedy, and quotes no secret.
async fn refused_credentials_stop_the_start_up(shell: Shell) {
    // A wrong password (JetStream).
    let dir = TempDir::new("auth-refused-users");
    let nats = NatsServer::with_jetstream(free_port(), &dir.0);
    let e = start_fails(
        shell,
        &format!(
            "[nats]\nurl = \"nats://{JETMQ_USER}:wr0ng-pa55@127.0.0.1:{}\"\n",
            nats.port
        ),
    )
    .await;
    names_without_secrets(
        &e,
        "nats.user and nats.password",
        "refused jetmq's credentials",
        &["wr0ng-pa55", JETMQ_PASSWORD],
    );
    drop(nats);

    // A wrong token (the bridge only).
    let dir = TempDir::new("auth-refused-token");
    let nats = NatsServer::with_auth(
        free_port(),
        &dir.0,
        "authorization { token: \"the-right-t0ken\" }",
    );
    let e = start_fails(
        shell,
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:{}\"\ntoken = \"a-wr0ng-t0ken\"\njetstream = false\n",
            nats.port
        ),
    )
    .await;
    names_without_secrets(
        &e,
        "nats.token",
        "refused jetmq's credentials",
        &["a-wr0ng-t0ken", "the-right-t0ken"],
    );
    drop(nats);

    // An nkey the server does not list; no credentials at all.
    let dir = TempDir::new("auth-refused-nkey");
    let listed = nkeys::KeyPair::new_user();
    let nats = NatsServer::with_auth(
        free_port(),
        &dir.0,
        &format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}",
            listed.public_key()
        ),
    );
    let stranger = nkeys::KeyPair::new_user();
    let stranger_seed = stranger.seed().expect("a seed");
    let seed = seed_file(&dir, "stranger.nk", &stranger);
    let e = start_fails(
        shell,
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:{}\"\nnkey_seed_file = {}\n",
            nats.port,
            common::toml_path(&seed)
        ),
    )
    .await;
    names_without_secrets(
        &e,
        "nats.nkey_seed_file",
        &stranger.public_key(),
        &[&stranger_seed],
    );
    let e = start_fails(
        shell,
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:{}\"\njetstream = false\n",
            nats.port
        ),
    )
    .await;
    names_without_secrets(&e, "no credentials", "nats.creds_file", &[]);
    drop(nats);

    // A .creds file of an account the server does not know.
    let dir = TempDir::new("auth-refused-creds");
    let known = Operator::new();
    let nats = NatsServer::with_auth(free_port(), &dir.0, &known.server_config());
    let unknown = Operator::new();
    let creds = unknown.creds(&dir, "jetmq", jetmq_claims());
    let content = std::fs::read_to_string(&creds).expect("the creds file");
    let seed = content
        .lines()
        .find(|l| l.starts_with("SU"))
        .expect("a seed line")
        .to_owned();
    let e = start_fails(
        shell,
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:{}\"\ncreds_file = {}\n",
            nats.port,
            common::toml_path(&creds)
        ),
    )
    .await;
    names_without_secrets(&e, "nats.creds_file", "resolve its account", &[&seed]);
    drop(nats);

    // TLS without the client certificate the server maps to a user.
    let pki = Pki::new("auth-refused-tls");
    let dir = TempDir::new("auth-refused-tls-js");
    let nats = NatsServer::with_tls(free_port(), &dir.0, &pki, false);
    let e = start_fails(
        shell,
        &format!(
            "[nats]\nurl = \"tls://127.0.0.1:{}\"\ntls_ca_file = {}\n",
            nats.port,
            common::toml_path(&pki.ca)
        ),
    )
    .await;
    names_without_secrets(&e, "nats.tls_cert_file", "TLS", &[]);
}

for_each_shell!(
    a_token,
    a_user_and_password,
    an_nkey_seed_file,
    a_creds_file_in_operator_mode,
    refused_credentials_stop_the_start_up
);

/// With the documented permissions, jetmq's NATS user cannot delete, purge or read a stream
/// that is not jetmq's, nor delete jetmq's own streams or read the system account's
/// subjects; the streams are intact afterwards.
#[tokio::test]
async fn jetmq_cannot_touch_what_is_not_its_own() {
    let dir = TempDir::new("auth-least");
    let mut nats = NatsServer::with_jetstream(free_port(), &dir.0);
    nats.expect_violations();
    // jetmq's streams, made by jetmq.
    let backend = JetStreamBackend::connect(
        &NatsConfig::from_url(&nats.url(), "test").expect("a NATS URL"),
        "least",
    )
    .expect("connect");
    until_answered(&backend);
    let admin = ConnectOptions {
        user: Some(ADMIN_USER.into()),
        pass: Some(ADMIN_PASSWORD.into()),
        ..ConnectOptions::default()
    };
    let mut admin = Peer::connect(nats.port, admin, None).await;
    let created = admin
        .request(
            "$JS.API.STREAM.CREATE.OTHER",
            r#"{"name":"OTHER","subjects":["other.>"],"storage":"memory"}"#,
        )
        .await
        .expect("the admin creates a stream");
    assert!(created.get("error").is_none(), "{created}");

    let as_jetmq = ConnectOptions {
        user: Some(JETMQ_USER.into()),
        pass: Some(JETMQ_PASSWORD.into()),
        ..ConnectOptions::default()
    };
    let mut jetmq = Peer::connect(nats.port, as_jetmq, None).await;
    for (subject, body) in [
        ("$JS.API.STREAM.DELETE.OTHER", ""),
        ("$JS.API.STREAM.PURGE.OTHER", "{}"),
        ("$JS.API.STREAM.MSG.GET.OTHER", r#"{"seq":1}"#),
        ("$JS.API.DIRECT.GET.$MQTT_sess", r#"{"seq":1}"#),
        ("$JS.API.STREAM.DELETE.$MQTT_msgs", ""),
        ("$JS.API.STREAM.UPDATE.$MQTT_sess", "{}"),
        ("$JS.API.ACCOUNT.PURGE.$G", ""),
        ("$SYS.REQ.SERVER.PING", ""),
    ] {
        let refused = jetmq.request(subject, body).await;
        assert!(
            matches!(&refused, Err(e) if e.contains("Permissions Violation")),
            "{subject}: {refused:?}"
        );
    }
    jetmq.client.subscribe("$SYS.>", None);
    jetmq.client.ping();
    let refused = jetmq.until(|e| matches!(e, Event::ServerError(_))).await;
    assert!(
        matches!(&refused, Event::ServerError(e) if e.contains("Permissions Violation")),
        "{refused:?}"
    );
    for stream in ["OTHER", "$MQTT_msgs", "$MQTT_sess"] {
        let info = admin
            .request(&format!("$JS.API.STREAM.INFO.{stream}"), "")
            .await
            .expect("the admin reads stream info");
        assert!(info.get("error").is_none(), "{stream} is gone: {info}");
    }
    assert!(
        nats.violations().len() >= 9,
        "the server logged each refusal: {:?}",
        nats.violations()
    );
    drop(backend);
}
