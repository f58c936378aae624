//! Make-before-break: a backend leaves (its container gone, its endpoint
//! removed from the state) while a client outside the cluster opens new
//! connections through the routing mesh as fast as it can. `up` re-points
//! every Maglev slot that led to the backend before it removes the backend's
//! endpoint, so no new connection is dropped for want of a backend and no SYN
//! is sent twice, beyond the one handshake per removal that may be under way
//! to the leaving backend (the client has one connection at a time).

mod common;

use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use testbed::wait_listening;

const P: &str = "obuo";
const N1: &str = "192.168.200.11";
const CLIENT: &str = "192.168.200.100";
const ROUNDS: usize = 3;

fn order_state(with_w2: bool) -> String {
    let eps: &[(&str, &str, &str)] =
        if with_w2 { &[("w1", "n1", "10.10.0.21"), ("w2", "n1", "10.10.0.22")] } else { &[("w1", "n1", "10.10.0.21")] };
    let mut y = front_state(P, eps);
    let backends = if with_w2 { "[w1, w2]" } else { "[w1]" };
    y += &format!(
        "services:\n  - {{name: web, network: front, ports: [{{protocol: tcp, target: 7100, published: 7100}}], backends: {backends}}}\n"
    );
    y
}

/// A TCP server on :7100 that accepts and closes at once (the server closes
/// first, so TIME_WAIT stays on its side and the client never runs out of ports).
fn accept_close(ns: &Netns) -> Proc {
    let script = "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('0.0.0.0', 7100))\ns.listen(4096)\nwhile True:\n    c, _ = s.accept()\n    c.close()\n";
    Proc(ns.cmd("/usr/bin/python3").args(["-c", script]).spawn().unwrap())
}

/// The calling thread's namespace's count of retransmitted SYNs.
fn syn_retransmits() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names.split_whitespace().position(|n| n == "TCPSynRetrans").expect("TCPSynRetrans in netstat");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The retransmissions of a connection that has sent no data yet: its SYN's.
fn retransmissions(s: &TcpStream) -> u32 {
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes of
    // it for this open socket.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_total_retrans
}

#[derive(Default)]
struct Load {
    opened: AtomicU64,
    failed: AtomicU64,
    /// The errors of failed connections, by kind.
    errors: std::sync::Mutex<Vec<String>>,
    /// Connections whose handshake took 0.9 s or more (reported, not asserted:
    /// the SYN retransmission counter is what says a SYN was lost).
    slow: AtomicU64,
    /// When (since the test's start) each connection that retransmitted its
    /// SYN began.
    retransmitted_at: std::sync::Mutex<Vec<Duration>>,
}

