//! Logging and human/JSON output helpers.

use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// Installs the one tracing subscriber of the process (stderr; JSON lines on request).
pub fn init_tracing(verbose: u8, json: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_env("FACEGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `YYYY-MM-DD HH:MM UTC` for a wall-clock time.
pub fn date(t: facegate_types::UnixMillis) -> String {
    t.utc_minutes()
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        use facegate_types::UnixMillis;
        assert_eq!(date(UnixMillis(0)), "1970-01-01 00:00 UTC");
        assert_eq!(date(UnixMillis(1_795_437_000_000)), "2026-11-23 12:30 UTC");
        assert_eq!(date(UnixMillis(951_782_400_000)), "2000-02-29 00:00 UTC");
    }
}
