//! Authentication: users with Argon2 password hashes (PHC strings, as `jetmq hash-password`
//! prints them), users with SCRAM-SHA-256 credentials for MQTT 5.0 enhanced authentication
//! ([`crate::scram`]), and whether clients without a user name are allowed. The broker asks
//! ([`jetmq_core::broker::Action::Authenticate`]); the check runs on the authentication pool
//! ([`crate::auth_pool`]), since a good password hash is slow on purpose.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jetmq_core::broker::{AuthDecision, AuthRequest, AuthStage, Permissions};
use jetmq_core::codec::ConnectReason;

use crate::scram::{self, ScramCredential};

/// The authentication settings a running server decides with, which a reload (SIGHUP on the
/// binaries) replaces; each decision takes the ones current when it starts, and connected
/// clients keep what they were granted.
#[derive(Debug, Clone)]
pub struct AuthSource(Arc<RwLock<Arc<AuthConfig>>>);

impl AuthSource {
    /// A source holding `config`.
    #[must_use]
    pub fn new(config: AuthConfig) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// The settings now.
    #[must_use]
    pub fn current(&self) -> Arc<AuthConfig> {
        match self.0.read() {
            Ok(current) => Arc::clone(&current),
            // A writer cannot panic while holding the lock (it only swaps an Arc).
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the settings for the decisions that start from now on.
    pub fn replace(&self, config: AuthConfig) {
        let config = Arc::new(config);
        match self.0.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// Who may connect.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Whether a client without a user name is accepted.
    pub allow_anonymous: bool,
    /// User name → Argon2 PHC hash of the password.
    pub users: BTreeMap<String, String>,
    /// User name → SCRAM-SHA-256 credential, for enhanced authentication.
    pub scram: BTreeMap<String, ScramCredential>,
    /// User name → what the user may publish and subscribe to (users not listed: anything).
    pub permissions: BTreeMap<String, Permissions>,
    /// What clients without a user name may publish and subscribe to (`None`: anything).
    pub anonymous: Option<Permissions>,
    /// What SCRAM answers unknown users with, made from the users on first use.
    decoy: std::sync::OnceLock<scram::Decoy>,
}

impl AuthConfig {
    /// Everyone may connect: no users, anonymous allowed (the default).
    #[must_use]
    pub fn open() -> Self {
        Self {
            allow_anonymous: true,
            users: BTreeMap::new(),
            scram: BTreeMap::new(),
            permissions: BTreeMap::new(),
            anonymous: None,
            decoy: std::sync::OnceLock::new(),
        }
    }

    /// What SCRAM answers unknown users with: keyed by the configured credentials and
    /// password hashes, so the same across restarts while they are.
    fn decoy(&self) -> &scram::Decoy {
        self.decoy.get_or_init(|| {
            scram::Decoy::for_credentials(
                self.scram.values(),
                self.users.values().map(String::as_bytes),
            )
        })
    }

    /// Whether deciding on `request` needs a check that costs (a password hash, a SCRAM
    /// step), which runs on the authentication pool; the others are decided at once.
    #[must_use]
    pub fn needs_check(&self, request: &AuthRequest) -> bool {
        match request.method.as_deref() {
            None => request.username.is_some(),
            Some(method) => method == scram::METHOD,
        }
    }

    /// What `user` (who authenticated as that) may do, for its decision (`None`: anything).
    fn permissions_of(&self, user: Option<&str>) -> Option<Box<Permissions>> {
        let permissions = match user {
            Some(user) => self.permissions.get(user)?.for_user(user),
            None => self.anonymous.clone()?,
        };
        Some(Box::new(permissions))
    }

    /// Whether the broker needs to ask at all.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.allow_anonymous
            && self.users.is_empty()
            && self.scram.is_empty()
            && self.anonymous.is_none()
    }

    /// Decides on a CONNECT's credentials, or on a step of enhanced authentication.
    #[must_use]
    pub fn decide(&self, request: &AuthRequest) -> AuthDecision {
        match request.method.as_deref() {
            None => self.decide_password(request),
            Some(scram::METHOD) => self.decide_scram(request),
            Some(_) => AuthDecision::Deny(ConnectReason::BadAuthenticationMethod),
        }
    }

    /// One step of SCRAM-SHA-256: the client's first message gets the server's challenge,
    /// its final message the server's proof (or a refusal).
    fn decide_scram(&self, request: &AuthRequest) -> AuthDecision {
        let data = request.data.as_deref().unwrap_or_default();
        let lookup = |user: &str| self.scram.get(user);
        let decoy = self.decoy();
        let result = match (request.stage, &request.state) {
            (AuthStage::Continue, Some(state)) => scram::server_final(data, state, lookup, decoy)
                .map(|(last, user)| AuthDecision::AllowWith {
                    account: None,
                    data: Some(last.into()),
                    permissions: self.permissions_of(Some(&user)),
                }),
            (AuthStage::Connect | AuthStage::Reauthenticate, _) => {
                let mut nonce = [0u8; 18];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
                let nonce =
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce);
                scram::server_first(data, lookup, decoy, &nonce).map(|(first, state)| {
                    AuthDecision::Continue {
                        data: first.into(),
                        state: state.into(),
                    }
                })
            }
            (AuthStage::Continue, None) => Err(scram::ScramError::Malformed),
        };
        result.unwrap_or_else(|e| {
            AuthDecision::Deny(match e {
                scram::ScramError::Malformed => ConnectReason::NotAuthorized,
                scram::ScramError::BadProof => ConnectReason::BadUserNameOrPassword,
            })
        })
    }

    /// User name and password (or anonymous) at CONNECT.
    fn decide_password(&self, request: &AuthRequest) -> AuthDecision {
        let Some(username) = request.username.as_deref() else {
            return if self.allow_anonymous {
                AuthDecision::Allow {
                    account: None,
                    permissions: self.permissions_of(None),
                }
            } else {
                AuthDecision::Deny(ConnectReason::NotAuthorized)
            };
        };
        let password = request.password.as_deref().unwrap_or_default();
        let ok = match self.users.get(username) {
            Some(hash) => verify(password, hash),
            None => {
                // Spend the same time on an unknown user, so timing does not tell which exist.
                let _ = verify(password, DUMMY_HASH);
                false
            }
        };
        if ok {
            AuthDecision::Allow {
                account: None,
                permissions: self.permissions_of(Some(username)),
            }
        } else {
            AuthDecision::Deny(ConnectReason::BadUserNameOrPassword)
        }
    }
}

/// A hash no password matches, verified for unknown users.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3pOa+UXVrdV6R3MGbXzU8uOY1HjnhZ5k5q1C+rbXW2c";

fn verify(password: &[u8], hash: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

/// Checks that `hash` is a PHC string the server can verify passwords against.
///
/// # Errors
///
/// What is wrong with it.
pub fn check_hash(hash: &str) -> Result<(), String> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|e| format!("not an Argon2 PHC hash ({e})"))
}

