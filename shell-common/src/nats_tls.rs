//! TLS on jetmq's NATS connections: the handshake on a blocking socket, then one rustls session
//! shared by the connection's reader thread (which decrypts what it read) and writer thread
//! (which encrypts what it writes). Only the writer writes to the socket, so TLS records leave
//! in the order they were made.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use crate::nats_config::NatsTls;

/// The longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`TlsSession::decrypt`] found besides the plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decrypted {
    /// TLS wants to send something (an alert, a key update): the writer should flush.
    pub(crate) wants_write: bool,
    /// The server closed the TLS session.
    pub(crate) closed: bool,
}

/// One TLS session over a NATS socket, shared by the reader and writer threads.
#[derive(Clone)]
pub(crate) struct TlsSession {
    connection: Arc<Mutex<ClientConnection>>,
}

impl TlsSession {
    /// Runs the TLS handshake with the server at `address` on `socket`; `early` holds bytes
    /// already read from the socket after the plain-text `INFO` (normally none).
    ///
    /// # Errors
    ///
    /// The server's name is not valid for a certificate, the handshake failed (an untrusted
    /// or mismatched certificate, a server without TLS), or it took too long.
    pub(crate) fn handshake(
        settings: &NatsTls,
        address: &str,
        socket: &mut TcpStream,
        early: &[u8],
    ) -> io::Result<Self> {
        let name = ServerName::try_from(settings.server_name_for(address).to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut connection = ClientConnection::new(Arc::clone(&settings.config), name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut early = early;
        while !early.is_empty() {
            connection.read_tls(&mut early)?;
        }
        socket.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        while connection.is_handshaking() {
            connection.complete_io(socket)?;
        }
        while connection.wants_write() {
            connection.write_tls(socket)?;
        }
        socket.set_read_timeout(None)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, ClientConnection>> {
        self.connection
            .lock()
            .map_err(|_| io::Error::other("a NATS connection thread panicked"))
    }

    /// Decrypts `raw` (bytes read from the socket), appending the plain text to `plain`.
    ///
    /// # Errors
    ///
    /// The bytes are not valid TLS for this session.
    pub(crate) fn decrypt(&self, mut raw: &[u8], plain: &mut BytesMut) -> io::Result<Decrypted> {
        let mut c = self.lock()?;
        let mut closed = false;
        loop {
            c.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match c.reader().read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if raw.is_empty() || closed {
                break;
            }
            c.read_tls(&mut raw)?;
        }
        Ok(Decrypted {
            wants_write: c.wants_write(),
            closed,
        })
    }

    /// Encrypts `plain` and writes it, with any TLS records waiting, to `socket`. The records
    /// are made under the session's lock and written outside it.
    ///
    /// # Errors
    ///
    /// The socket failed.
    pub(crate) fn write(&self, plain: &[u8], socket: &mut TcpStream) -> io::Result<()> {
        let mut records = Vec::with_capacity(plain.len() + 64);
        {
            let mut c = self.lock()?;
            if !plain.is_empty() {
                c.writer().write_all(plain)?;
            }
            while c.wants_write() {
                c.write_tls(&mut records)?;
            }
        }
        socket.write_all(&records)
    }
}
