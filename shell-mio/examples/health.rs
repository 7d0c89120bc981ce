//! A custom mio event loop that serves jetmq and an HTTP health endpoint on the same thread.
//!
//! ```sh
//! cargo run -p jetmq-mio --example health
//! curl http://127.0.0.1:8080/health      # {"status":"ok","connections":0,"sessions":0}
//! mosquitto_pub -h 127.0.0.1 -p 1883 -t t -m hello
//! ```
//!
//! The application owns the `Poll` and its one `Waker`; jetmq gets a range of tokens and the
//! waker, and the loop hands jetmq the events of its tokens and handles its own.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use jetmq_mio::{MioServer, Tokens};
use jetmq_shell::config::ServerConfig;
use jetmq_shell::store::MemoryBackend;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// The application's tokens: the waker, the HTTP listener, then HTTP connections.
const WAKER: Token = Token(0);
const HTTP: Token = Token(1);
const HTTP_CONNS: usize = 2;
/// jetmq's tokens start well above the application's.
const JETMQ: Tokens = Tokens {
    first: 1 << 20,
    count: 1 << 20,
};

/// Where the example's servers listen, once bound, and how to stop it.
pub(crate) struct Ready {
    /// The MQTT listener.
    pub(crate) mqtt: SocketAddr,
    /// The HTTP health endpoint.
    pub(crate) http: SocketAddr,
    /// Set it, then wake the waker, to stop the loop.
    pub(crate) stop: Arc<AtomicBool>,
    /// The loop's waker.
    pub(crate) waker: Arc<Waker>,
}

/// Serves MQTT on `mqtt` and HTTP on `http` until stopped; `ready` is told the bound
/// addresses first.
pub(crate) fn serve(
    mqtt: SocketAddr,
    http: SocketAddr,
    ready: impl FnOnce(Ready),
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let config = ServerConfig {
        listen: vec![mqtt],
        data_dir: None,
        ..ServerConfig::default()
    };
    let store = Arc::new(MemoryBackend::default());
    let mut jetmq = MioServer::new(config, store, poll.registry(), JETMQ, Arc::clone(&waker))?;

    let mut listener = TcpListener::bind(http)?;
    poll.registry()
        .register(&mut listener, HTTP, Interest::READABLE)?;
    let stop = Arc::new(AtomicBool::new(false));
    ready(Ready {
        mqtt: jetmq.local_addrs()[0],
        http: listener.local_addr()?,
        stop: Arc::clone(&stop),
        waker,
    });

    let mut http_conns: HashMap<Token, (TcpStream, Vec<u8>)> = HashMap::new();
    let mut next = HTTP_CONNS;
    let mut events = Events::with_capacity(1024);
    loop {
        poll.poll(&mut events, jetmq.poll_timeout())?;
        for event in &events {
            let token = event.token();
            if jetmq.owns(token) {
                jetmq.handle_event(poll.registry(), event);
            } else if token == HTTP {
                while let Ok((mut stream, _)) = listener.accept() {
                    let t = Token(next);
                    next += 1;
                    poll.registry()
                        .register(&mut stream, t, Interest::READABLE)?;
                    http_conns.insert(t, (stream, Vec::new()));
                }
            } else if let Some((stream, request)) = http_conns.get_mut(&token) {
                if answer(stream, request, &jetmq) {
                    if let Some((mut stream, _)) = http_conns.remove(&token) {
                        let _ = poll.registry().deregister(&mut stream);
                    }
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            jetmq.shutdown(poll.registry());
        }
        jetmq.after_poll(poll.registry());
        if jetmq.is_stopped() {
            return Ok(());
        }
    }
}

/// Reads an HTTP request and answers it once it is whole; true when the connection is done.
fn answer(stream: &mut TcpStream, request: &mut Vec<u8>, jetmq: &MioServer) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return true,
        }
    }
    if !request.windows(4).any(|w| w == b"\r\n\r\n") {
        return request.len() > 8192;
    }
    let (status, body) = if request.starts_with(b"GET /health ") {
        (
            "200 OK",
            format!(
                "{{\"status\":\"ok\",\"connections\":{},\"sessions\":{}}}",
                jetmq.connection_count(),
                jetmq.session_count()
            ),
        )
    } else {
        ("404 Not Found", "{\"status\":\"not found\"}".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // A small answer fits the socket's buffer.
    let _ = stream.write_all(response.as_bytes());
    true
}

#[allow(dead_code)] // The test includes this file for `serve` and has its own entry point.
fn main() -> io::Result<()> {
    tracing_subscriber::fmt().init();
    let mqtt: SocketAddr = "127.0.0.1:1883".parse().map_err(io::Error::other)?;
    let http: SocketAddr = "127.0.0.1:8080".parse().map_err(io::Error::other)?;
    serve(mqtt, http, |ready| {
        eprintln!(
            "MQTT on {}, health at http://{}/health; Ctrl-C stops",
            ready.mqtt, ready.http
        );
        // Ctrl-C: set the flag and wake the loop, which then stops jetmq gracefully.
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])
        {
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    ready.stop.store(true, Ordering::SeqCst);
                    let _ = ready.waker.wake();
                }
            });
        }
    })
}
