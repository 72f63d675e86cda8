//! A TCP proxy the test can cut: "PostgreSQL is down" as the worker sees it (connections
//! reset, new ones refused at once), without stopping the shared server other tests use.
//! Or freeze: every connection stays open but nothing passes either way, and new ones are
//! accepted and never answered (a peer gone without a FIN: a host crash, a dropped NAT
//! entry).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CuttableProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    frozen: watch::Sender<bool>,
    generation: watch::Sender<u64>,
}

impl CuttableProxy {
    /// Forwards `127.0.0.1:<port>` to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (frozen, _) = watch::channel(false);
        let (up2, gen_tx, frozen_tx) = (up.clone(), generation.clone(), frozen.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = gen_tx.subscribe();
                let mut freeze = frozen_tx.subscribe();
                tokio::spawn(async move {
                    if *freeze.borrow_and_update() {
                        // Accepted, never answered, held until cut.
                        let _held = inbound;
                        let _ = cut.changed().await;
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = cut.changed() => return,
                        _ = freeze.wait_for(|f| *f) => {}
                    }
                    // Frozen: both sockets stay open, nothing more passes.
                    let _ = cut.changed().await;
                    drop((a, b));
                });
            }
        });
        Self {
            port,
            up,
            frozen,
            generation,
        }
    }

    /// Stops all traffic on open connections without closing them; new connections are
    /// accepted and never answered.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// New connections forward again (the frozen ones stay frozen).
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `host:port` of a PostgreSQL URL.
pub fn pg_host_port(url: &str) -> String {
    let after = url.split_once("://").map_or(url, |(_, r)| r);
    let after_at = after.rsplit_once('@').map_or(after, |(_, r)| r);
    let host_port = after_at
        .split(['/', '?'])
        .next()
        .unwrap_or("127.0.0.1:5432");
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    }
}

/// `url` pointed at `127.0.0.1:<port>` instead.
pub fn via_port(url: &str, port: u16) -> String {
    url.replacen(&pg_host_port(url), &format!("127.0.0.1:{port}"), 1)
}
