//! Stamp mode (SPEC §3): `Echo=><line> at <ctime>` per line, whatever TCP's split; long
//! lines in pieces of at most `--max-buffer`, nothing lost; ctime follows `TZ`.

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use crate::util::client::{self, Pattern};
use crate::util::stamp::{now_secs, parse_replies, Reply};
use crate::util::Daemon;

/// The stamp-mode conversation: fragments, `\r\n`, an empty line, raw bytes, a line longer
/// than `--max-buffer` (answered in pieces, nothing lost) and a final line without `\n`
/// answered on half-close.
fn stamp_conversation(d: &Daemon, max_buffer: usize) {
    let mut s = d.connect();
    let long: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
    let before = now_secs();
    for part in [
        &b"he"[..],
        b"llo\nwi",
        b"th cr\r",
        b"\n",
        b"\nmid\rdle\r\n\xff\xfe bin\t\x00x\n",
    ] {
        s.write_all(part).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    s.write_all(&long).unwrap();
    s.write_all(b"\ntail").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        d.fail(&format!("reading replies: {e} (after {} bytes)", got.len()));
    }
    let after = now_secs();
    let replies = parse_replies(&got).unwrap_or_else(|e| d.fail(&e));
    let bodies: Vec<&[u8]> = replies.iter().map(|r| &r.body[..]).collect();
    let show = format!("replies: {:?}", String::from_utf8_lossy(&got));
    let fixed: [&[u8]; 5] = [
        b"hello",
        b"with cr",
        b"",
        b"mid\rdle",
        b"\xff\xfe bin\t\x00x",
    ];
    if bodies.len() < 7 || bodies[..5] != fixed || bodies[bodies.len() - 1] != b"tail" {
        d.fail(&format!(
            "want {fixed:?}, the long line in pieces, then \"tail\"; {show}"
        ));
    }
    let pieces = &bodies[5..bodies.len() - 1];
    if pieces.concat() != long || pieces.iter().any(|p| p.is_empty() || p.len() > max_buffer) {
        let lens: Vec<_> = pieces.iter().map(|p| p.len()).collect();
        d.fail(&format!("the 5000-byte line must come back whole in pieces of 1..={max_buffer} bytes; piece lengths {lens:?}"));
    }
    // The daemon runs with TZ=UTC, so its ctime must be our UTC clock.
    if let Some(r) = replies
        .iter()
        .find(|r| r.stamp < before - 2 || r.stamp > after + 2)
    {
        d.fail(&format!(
            "ctime {} is not between {before} and {after} (TZ=UTC); {show}",
            r.stamp
        ));
    }
}

for_each_backend!(stamp_mode_format);
fn stamp_mode_format(backend: &'static str) {
    let Some(d) = Daemon::with(backend)
        .args(&["--mode", "stamp", "--max-buffer", "1KiB"])
        .env("TZ", "UTC")
        .spawn()
    else {
        return;
    };
    stamp_conversation(&d, 1024);
}

