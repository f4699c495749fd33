//! A TCP listener whose connections a handler can kill, for [`super::Fault::ResetConnection`]:
//! axum has no way to leave a request unanswered, so the fault marks the connection and its I/O
//! fails from then on. hyper then closes the socket without writing the response, and the
//! client sees the connection close before any answer, as when a proxy resets it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Accepts TCP connections, each with a kill switch reachable from requests as
/// `ConnectInfo<Connection>`.
pub(super) struct DroppableListener(TcpListener);

impl DroppableListener {
    pub(super) fn new(listener: TcpListener) -> Self {
        Self(listener)
    }
}

/// The peer of one connection and its kill switch.
#[derive(Clone, Debug)]
pub(super) struct Connection {
    #[allow(dead_code)] // kept for Debug output in traces
    peer: SocketAddr,
    dropped: Arc<AtomicBool>,
}

impl Connection {
    /// Makes every further read and write on this connection fail, so it closes unanswered.
    pub(super) fn drop_connection(&self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Listener for DroppableListener {
    type Io = DroppableStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, peer)) => {
                    let dropped = Arc::new(AtomicBool::new(false));
                    let io = DroppableStream { inner: stream, dropped: dropped.clone() };
                    return (io, Connection { peer, dropped });
                }
                // E.g. EMFILE: back off rather than spin, as axum's own listener does.
                Err(err) => {
                    tracing::debug!("graph emulator accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Connection { peer: self.0.local_addr()?, dropped: Arc::default() })
    }
}

impl Connected<IncomingStream<'_, DroppableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, DroppableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that fails all I/O once its connection was dropped.
pub(super) struct DroppableStream {
    inner: TcpStream,
    dropped: Arc<AtomicBool>,
}

impl DroppableStream {
    fn check(&self) -> io::Result<()> {
        if self.dropped.load(Ordering::SeqCst) {
            Err(io::ErrorKind::ConnectionReset.into())
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for DroppableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DroppableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
