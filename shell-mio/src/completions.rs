//! Work finished off the loop's thread — store results, authentication decisions and what
//! arrives from NATS — comes back as broker inputs through one [`InputQueue`], whose wake is the
//! loop's `mio::Waker`. This module starts the authentication pool.

use jetmq_shell::auth_pool::AuthPool;
use jetmq_shell::config::ServerConfig;
use jetmq_shell::inputs::InputQueue;

/// Starts the pool that decides on authentication requests (Argon2 is slow on purpose, so
/// it must not run on the loop), bounded by the configuration's `[auth]` limits; its decisions
/// come back through `completions`. Dropping it stops its threads.
pub(crate) fn auth_pool(
    config: &ServerConfig,
    completions: InputQueue,
) -> std::io::Result<AuthPool> {
    AuthPool::start(config.auth_source(), config.auth_limits, move |input| {
        completions.push(input);
    })
}
