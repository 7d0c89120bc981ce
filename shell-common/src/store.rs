//! Where the server's store requests go: a [`StoreBackend`] executes them off the broker task
//! and reports each result through a completion callback.

use std::path::Path;
use std::sync::Mutex;

use jetmq_core::broker::Input;
use jetmq_core::js::memory::MemoryStore;
use jetmq_core::js::{RequestId, StoreError, StoreReply, StoreRequest, StoredMessage};

/// Called once with the result of a store request, from whichever thread finished it.
pub type Completion = Box<dyn FnOnce(RequestId, Result<StoreReply, StoreError>) + Send>;

use crate::inputs::InputQueue;
pub use crate::inputs::Wake;

/// A store the server can use: the embedded store, JetStream, or memory.
pub trait StoreBackend: Send + Sync + 'static {
    /// Starts a request; `done` is called exactly once with its result.
    fn submit(&self, id: RequestId, request: StoreRequest, done: Completion);

    /// Everything the broker needs at start-up.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store cannot be read.
    fn restore(&self) -> Result<Vec<StoredMessage>, StoreError>;

    /// Has the backend call `wake` after each group of completions it runs on its own
    /// threads (a commit's worth, or a read's worth of NATS replies) and returns true; the
    /// completions may then queue their results without waking the loop. Returns false (the
    /// default) when the backend does not group: each completion must wake the loop itself.
    fn group_completions(&self, wake: Wake) -> bool {
        let _ = wake;
        false
    }
}

/// Store results on their way to a shell's loop, as broker inputs ([`Input::Stored`]) in its
/// [`InputQueue`]. The loop is woken once per group of results when the backend groups them: a
/// wake per result from another thread on a busy core hands the core back and forth for every
/// result.
#[derive(Clone)]
pub struct StoreReplies {
    inputs: InputQueue,
    grouped: bool,
}

impl StoreReplies {
    /// Replies for `store`'s requests, queued in `inputs`.
    pub fn new(store: &dyn StoreBackend, inputs: InputQueue) -> Self {
        let grouped = store.group_completions(inputs.waker());
        Self { inputs, grouped }
    }

    /// The completion for one request: it queues the result.
    pub fn completion(&self) -> Completion {
        let replies = self.clone();
        Box::new(move |id, reply| {
            let input = Input::Stored { id, reply };
            if replies.grouped {
                replies.inputs.push_quietly(input);
            } else {
                replies.inputs.push(input);
            }
        })
    }
}

/// Keeps state in memory only: nothing survives a restart. For tests and for running without
/// a data directory.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    store: Mutex<MemoryStore>,
}

impl StoreBackend for MemoryBackend {
    fn submit(&self, id: RequestId, request: StoreRequest, done: Completion) {
        let result = match self.store.lock() {
            Ok(mut store) => store.execute(&request),
            Err(_) => Err(StoreError::Unavailable("memory store poisoned".into())),
        };
        done(id, result);
    }

    fn restore(&self) -> Result<Vec<StoredMessage>, StoreError> {
        match self.store.lock() {
            Ok(store) => Ok(store.records()),
            Err(_) => Err(StoreError::Unavailable("memory store poisoned".into())),
        }
    }
}

/// The embedded store ([`jetmq_store::Store`]): durable files in the data directory.
#[derive(Debug)]
pub struct EmbeddedBackend {
    store: jetmq_store::Store,
}

impl EmbeddedBackend {
    /// Opens (or creates) the store in `dir` with the given sync policy.
    ///
    /// # Errors
    ///
    /// The store's [`jetmq_store::OpenError`], which names the file and what to do.
    pub fn open(
        dir: &Path,
        sync: jetmq_store::SyncPolicy,
    ) -> Result<(Self, jetmq_store::RecoveryReport), jetmq_store::OpenError> {
        let config = jetmq_store::StoreConfig::new(dir).with_sync(sync);
        let (store, report) = jetmq_store::Store::open(config)?;
        Ok((Self { store }, report))
    }
}

impl StoreBackend for EmbeddedBackend {
    fn submit(&self, id: RequestId, request: StoreRequest, done: Completion) {
        self.store.submit(id, request, done);
    }

    fn restore(&self) -> Result<Vec<StoredMessage>, StoreError> {
        self.store.restore()
    }

    fn group_completions(&self, wake: Wake) -> bool {
        self.store.after_replies(move || wake());
        true
    }
}
