//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5.0 enhanced authentication method: the
//! client proves it knows the password without sending it, and the server proves it knows
//! the user's credential. The server keeps only a [`ScramCredential`], never the password.
//!
//! The exchange over MQTT: CONNECT carries `client-first-message` as Authentication Data; the
//! broker answers with AUTH 0x18 carrying `server-first-message`; the client's AUTH 0x18
//! carries `client-final-message`; CONNACK carries `server-final-message` (`v=...`).
//! Channel binding is not offered (gs2 header `n,,` or `y,,`).
//!
//! Unknown users are not told apart from known ones: they get a challenge with a salt derived
//! from their name ([`Decoy`]), the same on every attempt, and the exchange fails at its end
//! exactly as a wrong password does.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The method name clients put in Authentication Method.
pub const METHOD: &str = "SCRAM-SHA-256";

/// Iterations `jetmq hash-password --scram` uses (RFC 7677 asks for at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The fewest iterations a stored credential may have (RFC 7677 §4); the configuration refuses
/// credentials with fewer.
pub const MIN_ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

/// What the server stores for one user: salt, iteration count, StoredKey and ServerKey.
///
/// Written as `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64), the
/// format PostgreSQL uses.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl ScramCredential {
    /// The credential for `password` with `salt` and `iterations` of PBKDF2.
    #[must_use]
    pub fn new(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// The PBKDF2 iteration count.
    #[must_use]
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The text form without its keys (`SCRAM-SHA-256$<iterations>:<salt>$...`), for messages.
    #[must_use]
    pub fn redacted(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}$...",
            self.iterations,
            B64.encode(&self.salt)
        )
    }

    /// Parses the text form.
    ///
    /// # Errors
    ///
    /// What is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            "not a SCRAM-SHA-256 credential (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, as `jetmq hash-password --scram` prints)".to_string()
        };
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iterations.parse().map_err(|_| bad())?;
        if iterations == 0 {
            return Err(bad());
        }
        let key = |s: &str| -> Result<[u8; 32], String> {
            B64.decode(s)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(bad)
        };
        Ok(Self {
            iterations,
            salt: B64.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

impl fmt::Display for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The message does not follow RFC 5802.
    Malformed,
    /// The proof does not match: a wrong password, or a user that is not known (the two are
    /// not told apart).
    BadProof,
}

/// What unknown users are answered with: a salt derived from the user name with a secret key
/// (HMAC-SHA-256), so that the same unknown name gets the same salt every time, as a known one
/// does, and the iteration count most known users have.
#[derive(Clone)]
pub struct Decoy {
    key: [u8; 32],
    iterations: u32,
}

impl fmt::Debug for Decoy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoy")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Decoy {
    /// A decoy keyed by `secret`, answering with `iterations`.
    #[must_use]
    pub fn new(secret: &[u8], iterations: u32) -> Self {
        Self {
            key: hmac(b"jetmq SCRAM decoy", secret),
            iterations,
        }
    }

    /// The decoy for a server with `credentials` and other secret material (password
    /// hashes): keyed by all of it, so it stays the same across restarts while the users do,
    /// and nobody without the configuration can compute it. Without any secret material the
    /// key is random, drawn once per process.
    #[must_use]
    pub fn for_credentials<'a>(
        credentials: impl IntoIterator<Item = &'a ScramCredential>,
        other_secrets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Self {
        let mut hasher = Sha256::new();
        let mut counts: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
        let mut any = false;
        for c in credentials {
            any = true;
            hasher.update(c.stored_key);
            hasher.update(c.server_key);
            hasher.update(&c.salt);
            *counts.entry(c.iterations).or_default() += 1;
        }
        for secret in other_secrets {
            any = true;
            hasher.update((secret.len() as u64).to_le_bytes());
            hasher.update(secret);
        }
        let secret: [u8; 32] = if any {
            hasher.finalize().into()
        } else {
            *process_secret()
        };
        // The count most credentials have (the highest of equals); the default without any.
        let iterations = counts
            .iter()
            .max_by_key(|(i, n)| (**n, **i))
            .map_or(DEFAULT_ITERATIONS, |(i, _)| *i);
        Self::new(&secret, iterations)
    }

    /// The credential an unknown `user` seems to have: its salt is real-looking and stable,
    /// its keys match no password anyone knows.
    fn credential(&self, user: &str) -> ScramCredential {
        let salt = hmac(&self.key, user.as_bytes());
        ScramCredential {
            iterations: self.iterations,
            salt: salt[..16].to_vec(),
            stored_key: hmac(&self.key, b"stored key"),
            server_key: hmac(&self.key, b"server key"),
        }
    }
}

