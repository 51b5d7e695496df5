//! Input waiting out `--delay`, counted at what its replies will cost.
//!
//! Held data counts toward `--max-buffer` at its reply size (SPEC §4): in stamp mode an
//! empty line, 1 byte in, is a 35-byte reply. Counting raw bytes let 64 KiB of held empty
//! lines become 2.3 MB of replies on release; counted at their cost, a release (the drain's
//! release of everything at once included) can never exceed what reading was allowed.

use std::collections::VecDeque;
use std::time::Instant;

use crate::serve::echo::Mode;

/// The longest stamp-mode reply per input byte: an empty line "\n" becomes
/// `Echo=> at Sun Jun 18 22:44:55 2000\n`. Reads are sized so replies fit under the cap.
pub(super) const STAMP_GROWTH: usize = 35;

/// What one held chunk costs beyond its replies (queue entry and allocator overhead).
/// Charged to `--max-buffer`, so that a client trickling tiny segments under `--delay`
/// cannot make the bookkeeping cost tens of times the cap.
const OVERHEAD: usize = std::mem::size_of::<Held>() + 32;

/// A chunk of input waiting out `--delay`: everything read in one turn (one due time).
struct Held {
    due: Instant,
    bytes: Vec<u8>,
    /// What its replies will cost once released (see [`reply_cost`]).
    cost: usize,
}

/// The held chunks of one connection, in due order (the delay is constant).
#[derive(Default)]
pub(super) struct HeldInput {
    queue: VecDeque<Held>,
    /// The chunks' reply costs plus `OVERHEAD` each.
    cost: usize,
    /// A delay timer is queued for the front chunk.
    timer_armed: bool,
}

impl HeldInput {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// What releasing everything will cost, bookkeeping included.
    pub(super) fn cost(&self) -> usize {
        self.cost
    }

    /// Hold `data` until `due`.
    pub(super) fn hold(&mut self, data: &[u8], due: Instant, mode: Mode, max: usize) {
        let cost = reply_cost(data, mode, max);
        match self.queue.back_mut() {
            // Read in the same turn: one chunk, one due time.
            Some(last) if last.due == due => {
                last.bytes.extend_from_slice(data);
                last.cost += cost;
            }
            _ => {
                self.queue.push_back(Held {
                    due,
                    bytes: data.to_vec(),
                    cost,
                });
                self.cost += OVERHEAD;
            }
        }
        self.cost += cost;
    }

    /// The front chunk if it is due at `now` (or with `all`, whatever its due time).
    pub(super) fn pop_due(&mut self, now: Instant, all: bool) -> Option<Vec<u8>> {
        if !self.queue.front().is_some_and(|h| all || h.due <= now) {
            return None;
        }
        let h = self.queue.pop_front()?;
        self.cost -= h.cost + OVERHEAD;
        Some(h.bytes)
    }

    /// When the front chunk is due, if a timer must be queued for it (marks it queued).
    pub(super) fn timer_needed(&mut self) -> Option<Instant> {
        if self.timer_armed {
            return None;
        }
        let due = self.queue.front()?.due;
        self.timer_armed = true;
        Some(due)
    }

    /// Every chunk with its due time and reply cost, in order, for a reload's state.
    pub(super) fn chunks(&self) -> impl Iterator<Item = (std::time::Instant, &[u8], usize)> {
        self.queue
            .iter()
            .map(|h| (h.due, h.bytes.as_slice(), h.cost))
    }

    /// Append a chunk [`HeldInput::chunks`] gave (in order): its due time and cost as they
    /// were. No timer is armed for it yet.
    pub(super) fn restore(&mut self, due: Instant, bytes: Vec<u8>, cost: usize) {
        self.queue.push_back(Held { due, bytes, cost });
        self.cost += cost + OVERHEAD;
    }

    /// The queued timer fired.
    pub(super) fn timer_fired(&mut self) {
        self.timer_armed = false;
    }
}

/// At most how many bytes of replies `data` becomes. Raw: itself. Stamp: every line and
/// every `max`-byte piece of a long line is a reply of its bytes plus at most
/// `STAMP_GROWTH` (`Echo=>`, ` at `, the ctime, `\n`), so an empty line, 1 byte in, costs 35.
fn reply_cost(data: &[u8], mode: Mode, max: usize) -> usize {
    match mode {
        Mode::Raw => data.len(),
        Mode::Stamp => {
            let lines = data.iter().filter(|&&b| b == b'\n').count();
            data.len() + STAMP_GROWTH * (lines + data.len() / max.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn held_input_is_counted_at_its_reply_cost_and_given_back_in_order() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let mut h = HeldInput::default();
        h.hold(b"\n\n", t0, Mode::Stamp, 1000);
        h.hold(b"ab\n", t0, Mode::Stamp, 1000);
        h.hold(b"raw", later, Mode::Raw, 1000);
        assert_eq!(h.cost(), (2 + 70) + (3 + 35) + 3 + 2 * OVERHEAD);
        assert_eq!(h.timer_needed(), Some(t0));
        assert_eq!(h.timer_needed(), None, "armed once");
        assert_eq!(h.pop_due(t0, false).as_deref(), Some(&b"\n\nab\n"[..]));
        assert_eq!(h.pop_due(t0, false), None, "not due yet");
        assert_eq!(h.pop_due(t0, true).as_deref(), Some(&b"raw"[..]));
        assert!(h.is_empty());
        assert_eq!(h.cost(), 0);
        assert_eq!(
            reply_cost(&[b'x'; 10], Mode::Stamp, 1),
            10 + 35 * 10,
            "pieces of 1 byte"
        );
    }
}
