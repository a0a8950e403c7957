//! A TCP proxy on loopback that can cut and heal the connections it forwards (the
//! `partition-agent` nemesis puts one in front of every master for every agent; the CLI's
//! scheduling tests use it too). After a cut, live connections are closed and new ones are
//! accepted and black-holed, as a partition looks to the client (calls time out).

use std::io::ErrorKind;
use std::net::Shutdown;
use std::net::TcpListener;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

/// A cuttable proxy in front of one address; stops when dropped.
pub struct TcpProxy {
    pub addr: String,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyShared {
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both ends of every forwarded connection, and every black-holed one.
    conns: Mutex<Vec<TcpStream>>,
}

impl ProxyShared {
    fn conns(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close_all(&self) {
        for s in self.conns().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl TcpProxy {
    /// A proxy on a free loopback port forwarding to `upstream`.
    pub fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(ProxyShared::default());
        let upstream = upstream.to_string();
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = client.set_nonblocking(false);
                if s.cut.load(Ordering::SeqCst) {
                    s.conns().push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue; // the client sees the connection close, as if refused
                };
                let _ = server.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                {
                    let mut conns = s.conns();
                    conns.push(c3);
                    conns.push(s3);
                }
                pump(client, s2);
                pump(server, c2);
            }
        });
        Ok(TcpProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Closes every connection and black-holes new ones.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Forwards new connections again (and drops the black-holed ones).
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        self.shared.close_all();
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.shared.close_all();
    }
}
