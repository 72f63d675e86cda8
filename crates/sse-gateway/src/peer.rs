//! Noticing a browser that hung up while its stream had nothing to send.
//!
//! actix-web learns that a client closed only when a write to it fails, so an idle stream
//! would hold its place (and its memory, and the open-streams gauge) until the next
//! heartbeat, up to `HEARTBEAT_S`. Every connection's socket is duplicated when it opens
//! ([`on_connect`]), and a stream waits on the duplicate becoming readable: a browser
//! never sends anything after its request, so readable means it closed (a peek of 0
//! bytes), and the stream ends at once. The duplicate shares the connection; reading it
//! only peeks, so the server's own reads are undisturbed.

use std::sync::Arc;

/// The duplicated socket of a connection, in its extensions.
#[derive(Clone)]
pub struct PeerSocket(Arc<std::net::TcpStream>);

/// Runs for every new connection (see `domain::http::serve_with_on_connect`).
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsFd;
    if let Some(tcp) = conn.downcast_ref::<tokio::net::TcpStream>()
        && let Ok(fd) = tcp.as_fd().try_clone_to_owned()
    {
        ext.insert(PeerSocket(Arc::new(std::net::TcpStream::from(fd))));
    }
}

impl PeerSocket {
    /// Resolves when the client has closed its side; pends forever if that cannot be
    /// watched (the client then sent data, or the socket could not be registered).
    pub async fn closed(self) {
        if !self.wait_closed().await {
            std::future::pending::<()>().await;
        }
    }

    async fn wait_closed(self) -> bool {
        let Ok(dup) = self.0.try_clone() else {
            return false;
        };
        if dup.set_nonblocking(true).is_err() {
            return false;
        }
        let Ok(watched) = tokio::net::TcpStream::from_std(dup) else {
            return false;
        };
        let mut byte = [0u8; 1];
        loop {
            if watched.readable().await.is_err() {
                return false;
            }
            match watched.try_io(tokio::io::Interest::READABLE, || self.0.peek(&mut byte)) {
                Ok(0) => return true,
                // The client sent data: readiness would stay on; stop watching.
                Ok(_) => return false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // Reset or otherwise broken: gone.
                Err(_) => return true,
            }
        }
    }
}
