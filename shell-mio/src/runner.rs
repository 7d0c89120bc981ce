//! A [`MioServer`] on a `Poll` of its own: for the binary, for tests, and for applications
//! that want jetmq beside their loop rather than inside it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use jetmq_shell::config::ServerConfig;
use jetmq_shell::store::StoreBackend;
use mio::{Events, Poll, Token, Waker};

use crate::server::{MioServer, Tokens};

/// The token of the `Poll`'s waker (stop requests and finished work); jetmq's tokens follow.
const WAKER: Token = Token(0);

/// jetmq's tokens on a `Poll` of its own.
const TOKENS: Tokens = Tokens {
    first: 1,
    count: usize::MAX / 2,
};

/// A server running on its own thread.
pub struct Running {
    /// The addresses the listeners are bound to.
    pub local_addrs: Vec<SocketAddr>,
    /// Where the Prometheus metrics are served, when configured.
    pub metrics_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// A handle that stops the server from anywhere (a signal handler's thread, for one).
    #[must_use]
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Stops the server gracefully and waits until it has.
    ///
    /// # Errors
    ///
    /// The error that ended the loop, if any.
    pub fn stop(self) -> io::Result<()> {
        self.stopper().stop();
        self.join()
    }

    /// Waits until the server stops (after [`Stopper::stop`]).
    ///
    /// # Errors
    ///
    /// The error that ended the loop, if any.
    pub fn join(mut self) -> io::Result<()> {
        self.thread.take().map_or(Ok(()), |t| {
            t.join()
                .unwrap_or_else(|_| Err(io::Error::other("the jetmq loop panicked")))
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stopper().stop();
            let _ = t.join();
        }
    }
}

/// Asks a [`Running`] server to stop gracefully.
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    /// Starts the graceful stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// Binds, restores the store and serves on a new thread until stopped.
///
/// # Errors
///
/// As [`MioServer::new`].
pub fn spawn(config: ServerConfig, store: Arc<dyn StoreBackend>) -> io::Result<Running> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let server = MioServer::new(config, store, poll.registry(), TOKENS, Arc::clone(&waker))?;
    let local_addrs = server.local_addrs().to_vec();
    let metrics_addr = server.metrics_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("jetmq-mio".into())
        .spawn(move || serve(poll, server, &flag))?;
    Ok(Running {
        local_addrs,
        metrics_addr,
        stop,
        waker,
        thread: Some(thread),
    })
}

fn serve(mut poll: Poll, mut server: MioServer, stop: &AtomicBool) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, server.poll_timeout()) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for event in &events {
            if server.owns(event.token()) {
                server.handle_event(poll.registry(), event);
            }
        }
        if stop.load(Ordering::SeqCst) {
            server.shutdown(poll.registry());
        }
        server.after_poll(poll.registry());
        if server.is_stopped() {
            return Ok(());
        }
    }
}
