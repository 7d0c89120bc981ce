//! Broker inputs finished on other threads (store results, authentication decisions, NATS
//! messages), queued for a shell's loop together with the way to wake it.

use std::sync::{Arc, Mutex};

use jetmq_core::broker::Input;

/// Wakes a shell's loop from another thread.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// A queue of inputs for a shell's loop; cloning it shares the queue.
#[derive(Clone)]
pub struct InputQueue {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Vec<Input>>,
    wake: Wake,
}

impl InputQueue {
    /// An empty queue whose loop `wake` wakes.
    pub fn new(wake: Wake) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                wake,
            }),
        }
    }

    /// Queues an input and wakes the loop.
    pub fn push(&self, input: Input) {
        self.push_quietly(input);
        self.wake();
    }

    /// Queues an input without waking the loop: for a caller that wakes it once after a group
    /// of inputs ([`Self::wake`]).
    pub fn push_quietly(&self, input: Input) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.push(input);
        }
    }

    /// Wakes the loop.
    pub fn wake(&self) {
        (self.shared.wake)();
    }

    /// What wakes the loop, for whoever wakes it after a group of quiet pushes.
    pub fn waker(&self) -> Wake {
        Arc::clone(&self.shared.wake)
    }

    /// Everything queued so far, in order.
    pub fn take(&self) -> Vec<Input> {
        self.shared
            .queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}
