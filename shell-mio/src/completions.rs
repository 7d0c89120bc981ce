//! Work finished off the loop's thread — authentication decisions and what arrives from NATS —
//! comes back as broker inputs through one queue, and a `mio::Waker` tells the loop to collect
//! them. Store results have their own queue ([`jetmq::store::StoreReplies`]), which wakes the
//! loop once per group of results.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use jetmq::auth::AuthConfig;
use jetmq_core::broker::{AuthRequest, Input};
use mio::Waker;

/// Inputs finished elsewhere, waiting for the loop.
#[derive(Clone)]
pub(crate) struct Completions {
    queue: Arc<Mutex<Vec<Input>>>,
    waker: Arc<Waker>,
}

impl Completions {
    pub(crate) fn new(waker: Arc<Waker>) -> Self {
        Self {
            queue: Arc::new(Mutex::new(Vec::new())),
            waker,
        }
    }

    /// Hands an input to the loop and wakes it.
    pub(crate) fn push(&self, input: Input) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(input);
        }
        let _ = self.waker.wake();
    }

    /// Everything finished so far, in the order it finished.
    pub(crate) fn take(&self) -> Vec<Input> {
        self.queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

/// Starts the thread that decides on authentication requests (Argon2 is slow on purpose, so
/// it must not run on the loop); it ends when the returned sender is dropped.
pub(crate) fn auth_thread(
    auth: Arc<AuthConfig>,
    completions: Completions,
) -> std::io::Result<mpsc::Sender<AuthRequest>> {
    let (tx, rx) = mpsc::channel::<AuthRequest>();
    std::thread::Builder::new()
        .name("jetmq-auth".into())
        .spawn(move || {
            for request in rx {
                let decision = auth.decide(&request);
                completions.push(Input::Authenticated {
                    conn: request.conn,
                    decision,
                });
            }
        })?;
    Ok(tx)
}
