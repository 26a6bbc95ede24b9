//! Addresses on the loopback interface: sidecar mode with IPv6 needs `::6/128` on `lo`,
//! the source address the sidecar's inbound passthrough binds to (as istio-iptables adds).

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use crate::config::Cidr;

/// The kernel's `struct in6_ifreq`, the argument of `SIOCSIFADDR` on an IPv6 socket.
#[repr(C)]
struct In6Ifreq {
    addr: libc::in6_addr,
    prefix_len: u32,
    ifindex: libc::c_int,
}

/// Adds an IPv6 address to `lo`; one already there is fine. IPv4 prefixes are refused.
pub fn add(cidr: Cidr) -> io::Result<()> {
    let IpAddr::V6(addr) = cidr.addr else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "only IPv6 loopback addresses are added",
        ));
    };
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket has no memory preconditions; the fd is owned right after.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = In6Ifreq {
        addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        prefix_len: u32::from(cidr.len),
        ifindex: ifindex as libc::c_int,
    };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket reads one in6_ifreq from the pointer.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFADDR as _, &request) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err);
        }
    }
    Ok(())
}

/// Whether `lo` has this IPv6 address with this prefix length (read from
/// `/proc/net/if_inet6`).
pub fn has(cidr: Cidr) -> bool {
    let IpAddr::V6(addr) = cidr.addr else {
        return false;
    };
    let table = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    if_inet6_lists(&table, addr, cidr.len)
}

/// Whether a `/proc/net/if_inet6` table lists `addr/len` on `lo`.
fn if_inet6_lists(table: &str, addr: Ipv6Addr, len: u8) -> bool {
    let hex: String = addr.octets().iter().map(|b| format!("{b:02x}")).collect();
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        matches!(fields.as_slice(), [a, _, l, _, _, "lo"]
            if *a == hex && u8::from_str_radix(l, 16) == Ok(len))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_of_lo_from_proc_format() {
        let table = "00000000000000000000000000000001 01 80 10 80       lo\n\
                     00000000000000000000000000000006 01 80 10 80       lo\n\
                     fd770000000000000000000000000002 02 40 00 80     eth0\n";
        let six: Ipv6Addr = "::6".parse().unwrap();
        assert!(if_inet6_lists(table, six, 128));
        assert!(!if_inet6_lists(table, six, 64));
        assert!(!if_inet6_lists(table, "fd77::2".parse().unwrap(), 64));
    }
}
