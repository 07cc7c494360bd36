//! Progress with an ETA on stderr. The ETA extrapolates the time per image so far (edit
//! time included) over the images left.

use std::time::{Duration, Instant};

/// Counts images made against the total and prints a line now and then.
pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    last_print: Option<Instant>,
    quiet: bool,
}

/// Formats seconds as `1h02m`, `3m05s` or `12s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress {
    /// A counter over `total` images; `quiet` prints nothing (tests).
    pub fn new(total: usize, quiet: bool) -> Self {
        Self {
            total,
            done: 0,
            started: Instant::now(),
            last_print: None,
            quiet,
        }
    }

    /// Images made so far.
    pub fn done(&self) -> usize {
        self.done
    }

    /// The estimated time left, once at least one image is done.
    pub fn eta(&self) -> Option<Duration> {
        (self.done > 0).then(|| {
            let per = self.started.elapsed().as_secs_f64() / self.done as f64;
            Duration::from_secs_f64(per * (self.total - self.done.min(self.total)) as f64)
        })
    }

    /// Counts one image and prints a line at most every two seconds (and at the end).
    pub fn image_done(&mut self, what: &str) {
        self.done += 1;
        let due = self
            .last_print
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if self.quiet || !(due || self.done == self.total) {
            return;
        }
        self.last_print = Some(Instant::now());
        let per = self.started.elapsed().as_secs_f64() / self.done as f64;
        let eta = self.eta().map(format_duration).unwrap_or_default();
        eprintln!(
            "eval: {}/{} images ({per:.2} s/image, ETA {eta}) {what}",
            self.done, self.total
        );
    }

    /// Prints a message line (an edit starting, a row skipped).
    pub fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("eval: {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn eta_is_unknown_until_an_image_is_done() {
        let mut p = Progress::new(4, true);
        assert!(p.eta().is_none());
        p.image_done("x");
        assert!(p.eta().is_some());
        assert_eq!(p.done(), 1);
    }
}
