//! What a connection sends back: raw bytes unchanged, or stamp-mode replies (SPEC §3).
//! Pure code: no sockets here, only bytes in and an [`OutBuf`] out.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::serve::buffer::OutBuf;

/// How input is turned into replies (SPEC §3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Every byte echoed back unchanged and in order.
    Raw,
    /// Each line answered as `Echo=><line> at <ctime>\n`.
    Stamp,
}

/// Stamp mode's line assembly: `Echo=><line> at <ctime>\n` for every line, whatever way TCP
/// split the input. A line longer than `max` is answered in pieces of at most `max` bytes.
#[derive(Default, Debug)]
pub struct Stamper {
    /// The start of a line whose `\n` has not arrived yet (under `max` bytes, plus at most
    /// a held-back trailing `\r`).
    partial: Vec<u8>,
    /// A piece of the current line has been answered already, so an empty rest is no line.
    continued: bool,
}

impl Stamper {
    /// Bytes held for an unfinished line (they count toward `--max-buffer`). A held-back
    /// trailing `\r` is not counted, so a partial line alone stays under the cap and can
    /// never pause reading (only reading can complete it).
    /// The unfinished line and whether part of it was answered, for a reload's state.
    pub fn to_parts(&self) -> (&[u8], bool) {
        (&self.partial, self.continued)
    }

    /// A stamper [`Stamper::to_parts`] described.
    pub fn from_parts(partial: &[u8], continued: bool) -> Stamper {
        Stamper {
            partial: partial.to_vec(),
            continued,
        }
    }

    pub fn pending(&self) -> usize {
        self.partial.len() - usize::from(self.partial.last() == Some(&b'\r'))
    }

    /// Answer every complete line in `input`, stamped with `time` (the ctime text of the
    /// moment the replies are made); keep the unfinished tail.
    pub fn feed(&mut self, mut input: &[u8], max: usize, time: &[u8], out: &mut OutBuf) {
        while let Some(nl) = input.iter().position(|&b| b == b'\n') {
            let (segment, rest) = (&input[..nl], &input[nl + 1..]);
            if self.partial.is_empty() {
                self.line(segment, max, time, out);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(segment);
                self.line(&line, max, time, out);
                line.clear();
                self.partial = line; // keep the allocation for the next line
            }
            self.continued = false;
            input = rest;
        }
        self.partial.extend_from_slice(input);
        // A trailing '\r' may begin a "\r\n" ending: hold it back, so that it is dropped
        // however TCP split the line (it would otherwise be echoed inside a full piece).
        let ready = self.pending();
        if ready >= max {
            let whole = ready / max * max;
            for piece in self.partial[..whole].chunks(max) {
                reply(piece, time, out);
            }
            self.partial.drain(..whole);
            self.continued = true;
        }
        if self.partial.is_empty() && self.partial.capacity() > 4096 {
            self.partial = Vec::new();
        }
    }

    /// End of input: a final line without `\n` is answered too.
    pub fn finish(&mut self, max: usize, time: &[u8], out: &mut OutBuf) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, max, time, out);
        }
        self.continued = false;
    }

    fn line(&self, line: &[u8], max: usize, time: &[u8], out: &mut OutBuf) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if !self.continued {
                reply(b"", time, out);
            }
            return;
        }
        for piece in line.chunks(max) {
            reply(piece, time, out);
        }
    }
}

fn reply(line: &[u8], time: &[u8], out: &mut OutBuf) {
    out.extend(b"Echo=>");
    out.extend(line);
    out.extend(b" at ");
    out.extend(time);
    out.extend(b"\n");
}

/// The server's local time in C `ctime` form, formatted at most once a second.
#[derive(Default, Debug)]
pub struct Clock {
    second: Option<i64>,
    text: String,
}

impl Clock {
    /// Now, as `Sun Jun 18 22:44:55 2000` (local time, following `TZ` as ctime(3) does).
    pub fn ctime(&mut self) -> &str {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if self.second != Some(now) {
            self.second = Some(now);
            self.text = local_ctime(now);
        }
        &self.text
    }
}

fn local_ctime(secs: i64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value of this plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe variant.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return format_ctime(4, 0, 1, 0, 0, 0, 1970);
    }
    format_ctime(
        tm.tm_wday,
        tm.tm_mon,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900,
    )
}

