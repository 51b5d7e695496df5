//! The connection slab: slots, their free list, and the count of open connections.
//!
//! A slot freed during a turn is reused only after the turn ([`Conns::end_turn`]), so an
//! event for a connection closed earlier in the same batch can never reach a new one in the
//! same slot (our stand-in for libev's generation counter). Timers outlive turns: they name a
//! connection by slot *and* id ([`Conns::get`]).

use std::os::fd::OwnedFd;
use std::time::Instant;

use crate::serve::conn::Conn;

#[derive(Default)]
pub(super) struct Conns {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    freed_this_turn: Vec<usize>,
    open: usize,
    next_id: u64,
}

impl Conns {
    pub(super) fn open(&self) -> usize {
        self.open
    }

    /// Slots ever used (live or not); for walking every connection by index.
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Store a new connection; returns its slot.
    pub(super) fn insert(&mut self, fd: OwnedFd, now: Instant) -> usize {
        let conn = Conn::new(fd, self.next_id, now);
        self.next_id += 1;
        self.open += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(conn);
                slot
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        }
    }

    /// Store a connection a reload handed over (its id kept), in `slot` if given and free
    /// (its token in a handed-over backend), else at the end; returns its slot. Call
    /// [`Conns::adopted`] after the last one.
    pub(super) fn insert_adopted(&mut self, slot: Option<usize>, conn: Conn) -> usize {
        self.next_id = self.next_id.max(conn.id + 1);
        self.open += 1;
        let slot = match slot {
            Some(s) if self.slots.get(s).is_none_or(Option::is_none) => s,
            _ => self.slots.len(),
        };
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        self.slots[slot] = Some(conn);
        slot
    }

    /// Every connection is adopted: the slots left empty between them are free.
    pub(super) fn adopted(&mut self) {
        self.free = (0..self.slots.len())
            .rev()
            .filter(|&s| self.slots[s].is_none())
            .collect();
    }

    /// The id the next connection gets (so ids stay unique across a reload).
    pub(super) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Continue numbering from `id` (a reload's new image).
    pub(super) fn set_next_id(&mut self, id: u64) {
        self.next_id = self.next_id.max(id);
    }

    /// Every live connection, with its slot.
    pub(super) fn live(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, c)| c.as_ref().map(|c| (s, c)))
    }

    /// The connection in `slot`, whoever it is.
    pub(super) fn at(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The connection in `slot` if it is still the one with `id`.
    pub(super) fn get(&mut self, slot: usize, id: u64) -> Option<&mut Conn> {
        self.at(slot).filter(|c| c.id == id)
    }

    /// Is the connection `id` still in `slot`?
    pub(super) fn is_live(&self, slot: usize, id: u64) -> bool {
        self.slots
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.id == id)
    }

    /// Take the connection out of `slot`; the slot is reusable after this turn.
    pub(super) fn remove(&mut self, slot: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(slot)?.take()?;
        self.open -= 1;
        self.freed_this_turn.push(slot);
        Some(conn)
    }

    /// The turn is over: slots freed in it may be reused.
    pub(super) fn end_turn(&mut self) {
        self.free.append(&mut self.freed_this_turn);
    }
}
