//! Load generators for the traffic rows: both ends are threads of this
//! process, each in its own network namespace (setns changes only the calling
//! thread's namespace; a socket stays in the namespace it was made in), so no
//! shell or process start sits in the measured loop.
//!
//! Every generator counts completed operations in a shared counter; `measure`
//! reads it after a warm-up and at the end of the window, so ARP, route and
//! connection-table set-up are not part of the rate.

use std::{
    io::{Read, Write},
    mem,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::testbed::enter_netns;

/// Warm-up before the counted window.
const WARMUP: Duration = Duration::from_millis(500);

/// Shared between the measuring thread and the load threads.
#[derive(Default)]
struct Shared {
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// Runs `f` on a new thread inside network namespace `ns` (/run/netns/NS).
fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> JoinHandle<Result<T>> {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter_netns(&ns).with_context(|| format!("enter network namespace {ns}"))?;
        f()
    })
}

fn setsockopt_int(fd: i32, level: i32, opt: i32, v: i32) -> Result<()> {
    let r = unsafe {
        libc::setsockopt(fd, level, opt, &v as *const i32 as *const libc::c_void, mem::size_of::<i32>() as u32)
    };
    if r != 0 {
        bail!("setsockopt({level}, {opt}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// SO_RCVTIMEO on a listener also bounds accept(), so server threads notice
/// the stop flag.
fn set_accept_timeout(l: &TcpListener, d: Duration) -> Result<()> {
    let tv = libc::timeval { tv_sec: d.as_secs() as _, tv_usec: d.subsec_micros() as _ };
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            mem::size_of::<libc::timeval>() as u32,
        )
    };
    if r != 0 {
        bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until a TCP listener on `addr` answers from namespace `ns` (the
/// server threads bind asynchronously).
fn wait_listening(ns: &str, addr: SocketAddrV4) -> Result<()> {
    spawn_in(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("nothing listens on {addr} after 10 s")
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
}

/// Counts `shared.done` over `secs` after the warm-up, then stops the load
/// and joins its threads. Returns operations per second.
fn measure(shared: &Shared, secs: f64, threads: Vec<JoinHandle<Result<()>>>, what: &str) -> Result<f64> {
    thread::sleep(WARMUP);
    let (n0, t0) = (shared.done.load(Ordering::Relaxed), Instant::now());
    thread::sleep(Duration::from_secs_f64(secs));
    let (n1, t1) = (shared.done.load(Ordering::Relaxed), Instant::now());
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("{what}: a load thread panicked"))??;
    }
    if n1 == n0 {
        bail!("{what}: nothing completed in {secs} s ({} errors)", shared.errors.load(Ordering::Relaxed));
    }
    Ok((n1 - n0) as f64 / (t1 - t0).as_secs_f64())
}

/// Small UDP datagrams (18 bytes of payload: 60-byte frames, the Ethernet
/// minimum) from `tx_ns` to `dst`:9100 in `rx_ns`, as fast as one sender
/// thread with sendmmsg can; returns datagrams per second that the receiving
/// application read (delivered end to end, drops anywhere excluded).
pub fn udp_pps(tx_ns: &str, rx_ns: &str, dst: Ipv4Addr, secs: f64) -> Result<f64> {
    const BATCH: usize = 64;
    const PORT: u16 = 9100;
    let shared = Arc::new(Shared::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sh = shared.clone();
    let rx = spawn_in(rx_ns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).context("bind the UDP receiver")?;
        setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let _ = ready_tx.send(());
        let mut bufs = [[0u8; 64]; BATCH];
        let mut iov: Vec<libc::iovec> =
            bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        while !sh.stop.load(Ordering::Relaxed) {
            let n = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n > 0 {
                sh.done.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).context("the UDP receiver did not start")?;
    let sh = shared.clone();
    let tx = spawn_in(tx_ns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect((dst, PORT)).with_context(|| format!("connect to {dst}:{PORT}"))?;
        let mut payload = [0x5au8; 18];
        let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        while !sh.stop.load(Ordering::Relaxed) {
            // ENOBUFS or ECONNREFUSED (an ICMP error for an earlier datagram)
            // only mean those were not delivered: the receiver counts.
            if unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) } < 0 {
                sh.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    });
    measure(&shared, secs, vec![rx, tx], "UDP packets per second")
}

/// One TCP connection from `client_ns` to `dst`:9101 in `server_ns`; the
/// client sends one byte and waits for the server's one-byte answer, over and
/// over (netperf's TCP_RR). Returns round trips per second.
pub fn tcp_rr(client_ns: &str, server_ns: &str, dst: Ipv4Addr, secs: f64) -> Result<f64> {
    const PORT: u16 = 9101;
    let shared = Arc::new(Shared::default());
    let sh = shared.clone();
    let srv = spawn_in(server_ns, move || {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).context("bind the RR server")?;
        set_accept_timeout(&l, Duration::from_millis(200))?;
        // The readiness probe connects first and goes away; the client is the
        // connection that sends bytes.
        while !sh.stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else { continue };
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut b = [0u8; 1];
            loop {
                match s.read(&mut b) {
                    Ok(0) => break,
                    Ok(_) => s.write_all(&b)?,
                    Err(_) if sh.stop.load(Ordering::Relaxed) => return Ok(()),
                    Err(_) => continue,
                }
            }
        }
        Ok(())
    });
    let addr = SocketAddrV4::new(dst, PORT);
    wait_listening(client_ns, addr)?;
    let sh = shared.clone();
    let cli = spawn_in(client_ns, move || {
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3))
            .with_context(|| format!("connect to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut b = [7u8; 1];
        while !sh.stop.load(Ordering::Relaxed) {
            s.write_all(&b)?;
            s.read_exact(&mut b).context("the RR answer (3 s timeout)")?;
            sh.done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    measure(&shared, secs, vec![cli, srv], "TCP request/response")
}

/// A server on :`port` in each of `server_ns` that writes one byte to every
/// connection and closes it; `clients` threads in `client_ns` connect to
/// `dst`, read to the end and close, one connection after another. Returns
/// completed connections per second (all client threads together).
pub fn tcp_conn_rate(
    client_ns: &str,
    server_ns: &[String],
    port: u16,
    dst: SocketAddrV4,
    clients: usize,
    secs: f64,
) -> Result<f64> {
    let shared = Arc::new(Shared::default());
    let mut threads = Vec::new();
    for ns in server_ns {
        let sh = shared.clone();
        threads.push(spawn_in(ns, move || {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).context("bind the connection server")?;
            set_accept_timeout(&l, Duration::from_millis(200))?;
            while !sh.stop.load(Ordering::Relaxed) {
                if let Ok((mut s, _)) = l.accept() {
                    let _ = s.write_all(b"x");
                }
            }
            Ok(())
        }));
    }
    wait_listening(client_ns, dst)?;
    for _ in 0..clients {
        let sh = shared.clone();
        threads.push(spawn_in(client_ns, move || {
            let to: SocketAddr = dst.into();
            let mut buf = [0u8; 8];
            while !sh.stop.load(Ordering::Relaxed) {
                let ok = TcpStream::connect_timeout(&to, Duration::from_secs(2)).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut n = 0;
                    loop {
                        match s.read(&mut buf)? {
                            0 => break,
                            k => n += k,
                        }
                    }
                    Ok(n == 1)
                });
                match ok {
                    Ok(true) => sh.done.fetch_add(1, Ordering::Relaxed),
                    _ => sh.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
            Ok(())
        }));
    }
    measure(&shared, secs, threads, "TCP connections per second")
}
