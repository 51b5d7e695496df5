//! One UDP socket's closed loop: its current datagram, how the last ones ended, and what a
//! reply that arrives means.

use std::net::UdpSocket;
use std::time::Instant;

use crate::pattern::Pattern;

/// The bytes every datagram carries: datagram `seq` of socket `i` is the slice of the shared
/// pattern at `Pattern::start(i) + seq * size`, so each socket's datagrams differ from each
/// other and from every other socket's.
pub struct Payloads {
    pattern: Pattern,
    size: usize,
}

impl Payloads {
    pub fn new(size: usize) -> Self {
        Payloads {
            pattern: Pattern::new(),
            size,
        }
    }

    pub fn get(&self, i: usize, seq: u64) -> &[u8] {
        let pos = Pattern::start(i).wrapping_add(seq.wrapping_mul(self.size as u64));
        self.pattern.window(pos, self.size)
    }
}

/// What the socket's current datagram is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Sent; its reply is due by its deadline.
    Waiting,
    /// Sent, and a reply that matched nothing arrived meanwhile (counted as a wrong echo, most
    /// likely this datagram's: its deadline then moves on without counting a loss as well).
    Garbled,
    /// The kernel would not take it (EAGAIN/ENOBUFS): sent again at its deadline.
    Unsent,
    /// --max-requests reached: nothing outstanding.
    Done,
}

/// How a datagram ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Answered,
    Lost,
    /// A wrong reply came for it (already counted).
    Garbled,
}

/// What a reply is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The answer to the datagram outstanding.
    Answer,
    /// The answer to a datagram already counted lost (not an error).
    Late,
    /// A second copy of the previous answer.
    Duplicate,
    /// Bytes that match nothing this socket sent lately.
    Wrong,
}

/// How many of a socket's lost datagrams a stray reply is compared with, to recognise a late
/// answer: a server stalled for 32 reply timeouts in a row still gets its late replies told
/// apart from wrong ones. (Compared only for replies that are not the answer: rare.)
const LOST_KEPT: usize = 32;

pub struct Sender {
    /// `None` once a socket error ended it.
    pub sock: Option<UdpSocket>,
    /// Number of the current datagram.
    pub seq: u64,
    pub sent_at: Instant,
    pub state: State,
    /// The previous datagram (`seq - 1`) was answered.
    prev_answered: bool,
    /// The last lost datagrams (`lost_count % LOST_KEPT` is the next slot).
    lost: [Option<u64>; LOST_KEPT],
    lost_count: usize,
}

impl Sender {
    pub fn new(sock: Option<UdpSocket>) -> Self {
        Sender {
            sock,
            seq: 0,
            sent_at: Instant::now(),
            state: State::Done,
            prev_answered: false,
            lost: [None; LOST_KEPT],
            lost_count: 0,
        }
    }

    /// What `got`, a reply on socket `i`, is.
    pub fn classify(&self, i: usize, got: &[u8], p: &Payloads) -> Reply {
        let outstanding = matches!(self.state, State::Waiting | State::Garbled);
        if outstanding && got == p.get(i, self.seq) {
            Reply::Answer
        } else if self.seq > 0 && self.prev_answered && got == p.get(i, self.seq - 1) {
            Reply::Duplicate
        } else if self.lost.iter().flatten().any(|&l| got == p.get(i, l)) {
            Reply::Late
        } else {
            Reply::Wrong
        }
    }

    /// The current datagram is over: remember how, and move to the next.
    pub fn settle(&mut self, fate: Fate) {
        if fate == Fate::Lost {
            self.lost[self.lost_count % LOST_KEPT] = Some(self.seq);
            self.lost_count += 1;
        }
        self.prev_answered = fate == Fate::Answered;
        self.seq += 1;
    }

    /// A datagram is sent (or about to be) and not settled.
    pub fn outstanding(&self) -> bool {
        self.sock.is_some() && self.state != State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_told_apart() {
        let p = Payloads::new(64);
        let mut s = Sender::new(None);
        s.state = State::Waiting;
        assert_eq!(s.classify(0, p.get(0, 0), &p), Reply::Answer);
        // another socket's datagram, or a shifted or cut one, is wrong
        assert_eq!(s.classify(0, p.get(1, 0), &p), Reply::Wrong);
        assert_eq!(s.classify(0, &p.get(0, 0)[1..], &p), Reply::Wrong);
        let mut flipped = p.get(0, 0).to_vec();
        flipped[10] ^= 1;
        assert_eq!(s.classify(0, &flipped, &p), Reply::Wrong);

        s.settle(Fate::Answered); // datagram 0 answered, 1 outstanding
        assert_eq!(s.classify(0, p.get(0, 0), &p), Reply::Duplicate);
        assert_eq!(s.classify(0, p.get(0, 1), &p), Reply::Answer);
        s.settle(Fate::Lost); // 1 lost, 2 outstanding
        assert_eq!(s.classify(0, p.get(0, 1), &p), Reply::Late);
        assert_eq!(s.classify(0, p.get(0, 0), &p), Reply::Wrong);
        for _ in 0..100 {
            s.settle(Fate::Answered);
        }
        // a lost datagram's answer is recognised however many came after it
        assert_eq!(s.classify(0, p.get(0, 1), &p), Reply::Late);
        // ... and so are the last LOST_KEPT lost in a row (a long stall)
        let first = s.seq;
        for _ in 0..LOST_KEPT {
            s.settle(Fate::Lost);
        }
        assert_eq!(s.classify(0, p.get(0, first), &p), Reply::Late);
        s.state = State::Done;
        assert_eq!(s.classify(0, p.get(0, s.seq), &p), Reply::Wrong);
    }
}
