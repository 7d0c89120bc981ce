//! What every shell does to an accepted socket before MQTT: TCP keepalive, so that a peer
//! that vanished without a word (a dead NAT entry, a powered-off device) is found even with
//! MQTT keep-alive 0, and the per-source-address connection limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Keepalive probes sent after the idle time before the connection is given up.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "macos"
))]
const KEEPALIVE_PROBES: u32 = 4;

/// The TCP keepalive idle time unless configured (`[limits] tcp_keepalive_secs`).
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Turns TCP keepalive on for `socket`: the first probe after `idle` without traffic, then
/// (where the system allows setting them) one every `idle / 4` (at least a second), four in
/// all, before the connection is given up.
///
/// # Errors
///
/// The system refused the option.
#[cfg(unix)]
pub fn set_keepalive(socket: &impl std::os::fd::AsFd, idle: Duration) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new().with_time(idle);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "macos"
    ))]
    let keepalive = keepalive
        .with_interval((idle / 4).max(Duration::from_secs(1)))
        .with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive)
}

/// Turns TCP keepalive on for `socket` (see the Unix version).
///
/// # Errors
///
/// The system refused the option.
#[cfg(windows)]
pub fn set_keepalive(
    socket: &impl std::os::windows::io::AsSocket,
    idle: Duration,
) -> std::io::Result<()> {
    let interval = (idle / 4).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval);
    socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive)
}

/// Open connections per source address, bounded by `[limits] max_connections_per_address`.
/// Cloning shares the counts.
#[derive(Debug, Clone)]
pub struct PerAddress {
    max: usize,
    counts: Counts,
}

/// Open connections per address, shared.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

impl PerAddress {
    /// At most `max` connections from one address; 0: no limit.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            max,
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Counts a new connection from `ip`, or `None` when `ip` has its most already. The count
    /// is given back when the returned slot is dropped.
    #[must_use]
    pub fn admit(&self, ip: IpAddr) -> Option<AddressSlot> {
        if self.max == 0 {
            return Some(AddressSlot(None));
        }
        let ip = canonical(ip);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot(Some((ip, Arc::clone(&self.counts)))))
    }
}

/// An IPv4-mapped IPv6 address counts as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// One connection counted for its address (see [`PerAddress::admit`]).
#[derive(Debug)]
pub struct AddressSlot(Option<(IpAddr, Counts)>);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some((ip, counts)) = self.0.take() {
            let mut counts = counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_address_are_bounded_and_given_back() {
        let limit = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let one = limit.admit(a).expect("first");
        let _two = limit.admit(a).expect("second");
        assert!(limit.admit(a).is_none());
        assert!(limit
            .admit("::ffff:10.0.0.1".parse().expect("ip"))
            .is_none());
        let _other = limit.admit(b).expect("another address");
        drop(one);
        let _three = limit.admit(a).expect("room again");
        let unlimited = PerAddress::new(0);
        let slots: Vec<_> = (0..100).filter_map(|_| unlimited.admit(a)).collect();
        assert_eq!(slots.len(), 100);
    }

    #[test]
    fn keepalive_is_set() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        set_keepalive(&client, Duration::from_secs(30)).expect("set");
        let sock = socket2::SockRef::from(&client);
        assert!(sock.keepalive().expect("read"));
        #[cfg(target_os = "linux")]
        assert_eq!(
            sock.tcp_keepalive_time().expect("idle"),
            Duration::from_secs(30)
        );
    }
}
