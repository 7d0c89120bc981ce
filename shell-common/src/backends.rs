//! Which store backend a configuration asks for: JetStream, the embedded store or memory.

use crate::store::{EmbeddedBackend, MemoryBackend, StoreBackend};

/// The store a shell uses for `config`: JetStream when a NATS server is configured (unless
/// `[nats] jetstream = false`), else the embedded store in its data directory, or memory when
/// it has none. The embedded store's recovery report is logged.
///
/// # Errors
///
/// The embedded store cannot be opened (the message names the file and what to do), or the
/// NATS connection's thread cannot start.
pub fn open(
    config: &crate::config::ServerConfig,
) -> Result<std::sync::Arc<dyn StoreBackend>, String> {
    if let Some(nats) = config.nats.as_ref().filter(|n| n.jetstream) {
        let backend = crate::jetstream::JetStreamBackend::connect(nats, "jetmq-store")
            .map_err(|e| format!("cannot start the JetStream connection: {e}"))?;
        tracing::info!(servers = %nats.address_list(), "state kept in JetStream");
        return Ok(std::sync::Arc::new(backend));
    }
    match &config.data_dir {
        Some(dir) => {
            let (backend, report) =
                EmbeddedBackend::open(dir, config.sync).map_err(|e| e.to_string())?;
            tracing::info!(dir = %dir.display(), %report, "store opened");
            Ok(std::sync::Arc::new(backend))
        }
        None => Ok(std::sync::Arc::new(MemoryBackend::default())),
    }
}
