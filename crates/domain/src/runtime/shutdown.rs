//! The shutdown signal: SIGTERM or SIGINT, whichever comes first.
//!
//! Services take the shutdown as a future (or a [`CancellationToken`]) so tests can pass
//! their own.

pub use tokio_util::sync::CancellationToken;

/// Completes on SIGTERM or SIGINT.
///
/// # Panics
/// At start-up only, when the process cannot install signal handlers.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// A token cancelled when the process receives SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}

/// Runs `tick` every `period` (the first at once) until `stop` is cancelled. Ticks never
/// overlap; a slow one delays the next rather than bunching them up.
pub async fn every<F, Fut>(period: std::time::Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        tick().await;
    }
}
