//! Progress for people (an indicatif bar on stderr, hidden when stderr is not a terminal) or
//! for logs (`--json`: one JSON record per stage, warning and 10% of a sampler's steps on
//! stderr). Stdout is kept for the result.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use fslens::experiment::Observer;
use fslens::samplers::Progress;

pub struct Reporter {
    quiet: bool,
    json: bool,
    bar: Option<ProgressBar>,
    last_json_decile: usize,
}

impl Reporter {
    pub fn new(quiet: bool, json: bool) -> Self {
        Reporter {
            quiet,
            json,
            bar: None,
            last_json_decile: usize::MAX,
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Reporter {
    fn stage(&mut self, message: &str) {
        self.finish();
        if self.json {
            eprintln!(
                "{}",
                serde_json::json!({"event": "stage", "message": message})
            );
        } else if !self.quiet {
            // Plain lines keep a log readable when stderr is a file.
            eprintln!("{message}");
        }
        self.last_json_decile = usize::MAX;
    }

    fn warning(&mut self, message: &str) {
        self.finish();
        // Warnings reach stderr even with --quiet: they are never silent.
        if self.json {
            eprintln!(
                "{}",
                serde_json::json!({"event": "warning", "message": message})
            );
        } else {
            eprintln!("warning: {message}");
        }
    }

    fn loading(&mut self, done: usize, total: usize) {
        if self.json {
            let decile = done * 10 / total.max(1);
            if decile != self.last_json_decile {
                self.last_json_decile = decile;
                eprintln!(
                    "{}",
                    serde_json::json!({"event": "loading", "done": done, "total": total})
                );
            }
            return;
        }
        if self.quiet {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "  decoding [{bar:30}] {pos}/{len} images  {elapsed} (eta {eta})",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar
        });
        bar.set_position(done as u64);
    }

    fn progress(&mut self, sampler: &str, p: Progress) {
        if self.json {
            let decile = p.done * 10 / p.total.max(1);
            if decile != self.last_json_decile {
                self.last_json_decile = decile;
                eprintln!(
                    "{}",
                    serde_json::json!({"event": "progress", "sampler": sampler, "done": p.done, "total": p.total})
                );
            }
            return;
        }
        if self.quiet {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar =
                ProgressBar::with_draw_target(Some(p.total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "  {prefix:<8} [{bar:30}] {pos}/{len} steps  {elapsed} (eta {eta})",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_prefix(sampler.to_string());
            bar
        });
        bar.set_position(p.done as u64);
    }
}