/// Hashes a password with Argon2id and a random salt, for the configuration file.
///
/// # Errors
///
/// The hasher's error, which does not happen with the default parameters.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A SCRAM-SHA-256 credential for `password` with a random salt, for the configuration file.
#[must_use]
pub fn scram_credential(password: &[u8]) -> ScramCredential {
    let mut salt = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
    ScramCredential::new(password, &salt, scram::DEFAULT_ITERATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    fn list(l: &[&str]) -> Option<Vec<ByteString>> {
        Some(l.iter().map(|s| ByteString::from(*s)).collect())
    }

    /// A user's decision carries its permissions with `%u` filled in by the name it
    /// authenticated as; clients without a user name get the anonymous ones.
    #[test]
    fn decisions_carry_the_users_permissions() {
        let mut config = AuthConfig::open();
        config
            .users
            .insert("alice".into(), hash_password(b"pw").expect("hash"));
        config.permissions.insert(
            "alice".into(),
            Permissions {
                publish: list(&["users/%u/#"]),
                subscribe: None,
            },
        );
        config.anonymous = Some(Permissions {
            publish: list(&[]),
            subscribe: list(&["public/#"]),
        });
        let request = |username: Option<&str>| AuthRequest {
            conn: jetmq_core::broker::ConnId::new(1).expect("id"),
            info: jetmq_core::broker::ConnInfo {
                peer: "test".into(),
                listener: jetmq_core::broker::ListenerKind::Test,
                tls_identity: None,
            },
            protocol: jetmq_core::codec::ProtocolVersion::V311,
            client_id: "c".into(),
            username: username.map(Into::into),
            password: Some(bytes::Bytes::from_static(b"pw")),
            method: None,
            data: None,
            stage: AuthStage::Connect,
            state: None,
        };
        let AuthDecision::Allow { permissions, .. } = config.decide(&request(Some("alice"))) else {
            panic!("alice is allowed");
        };
        assert_eq!(
            permissions.expect("permissions").publish,
            list(&["users/alice/#"])
        );
        let AuthDecision::Allow { permissions, .. } = config.decide(&request(None)) else {
            panic!("anonymous clients are allowed");
        };
        assert_eq!(permissions.map(|p| *p), config.anonymous);
    }
}
