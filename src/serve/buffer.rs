//! `OutBuf`: one connection's pending output, a byte queue that owns no memory while empty.

/// Bytes not yet taken by the kernel. Writes take from the front, replies append at the back.
///
/// An idle connection must cost far less than its buffers (SPEC §4), so the storage is
/// allocated only when a write could not finish, and given back when it drains, unless it is
/// small enough to keep for the next burst.
#[derive(Default, Debug)]
pub struct OutBuf {
    data: Vec<u8>,
    start: usize,
}

/// Storage up to this size is kept after draining; larger storage is freed.
const KEEP: usize = 16 * 1024;

impl OutBuf {
    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.data.len() / 2 {
            // Reclaim the consumed front before growing: at most one memmove per half buffer.
            self.data.drain(..self.start);
            self.start = 0;
        }
        self.data.extend_from_slice(bytes);
    }

    /// Drop `n` bytes from the front (they were written).
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.is_empty() {
            self.start = 0;
            if self.data.capacity() > KEEP {
                self.data = Vec::new();
            } else {
                self.data.clear();
            }
        }
    }

    /// Bytes of heap this buffer holds.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keeps_order_and_frees_large_storage() {
        let mut b = OutBuf::default();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 0, "an empty buffer owns nothing");
        b.extend(b"hello ");
        b.extend(b"world");
        assert_eq!(b.as_slice(), b"hello world");
        b.consume(6);
        assert_eq!(b.as_slice(), b"world");
        b.extend(b"!");
        assert_eq!(b.as_slice(), b"world!");
        assert_eq!(b.len(), 6);
        b.consume(6);
        assert!(b.is_empty());

        b.extend(&vec![7u8; 100_000]);
        b.consume(99_999);
        assert_eq!(b.as_slice(), &[7]);
        b.consume(1);
        assert_eq!(b.capacity(), 0, "large storage is given back when drained");
    }

    #[test]
    fn front_is_reclaimed_before_growing() {
        let mut b = OutBuf::default();
        for i in 0..1000u32 {
            b.extend(&i.to_le_bytes());
            b.consume(2);
        }
        assert_eq!(b.len(), 2000);
        assert!(
            b.capacity() < 8 * 2000,
            "consumed bytes are not kept forever"
        );
        let mut expect = Vec::new();
        for i in 0..1000u32 {
            expect.extend_from_slice(&i.to_le_bytes());
        }
        assert_eq!(b.as_slice(), &expect[2000..]);
    }
}
