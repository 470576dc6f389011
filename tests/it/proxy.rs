//! A TCP proxy that can blackhole: while on, bytes are neither forwarded nor answered
//! and connections stay open, as with a peer that vanished without a FIN or RST.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blackhole = Arc::new(AtomicBool::new(false));
        let hole = blackhole.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (hole, upstream) = (hole.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(pipe(client_read, server_write, hole.clone()), pipe(server_read, client_write, hole));
                });
            }
        });
        Proxy { addr, blackhole, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn blackhole(&self, on: bool) {
        self.blackhole.store(on, SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`; while blackholed, what arrives is dropped for good and the
/// connection is left hanging (a connection that saw the blackhole stays dead).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    hole: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut dead = false;
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dead |= hole.load(SeqCst);
        if dead {
            // Keep the socket open and silent until the test ends.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
