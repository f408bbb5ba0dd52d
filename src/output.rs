//! Human tables and JSON output.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use crate::cli::Output;

/// A table with aligned columns.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|header| header.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Columns two spaces apart, each as wide as its widest cell on a terminal: widths are
    /// display columns (unicode-width), so wide characters (CJK, most emoji) and combining marks
    /// keep the columns aligned.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.width()).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(index) {
                    *width = (*width).max(cell.width());
                }
            }
        }
        let mut text = String::new();
        let mut line = |cells: &[String]| {
            let mut written = String::new();
            for (index, cell) in cells.iter().enumerate() {
                if index > 0 {
                    written.push_str("  ");
                }
                written.push_str(cell);
                let width = widths.get(index).copied().unwrap_or(0);
                written.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.width())));
            }
            text.push_str(written.trim_end());
            text.push('\n');
        };
        line(&self.headers);
        for row in &self.rows {
            line(row);
        }
        text
    }
}

/// A value as a table cell: text bare, numbers and booleans as written, nothing as "-".
pub trait Cell {
    fn cell(&self) -> String;
}

impl Cell for str {
    fn cell(&self) -> String {
        self.to_string()
    }
}

impl Cell for String {
    fn cell(&self) -> String {
        self.clone()
    }
}

impl Cell for std::borrow::Cow<'_, str> {
    fn cell(&self) -> String {
        self.to_string()
    }
}

macro_rules! cell_as_written {
    ($($type:ty),*) => {$(
        impl Cell for $type {
            fn cell(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
cell_as_written!(u64, u32, u8, bool);

impl<T: Cell> Cell for Option<T> {
    fn cell(&self) -> String {
        self.as_ref().map_or_else(|| "-".to_string(), Cell::cell)
    }
}

impl<T: Cell + ?Sized> Cell for &T {
    fn cell(&self) -> String {
        (**self).cell()
    }
}

/// A JSON value the API leaves free-form (event data, a decision's inputs): strings bare, null
/// as "-", anything else as JSON.
impl Cell for Value {
    fn cell(&self) -> String {
        match self {
            Value::Null => "-".to_string(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }
}

pub fn cell(value: &(impl Cell + ?Sized)) -> String {
    value.cell()
}

/// Prints the server's answer as it was sent (`--output json`), or read into its type `T` and
/// rendered by `human` for people. The answer is read into `T` either way, so an answer of an
/// unexpected shape is an error in both.
pub fn print<T: DeserializeOwned>(output: Output, answer: &Value, human: impl FnOnce(&T) -> String) -> Result<()> {
    let typed = T::deserialize(answer).context("the server's answer is not of the shape this client reads")?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(answer).unwrap_or_default()),
        Output::Table => print!("{}", human(&typed)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut table = Table::new(&["HOST", "RELEASE"]);
        table.row(vec!["web-10".into(), "1.0".into()]);
        assert_eq!(table.render(), "HOST    RELEASE\nweb-10  1.0\n");
    }

    #[test]
    fn wide_characters_count_as_the_columns_they_take() {
        let mut table = Table::new(&["NOTE", "BY"]);
        table.row(vec!["発売".into(), "ops".into()]);
        table.row(vec!["e\u{301}t\u{e9}".into(), "ci".into()]);
        // "発売" takes four columns; "e\u{301}té" three (the accent combines with the e).
        assert_eq!(table.render(), "NOTE  BY\n発売  ops\ne\u{301}t\u{e9}   ci\n");
    }
}
