//! A progress bar on stderr for large inputs: bytes done, percentage,
//! throughput and ETA, redrawn at most ten times a second. Shown only when
//! stderr is a terminal, the input's size is known and at least
//! [`THRESHOLD`], and `--quiet` was not given; otherwise nothing is written.

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// Inputs smaller than this get no bar (8 MiB).
pub const THRESHOLD: u64 = 8 << 20;

/// Redraws at most this often.
const REDRAW: Duration = Duration::from_millis(100);

/// The bar's state.
#[derive(Debug)]
pub struct Progress {
    /// `None` when the bar is off: every method is then a no-op.
    on: Option<Bar>,
}

#[derive(Debug)]
struct Bar {
    label: &'static str,
    total: u64,
    done: u64,
    start: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    /// A bar for `total` bytes (if known), drawn only if `enabled`, stderr
    /// is a terminal, and `total` is at least [`THRESHOLD`].
    pub fn new(label: &'static str, total: Option<u64>, enabled: bool) -> Self {
        let on = match total {
            Some(total) if enabled && total >= THRESHOLD && io::stderr().is_terminal() => {
                Some(Bar {
                    label,
                    total,
                    done: 0,
                    start: Instant::now(),
                    last_draw: None,
                })
            }
            _ => None,
        };
        Progress { on }
    }

    /// Counts `n` more bytes, redrawing if it is time.
    pub fn add(&mut self, n: u64) {
        if let Some(bar) = &mut self.on {
            bar.done = bar.done.saturating_add(n);
            let now = Instant::now();
            if bar.last_draw.is_none_or(|t| now - t >= REDRAW) {
                bar.last_draw = Some(now);
                let line = render(bar.label, bar.done, bar.total, now - bar.start);
                let mut err = io::stderr().lock();
                let _ = write!(err, "\r{line}\x1b[K");
                let _ = err.flush();
            }
        }
    }

    /// Erases the bar (at the end, or before an error message).
    pub fn clear(&mut self) {
        if self.on.take().is_some() {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One line of the bar: `decrypting  12.0 MiB / 20.0 MiB  60% [=====>    ]
/// 48.0 MiB/s  ETA 0:01`.
pub fn render(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: usize = 24;
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (frac * WIDTH as f64) as usize;
    let mut bar = "=".repeat(filled);
    if filled < WIDTH {
        bar.push('>');
        bar.push_str(&" ".repeat(WIDTH - filled - 1));
    }
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let eta = if rate > 0.0 {
        let left = total.saturating_sub(done) as f64 / rate;
        clock(left.round() as u64)
    } else {
        "--:--".to_owned()
    };
    format!(
        "{label} {} / {} {:>3}% [{bar}] {}/s ETA {eta}",
        size(done),
        size(total),
        (frac * 100.0) as u32,
        size(rate as u64),
    )
}

/// `m:ss`, or `h:mm:ss` from an hour.
fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Bytes in binary units with one decimal.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A reader that counts what passes through it into a [`Progress`].
#[derive(Debug)]
pub struct Counted<'p, R> {
    inner: R,
    progress: &'p mut Progress,
}

impl<'p, R: Read> Counted<'p, R> {
    /// Counts the bytes read from `inner`.
    pub fn new(inner: R, progress: &'p mut Progress) -> Self {
        Counted { inner, progress }
    }
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rate_and_eta() {
        let line = render("decrypting", 10 << 20, 20 << 20, Duration::from_secs(2));
        assert_eq!(
            line,
            "decrypting 10.0 MiB / 20.0 MiB  50% [============>           ] 5.0 MiB/s ETA 0:02"
        );
        let done = render("encrypting", 20 << 20, 20 << 20, Duration::from_secs(1));
        assert!(done.contains("100% [========================]"), "{done}");
        assert!(done.ends_with("ETA 0:00"), "{done}");
        let start = render("encrypting", 0, 20 << 20, Duration::ZERO);
        assert!(start.ends_with("0 B/s ETA --:--"), "{start}");
    }

    #[test]
    fn sizes_and_clock() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(clock(59), "0:59");
        assert_eq!(clock(3 * 3600 + 61), "3:01:01");
    }

    #[test]
    fn off_when_stderr_is_not_a_terminal_or_input_is_small() {
        // Under the test harness stderr is captured, not a terminal.
        let mut p = Progress::new("x", Some(1 << 30), true);
        assert!(p.on.is_none() || io::stderr().is_terminal());
        p.add(5);
        let small = Progress::new("x", Some(THRESHOLD - 1), true);
        assert!(small.on.is_none());
        let unknown = Progress::new("x", None, true);
        assert!(unknown.on.is_none());
        let quiet = Progress::new("x", Some(1 << 30), false);
        assert!(quiet.on.is_none());
    }
}