/// ctime is local time as `TZ` says (POSIX TZ string, no tz database needed).
#[test]
fn stamp_mode_follows_tz() {
    let Some(d) = Daemon::with("poll")
        .args(&["--mode", "stamp"])
        .env("TZ", "XYZ-5:30")
        .spawn()
    else {
        return;
    };
    let mut s = d.connect();
    let before = now_secs();
    s.write_all(b"tz\n").unwrap();
    let line = client::read_line(&s).unwrap_or_else(|e| d.fail(&e));
    let replies = parse_replies(&line).unwrap_or_else(|e| d.fail(&e));
    let offset = replies[0].stamp - before;
    // The reply may be stamped some seconds after `before` on a loaded machine.
    if replies[0].body != b"tz" || !(19_800 - 2..=19_800 + 10).contains(&offset) {
        d.fail(&format!(
            "want `Echo=>tz at` UTC+5:30 under TZ=XYZ-5:30; offset {offset} s in {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
}

/// Send `parts` (pausing `gap` between them) from a writer thread, half-close, and read
/// every reply until the daemon closes; the parsed replies.
fn exchange(d: &Daemon, parts: Vec<Vec<u8>>, gap: Duration) -> Vec<Reply> {
    let s = d.connect();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || -> std::io::Result<()> {
        for p in parts {
            w.write_all(&p)?;
            if !gap.is_zero() {
                thread::sleep(gap);
            }
        }
        w.shutdown(std::net::Shutdown::Write)
    });
    let mut got = Vec::new();
    let read = (&s).read_to_end(&mut got);
    if let Err(e) = writer.join().unwrap() {
        d.fail(&format!("writing: {e}"));
    }
    if let Err(e) = read {
        d.fail(&format!("reading replies: {e} after {} bytes", got.len()));
    }
    parse_replies(&got).unwrap_or_else(|e| d.fail(&e))
}

/// Match replies against `lines`: each line is answered by one or more consecutive
/// non-empty pieces of at most `max` bytes that join to exactly the line.
fn check_pieces(d: &Daemon, replies: &[Reply], lines: &[Vec<u8>], max: usize) {
    let mut it = replies.iter().map(|r| &r.body[..]).peekable();
    for (n, line) in lines.iter().enumerate() {
        let mut joined = Vec::new();
        let mut sizes = Vec::new();
        while joined.len() < line.len() || (line.is_empty() && sizes.is_empty()) {
            let Some(p) = it.next() else { break };
            sizes.push(p.len());
            joined.extend_from_slice(p);
            if p.is_empty() {
                break;
            }
        }
        let bad_piece = sizes
            .iter()
            .any(|&z| z > max || (z == 0 && !line.is_empty()));
        if joined != *line || bad_piece {
            d.fail(&format!(
                "line {n} ({} bytes): replies of {sizes:?} bytes join to {:?}, want {:?} in pieces of 1..={max}",
                line.len(),
                String::from_utf8_lossy(&joined[..joined.len().min(200)]),
                String::from_utf8_lossy(&line[..line.len().min(200)]),
            ));
        }
    }
    if let Some(extra) = it.next() {
        d.fail(&format!(
            "an extra reply {:?} after the last line",
            String::from_utf8_lossy(extra)
        ));
    }
}

for_each_backend!(stamp_long_line_streams_in_pieces);
/// A 1 MiB line under `--max-buffer 4KiB`, read while it is sent: answered in pieces of
/// at most 4 KiB that join to the whole line, then the next line as usual.
fn stamp_long_line_streams_in_pieces(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--mode", "stamp", "--max-buffer", "4KiB"]) else {
        return;
    };
    let mut line = vec![0u8; 1 << 20];
    Pattern::new(client::fresh_seed()).fill(&mut line);
    for b in &mut line {
        if *b == b'\n' || *b == b'\r' {
            *b = b'.';
        }
    }
    let mut input = line.clone();
    input.extend_from_slice(b"\nafter\n");
    let parts = input.chunks(64 << 10).map(<[u8]>::to_vec).collect();
    let replies = exchange(&d, parts, Duration::ZERO);
    check_pieces(&d, &replies, &[line, b"after".to_vec()], 4096);
}

for_each_backend!(stamp_crlf_at_piece_boundaries);
/// `\r\n` at and around a piece boundary (`--max-buffer 64`), sent whole and split
/// between the `\r` and the `\n`: the `\r` never shows up in an answer, whatever the split.
fn stamp_crlf_at_piece_boundaries(backend: &'static str) {
    let Some(d) = Daemon::spawn(backend, &["--mode", "stamp", "--max-buffer", "64"]) else {
        return;
    };
    let lines: Vec<Vec<u8>> = [1, 63, 64, 65, 127, 128, 129, 200]
        .iter()
        .map(|&n| (0..n).map(|i| b'A' + (i % 26) as u8).collect())
        .collect();
    let whole: Vec<u8> = lines
        .iter()
        .flat_map(|l| [&l[..], b"\r\n"].concat())
        .collect();
    check_pieces(&d, &exchange(&d, vec![whole], Duration::ZERO), &lines, 64);
    let split = lines
        .iter()
        .flat_map(|l| [[&l[..], b"\r"].concat(), b"\n".to_vec()])
        .collect();
    check_pieces(
        &d,
        &exchange(&d, split, Duration::from_millis(15)),
        &lines,
        64,
    );
}

for_each_backend!(stamp_partial_line_does_not_keep_reading_paused);
/// A connection paused at the cap while an unfinished line holds more than half of it
/// must read again once its output drains (`--delay 300ms --max-buffer 1000`: 400 empty
/// lines and 600 bytes of a line in one write; after the 400 replies, the `\n` that
/// ends the line must be read and answered, and the half-close seen).
fn stamp_partial_line_does_not_keep_reading_paused(backend: &'static str) {
    let Some(d) = Daemon::spawn(
        backend,
        &[
            "--mode",
            "stamp",
            "--delay",
            "300ms",
            "--max-buffer",
            "1000",
        ],
    ) else {
        return;
    };
    let mut s = d.connect();
    let mut input = vec![b'\n'; 400];
    input.extend_from_slice(&[b'x'; 600]);
    s.write_all(&input).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..400 {
        let line =
            client::read_line(&s).unwrap_or_else(|e| d.fail(&format!("reply {i} of 400: {e}")));
        if !line.starts_with(b"Echo=> at ") {
            d.fail(&format!(
                "reply {i} of 400 to the empty lines: {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
    }
    s.write_all(b"\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    if let Err(e) = s.read_to_end(&mut rest) {
        d.fail(&format!("after the 400 replies, the line's end is not answered ({e}, {} bytes): reading stayed paused", rest.len()));
    }
    let replies = parse_replies(&rest).unwrap_or_else(|e| d.fail(&e));
    check_pieces(&d, &replies, &[vec![b'x'; 600]], 1000);
}
