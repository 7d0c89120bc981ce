//! Work finished off the loop's thread — store results, authentication decisions and what
//! arrives from NATS — comes back as broker inputs through one [`InputQueue`], whose wake is the
//! loop's `mio::Waker`. This module runs the authentication thread.

use std::sync::mpsc;

use jetmq::auth::AuthSource;
use jetmq::inputs::InputQueue;
use jetmq_core::broker::{AuthRequest, Input};

/// Starts the thread that decides on authentication requests (Argon2 is slow on purpose, so
/// it must not run on the loop); it ends when the returned sender is dropped.
pub(crate) fn auth_thread(
    auth: AuthSource,
    completions: InputQueue,
) -> std::io::Result<mpsc::Sender<AuthRequest>> {
    let (tx, rx) = mpsc::channel::<AuthRequest>();
    std::thread::Builder::new()
        .name("jetmq-auth".into())
        .spawn(move || {
            for request in rx {
                let decision = auth.current().decide(&request);
                completions.push(Input::Authenticated {
                    conn: request.conn,
                    decision,
                });
            }
        })?;
    Ok(tx)
}