/// `ctime` layout from broken-down time: `%a %b %e %H:%M:%S %Y` (day space-padded to 2).
pub fn format_ctime(wday: i32, mon: i32, mday: i32, h: i32, m: i32, s: i32, year: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = DAYS[wday.rem_euclid(7) as usize];
    let month = MONTHS[mon.rem_euclid(12) as usize];
    format!("{day} {month} {mday:>2} {h:02}:{m:02}:{s:02} {year}")
}

/// Stamp mode's payload: the datagram less one trailing `\n` (and a `\r` before it).
pub fn strip_line_end(data: &[u8]) -> &[u8] {
    match data.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIME: &[u8] = b"Sun Jun 18 22:44:55 2000";

    fn stamp(chunks: &[&[u8]], max: usize, eof: bool) -> Vec<String> {
        let (mut s, mut out) = (Stamper::default(), OutBuf::default());
        for c in chunks {
            s.feed(c, max, TIME, &mut out);
        }
        if eof {
            s.finish(max, TIME, &mut out);
        }
        let text = String::from_utf8_lossy(out.as_slice()).into_owned();
        text.lines()
            .map(|l| {
                let (line, time) = l.rsplit_once(" at ").expect("an ' at ' separator");
                assert_eq!(time.len(), 24, "ctime is 24 characters: {time:?}");
                line.strip_prefix("Echo=>")
                    .expect("Echo=> prefix")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn the_answer_does_not_depend_on_how_tcp_split_the_data() {
        let want = vec!["hello", "", "world", "crlf"];
        assert_eq!(stamp(&[b"hello\n\nworld\ncrlf\r\n"], 1024, false), want);
        assert_eq!(
            stamp(
                &[b"hel", b"lo\n", b"\nwor", b"ld\ncrlf\r", b"\n"],
                1024,
                false
            ),
            want
        );
        let bytes = b"hello\n\nworld\ncrlf\r\n";
        let split: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(stamp(&split, 1024, false), want);
    }

    #[test]
    fn final_line_without_newline_waits_for_eof() {
        assert_eq!(stamp(&[b"a\nlast"], 1024, false), vec!["a"]);
        assert_eq!(stamp(&[b"a\nlast"], 1024, true), vec!["a", "last"]);
        assert_eq!(stamp(&[b"a\n"], 1024, true), vec!["a"]);
    }

    #[test]
    fn long_lines_are_answered_in_pieces_and_nothing_is_lost() {
        assert_eq!(
            stamp(&[b"abcdefghij\n"], 4, false),
            vec!["abcd", "efgh", "ij"]
        );
        assert_eq!(
            stamp(&[b"abc", b"def", b"ghij", b"\n"], 4, false),
            vec!["abcd", "efgh", "ij"]
        );
        // Exactly at a piece boundary: no empty extra reply, either way of splitting.
        assert_eq!(stamp(&[b"abcdefgh\n"], 4, false), vec!["abcd", "efgh"]);
        assert_eq!(stamp(&[b"abcdefgh", b"\n"], 4, false), vec!["abcd", "efgh"]);
        assert_eq!(
            stamp(&[b"abcdefgh", b"\n\n"], 4, false),
            vec!["abcd", "efgh", ""]
        );
        assert_eq!(stamp(&[b"x"], 1, true), vec!["x"]);
    }

    #[test]
    fn a_cr_at_a_piece_boundary_is_dropped_however_tcp_split_it() {
        let want = vec!["abc"];
        assert_eq!(stamp(&[b"abc\r\n"], 4, false), want);
        assert_eq!(stamp(&[b"abc\r", b"\n"], 4, false), want);
        assert_eq!(stamp(&[b"abcdabc\r", b"\n"], 4, false), vec!["abcd", "abc"]);
        assert_eq!(stamp(&[b"\r", b"\n"], 1, false), vec![""]);
        assert_eq!(stamp(&[b"ab\r"], 4, true), vec!["ab"]);
    }

    #[test]
    fn lines_are_bytes_not_text() {
        let (mut s, mut out) = (Stamper::default(), OutBuf::default());
        s.feed(b"\xff\x00\xfe\n", 64, TIME, &mut out);
        assert!(out.as_slice().starts_with(b"Echo=>\xff\x00\xfe at "));
        assert_eq!(out.as_slice().last(), Some(&b'\n'));
    }

    #[test]
    fn ctime_layout() {
        assert_eq!(
            format_ctime(0, 5, 18, 22, 44, 55, 2000),
            "Sun Jun 18 22:44:55 2000"
        );
        assert_eq!(
            format_ctime(2, 0, 7, 3, 4, 5, 2025),
            "Tue Jan  7 03:04:05 2025"
        );
        assert_eq!(Clock::default().ctime().len(), 24);
    }
}
