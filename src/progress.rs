//! Progress for long runs: a bar with elapsed time and ETA on a terminal, one line per update
//! otherwise (logs, CI), both on stderr.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    start: Instant,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len}  {elapsed_precise} elapsed, ETA {eta_precise}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            total,
            done: 0,
            start: Instant::now(),
        }
    }

    /// Advance by `n` and say what was just done (past the total, the total grows with it).
    pub fn advance(&mut self, n: u64, what: &str) {
        self.done += n;
        if self.done > self.total {
            self.set_total(self.done);
        }
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{} {what}", self.label));
                bar.inc(n);
            }
            None => {
                let elapsed = self.start.elapsed().as_secs_f64();
                let eta = if self.done > 0 {
                    elapsed / self.done as f64 * (self.total - self.done.min(self.total)) as f64
                } else {
                    0.0
                };
                eprintln!(
                    "{} {}/{} {what}: {elapsed:.1} s elapsed, ETA {eta:.1} s",
                    self.label, self.done, self.total
                );
            }
        }
    }

    /// Move forward to `done` without a message: work that was budgeted but not needed (the
    /// total was an upper bound).
    pub fn skip_to(&mut self, done: u64) {
        if done > self.done {
            self.done = done;
            if let Some(bar) = &self.bar {
                bar.set_position(done);
            }
        }
    }

    /// A new estimate of the whole (for work whose size is only known as it goes).
    pub fn set_total(&mut self, total: u64) {
        self.total = total.max(self.done);
        if let Some(bar) = &self.bar {
            bar.set_length(self.total);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}
