//! The CSV of `scripts/compare-backends.sh`: the columns the plot needs, found by name.

/// One CSV row (the columns the plot needs).
#[derive(Clone, Debug)]
pub struct Row {
    /// The series: the backend, plus " udp" for a row whose `protocol` column says udp.
    pub backend: String,
    pub connections: u64,
    pub idle: u64,
    pub rps: f64,
    pub p99_us: f64,
    pub errors: u64,
}

pub fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty CSV")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("CSV has no '{name}' column"))
    };
    let (b, c, i, r, p, e) = (
        col("backend")?,
        col("connections")?,
        col("idle")?,
        col("rps")?,
        col("p99_us")?,
        col("errors")?,
    );
    // Optional: CSVs written before UDP rows existed have no protocol column.
    let proto = col("protocol").ok();
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |k: usize| {
            f.get(k)
                .copied()
                .ok_or_else(|| format!("line {}: too few fields", n + 2))
        };
        let num = |k: usize| -> Result<f64, String> {
            let v = get(k)?;
            v.parse::<f64>()
                .map_err(|_| format!("line {}: '{v}' is not a number", n + 2))
        };
        let udp = match proto {
            Some(k) => get(k)? == "udp",
            None => false,
        };
        let backend = get(b)?;
        rows.push(Row {
            backend: if udp {
                format!("{backend} udp")
            } else {
                backend.to_string()
            },
            connections: num(c)? as u64,
            idle: num(i)? as u64,
            rps: num(r)?,
            p99_us: num(p)?,
            errors: num(e)? as u64,
        });
    }
    if rows.is_empty() {
        return Err("CSV has no data rows".into());
    }
    Ok(rows)
}
