//! `latency-proxy` (the benchmarks' and outage tests' stand-in for network
//! latency): bytes arrive whole and in order, each direction is delayed by
//! at least the configured delay, and the bandwidth cap holds. Only lower
//! bounds on time are asserted: a loaded machine can only make it slower.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

/// The tests run one at a time: they measure time on a 2-core machine.
/// (The proxy binds port 0 and says which port it got, so two tests can no
/// longer be handed one port.)
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// An echo server on a free port; returns its address.
fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

fn proxy(
    upstream: std::net::SocketAddr,
    extra: &[&str],
) -> (std::process::Child, std::net::SocketAddr) {
    common::start_latency_proxy("127.0.0.1:0", &upstream.to_string(), extra)
}

/// Sends `data` through the proxy to the echo server and back.
fn round_trip(addr: std::net::SocketAddr, data: &[u8]) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let t = Instant::now();
    let mut r = s.try_clone().unwrap();
    let len = data.len();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; len];
        r.read_exact(&mut got).unwrap();
        got
    });
    s.write_all(data).unwrap();
    let got = reader.join().unwrap();
    (got, t.elapsed())
}

#[test]
fn delays_each_direction_and_keeps_every_byte_in_order() {
    let _serial = serial();
    let echo = echo_server();
    let (mut child, addr) = proxy(echo, &["--delay-ms", "25"]);
    let (got, took) = round_trip(addr, b"ping");
    assert_eq!(got, b"ping");
    // Out and back through the proxy: two delays.
    assert!(took >= Duration::from_millis(50), "{took:?}");
    let mut data = vec![0u8; 8 << 20];
    rand::rngs::StdRng::seed_from_u64(5).fill_bytes(&mut data);
    let (got, _) = round_trip(addr, &data);
    assert!(got == data, "8 MiB came back changed");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_bandwidth_cap_holds() {
    let _serial = serial();
    let echo = echo_server();
    let (mut child, addr) = proxy(echo, &["--delay-ms", "0", "--bandwidth", "4MiB"]);
    let data = vec![7u8; 2 << 20];
    let (got, took) = round_trip(addr, &data);
    assert!(got == data);
    // 2 MiB at 4 MiB/s each way (the two directions overlap): >= 0.5 s.
    assert!(took >= Duration::from_millis(450), "{took:?}");
    let _ = child.kill();
    let _ = child.wait();
}
