//! Socket addresses and pktinfo control messages, between their C and Rust forms.

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::batch::CTRL_WORDS;

/// The local end of a datagram, from pktinfo: where the reply must come from. Only known on
/// sockets with pktinfo enabled (wildcard listeners).
///
/// For IPv4 that is `ipi_addr`, the destination in the datagram's header, not `ipi_spec_dst`:
/// the kernel's "preferred local address" is the header's destination only when the route
/// cached on the packet says local delivery, and on loopback a datagram sent to 127.0.0.2
/// sometimes reports 127.0.0.1 there (seen in tests), which would answer from the wrong address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Local {
    /// IPv4: the address the datagram was sent to.
    V4(Ipv4Addr),
    /// IPv6: the destination address and the interface it arrived on (link-local scope).
    V6 {
        /// The address the datagram was sent to.
        addr: Ipv6Addr,
        /// The interface it arrived on.
        ifindex: u32,
    },
}

impl Local {
    /// True when the datagram was sent to a multicast or the limited broadcast address. (A
    /// subnet's broadcast address cannot be told from its number; a reply from it fails in
    /// the kernel, which refuses a non-local source address, and is counted as dropped.)
    pub fn not_unicast(&self) -> bool {
        match *self {
            Local::V4(addr) => addr.is_multicast() || addr.is_broadcast(),
            Local::V6 { addr, .. } => match addr.to_ipv4_mapped() {
                // An IPv4 datagram on a dual-stack socket.
                Some(v4) => Local::V4(v4).not_unicast(),
                None => addr.is_multicast(),
            },
        }
    }
}

/// `sockaddr_storage` → `SocketAddr` (IPv4 and IPv6 only).
pub(super) fn from_sockaddr(
    ss: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let ptr = ss as *const libc::sockaddr_storage;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, and the storage is large and
            // aligned enough for any sockaddr.
            let sin = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `SocketAddr` → `sockaddr_storage`; returns the length to pass.
pub(super) fn to_sockaddr(addr: SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let ptr = ss as *mut libc::sockaddr_storage;
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in; an
            // all-zero sockaddr_in is valid before its fields are set.
            let sin = unsafe { &mut *ptr.cast::<libc::sockaddr_in>() };
            *sin = unsafe { zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *ptr.cast::<libc::sockaddr_in6>() };
            *sin6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The IP_PKTINFO / IPV6_PKTINFO control message of a received datagram, if any.
pub(super) fn read_pktinfo(h: &libc::msghdr) -> Option<Local> {
    if h.msg_controllen == 0 {
        return None;
    }
    // SAFETY: `h` is a header the kernel just filled: msg_control/msg_controllen describe
    // the control messages it wrote, which the CMSG_* walk stays within. Payloads are read
    // unaligned, as CMSG_DATA gives no alignment promise for the struct inside.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                let p: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(Local::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
            }
            if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                let p: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(Local::V6 {
                    addr: Ipv6Addr::from(p.ipi6_addr.s6_addr),
                    ifindex: p.ipi6_ifindex,
                });
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Write the control message that makes a reply leave from `local`; returns its length.
/// IPv4 sets only the source (`ipi_spec_dst`; interface 0: routing picks the way out);
/// IPv6 also pins the interface it came in on, which link-local addresses need.
pub(super) fn write_pktinfo(local: Local, buf: &mut [u64; CTRL_WORDS]) -> usize {
    *buf = [0; CTRL_WORDS];
    let (level, kind, len) = match local {
        Local::V4 { .. } => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            size_of::<libc::in_pktinfo>(),
        ),
        Local::V6 { .. } => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            size_of::<libc::in6_pktinfo>(),
        ),
    };
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic. The buffer is u64-aligned (as
    // cmsghdr needs) and CTRL_WORDS * 8 = 64 bytes, more than CMSG_SPACE of either pktinfo
    // (32 and 40), so the header and data writes stay inside it.
    unsafe {
        let space = libc::CMSG_SPACE(len as _) as usize;
        debug_assert!(space <= CTRL_WORDS * 8);
        let c = buf.as_mut_ptr().cast::<libc::cmsghdr>();
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = libc::CMSG_LEN(len as _) as _;
        let data = libc::CMSG_DATA(c);
        match local {
            Local::V4(spec_dst) => {
                let p = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(spec_dst).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(data.cast(), p);
            }
            Local::V6 { addr, ifindex } => {
                let p = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: addr.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                std::ptr::write_unaligned(data.cast(), p);
            }
        }
        space
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_sockaddr() {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
        for a in [
            "127.0.0.1:7",
            "[::1]:50007",
            "[fe80::1%2]:9",
            "[::ffff:10.0.0.1]:1",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let len = to_sockaddr(addr, &mut ss);
            assert_eq!(from_sockaddr(&ss, len), Some(addr), "{a}");
        }
        assert_eq!(from_sockaddr(&ss, 4), None, "too short for its family");
    }

    #[test]
    fn broadcast_and_multicast_are_not_unicast() {
        let v4 = |a: [u8; 4]| Local::V4(a.into());
        assert!(!v4([127, 0, 0, 2]).not_unicast());
        assert!(v4([255, 255, 255, 255]).not_unicast());
        assert!(v4([224, 0, 0, 1]).not_unicast());
        let v6 = |a: &str| Local::V6 {
            addr: a.parse().unwrap(),
            ifindex: 1,
        };
        assert!(!v6("::1").not_unicast());
        assert!(v6("ff02::1").not_unicast());
        assert!(v6("::ffff:255.255.255.255").not_unicast());
        assert!(v6("::ffff:224.0.0.1").not_unicast());
        assert!(!v6("::ffff:127.0.0.2").not_unicast());
    }
}
