//! Noticing a browser that hung up while its stream had nothing to send.
//!
//! actix-web learns that a client closed only when a write to it fails, so an idle stream
//! would hold its place (and its memory, and the open-streams gauge) until the next
//! heartbeat, up to `HEARTBEAT_S`. Every connection's socket is duplicated when it opens
//! ([`on_connect`]) and the duplicate registered with the runtime; a stream waits on it
//! becoming readable: a browser never sends anything after its request, so readable means
//! it closed (a peek of 0 bytes), and the stream ends at once. The duplicate shares the
//! connection and is only peeked, so the server's own reads are undisturbed. It costs one
//! file descriptor per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether connections are watched (`HANGUP_WATCH`); set once at start.
static WATCHING: AtomicBool = AtomicBool::new(true);

/// Turns the watching of new connections on or off.
pub fn set_watching(on: bool) {
    WATCHING.store(on, Ordering::Relaxed);
}

/// The duplicated socket of a connection, in its extensions.
#[derive(Clone)]
pub struct PeerSocket(Arc<tokio::net::TcpStream>);

/// Runs for every new connection (see `domain::http::serve_with_on_connect`).
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsFd;
    if !WATCHING.load(Ordering::Relaxed) {
        return;
    }
    let Some(tcp) = conn.downcast_ref::<tokio::net::TcpStream>() else {
        return;
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let Ok(fd) = tcp.as_fd().try_clone_to_owned() else {
        return;
    };
    // The duplicate shares the original's non-blocking mode (one open file description).
    if let Ok(watched) = tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)) {
        ext.insert(PeerSocket(Arc::new(watched)));
    }
}

impl PeerSocket {
    /// Resolves when the client has closed its side; pends forever if that cannot be
    /// watched (the client sent data after its request).
    pub async fn closed(self) {
        let mut byte = [0u8; 1];
        loop {
            match self.0.peek(&mut byte).await {
                Ok(0) | Err(_) => return,
                // Data after the request: readiness would stay on; stop watching.
                Ok(_) => std::future::pending::<()>().await,
            }
        }
    }
}
