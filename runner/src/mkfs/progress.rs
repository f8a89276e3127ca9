//! A progress bar for image builds that take more than a moment.
//!
//! The bar counts bytes written. It stays hidden for the first [`QUIET_PERIOD`] so quick
//! builds print nothing, and is never drawn when stderr is not a terminal (tests, CI, pipes).

use std::cell::Cell;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a build runs before its bar appears.
const QUIET_PERIOD: Duration = Duration::from_millis(500);

/// Progress of one image build.
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    /// Whether the bar may be shown: stderr is a terminal.
    may_show: bool,
    shown: Cell<bool>,
}

impl Progress {
    /// Progress towards `total_bytes` written, labelled `message`.
    pub fn new(total_bytes: u64, message: String) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message);
        Self {
            bar,
            started: Instant::now(),
            may_show: std::io::stderr().is_terminal(),
            shown: Cell::new(false),
        }
    }

    /// Records `bytes` more written.
    pub fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.may_show && !self.shown.get() && self.started.elapsed() >= QUIET_PERIOD {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown.set(true);
        }
    }

    /// Removes the bar, if it was shown.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
