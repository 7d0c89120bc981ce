//! Loopback TCP proxies between a jetmq node and the nats-servers: the node's NATS URLs point
//! at them, so its NATS connections can be cut (closed at once: both ends see the connection
//! end), partitioned (cut, and every new connection closed until healed) or stalled (nothing
//! forwarded either way while the connections stay open, as a network that silently drops
//! packets; what was sent meanwhile flows once healed).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// What a proxy group does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forwards.
    Open,
    /// Closes every connection as it comes.
    Partitioned,
    /// Forwards nothing, keeps connections open.
    Stalled,
}

/// The proxies of one jetmq node, one per nats-server, sharing one mode.
pub(crate) struct ProxyGroup {
    /// Listening ports, in the order of the targets given.
    pub(crate) ports: Vec<u16>,
    mode: watch::Sender<Mode>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    acceptors: Vec<JoinHandle<()>>,
}

impl ProxyGroup {
    /// Proxies to each port of `targets` on 127.0.0.1.
    pub(crate) async fn start(targets: &[u16]) -> Self {
        let (mode, _) = watch::channel(Mode::Open);
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let mut ports = Vec::new();
        let mut acceptors = Vec::new();
        for &target in targets {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
            ports.push(listener.local_addr().expect("proxy address").port());
            let mode_rx = mode.subscribe();
            let conns = Arc::clone(&conns);
            acceptors.push(tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if *mode_rx.borrow() == Mode::Partitioned {
                        drop(inbound);
                        continue;
                    }
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        continue;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let a = tokio::spawn(pump(ri, wo, mode_rx.clone()));
                    let b = tokio::spawn(pump(ro, wi, mode_rx.clone()));
                    let mut list = conns.lock().expect("proxy list");
                    list.retain(|h| !h.is_finished());
                    list.push(a.abort_handle());
                    list.push(b.abort_handle());
                }
            }));
        }
        Self {
            ports,
            mode,
            conns,
            acceptors,
        }
    }

    /// Closes every connection going through the group now (new ones are let through).
    pub(crate) fn cut(&self) {
        for h in self.conns.lock().expect("proxy list").drain(..) {
            h.abort();
        }
    }

    /// Sets the mode; partitioning also cuts what is open.
    pub(crate) fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
        if mode == Mode::Partitioned {
            self.cut();
        }
    }
}

impl Drop for ProxyGroup {
    fn drop(&mut self) {
        for a in &self.acceptors {
            a.abort();
        }
        self.cut();
    }
}

/// Copies `from` to `to` while the mode is not [`Mode::Stalled`]; a closed side ends both
/// directions (the halves are dropped).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        while *mode.borrow_and_update() == Mode::Stalled {
            if mode.changed().await.is_err() {
                return;
            }
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A stall that starts while this side waits for bytes holds what comes next.
            _ = mode.changed() => continue,
        };
        // Bytes read before a stall began are still delivered (they were on the wire).
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
