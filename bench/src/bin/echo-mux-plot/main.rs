//! echo-mux-plot: draws the CSV of `scripts/compare-backends.sh` as one SVG.
//!
//! Two rows of panels: requests/s on top, p99 latency below, both on a log scale; one column per
//! active-connection count; x is the number of idle connections held open; one line per backend.
//! Plain SVG written by hand (no fonts or rendering libraries needed; any browser shows it).
//!
//!     echo-mux-plot results.csv results.svg [--title T] [--subtitle S]

mod csv;
mod panel;
mod scale;
mod series;
mod svg;

use std::process::ExitCode;

use csv::parse_csv;
use echo_mux::error::Plain;
use svg::render;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut files = Vec::new();
    let mut title = "echo-mux: readiness backends compared".to_string();
    let mut subtitle = String::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!(
                    "Usage: echo-mux-plot RESULTS.csv OUT.svg [--title T] [--subtitle S]\n\n\
                     Draws requests/s and p99 latency per backend (log scale) against idle\n\
                     connections, one column of panels per active-connection count.\n\
                     CSV columns used: backend, connections, idle, rps, p99_us, errors."
                );
                return ExitCode::SUCCESS;
            }
            "--title" | "--subtitle" => {
                let Some(v) = args.next() else {
                    eprintln!("echo-mux-plot: option '{a}' needs a value");
                    return ExitCode::from(2);
                };
                if a == "--title" {
                    title = v;
                } else {
                    subtitle = v;
                }
            }
            s if s.starts_with('-') => {
                eprintln!("echo-mux-plot: unknown option '{s}' (try --help)");
                return ExitCode::from(2);
            }
            _ => files.push(a),
        }
    }
    let [csv, svg] = files.as_slice() else {
        eprintln!("echo-mux-plot: expected RESULTS.csv and OUT.svg (try --help)");
        return ExitCode::from(2);
    };
    let rows = match std::fs::read_to_string(csv)
        .map_err(|e| format!("cannot read {csv}: {}", Plain(&e)))
        .and_then(|t| parse_csv(&t).map_err(|e| format!("{csv}: {e}")))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("echo-mux-plot: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::write(svg, render(&rows, &title, &subtitle)) {
        eprintln!("echo-mux-plot: cannot write {svg}: {}", Plain(&e));
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::csv::parse_csv;
    use super::scale::*;
    use super::svg::render;

    #[test]
    fn ranges_and_labels() {
        assert_eq!(log_range([630.0, 150_000.0].into_iter()), (100.0, 1e6));
        assert_eq!(log_range([100.0].into_iter()), (100.0, 1000.0));
        assert_eq!(nice_step(5000.0, 5.0), 1000.0);
        assert_eq!(fmt_count(150_000.0), "150k");
        assert_eq!(fmt_us(800.0), "800 µs");
        assert_eq!(fmt_us(2500.0), "2.5 ms");
    }

    #[test]
    fn renders_csv() {
        let csv = "backend,connections,idle,size,rps,mbps,p50_us,p99_us,p999_us,errors\n\
                   epoll,1,0,64,11000,0.7,80,120,200,0\n\
                   select,1,999,64,3100,0.2,300,400,900,1\n";
        let rows = parse_csv(csv).unwrap();
        let svg = render(&rows, "t", "s");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("epoll") && svg.contains("select"));
        assert!(parse_csv("backend,idle\n").is_err());
    }

    #[test]
    /// UDP rows become their own series ("epoll udp"); a CSV without the column is all TCP.
    fn udp_rows_are_a_series_of_their_own() {
        let csv = "backend,connections,idle,size,rps,mbps,p50_us,p99_us,p999_us,errors,protocol\n\
                   epoll,64,0,64,120000,7.7,400,900,2000,0,tcp\n\
                   epoll,64,0,64,150000,9.6,300,800,1500,0,udp\n";
        let rows = parse_csv(csv).unwrap();
        assert_eq!(rows[0].backend, "epoll");
        assert_eq!(rows[1].backend, "epoll udp");
        let svg = render(&rows, "t", "s");
        assert!(svg.contains(">epoll udp</text>"), "{svg}");
    }
}
