//! Stand-ins for the edges of a test that are not under test.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

/// An HTTP server that answers every request `200 Prometheus is Ready.`,
/// for tests of a process whose health waits on Prometheus's `/-/ready` and
/// that are not about Prometheus. Needs a multi-threaded runtime when the
/// test blocks its own thread.
pub async fn prometheus_ready() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let body = "Prometheus is Ready.\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, task)
}
