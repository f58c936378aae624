//! The resolver (docs/dns.md): the agent answers every overlay network's
//! endpoints at the network's gateway address, UDP and TCP port 53, on each
//! host with endpoints of the network. Names come from the state and the
//! health checks ([`zone`]); anything else goes to the upstream resolvers.
//!
//! The gateway address is this host's own (`up` puts it on `lo` with the
//! label `lo:ob`), and the endpoints' TC program hands packets for it to the
//! host stack: a query reaches the socket below, its answer goes back through
//! the host route to the container's veth. The wire format is hickory's.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::plan::zone::{Answer, QType, Zone, TTL};
use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{
        rdata::{A, PTR},
        Name, RData, Record, RecordType,
    },
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, UdpSocket},
};

use crate::{state::model::Cluster, task::AbortOnDrop};

/// The port the resolver answers on.
pub const PORT: u16 = 53;
/// How long forwarding may take before the client gets SERVFAIL.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The upstream resolvers of `/etc/resolv.conf` (its `nameserver` lines),
/// port 53.
pub fn system_upstreams() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    parse_resolv_conf(&text)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, PORT))
        .collect()
}

/// `IP[:PORT]` of `--dns-upstream`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, PORT)))
        .map_err(|_| format!("--dns-upstream {s:?}: expected IP or IP:PORT, e.g. 10.0.0.2 or 10.0.0.2:5353"))
}

struct Shared {
    zone: RwLock<Arc<Zone>>,
    upstreams: Vec<SocketAddr>,
}

/// The resolver of one host: its zone and one UDP and one TCP server per
/// gateway it serves.
pub struct Resolver {
    shared: Arc<Shared>,
    servers: BTreeMap<Ipv4Addr, [AbortOnDrop<()>; 2]>,
}

impl Resolver {
    pub fn new(upstreams: Vec<SocketAddr>) -> Resolver {
        Resolver { shared: Arc::new(Shared { zone: RwLock::default(), upstreams }), servers: BTreeMap::new() }
    }

    /// Answers from `c` (host `h`, backends in `unhealthy` out) from now
    /// on, serving the gateways of the networks with an endpoint here.
    pub async fn update(&mut self, c: &Cluster, h: usize, unhealthy: &BTreeSet<String>) {
        *self.shared.zone.write().expect("not poisoned") = Arc::new(Zone::build(c, unhealthy));
        let want = Zone::served(c, h);
        self.servers.retain(|gw, _| want.contains(gw));
        for gw in want {
            if self.servers.contains_key(&gw) {
                continue;
            }
            match serve(gw, self.shared.clone()).await {
                Ok(s) => {
                    tracing::info!("resolver at {gw}:{PORT} (UDP and TCP)");
                    self.servers.insert(gw, s);
                }
                Err(e) => tracing::warn!("no resolver at {gw}:{PORT}: {e}; tried again at the next change"),
            }
        }
    }
}

