//! Progress of a long transfer on stderr: a bar when stderr is a terminal, a plain line at
//! every tenth otherwise (logs, CI, a test reading them), or nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports pages done out of a total.
#[derive(Debug)]
pub enum Progress {
    /// An indicatif bar (stderr is a terminal).
    Bar(ProgressBar),
    /// `dosql: <label>: 50% (128/256 pages)` lines, one per tenth.
    Lines {
        /// What is being done.
        label: String,
        /// Pages in all.
        total: u64,
        /// Pages done.
        done: u64,
        /// The last tenth reported.
        last_tenth: u64,
    },
    /// Nothing.
    Quiet,
}

impl Progress {
    /// A reporter for `total` pages of `label` work.
    pub fn new(label: &str, total: u64, quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} pages ({percent}%) {elapsed} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                label: label.to_owned(),
                total,
                done: 0,
                last_tenth: 0,
            }
        }
    }

    /// `n` more pages done.
    pub fn add(&mut self, n: u64) {
        match self {
            Progress::Bar(bar) => bar.inc(n),
            Progress::Lines {
                label,
                total,
                done,
                last_tenth,
            } => {
                *done += n;
                let tenth = (*done * 10).checked_div(*total).unwrap_or(10);
                if tenth > *last_tenth {
                    *last_tenth = tenth;
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(
                        err,
                        "dosql: {label}: {}% ({done}/{total} pages)",
                        tenth * 10
                    );
                }
            }
            Progress::Quiet => {}
        }
    }

    /// Starts over (a restarted export).
    pub fn restart(&mut self) {
        match self {
            Progress::Bar(bar) => bar.set_position(0),
            Progress::Lines {
                done, last_tenth, ..
            } => {
                *done = 0;
                *last_tenth = 0;
            }
            Progress::Quiet => {}
        }
    }

    /// Sets the total (known only after the first answer of an export).
    pub fn set_total(&mut self, n: u64) {
        match self {
            Progress::Bar(bar) => bar.set_length(n),
            Progress::Lines { total, .. } => *total = n,
            Progress::Quiet => {}
        }
    }

    /// Removes the bar (lines need no ending).
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }

    /// A note on stderr that does not tear the bar.
    pub fn note(&self, text: &str) {
        match self {
            Progress::Bar(bar) => bar.println(format!("dosql: {text}")),
            Progress::Lines { .. } => eprintln!("dosql: {text}"),
            Progress::Quiet => {}
        }
    }
}
