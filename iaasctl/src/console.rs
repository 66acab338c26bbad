//! Where a command writes: results to `out` (standard output, what scripts read), notes and
//! progress that must not mix with machine output to `err` (standard error).

use std::io::Write;

/// The two output streams of a command.
pub struct Console<'a> {
    /// Results: tables, JSON, confirmations.
    pub out: &'a mut dyn Write,
    /// Prompts, notes, warnings, and progress when `out` carries JSON.
    pub err: &'a mut dyn Write,
}

impl<'a> Console<'a> {
    /// A console over `out` and `err`.
    pub fn new(out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Self { out, err }
    }

    /// Writes `value` as indented JSON to `out`.
    pub fn print_json(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        writeln!(self.out, "{text}")
    }

    /// Where progress goes: `out` normally, `err` when `out` carries JSON.
    pub fn progress(&mut self, json: bool) -> &mut dyn Write {
        if json { &mut *self.err } else { &mut *self.out }
    }
}

impl std::fmt::Debug for Console<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Console")
    }
}
