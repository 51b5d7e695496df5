//! Answering: the direct path from the receive area, the reply queue (`--delay`, EAGAIN,
//! ENOBUFS) under `--max-buffer`, and sending in batches. Part of [`UdpSocket`].

use std::os::fd::RawFd;
use std::time::Instant;

use log::debug;

use super::batch::{RecvArea, Reply, SendArea, AT, BATCH, CTIME_LEN, PREFIX, STAMP_EXTRA};
use super::guard::Refusal;
use super::loops::{Fold, Verdict};
use super::{
    max_reply, Blocked, Ctx, Queued, UdpSocket, NOBUFS_RETRY, QUEUED_OVERHEAD, SPARE_BUFFERS,
    SPARE_CAPACITY,
};
use crate::config::Mode;
use crate::server::DropReason;
use crate::timer::later;

impl UdpSocket {
    /// Answer the `n` datagrams just received: straight from the receive area when nothing is
    /// held or queued, else behind the queue.
    pub(super) fn answer(
        &mut self,
        recv: &RecvArea,
        n: usize,
        send: &mut SendArea,
        ctx: &mut Ctx<'_>,
    ) {
        let direct = ctx.delay.is_zero() && self.queue.is_empty() && self.blocked.is_none();
        // On the stack, not the heap: a batch never holds more than BATCH datagrams.
        let mut replies = [Reply::NONE; BATCH];
        let mut direct_n = 0;
        for i in 0..n.min(BATCH) {
            let d = recv.get(i);
            ctx.stats.datagram_in(d.data.len());
            let Some(to) = d.from else {
                ctx.stats.dropped(1);
                continue;
            };
            // SPEC §10 before anything else is spent on the sender (the token of a datagram
            // refused for any reason below is spent: it is traffic from that source).
            if !ctx.admits(to) {
                continue;
            }
            if d.truncated {
                debug!("{}: datagram from {to} truncated: dropped", self.label());
                ctx.stats.dropped_because(DropReason::Oversize, 1);
                continue;
            }
            if let Some(why) = ctx.guard.check(to, d.local) {
                ctx.guard.note(to, why, ctx.now);
                let reason = match why {
                    Refusal::Port(_) | Refusal::Ours => DropReason::LoopPort,
                    Refusal::BadSource | Refusal::NotUnicast => DropReason::BadAddress,
                };
                ctx.stats.dropped_because(reason, 1);
                continue;
            }
            let mut loop_key = 0;
            if let Some(loops) = ctx.loops.as_deref_mut() {
                match loops.check(to, d.data, ctx.now) {
                    Verdict::Answer { key } => loop_key = key,
                    Verdict::Silent => {
                        ctx.stats.dropped_because(DropReason::LoopDetected, 1);
                        continue;
                    }
                }
            }
            let payload = match ctx.mode {
                Mode::Raw => d.data,
                Mode::Stamp => strip_line_end(d.data),
            };
            let max = max_reply(to);
            if reply_len(payload.len(), ctx.mode) > max {
                debug!(
                    "{}: the reply to {to} would exceed {max} bytes: dropped",
                    self.label()
                );
                ctx.stats.dropped_because(DropReason::Oversize, 1);
                continue;
            }
            let reply = Reply {
                to,
                from: d.local,
                payload,
                loop_key,
            };
            if direct {
                replies[direct_n] = reply;
                direct_n += 1;
            } else {
                self.enqueue(later(ctx.now, ctx.delay), &reply, ctx);
            }
        }
        if direct_n > 0 {
            let replies = &replies[..direct_n];
            let done = self.transmit(replies, send, ctx);
            for r in &replies[done..] {
                self.enqueue(ctx.now, r, ctx);
            }
        }
    }

    /// Queue a reply (copying its payload) unless that would pass `--max-buffer`; a reply
    /// always fits in an empty queue, so a datagram larger than the cap is still answered.
    fn enqueue(&mut self, due: Instant, r: &Reply<'_>, ctx: &mut Ctx<'_>) {
        let cost = reply_len(r.payload.len(), ctx.mode) + QUEUED_OVERHEAD;
        if self.pending > 0 && self.pending + cost > ctx.max_buffer {
            debug!(
                "{}: {} bytes queued: reply to {} dropped",
                self.label(),
                self.pending,
                r.to
            );
            ctx.stats.dropped_because(DropReason::QueueFull, 1);
            self.paused = true;
            return;
        }
        let mut payload = self.spare.pop().unwrap_or_default();
        payload.clear();
        payload.extend_from_slice(r.payload);
        self.queue.push_back(Queued {
            due,
            to: r.to,
            from: r.from,
            payload,
            loop_key: r.loop_key,
        });
        self.pending += cost;
        if self.pending >= ctx.max_buffer {
            self.paused = true;
        }
    }