async fn serve(gw: Ipv4Addr, shared: Arc<Shared>) -> std::io::Result<[AbortOnDrop<()>; 2]> {
    let udp = Arc::new(UdpSocket::bind((gw, PORT)).await?);
    let tcp = TcpListener::bind((gw, PORT)).await?;
    let s = shared.clone();
    let u = AbortOnDrop(tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else { continue };
            // A task per query: the answer is built and sent on the other
            // worker while this one receives (measured: faster than inline).
            let (req, udp, s) = (buf[..n].to_vec(), udp.clone(), s.clone());
            tokio::spawn(async move {
                if let Some(r) = handle(&s, gw, from, &req, true).await {
                    let _ = udp.send_to(&r, from).await;
                }
            });
        }
    }));
    let t = AbortOnDrop(tokio::spawn(async move {
        loop {
            let Ok((mut conn, from)) = tcp.accept().await else { continue };
            let s = shared.clone();
            tokio::spawn(async move {
                // Length-prefixed messages until the client closes or idles.
                loop {
                    let read = async {
                        let len = conn.read_u16().await? as usize;
                        let mut req = vec![0u8; len];
                        conn.read_exact(&mut req).await?;
                        Ok::<_, std::io::Error>(req)
                    };
                    let Ok(Ok(req)) = tokio::time::timeout(Duration::from_secs(10), read).await else { return };
                    let Some(r) = handle(&s, gw, from, &req, false).await else { return };
                    let mut out = (r.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&r);
                    if conn.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    }));
    Ok([u, t])
}

/// The answer to one query (None: not a query worth answering).
async fn handle(s: &Shared, gw: Ipv4Addr, from: SocketAddr, req: &[u8], udp: bool) -> Option<Vec<u8>> {
    match local(s, gw, from, req, udp) {
        Reply::Now(r) => r,
        Reply::Forward(fallback) => forward(req, &s.upstreams).await.or(fallback),
    }
}

/// What a query gets without waiting for anyone.
enum Reply {
    /// The answer (None: not a query worth answering).
    Now(Option<Vec<u8>>),
    /// Ask the upstreams; this SERVFAIL when none answers in time.
    Forward(Option<Vec<u8>>),
}

fn local(s: &Shared, gw: Ipv4Addr, from: SocketAddr, req: &[u8], udp: bool) -> Reply {
    let Ok(msg) = Message::from_vec(req) else { return Reply::Now(None) };
    if msg.message_type() != MessageType::Query {
        return Reply::Now(None);
    }
    let mut resp = Message::new();
    resp.set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true);
    let Some(q) = msg.queries().first().cloned() else {
        resp.set_response_code(ResponseCode::FormErr);
        return Reply::Now(resp.to_vec().ok());
    };
    resp.add_query(q.clone());
    if msg.op_code() != OpCode::Query {
        resp.set_response_code(ResponseCode::NotImp);
        return Reply::Now(resp.to_vec().ok());
    }
    let client = match from.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let qtype = match q.query_type() {
        RecordType::A => QType::A,
        RecordType::PTR => QType::Ptr,
        _ => QType::Other,
    };
    let zone = s.zone.read().expect("not poisoned").clone();
    match zone.answer(gw, client, &q.name().to_ascii(), qtype) {
        Answer::Addrs(mut ips) => {
            shuffle(&mut ips);
            resp.set_authoritative(true);
            for ip in ips {
                resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
            }
        }
        Answer::Ptr(name) => {
            resp.set_authoritative(true);
            let Ok(target) = Name::from_ascii(format!("{name}.")) else { return Reply::Now(None) };
            resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(target))));
        }
        Answer::NoData => {
            resp.set_authoritative(true);
        }
        Answer::NxDomain => {
            resp.set_authoritative(true).set_response_code(ResponseCode::NXDomain);
        }
        Answer::Refused => {
            resp.set_response_code(ResponseCode::Refused);
        }
        Answer::Forward => {
            resp.set_response_code(ResponseCode::ServFail);
            return Reply::Forward(resp.to_vec().ok());
        }
    }
    let Ok(out) = resp.to_vec() else { return Reply::Now(None) };
    let limit = msg.extensions().as_ref().map_or(512, |e| usize::from(e.max_payload()).max(512));
    if udp && out.len() > limit {
        return Reply::Now(resp.truncate().to_vec().ok());
    }
    Reply::Now(Some(out))
}

/// Asks every upstream at once; the first answer with the query's ID wins.
/// None when none answers within [`UPSTREAM_TIMEOUT`].
async fn forward(req: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    if upstreams.is_empty() || req.len() < 2 {
        return None;
    }
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    for up in upstreams {
        let _ = sock.send_to(req, up).await;
    }
    let mut buf = vec![0u8; 65535];
    loop {
        match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if upstreams.contains(&from) && n >= 2 && buf[..2] == req[..2] => {
                return Some(buf[..n].to_vec())
            }
            Ok(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// Fisher-Yates with a small generator seeded from the clock: answers only
/// need to spread clients over backends, not resist prediction.
fn shuffle<T>(v: &mut [T]) {
    let mut x =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_resolv_conf_and_the_flag() {
        let t = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fd00::1\noptions ndots:0\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec!["10.0.0.2:53".parse::<SocketAddr>().unwrap(), "[fd00::1]:53".parse().unwrap()]
        );
        assert_eq!(parse_upstream("10.0.0.3").unwrap(), "10.0.0.3:53".parse().unwrap());
        assert_eq!(parse_upstream("10.0.0.3:5353").unwrap(), "10.0.0.3:5353".parse().unwrap());
        assert!(parse_upstream("dns.example").unwrap_err().contains("expected IP or IP:PORT"));
    }

    #[test]
    fn shuffling_keeps_every_element() {
        let mut v: Vec<u32> = (0..50).collect();
        shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }
}