/// A random key drawn once per process.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let mut key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
        key
    })
}

/// The user name of a `client-first-message`, if it has one.
#[must_use]
pub fn client_first_user(client_first: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(client_first).ok()?;
    let (_, rest) = text.split_once(',')?;
    let (_, bare) = rest.split_once(',')?;
    attribute(bare, 'n').and_then(sasl_name)
}

/// The user name an exchange's state (from [`server_first`]) is for.
#[must_use]
pub fn state_user(state: &[u8]) -> Option<String> {
    State::decode(state).map(|s| s.username.to_string())
}

/// What the server remembers between its first and its final message.
struct State<'a> {
    gs2_header: &'a str,
    username: &'a str,
    client_first_bare: &'a str,
    server_first: &'a str,
}

impl<'a> State<'a> {
    fn encode(&self) -> Vec<u8> {
        [
            self.gs2_header,
            self.username,
            self.client_first_bare,
            self.server_first,
        ]
        .join("\0")
        .into_bytes()
    }

    fn decode(bytes: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split('\0');
        let state = Self {
            gs2_header: parts.next()?,
            username: parts.next()?,
            client_first_bare: parts.next()?,
            server_first: parts.next()?,
        };
        parts.next().is_none().then_some(state)
    }
}

/// The value of attribute `name` (`name=value`) among comma-separated attributes.
fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|a| {
        let mut chars = a.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &a[2..])
    })
}

/// Decodes a `saslname` (`=2C` is `,`, `=3D` is `=`).
fn sasl_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The server's answer to `client-first-message`: `server-first-message` and the state to
/// hand back with `client-final-message`. `server_nonce` must be fresh and random
/// (printable ASCII without `,`). An unknown user gets the `decoy`'s salt and iterations.
///
/// # Errors
///
/// A malformed message.
pub fn server_first<'c>(
    client_first: &[u8],
    lookup: impl FnOnce(&str) -> Option<&'c ScramCredential>,
    decoy: &Decoy,
    server_nonce: &str,
) -> Result<(Vec<u8>, Vec<u8>), ScramError> {
    let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed)?;
    // gs2-header: a channel binding flag ("n" or "y"; "p=..." is not offered), an optional
    // authzid, then the bare message.
    let (flag, rest) = text.split_once(',').ok_or(ScramError::Malformed)?;
    if flag != "n" && flag != "y" {
        return Err(ScramError::Malformed);
    }
    let (_authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed)?;
    let gs2_header = &text[..text.len() - bare.len()];
    if !bare.starts_with("n=") {
        return Err(ScramError::Malformed);
    }
    let username = attribute(bare, 'n')
        .and_then(sasl_name)
        .ok_or(ScramError::Malformed)?;
    let client_nonce = attribute(bare, 'r').ok_or(ScramError::Malformed)?;
    if client_nonce.is_empty() {
        return Err(ScramError::Malformed);
    }
    let fake;
    let credential = match lookup(&username) {
        Some(c) => c,
        None => {
            fake = decoy.credential(&username);
            &fake
        }
    };
    let server_first = format!(
        "r={client_nonce}{server_nonce},s={},i={}",
        B64.encode(&credential.salt),
        credential.iterations
    );
    let state = State {
        gs2_header,
        username: &username,
        client_first_bare: bare,
        server_first: &server_first,
    }
    .encode();
    Ok((server_first.into_bytes(), state))
}

