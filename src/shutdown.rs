//! SIGTERM and SIGINT: the first starts a graceful drain, the second exits at once.
//!
//! The kubelet sends SIGTERM and waits `terminationGracePeriodSeconds`; the
//! drain ([`crate::server::Bound::serve`]) fits inside it. A second signal is
//! an operator who does not want to wait: the process exits immediately with
//! `128 + signal number`, as a shell reports a death by that signal.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

/// The handlers, installed early (before the listeners are bound) so that
/// no signal arriving during startup takes the default action of killing the
/// process without a drain.
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT. From then on, a second one
    /// (either) ends the process at once.
    pub async fn first(mut self) {
        let name = self.next().await;
        info!(
            signal = name,
            "shutdown requested; a second signal exits at once"
        );
        tokio::spawn(async move {
            let name = self.next().await;
            let code = if name == "SIGINT" { 128 + 2 } else { 128 + 15 };
            warn!(
                signal = name,
                code, "second signal: exiting without waiting for the drain"
            );
            // `exit` runs no destructors: write the buffered log lines first.
            crate::logging::flush_before_exit();
            std::process::exit(code);
        });
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.terminate.recv() => "SIGTERM",
            Some(()) = self.interrupt.recv() => "SIGINT",
            // Both streams closed: no signal can come any more.
            else => std::future::pending().await,
        }
    }
}