    /// Send queued replies that are due, a batch at a time, until the queue has none left or
    /// the kernel refuses.
    pub(super) fn flush(&mut self, send: &mut SendArea, ctx: &mut Ctx<'_>) {
        while self.blocked.is_none() {
            let due = self
                .queue
                .iter()
                .take(BATCH)
                .take_while(|q| q.due <= ctx.now)
                .count();
            if due == 0 {
                break;
            }
            let mut replies = [Reply::NONE; BATCH];
            for (r, q) in replies.iter_mut().zip(self.queue.iter().take(due)) {
                *r = Reply {
                    to: q.to,
                    from: q.from,
                    payload: &q.payload,
                    loop_key: q.loop_key,
                };
            }
            let (done, blocked) = transmit(self.fd(), &replies[..due], send, ctx);
            self.blocked = blocked;
            for q in self.queue.drain(..done) {
                self.pending -= reply_len(q.payload.len(), ctx.mode) + QUEUED_OVERHEAD;
                if self.spare.len() < SPARE_BUFFERS && q.payload.capacity() <= SPARE_CAPACITY {
                    self.spare.push(q.payload);
                }
            }
        }
        if self.paused && self.pending <= ctx.max_buffer / 2 {
            self.paused = false;
        }
    }

    fn transmit(&mut self, replies: &[Reply<'_>], send: &mut SendArea, ctx: &mut Ctx) -> usize {
        let (done, blocked) = transmit(self.fd(), replies, send, ctx);
        self.blocked = blocked;
        done
    }
}

/// Send `replies` in batches. Returns how many are done (sent, or dropped after an error of
/// their own) and why sending stopped early, if it did.
pub(super) fn transmit(
    fd: RawFd,
    replies: &[Reply<'_>],
    send: &mut SendArea,
    ctx: &mut Ctx<'_>,
) -> (usize, Option<Blocked>) {
    let stamp = ctx.mode == Mode::Stamp;
    let mut done = 0;
    for chunk in replies.chunks(BATCH) {
        let ctime = stamp.then(|| ctx.clock.ctime());
        let mut out = send.start(ctime);
        // The time text exactly as the replies carry it, for their hashes.
        let time = out.time();
        let mut loops = ctx.loops.as_deref_mut();
        for r in chunk {
            out.push(r);
        }
        let mut at = 0;
        let mut refused_once = false;
        while at < out.len() {
            match out.send(fd, at) {
                Ok(k) => {
                    for i in at..at + k {
                        ctx.stats.datagram_out(out.sent_len(i));
                    }
                    if let Some(loops) = &mut loops {
                        for r in &chunk[at..at + k] {
                            match &time {
                                None => loops.sent_key(r.loop_key),
                                Some(t) => loops.sent(r.to, stamp_hash(r.payload, t)),
                            }
                        }
                    }
                    at += k;
                    refused_once = false;
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) => return (done + at, Some(Blocked::Writable)),
                    Some(libc::ENOBUFS) => {
                        return (done + at, Some(Blocked::Until(ctx.now + NOBUFS_RETRY)))
                    }
                    // A pending ICMP error from an earlier reply is reported (and cleared)
                    // by this call instead of sending: try the same reply once more.
                    Some(libc::ECONNREFUSED) if !refused_once => refused_once = true,
                    _ => {
                        debug!(
                            "udp: reply to {} failed: {}",
                            chunk[at].to,
                            crate::error::Plain(&e)
                        );
                        ctx.stats.dropped(1);
                        at += 1;
                        refused_once = false;
                    }
                },
            }
        }
        done += at;
    }
    (done, None)
}

/// [`super::loops::hash`] of the stamp reply to `payload` less its `\n`:
/// `Echo=><payload> at <ctime>`, hashed as the pieces it is sent in.
fn stamp_hash(payload: &[u8], ctime: &[u8; CTIME_LEN]) -> u64 {
    let mut f = Fold::new();
    f.write(PREFIX);
    f.write(payload);
    f.write(AT);
    f.write(ctime);
    f.finish()
}

/// Stamp mode's payload: the datagram less one trailing `\n` (and a `\r` before it).
pub fn strip_line_end(data: &[u8]) -> &[u8] {
    match data.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => data,
    }
}

/// The size of the reply to a payload of `len` bytes.
pub(super) fn reply_len(len: usize, mode: Mode) -> usize {
    match mode {
        Mode::Raw => len,
        Mode::Stamp => len + STAMP_EXTRA,
    }
}
