//! The one way the emulators run an axum server: spawned on the current tokio runtime, stopped by
//! an explicit `shutdown` (graceful, then aborted after a grace period) or, as a fallback, when
//! the owning emulator is dropped, so a failing test never leaves a listener behind.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long `shutdown` waits for open connections (e.g. a request stuck in a latency fault).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running server task and the means to stop it.
pub(crate) struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Spawns `serve(stop_signal)`; the future must stop accepting once `stop_signal` resolves.
    pub(crate) fn spawn<S, F>(addr: SocketAddr, serve: S) -> Self
    where
        S: FnOnce(oneshot::Receiver<()>) -> F,
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (stop, stop_signal) = oneshot::channel();
        let server = serve(stop_signal);
        let task = tokio::spawn(async move {
            if let Err(err) = server.await {
                tracing::warn!("emulator server on {addr} stopped: {err}");
            }
        });
        Self { addr, stop: Some(stop), task: Some(task) }
    }

    /// The address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish for up to [`SHUTDOWN_GRACE`], then aborts.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
