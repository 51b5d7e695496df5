//! Parsing stamp-mode replies: `Echo=><line> at <ctime>\n`, ctime as `Sun Jun 18 22:44:55 2000`.

use std::time::SystemTime;

/// One parsed reply.
#[derive(Debug)]
pub struct Reply {
    /// The echoed line (or piece of a line).
    pub body: Vec<u8>,
    /// The ctime fields read as if they were UTC, in seconds since the epoch.
    pub stamp: i64,
}

/// Seconds since the epoch now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Check a 24-character C ctime string field by field; its time read as UTC.
pub fn parse_ctime(s: &[u8]) -> Result<i64, String> {
    let bad = |why: &str| format!("bad ctime {:?}: {why}", String::from_utf8_lossy(s));
    let s = std::str::from_utf8(s).map_err(|_| bad("not ASCII"))?;
    let b = s.as_bytes();
    if b.len() != 24
        || [3, 7, 10, 19].iter().any(|&i| b[i] != b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad("not `Www Mmm dd hh:mm:ss yyyy`"));
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let f = &s[r];
        let digits = f.trim_start_matches(' ');
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad(&format!("field {f:?} is not a number")));
        }
        Ok(digits.parse().unwrap())
    };
    let wday = DAYS
        .iter()
        .position(|d| *d == &s[0..3])
        .ok_or_else(|| bad("weekday"))? as i64;
    let month = MONTHS
        .iter()
        .position(|m| *m == &s[4..7])
        .ok_or_else(|| bad("month"))? as i64
        + 1;
    if b[8] == b'0' {
        return Err(bad("day of month must be space-padded, not zero-padded"));
    }
    let (day, h, mi, sec, year) = (
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
        num(20..24)?,
    );
    if !(1..=31).contains(&day)
        || h > 23
        || mi > 59
        || sec > 60
        || b[11] == b' '
        || b[14] == b' '
        || b[17] == b' '
    {
        return Err(bad("field out of range"));
    }
    let days = days_from_civil(year, month, day);
    if (days + 4).rem_euclid(7) != wday {
        return Err(bad("weekday does not match the date"));
    }
    Ok(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Split a stream of replies into lines and check each one's frame and ctime.
pub fn parse_replies(data: &[u8]) -> Result<Vec<Reply>, String> {
    if !data.is_empty() && !data.ends_with(b"\n") {
        return Err(format!(
            "replies do not end with a newline: {:?}",
            String::from_utf8_lossy(data)
        ));
    }
    let mut out = Vec::new();
    let Some(lines) = data.strip_suffix(b"\n") else {
        return Ok(out);
    };
    for line in lines.split(|&c| c == b'\n') {
        let shown = String::from_utf8_lossy(line);
        if !line.starts_with(b"Echo=>") || line.len() < 6 + 28 {
            return Err(format!("reply {shown:?} is not `Echo=><line> at <ctime>`"));
        }
        let (head, time) = line.split_at(line.len() - 24);
        if !head.ends_with(b" at ") {
            return Err(format!("reply {shown:?} has no ` at ` before its ctime"));
        }
        let stamp = parse_ctime(time).map_err(|e| format!("reply {shown:?}: {e}"))?;
        out.push(Reply {
            body: head[6..head.len() - 4].to_vec(),
            stamp,
        });
    }
    Ok(out)
}
