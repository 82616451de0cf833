//! The progress bar long batches show on stderr.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr for batches worth watching (hidden when stderr is not a terminal).
pub fn progress_bar(len: usize, what: &str) -> ProgressBar {
    if len < 16 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} ({{eta}} left)"))
            .expect("valid template"),
    );
    bar
}
