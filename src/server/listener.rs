//! The accept loop: a connection slot first (at the limit, new connections
//! wait in the kernel's backlog), then the next connection, each served in
//! a task of the set the drain later waits for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::warn;

/// Pause after a failed `accept` (out of file descriptors, typically) so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts until `stop` resolves, spawning `serve(stream, slot)` into `open`
/// for each connection; finished connections are reaped as it goes, so the
/// set holds only the open ones.
pub(super) async fn accept<F, S, Fut>(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &mut Pin<&mut F>,
    open: &mut JoinSet<()>,
    mut serve: S,
) where
    F: Future<Output = ()>,
    S: FnMut(TcpStream, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            biased;
            () = &mut *stop => return,
            Some(_) = open.join_next(), if !open.is_empty() => {}
            (stream, slot) = next_connection(listener, slots) => {
                open.spawn(serve(stream, slot));
            }
        }
    }
}

/// A free connection slot, then the next connection.
async fn next_connection(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            // The semaphore is never closed; should it be, accept nothing.
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((stream, _peer)) => return (stream, slot),
            Err(error) => {
                warn!(%error, "accept failed");
                drop(slot);
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}
