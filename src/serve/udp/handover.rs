//! A UDP socket across a reload (SPEC §13): its descriptor and its reply queue (held
//! `--delay` replies with their due times, and those the kernel refused). The loop
//! detector's memory is not carried over: it starts empty in the new image.

use std::collections::VecDeque;

use super::addr::Local;
use super::{Queued, UdpSocket};
use crate::net::listen::Endpoint;
use crate::reload::state::{self, Reader, Writer};

impl UdpSocket {
    /// The socket's endpoint (saved with the listeners).
    pub fn endpoint(&self) -> &Endpoint {
        &self.listener
    }

    /// Write the reply queue (the socket itself is saved with the listeners).
    pub fn save_queue(&self, w: &mut Writer) {
        w.usize(self.queue.len());
        for q in &self.queue {
            w.instant(q.due);
            w.opt_addr(Some(q.to));
            match q.from {
                None => w.u8(0),
                Some(Local::V4(a)) => {
                    w.u8(4);
                    w.u32(u32::from(a));
                }
                Some(Local::V6 { addr, ifindex }) => {
                    w.u8(6);
                    w.bytes(&addr.octets());
                    w.u32(ifindex);
                }
            }
            w.bytes(&q.payload);
            w.u64(q.loop_key);
        }
        w.usize(self.pending);
        w.bool(self.paused);
    }

    /// Take over the queue [`UdpSocket::save_queue`] wrote (this socket is the one it was
    /// written for, adopted).
    pub fn load_queue(&mut self, r: &mut Reader<'_>) -> Result<(), String> {
        let s = |e: state::Error| e.to_string();
        let n = r.count(8).map_err(s)?;
        let mut queue = VecDeque::with_capacity(n);
        for _ in 0..n {
            let due = r.instant().map_err(s)?;
            let to = r
                .opt_addr()
                .map_err(s)?
                .ok_or_else(|| "a queued UDP reply without an address".to_string())?;
            let from = match r.u8().map_err(s)? {
                0 => None,
                4 => Some(Local::V4(std::net::Ipv4Addr::from(r.u32().map_err(s)?))),
                6 => {
                    let b = r.bytes().map_err(s)?;
                    let octets: [u8; 16] = b
                        .try_into()
                        .map_err(|_| "a queued UDP reply's local IPv6 address".to_string())?;
                    let ifindex = r.u32().map_err(s)?;
                    Some(Local::V6 {
                        addr: std::net::Ipv6Addr::from(octets),
                        ifindex,
                    })
                }
                k => return Err(format!("a queued UDP reply's local address kind {k}")),
            };
            let payload = r.bytes().map_err(s)?.to_vec();
            let loop_key = r.u64().map_err(s)?;
            queue.push_back(Queued {
                due,
                to,
                from,
                payload,
                loop_key,
            });
        }
        let pending = r.usize().map_err(s)?;
        let paused = r.bool().map_err(s)?;
        self.queue = queue;
        self.pending = pending;
        self.paused = paused;
        Ok(())
    }
}
