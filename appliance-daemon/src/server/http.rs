//! The connection layer under the router: accepting, TLS handshakes, HTTP/1.1 with a
//! header-read timeout, and a cap on open connections that keeps the health endpoints
//! answering when clients hold every slot.
//!
//! Why not `axum::serve`: it sets no timer, so a client that connects and sends nothing,
//! or sends its head a byte at a time, holds a connection (and a file descriptor) for
//! ever; and it accepts until the process runs out of file descriptors, after which even
//! `/healthz` cannot be reached. Here:
//! - a connection must deliver a whole request head within `header_read_timeout` of
//!   connecting or of its previous response (hyper's timer: idle keep-alive connections
//!   and slow heads are closed alike);
//! - at most `max_connections` are open (held below the open-file limit at start); when
//!   all are taken, the connection idle the longest (no request in flight, or still in its
//!   TLS handshake or head) is closed at once to make room;
//! - when none is idle, a few more are accepted in an overflow mode that answers the
//!   health routes and gives every other request 503 with `Retry-After`, then closes;
//!   when the overflow is full too, its connection idle the longest (one that has not
//!   sent its request) is closed to make room, so a health check always gets in; while
//!   every overflow connection is busy, or too many are already leaving, no connection is
//!   accepted: newcomers wait in the kernel's backlog until one closes.
//!
//! Every request gets the client's address as `ConnectInfo<Peer>`, with IPv4 clients of an
//! IPv6 listener (`::ffff:a.b.c.d`) given as plain IPv4.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::tls::Peer;

/// Bounds of the connection layer.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to receive a request head, from the connection's start or previous response.
    pub header_read_timeout: Duration,
    /// Connections served normally at once.
    pub max_connections: usize,
}

/// Connections beyond the cap that still get the health routes.
const OVERFLOW_CONNECTIONS: usize = 32;
/// Head timeout of an overflow connection.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections asked to leave that may still hold their descriptor while newcomers take
/// their places: a burst of connections cannot outrun the closing of the evicted ones.
const EVICTING_SLACK: usize = 32;

/// File descriptors kept free for everything that is not a client connection: the state
/// database, model files, imports, logs, telemetry.
const FD_RESERVE: u64 = 128;

/// Raises the open-file limit to its hard maximum (as Go and nginx do) and returns the
/// connection cap that fits under it: `wanted`, or less, leaving room for the daemon's own
/// files and the overflow connections.
pub fn fit_connection_cap(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum)
        && cur < max
    {
        lim.current = Some(max);
        if setrlimit(Resource::Nofile, lim).is_err() {
            lim = getrlimit(Resource::Nofile);
        }
    }
    let Some(files) = lim.current else {
        return wanted;
    };
    let room = files
        .saturating_sub(FD_RESERVE)
        .saturating_sub((OVERFLOW_CONNECTIONS + EVICTING_SLACK) as u64);
    let cap = usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(16, wanted.max(16));
    if cap < wanted {
        tracing::warn!(
            open_files_limit = files,
            max_connections = cap,
            wanted,
            "the open-file limit holds fewer connections than configured: raise it (LimitNOFILE=) to serve more"
        );
    }
    cap
}

/// One open connection as the registry sees it.
#[derive(Debug)]
struct Conn {
    /// Requests in flight (a request counts until its response body is written).
    busy: AtomicUsize,
    /// Milliseconds since the registry's epoch when it last started or finished a request
    /// (or connected): the eviction order.
    last_active_ms: AtomicU64,
    /// Set once chosen for eviction, so it is not chosen twice.
    evicting: AtomicBool,
    evict: Notify,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    normal: HashMap<u64, Arc<Conn>>,
    overflow: HashMap<u64, Arc<Conn>>,
}

/// Where a newcomer goes: normal or overflow, and the connection there that must leave
/// to make room, if any.
struct Place {
    overflow: bool,
    victim: Option<Arc<Conn>>,
}

impl Table {
    /// Connections asked to leave that still hold their descriptor.
    fn leaving(&self) -> usize {
        self.normal
            .values()
            .chain(self.overflow.values())
            .filter(|c| c.evicting.load(Ordering::Relaxed))
            .count()
    }

    /// Where a newcomer would go: a free normal slot; else the place of the normal
    /// connection idle the longest (unless too many are already on their way out); else
    /// the same in the overflow; else nowhere.
    fn place(&self, max: usize) -> Option<Place> {
        let leaving = self.leaving();
        let pools = [
            (false, &self.normal, max),
            (true, &self.overflow, OVERFLOW_CONNECTIONS),
        ];
        for (overflow, pool, cap) in pools {
            let staying = pool
                .values()
                .filter(|c| !c.evicting.load(Ordering::Relaxed))
                .count();
            if staying < cap {
                return Some(Place {
                    overflow,
                    victim: None,
                });
            }
            let victim = pool
                .values()
                .filter(|c| {
                    !c.evicting.load(Ordering::Relaxed) && c.busy.load(Ordering::Relaxed) == 0
                })
                .min_by_key(|c| c.last_active_ms.load(Ordering::Relaxed))
                .filter(|_| leaving < EVICTING_SLACK);
            if let Some(v) = victim {
                return Some(Place {
                    overflow,
                    victim: Some(v.clone()),
                });
            }
        }
        None
    }
}

