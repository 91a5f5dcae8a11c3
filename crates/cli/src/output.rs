//! What people and scripts see: logging, progress, sizes, times and the `--json` lines.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use triad_core::Timestamp;

/// Installs the log subscriber: `TRIAD_LOG` (e.g. `info`, `triad_store=debug`), default
/// `warn`, to standard error; as JSON lines with `TRIAD_LOG_FORMAT=json`.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // `TRIAD_LOG_FORMAT=json`: one JSON object per line, for journald or a log collector.
    if std::env::var("TRIAD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        logs.json().with_current_span(false).with_span_list(false).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// A count of things for people: `1 file`, `2 files`.
pub(crate) fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// A byte count for people: `1.5 GiB`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A timestamp as UTC RFC 3339 to the second.
pub(crate) fn time(t: Timestamp) -> String {
    let st = if t.secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(st).to_string()
}

/// Now, as a timestamp (the one clock read of a command).
pub(crate) fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos())
}

/// A progress bar on a terminal; hidden otherwise.
pub(crate) fn bar(total: u64, message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_owned());
    bar
}

/// The version of every `--json` output, carried in each object's `format` field. Within a
/// version, fields are only added; removing or renaming a field, or changing what one means or
/// its type, makes the next version. `docs/JSON.md` documents every field of every command.
pub(crate) const JSON_FORMAT: u64 = 1;

/// Prints one JSON object on its own line to standard output, with the `format` field added.
pub(crate) fn json_line(value: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &versioned(value))?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A time given as seconds since the epoch, as an RFC 3339 string; `null` stays `null` (never,
/// or not known).
pub(crate) fn json_time(secs: &serde_json::Value) -> serde_json::Value {
    secs.as_i64().map_or(serde_json::Value::Null, |s| time(Timestamp::new(s, 0)).into())
}

/// Turns `object[key]`, seconds since the epoch, into an RFC 3339 time, if it is there.
pub(crate) fn set_time(object: &mut serde_json::Value, key: &str) {
    if let Some(at) = object.get_mut(key) {
        *at = json_time(at);
    }
}

/// The rows of the array `object[key]` (none if there is no such array).
pub(crate) fn rows_mut<'a>(
    object: &'a mut serde_json::Value,
    key: &str,
) -> impl Iterator<Item = &'a mut serde_json::Value> {
    object.get_mut(key).and_then(serde_json::Value::as_array_mut).into_iter().flatten()
}

/// `value` with `"format": JSON_FORMAT` added.
fn versioned(value: &serde_json::Value) -> serde_json::Value {
    let fields = value.as_object().expect("every --json output is an object with named fields");
    assert!(!fields.contains_key("format"), "`format` is the version of the output: {value}");
    let mut out = serde_json::Map::new();
    out.insert("format".to_owned(), JSON_FORMAT.into());
    out.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(Timestamp::new(0, 0)), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn json_times_are_rfc_3339_and_never_stays_null() {
        let at = serde_json::json!(1_767_225_600);
        assert_eq!(json_time(&at), "2026-01-01T00:00:00Z");
        assert_eq!(json_time(&serde_json::Value::Null), serde_json::Value::Null);
    }

    #[test]
    fn every_json_object_carries_its_format() {
        let line = versioned(&serde_json::json!({"ok": true}));
        assert_eq!(line, serde_json::json!({"format": JSON_FORMAT, "ok": true}));
    }
}