/// Checks `client-final-message` against the state from [`server_first`] and returns
/// `server-final-message` (`v=...`) and the user name. An unknown user is checked against the
/// `decoy`'s credential, with the same work, and fails as a wrong password does.
///
/// # Errors
///
/// A malformed message, or a wrong proof (or an unknown user).
pub fn server_final<'c>(
    client_final: &[u8],
    state: &[u8],
    lookup: impl FnOnce(&str) -> Option<&'c ScramCredential>,
    decoy: &Decoy,
) -> Result<(Vec<u8>, String), ScramError> {
    let state = State::decode(state).ok_or(ScramError::Malformed)?;
    let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed)?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed)?;
    let binding = attribute(without_proof, 'c').ok_or(ScramError::Malformed)?;
    if B64.decode(binding).ok().as_deref() != Some(state.gs2_header.as_bytes()) {
        return Err(ScramError::Malformed);
    }
    let nonce = attribute(without_proof, 'r').ok_or(ScramError::Malformed)?;
    if attribute(state.server_first, 'r') != Some(nonce) {
        return Err(ScramError::Malformed);
    }
    let proof: [u8; 32] = B64
        .decode(proof)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(ScramError::Malformed)?;
    let fake;
    let (credential, known) = match lookup(state.username) {
        Some(c) => (c, true),
        None => {
            fake = decoy.credential(state.username);
            (&fake, false)
        }
    };
    let auth_message = format!(
        "{},{},{without_proof}",
        state.client_first_bare, state.server_first
    );
    let client_signature = hmac(&credential.stored_key, auth_message.as_bytes());
    let mut client_key = proof;
    for (k, s) in client_key.iter_mut().zip(client_signature) {
        *k ^= s;
    }
    let computed: [u8; 32] = Sha256::digest(client_key).into();
    // Compared without an early exit, so timing does not tell how much matched.
    let differs = computed
        .iter()
        .zip(credential.stored_key)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 || !known {
        return Err(ScramError::BadProof);
    }
    let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
    Ok((
        format!("v={}", B64.encode(server_signature)).into_bytes(),
        state.username.to_string(),
    ))
}