/// The open connections.
#[derive(Debug)]
struct Registry {
    table: Mutex<Table>,
    epoch: Instant,
    max: usize,
    /// Signalled whenever a connection ends (the shutdown waits on it).
    ended: Notify,
}

enum Admit {
    Normal(Slot),
    Overflow(Slot),
    Refuse,
}

/// A connection's place in the registry, given back when dropped.
struct Slot {
    registry: Arc<Registry>,
    id: u64,
    overflow: bool,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.registry.lock();
        if self.overflow {
            t.overflow.remove(&self.id);
        } else {
            t.normal.remove(&self.id);
        }
        drop(t);
        self.registry.ended.notify_waiters();
    }
}

impl Registry {
    fn new(max: usize) -> Arc<Registry> {
        Arc::new(Registry {
            table: Mutex::new(Table::default()),
            epoch: Instant::now(),
            max: max.max(1),
            ended: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn admit(self: &Arc<Self>) -> Admit {
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(self.now_ms()),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
        });
        let mut t = self.lock();
        let Some(Place { overflow, victim }) = t.place(self.max) else {
            return Admit::Refuse;
        };
        if let Some(v) = victim {
            v.evicting.store(true, Ordering::Relaxed);
            v.evict.notify_one();
        }
        let id = t.next_id;
        t.next_id += 1;
        let pool = if overflow {
            &mut t.overflow
        } else {
            &mut t.normal
        };
        pool.insert(id, conn.clone());
        let slot = Slot {
            registry: self.clone(),
            id,
            overflow,
            conn,
        };
        if overflow {
            Admit::Overflow(slot)
        } else {
            Admit::Normal(slot)
        }
    }

    /// Whether a newcomer would be admitted (normally, or in the overflow).
    fn has_room(&self) -> bool {
        self.lock().place(self.max).is_some()
    }

    fn open(&self) -> usize {
        let t = self.lock();
        t.normal.len() + t.overflow.len()
    }
}

/// Counts a request as in flight until its response body is dropped (written or
/// abandoned).
struct Busy {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Busy {
    fn new(conn: Arc<Conn>, registry: Arc<Registry>) -> Busy {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        conn.last_active_ms
            .store(registry.now_ms(), Ordering::Relaxed);
        Busy { conn, registry }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .last_active_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`Busy`] until it is done.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The peer's address with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as IPv4, so a
/// loopback client is loopback whichever family the listener has.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Whether an overflow connection may have `path` served.
fn health_route(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

fn overflow_refusal() -> Response<Body> {
    let body = serde_json::json!({ "error": {
        "message": "The server holds as many connections as it serves; retry shortly",
        "type": "server_error", "param": null, "code": "too_many_connections" } });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Serves `app` on `listener` (TLS with `tls`) until `stop` turns true, then lets the open
/// connections finish their requests and returns when they have closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Registry::new(limits.max_connections);
    let mut accept_errors_logged = Instant::now() - Duration::from_secs(60);
    loop {
        // No room (a burst has more connections leaving than allowed at once, or every
        // slot is busy): the next connection waits in the kernel's backlog until one
        // closes, rather than being accepted only to be closed unanswered.
        while !registry.has_room() && !*stop.borrow() {
            let ended = registry.ended.notified();
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was taken:
                // log at most once a minute, back off a little.
                if accept_errors_logged.elapsed() > Duration::from_secs(60) {
                    tracing::warn!(error = %e, open = registry.open(), "accept failed");
                    accept_errors_logged = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = canonical(addr);
        let (slot, overflow) = match registry.admit() {
            Admit::Normal(s) => (s, false),
            Admit::Overflow(s) => (s, true),
            Admit::Refuse => {
                tracing::debug!(%peer, "connection refused: every slot and the overflow are taken");
                continue;
            }
        };
        let (app, tls, stop) = (app.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, peer, tls, app, slot, overflow, limits, stop).await;
        });
    }
    // Stopping: every connection was told (they watch `stop`); wait for them to close.
    loop {
        let ended = registry.ended.notified();
        if registry.open() == 0 {
            break;
        }
        ended.await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    slot: Slot,
    overflow: bool,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let head_timeout = if overflow {
        limits.header_read_timeout.min(OVERFLOW_HEADER_TIMEOUT)
    } else {
        limits.header_read_timeout
    };
    match tls {
        None => serve_http(stream, peer, app, &slot, overflow, head_timeout, &mut stop).await,
        Some(acceptor) => {
            // The handshake counts as reading the head: same bound, and evictable.
            let handshake = tokio::time::timeout(head_timeout, acceptor.accept(stream));
            let tls_stream = tokio::select! {
                r = handshake => r,
                () = slot.conn.evict.notified() => return,
                _ = stop.wait_for(|s| *s) => return,
            };
            match tls_stream {
                Ok(Ok(s)) => {
                    serve_http(s, peer, app, &slot, overflow, head_timeout, &mut stop).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    slot: &Slot,
    overflow: bool,
    head_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn_state, registry) = (slot.conn.clone(), slot.registry.clone());
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let busy = Busy::new(conn_state.clone(), registry.clone());
        async move {
            if overflow && !health_route(req.uri().path()) {
                return Ok::<_, Infallible>(overflow_refusal());
            }
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(Peer(peer)));
            let resp = match app.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(resp.map(|inner| Body::new(Tracked { inner, _busy: busy })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .keep_alive(!overflow);
    let conn = builder.serve_connection(
        TokioIo::new(io),
        hyper_util::service::TowerToHyperService::new(service),
    );
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            () = slot.conn.evict.notified(), if !stopping => {
                // Idle (between requests, or still sending a head): closed at once, which
                // gives its descriptor back. A request that began meanwhile finishes first.
                if slot.conn.busy.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%peer, "closed an idle connection to make room");
                    return;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_clients_of_an_ipv6_listener_are_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(canonical(mapped).to_string(), "127.0.0.1:9");
        assert!(canonical(mapped).ip().is_loopback());
        let v6: SocketAddr = "[::1]:9".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn a_full_table_evicts_the_longest_idle_then_overflows_then_refuses() {
        let reg = Registry::new(2);
        let Admit::Normal(a) = reg.admit() else {
            panic!("first");
        };
        std::thread::sleep(Duration::from_millis(5));
        let Admit::Normal(b) = reg.admit() else {
            panic!("second");
        };
        // Full: the oldest idle one (a) is asked to leave, the newcomer is admitted.
        let Admit::Normal(c) = reg.admit() else {
            panic!("third");
        };
        assert!(a.conn.evicting.load(Ordering::Relaxed));
        assert!(!b.conn.evicting.load(Ordering::Relaxed));
        drop(a);
        // b and c busy: nobody to evict, so overflow.
        let _busy_b = Busy::new(b.conn.clone(), reg.clone());
        let _busy_c = Busy::new(c.conn.clone(), reg.clone());
        let mut overflow = Vec::new();
        for _ in 0..OVERFLOW_CONNECTIONS {
            match reg.admit() {
                Admit::Overflow(s) => overflow.push(s),
                _ => panic!("expected overflow"),
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // The overflow full of idle connections: its oldest makes room, so a health check
        // still gets in.
        let Admit::Overflow(d) = reg.admit() else {
            panic!("a newcomer while the overflow is idle");
        };
        assert!(overflow[0].conn.evicting.load(Ordering::Relaxed));
        assert!(!overflow[1].conn.evicting.load(Ordering::Relaxed));
        drop(overflow.remove(0));
        // Every overflow connection busy: nobody to evict, so refusal.
        let busy: Vec<Busy> = overflow
            .iter()
            .chain([&d])
            .map(|s| Busy::new(s.conn.clone(), reg.clone()))
            .collect();
        assert!(!reg.has_room());
        assert!(matches!(reg.admit(), Admit::Refuse));
        assert_eq!(reg.open(), 2 + OVERFLOW_CONNECTIONS);
        drop(busy);
        assert!(reg.has_room());
        drop(overflow);
        drop(d);
        assert_eq!(reg.open(), 2);
    }

    #[test]
    fn no_more_than_the_slack_are_asked_to_leave_at_once() {
        let reg = Registry::new(1);
        let Admit::Normal(_a) = reg.admit() else {
            panic!("first");
        };
        // Every newcomer evicts the previous one, which never closes (its task is
        // stuck): after EVICTING_SLACK of them the registry stops evicting.
        let mut held = Vec::new();
        loop {
            match reg.admit() {
                Admit::Refuse => break,
                Admit::Normal(s) | Admit::Overflow(s) => held.push(s),
            }
            assert!(held.len() <= 1 + EVICTING_SLACK + OVERFLOW_CONNECTIONS);
        }
        assert!(!reg.has_room());
        let t = reg.lock();
        assert_eq!(t.leaving(), EVICTING_SLACK);
        assert!(t.normal.len() + t.overflow.len() <= 1 + EVICTING_SLACK + OVERFLOW_CONNECTIONS);
    }
}
