//! Progress of long CLI work, on standard error.
//!
//! indicatif draws a bar on a terminal and nothing when standard error is a file or a pipe (CI
//! logs, `2> log`), so no carriage returns end up in logs; the commands print their own summary
//! line when they finish.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `total` steps of `label`.
pub fn bar(label: &str, total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix}: [{bar:30}] {pos}/{len} {msg} ({elapsed})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(label.to_string());
    pb
}

/// A counter for work of unknown length.
pub fn spinner(label: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {pos} {msg} ({elapsed})") {
        pb.set_style(style);
    }
    pb.set_prefix(label.to_string());
    pb
}

/// A callback for functions that report `done` steps of `total`.
pub fn callback(label: &str, total: usize) -> impl FnMut(usize) {
    let pb = bar(label, total as u64);
    move |done| {
        pb.set_position(done as u64);
        if done >= total {
            pb.finish_and_clear();
        }
    }
}
