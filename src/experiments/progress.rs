//! Progress of a comparison over its configuration runs: a bar on a terminal, else one line
//! per finished run, with the time left.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// Progress of a comparison over its configuration runs: a bar (current seed, arm,
/// configuration, ETA) on a terminal, else one line per finished run with the ETA.
pub struct Progress {
    bar: ProgressBar,
    lines: bool,
    runs: usize,
    /// When the current run started, and (runs computed, their seconds): for the time left,
    /// which runs reused from an earlier run's records do not predict.
    run_start: std::cell::Cell<Instant>,
    computed: std::cell::Cell<(usize, f64)>,
}

impl Progress {
    /// Progress over `runs` configuration runs; nothing shown unless `show`.
    pub fn new(show: bool, runs: usize) -> Progress {
        let terminal = show && std::io::stderr().is_terminal();
        let bar = if terminal { ProgressBar::new(runs as u64 * 1000) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {percent}% ({eta})").unwrap().progress_chars("=> "),
        );
        Progress {
            bar,
            lines: show && !terminal,
            runs,
            run_start: std::cell::Cell::new(Instant::now()),
            computed: std::cell::Cell::new((0, 0.0)),
        }
    }

    /// Run `done` (0-based) is under way, described by `what`, `fraction` of it spent.
    pub fn at(&self, done: usize, what: &str, fraction: f64) {
        if fraction == 0.0 {
            self.run_start.set(Instant::now());
        }
        self.bar.set_message(what.to_string());
        self.bar.set_position(done as u64 * 1000 + (1000.0 * fraction.clamp(0.0, 1.0)) as u64);
    }

    /// Run `done` (0-based) finished (`reused`: taken from an earlier run's record).
    pub fn finished(&self, done: usize, what: &str, reused: bool) {
        self.bar.set_position((done as u64 + 1) * 1000);
        let (mut n, mut seconds) = self.computed.get();
        if !reused {
            (n, seconds) = (n + 1, seconds + self.run_start.get().elapsed().as_secs_f64());
            self.computed.set((n, seconds));
        }
        if self.lines {
            let how = if reused { "reused" } else { "done" };
            let left = match n {
                0 => String::new(),
                n => format!(" (about {:.0} s left)", seconds / n as f64 * (self.runs - done - 1) as f64),
            };
            eprintln!("[{}/{}] {what}: {how}{left}", done + 1, self.runs);
        }
    }

    /// Prints a line above the bar (or on its own when there is no bar).
    pub fn say(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
