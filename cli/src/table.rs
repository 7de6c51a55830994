//! The table primitives every command prints with: aligned columns, `Key:` value lines,
//! and the cells that repeat across tables (yes/no, `-` for nothing, byte counts,
//! traffic, times to the second).

use std::borrow::Cow;

use teefleet_model::{Sample, text::escaped};

/// Renders rows under a header as left-aligned columns separated by two spaces, with no
/// trailing whitespace. Widths count characters, not bytes. Cells are shown escaped: they
/// hold what agents and callers sent, and the controller's cleaning is not the only
/// defence of the operator's terminal.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<Cow<'_, str>>> = rows.iter().map(|row| row.iter().map(|c| escaped(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(len),
                None => widths.push(len),
            }
        }
    }
    let mut out = String::new();
    let header: Vec<Cow<'_, str>> = headers.iter().map(|h| Cow::Borrowed(*h)).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A table of one row per item, the row's cells made by `row`.
pub fn table_of<T>(headers: &[&str], items: &[T], row: impl FnMut(&T) -> Vec<String>) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(headers, &rows)
}

/// `Key:` and value lines, the values aligned one space after the longest key.
pub fn key_values(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(key, _)| key.chars().count() + 2).max().unwrap_or(0);
    fields.iter().map(|(key, value)| format!("{:<width$}{}\n", format!("{key}:"), escaped(value))).collect()
}

pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

pub fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".to_owned() } else { s.to_owned() }
}

pub fn join_or_dash(items: &[String]) -> String {
    join_or_dash_with(items, ",")
}

pub fn join_or_dash_with(items: &[String], separator: &str) -> String {
    if items.is_empty() { "-".to_owned() } else { items.join(separator) }
}

/// `1.5 KiB`: a byte count for people, in binary units.
pub fn bytes_text(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if !bytes.is_finite() || bytes < 1024.0 {
        return format!("{} B", bytes.max(0.0).round());
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The mirrored-traffic cells of a table row: packets, bytes, packets/s, bytes/s.
pub fn traffic_cells(packets: u64, bytes: u64, pps: f64, bps: f64) -> [String; 4] {
    // An f64 is exact to 2^53 bytes, far beyond the one decimal shown; JSON has the exact
    // count.
    [packets.to_string(), bytes_text(bytes as f64), format!("{pps:.1}"), format!("{}/s", bytes_text(bps))]
}

pub const TRAFFIC_HEADERS: [&str; 4] = ["PACKETS", "BYTES", "PKT/S", "BYTES/S"];

/// An RFC 3339 time as text views show it: UTC to the second, `2026-11-25T10:00:00Z`
/// (which `audit list --since` reads back); the JSON keeps the controller's fractions.
/// Text that is not such a time is shown as it came.
pub fn time_text(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text)
        .map_or_else(|_| text.to_owned(), |t| t.to_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// `0.01`, not `0.010000000000000002`: the sample as the model prints it.
pub fn sample_text(sample: f64) -> String {
    Sample::from_fraction(sample).map_or_else(|_| sample.to_string(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let t = table(&["A", "LONGER"], &[vec!["xxxx".into(), "y".into()], vec!["z".into(), String::new()]]);
        assert_eq!(t, "A     LONGER\nxxxx  y\nz\n");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let t = table(&["N", "X"], &[vec!["é".into(), "1".into()]]);
        assert_eq!(t, "N  X\né  1\n");
    }

    #[test]
    fn byte_counts_for_people() {
        assert_eq!(bytes_text(0.0), "0 B");
        assert_eq!(bytes_text(1023.0), "1023 B");
        assert_eq!(bytes_text(1536.0), "1.5 KiB");
        assert_eq!(bytes_text(5.0 * 1024.0 * 1024.0 * 1024.0), "5.0 GiB");
        assert_eq!(bytes_text(f64::NAN), "0 B");
        assert_eq!(sample_text(0.000_001), "0.000001");
    }

    #[test]
    fn times_show_to_the_second_in_utc() {
        assert_eq!(time_text("2026-11-25T10:00:00.123456+00:00"), "2026-11-25T10:00:00Z");
        assert_eq!(time_text("2023-11-14T22:13:20.999Z"), "2023-11-14T22:13:20Z", "cut, not rounded");
        assert_eq!(time_text("2026-11-25T11:30:00+01:30"), "2026-11-25T10:00:00Z");
        assert_eq!(time_text(""), "");
        assert_eq!(time_text("soon"), "soon");
    }
}