/// The client side, for tests and Rust clients: `client-final-message` for `password`, given
/// the client's first message (bare part) and the server's first message.
///
/// # Errors
///
/// A malformed server message.
pub fn client_final(
    password: &[u8],
    client_first_bare: &str,
    server_first: &str,
) -> Result<String, ScramError> {
    let nonce = attribute(server_first, 'r').ok_or(ScramError::Malformed)?;
    let salt = attribute(server_first, 's')
        .and_then(|s| B64.decode(s).ok())
        .ok_or(ScramError::Malformed)?;
    let iterations: u32 = attribute(server_first, 'i')
        .and_then(|i| i.parse().ok())
        .ok_or(ScramError::Malformed)?;
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(k, s)| k ^ s)
        .collect();
    Ok(format!("{without_proof},p={}", B64.encode(proof)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn decoy() -> Decoy {
        Decoy::new(b"test", DEFAULT_ITERATIONS)
    }

    fn pencil() -> ScramCredential {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredential::new(b"pencil", &salt, 4096)
    }

    #[test]
    fn the_rfc_7677_example_exchange() {
        let cred = pencil();
        let lookup = |u: &str| (u == "user").then_some(&cred);
        let (first, state) =
            server_first(CLIENT_FIRST.as_bytes(), lookup, &decoy(), SERVER_NONCE).unwrap();
        assert_eq!(std::str::from_utf8(&first).unwrap(), SERVER_FIRST);
        let (last, user) = server_final(CLIENT_FINAL.as_bytes(), &state, lookup, &decoy()).unwrap();
        assert_eq!(std::str::from_utf8(&last).unwrap(), SERVER_FINAL);
        assert_eq!(user, "user");
        // The client side computes the RFC's proof too.
        assert_eq!(
            client_final(b"pencil", "n=user,r=rOprNGfwEbeRWgbNEkqO", SERVER_FIRST).unwrap(),
            CLIENT_FINAL
        );
    }

    #[test]
    fn a_wrong_password_or_user_fails() {
        let cred = pencil();
        let lookup = |u: &str| (u == "user").then_some(&cred);
        let (first, state) =
            server_first(CLIENT_FIRST.as_bytes(), lookup, &decoy(), SERVER_NONCE).unwrap();
        let wrong = client_final(
            b"crayon",
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            std::str::from_utf8(&first).unwrap(),
        )
        .unwrap();
        assert_eq!(
            server_final(wrong.as_bytes(), &state, lookup, &decoy()),
            Err(ScramError::BadProof)
        );
    }

    /// An unknown user gets a challenge like a known one's (a 16-byte salt, the usual
    /// iterations), the same salt on every attempt, and fails only at the end, as a wrong
    /// password does.
    #[test]
    fn unknown_users_look_like_known_ones() {
        let cred = pencil();
        let lookup = |u: &str| (u == "user").then_some(&cred);
        let decoy = Decoy::for_credentials([&cred], []);
        let first = |name: &str, nonce: &str| {
            let msg = format!("n,,n={name},r=abc");
            let (first, state) = server_first(msg.as_bytes(), lookup, &decoy, nonce).unwrap();
            (String::from_utf8(first).unwrap(), state)
        };
        let (a, state) = first("nobody", "x");
        let (b, _) = first("nobody", "y");
        let salt = |m: &str| attribute(m, 's').map(str::to_string);
        assert_eq!(salt(&a), salt(&b), "the same salt every time");
        assert_ne!(salt(&a), salt(&first("somebody", "x").0));
        assert_eq!(B64.decode(salt(&a).unwrap()).unwrap().len(), 16);
        assert_eq!(attribute(&a, 'i'), Some("4096"));
        let last = client_final(b"pencil", "n=nobody,r=abc", &a).unwrap();
        assert_eq!(
            server_final(last.as_bytes(), &state, lookup, &decoy),
            Err(ScramError::BadProof)
        );
        // Keyed by the configuration: another set of users, another salt.
        let other = Decoy::for_credentials([], [&b"a password hash"[..]]);
        let (c, _) = server_first(b"n,,n=nobody,r=abc", lookup, &other, "x").unwrap();
        assert_ne!(salt(&a), salt(std::str::from_utf8(&c).unwrap()));
        assert_eq!(client_first_user(b"n,,n=a=2Cb,r=x").as_deref(), Some("a,b"));
        assert_eq!(state_user(&state).as_deref(), Some("nobody"));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let cred = pencil();
        let lookup = |u: &str| (u == "user").then_some(&cred);
        for bad in [
            &b""[..],
            b"p=tls-unique,,n=user,r=abc",
            b"n,,r=abc",
            b"n,,n=user",
            b"n,,n=us=er,r=abc",
            b"\xff",
        ] {
            assert_eq!(
                server_first(bad, lookup, &decoy(), "x").map(|_| ()),
                Err(ScramError::Malformed),
                "{bad:?}"
            );
        }
        let (_, state) =
            server_first(CLIENT_FIRST.as_bytes(), lookup, &decoy(), SERVER_NONCE).unwrap();
        for bad in [
            "c=biws,r=other,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=short",
        ] {
            assert_eq!(
                server_final(bad.as_bytes(), &state, lookup, &decoy()).map(|_| ()),
                Err(ScramError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn credentials_round_trip_through_text() {
        let cred = pencil();
        let text = cred.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
        assert_eq!(ScramCredential::parse(&text), Ok(cred));
        assert!(ScramCredential::parse("SCRAM-SHA-256$0:abc$x:y").is_err());
        assert!(ScramCredential::parse("$argon2id$v=19").is_err());
    }

    #[test]
    fn user_names_are_unescaped() {
        assert_eq!(sasl_name("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(sasl_name("a=2"), None);
    }
}
