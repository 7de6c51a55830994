//! How a command's answer reaches stdout: every output type is a serde struct (the JSON
//! and YAML contract scripts parse) that also knows its text form, and one `emit` prints
//! whichever `-o` asks for.

use std::io::{self, Write};

use clap::ValueEnum;
use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header row.
    Table,
    /// JSON: an array for `list`, an object otherwise.
    Json,
    /// YAML: the same fields as the JSON.
    Yaml,
}

/// An answer fleetctl prints: as JSON or YAML through serde, or as the text `text` lays
/// out for people (a table, or `Key:` lines).
pub trait Render: Serialize {
    fn text(&self) -> String;
}

/// A list prints as its items do together: `session list` as the table of its sessions.
impl<T: Serialize> Render for Vec<T>
where
    [T]: Render,
{
    fn text(&self) -> String {
        self.as_slice().text()
    }
}

/// Writes `value` as pretty JSON followed by a newline.
fn write_json<T: Serialize + ?Sized>(out: &mut impl Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// Writes `value` as a YAML document.
fn write_yaml<T: Serialize + ?Sized>(out: &mut impl Write, value: &T) -> io::Result<()> {
    // The serializer wants a sized value; a reference to a list is one.
    let text = serde_saphyr::to_string(&value).map_err(io::Error::other)?;
    out.write_all(text.as_bytes())
}

/// Writes either the text, the JSON or the YAML form of `value`, depending on the format.
pub fn emit<T: Render + ?Sized>(out: &mut impl Write, format: Format, value: &T) -> io::Result<()> {
    match format {
        Format::Json => write_json(out, value),
        Format::Yaml => write_yaml(out, value),
        Format::Table => out.write_all(value.text().as_bytes()),
    }
}

/// proto3 sends an unset string as empty; the JSON says null.
pub fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The acknowledgement of a delete or remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedOut {
    pub kind: &'static str,
    pub name: String,
    pub deleted: bool,
}

impl Render for DeletedOut {
    fn text(&self) -> String {
        format!("{} {} deleted\n", self.kind, self.name)
    }
}