#[test]
fn removing_a_backend_under_new_connections_drops_none_and_retransmits_no_syn() {
    require_root();
    let st = StateFile::new(P, &order_state(true));
    let mut u = underlay(P, 3);
    u.add_host("cl", CLIENT.parse().unwrap());
    let cs = containers(P, &["w1", "w2"]);
    let mut dep = Deployment::new(&bin());
    let (host, ns) = (format!("{P}n1"), format!("{P}-n1"));
    assert_ok(&dep.up(&st.0, &host, &ns));
    let _servers: Vec<Proc> = cs.iter().map(accept_close).collect();
    for c in &cs {
        wait_listening(c, 7100).unwrap();
    }

    let (stop, load) = (Arc::new(AtomicBool::new(false)), Arc::new(Load::default()));
    let t0 = Instant::now();
    let client = {
        let (stop, load, cl) = (stop.clone(), load.clone(), u.host("cl").name.clone());
        thread::spawn(move || {
            enter_netns(&cl).unwrap();
            let to: SocketAddr = format!("{N1}:7100").parse().unwrap();
            let before = syn_retransmits();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                    Ok(mut s) => {
                        if retransmissions(&s) > 0 {
                            load.retransmitted_at.lock().unwrap().push(t - t0);
                        }
                        let _ = s.read(&mut [0u8; 1]);
                        load.opened.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        load.failed.fetch_add(1, Ordering::Relaxed);
                        load.errors.lock().unwrap().push(format!("{:?} after {:?}", e.kind(), t.elapsed()));
                    }
                }
                if t.elapsed() >= Duration::from_millis(900) {
                    load.slow.fetch_add(1, Ordering::Relaxed);
                }
            }
            syn_retransmits() - before
        })
    };
    wait_until("the first connections", 10, || load.opened.load(Ordering::Relaxed) > 100);

    // w2 leaves and comes back, ROUNDS times; every `up` runs under the load.
    let mut during_removals = 0;
    let mut ups = Vec::new();
    for _ in 0..ROUNDS {
        for with_w2 in [false, true] {
            st.write(&order_state(with_w2));
            let before = load.opened.load(Ordering::Relaxed);
            let start = t0.elapsed();
            assert_ok(&dep.up(&st.0, &host, &ns));
            ups.push((start, t0.elapsed(), if with_w2 { "added" } else { "removed" }));
            if !with_w2 {
                during_removals += load.opened.load(Ordering::Relaxed) - before;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let retransmitted = client.join().unwrap();

    let s = status_named(&dep, P, "n1", &st.0);
    let (opened, failed, slow) =
        (load.opened.load(Ordering::Relaxed), load.failed.load(Ordering::Relaxed), load.slow.load(Ordering::Relaxed));
    let no_backend = counter(&s, UNDERLAY, "drop_no_backend");
    eprintln!(
        "{ROUNDS} removals of w2 under load: {opened} connections ({during_removals} while `up` removed w2), \
         {failed} failed, {slow} slow, {retransmitted} SYNs retransmitted, drop_no_backend {no_backend}"
    );
    // Where each retransmitted SYN's connection began, against the `up`s.
    let at = load.retransmitted_at.lock().unwrap().clone();
    for t in &at {
        let during = ups.iter().find(|(a, b, _)| a <= t && t <= b);
        let when = during.map_or("between the ups".to_string(), |(a, _, what)| {
            format!("during the up that {what} w2 (began at {a:?})")
        });
        eprintln!("a SYN retransmitted: its connection began at {t:?}, {when}");
    }
    assert!(during_removals > 0, "no connection was opened while w2 was removed: the test proves nothing");
    assert_eq!(no_backend, 0, "new flows were dropped while the backend was removed");
    // A slow connection is only reported: on a shared machine a connect can
    // wait for the CPU; a lost SYN shows as a retransmission, asserted here.
    // A connection whose handshake is under way to w2 at the moment w2 leaves
    // the backends is w2's: its ACK is balanced anew and the backend it meets
    // resets it (seen: 1 in 34,472 connections), or w2's interface is gone
    // before its SYN-ACK leaves and the client sends its SYN again. The client
    // opens one connection at a time, so at most one such handshake per
    // removal. A make-before-break fault drops SYNs at every removal, counted
    // as drop_no_backend (above), and retransmitted (seen: 2 per run of 3
    // rounds, beside 2 to 3 drop_no_backend).
    let errors = load.errors.lock().unwrap().clone();
    assert!(
        errors.iter().all(|e| e.starts_with("ConnectionReset")),
        "connections failed other than by w2's in-flight handshakes: {errors:?}"
    );
    assert!(
        failed + retransmitted <= ROUNDS as u64,
        "{failed} connections reset and {retransmitted} SYNs retransmitted: more than w2's one in-flight \
         handshake per removal ({ROUNDS})"
    );
    let flows = |name: &str| -> u64 {
        let web = s["services"].as_array().unwrap().iter().find(|x| x["name"] == "web").unwrap();
        let b = web["backends"].as_array().unwrap().iter().find(|b| b["name"] == name);
        b.map_or(0, |b| b["flows"].as_u64().unwrap())
    };
    assert!(flows("w1") > 0 && flows("w2") > 0, "both backends took connections: {}", s["services"]);
}
