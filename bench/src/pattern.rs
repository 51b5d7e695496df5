//! The bytes each connection sends: a fixed pseudo-random stream, entered at a different offset
//! per connection, so an echo that is reordered, shifted, truncated, duplicated or crossed with
//! another connection's data does not match.

/// Period of the stream. A prime, so that no message size lines up with it.
const PERIOD: usize = 65_521;

/// The stream's period, stored twice so that any window of up to `PERIOD` bytes is one slice.
pub struct Pattern {
    table: Vec<u8>,
}

impl Pattern {
    /// Builds the table (deterministic: the same on every run).
    pub fn new() -> Self {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut once = Vec::with_capacity(PERIOD);
        for _ in 0..PERIOD {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            once.push((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8);
        }
        let mut table = once.clone();
        table.extend_from_slice(&once);
        Pattern { table }
    }

    /// Stream offset at which connection `index` starts.
    pub fn start(index: usize) -> u64 {
        (index as u64).wrapping_mul(40_503) % PERIOD as u64
    }

    /// The next up to `max` bytes of the stream from position `pos` (at least 1 if `max` > 0).
    #[inline]
    pub fn window(&self, pos: u64, max: usize) -> &[u8] {
        let off = (pos % PERIOD as u64) as usize;
        &self.table[off..off + max.min(PERIOD)]
    }

    /// Index of the first byte of `data` that differs from the stream at `pos`, if any.
    pub fn first_mismatch(&self, mut pos: u64, data: &[u8]) -> Option<usize> {
        let mut done = 0;
        while done < data.len() {
            let want = self.window(pos, data.len() - done);
            let got = &data[done..done + want.len()];
            if want != got {
                let i = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
                return Some(done + i);
            }
            done += want.len();
            pos += want.len() as u64;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_and_match() {
        let p = Pattern::new();
        let pos = PERIOD as u64 - 10;
        let mut stream = Vec::new();
        let mut q = pos;
        while stream.len() < 100_000 {
            let w = p.window(q, 100_000 - stream.len());
            stream.extend_from_slice(w);
            q += w.len() as u64;
        }
        assert_eq!(p.first_mismatch(pos, &stream), None);
        stream[70_000] ^= 1;
        assert_eq!(p.first_mismatch(pos, &stream), Some(70_000));
        // shifted by one byte: mismatch early
        assert!(p.first_mismatch(pos + 1, &stream[..64]).is_some());
        // another connection's bytes do not match
        assert!(p
            .first_mismatch(Pattern::start(1), p.window(Pattern::start(2), 64))
            .is_some());
    }
}
