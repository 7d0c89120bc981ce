//! Configuration errors: every one names the key, the value given and what is allowed, so the
//! message says what to do.

/// A configuration value that cannot be used, with what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, as written in the file or on the command line.
    pub key: String,
    /// The value that was given.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid configuration: {} = {:?}; allowed: {}",
            self.key, self.value, self.allowed
        )
    }
}

impl std::error::Error for ConfigError {}

/// A [`ConfigError`] for `key` set to `value`, with what is allowed instead.
pub(crate) fn invalid(key: &str, value: impl ToString, allowed: &str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}
