//! Free loopback ports for the servers the tests start as separate processes
//! (the collector binary, PostgreSQL, ClickHouse).
//!
//! A port from `bind("127.0.0.1:0")` comes from the kernel's ephemeral range,
//! the range it also uses for the local end of outgoing connections. Between
//! the test releasing such a port and the server binding it, any connection on
//! the machine can take it, and the server fails with "address in use" (this
//! happened in CI). So ports are drawn at random below the ephemeral range,
//! where only servers binding an explicit port compete, and checked free.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Lowest port drawn: above the well-known and most registered service ports.
const LOWEST: u16 = 10_000;

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn random() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// Ports this process has handed out (or found taken).
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that is free now and outside the ephemeral range.
pub fn free_port() -> u16 {
    let top = ephemeral_start();
    if top > LOWEST + 1_000 {
        let span = u64::from(top - LOWEST);
        for _ in 0..200 {
            let port = LOWEST + (random() % span) as u16;
            // A port handed out earlier may not be bound yet (its server is
            // still starting): never hand it out twice (seen in CI: two of
            // one test's collectors drew the same port).
            if !GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    // An unusual port range: fall back to the kernel's choice.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must work")
}

/// [`free_port`] as a loopback socket address.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
