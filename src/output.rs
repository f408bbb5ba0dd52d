//! Human tables and JSON output.

use serde_json::Value;

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

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.chars().count()).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(index) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let mut text = String::new();
        let mut line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(index, cell)| format!("{cell:<width$}", width = widths[index]))
                .collect();
            text.push_str(padded.join("  ").trim_end());
            text.push('\n');
        };
        line(&self.headers);
        for row in &self.rows {
            line(row);
        }
        text
    }
}

/// A JSON value as a table cell: strings bare, null as "-".
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Prints `value` as JSON, or calls `human` to print it for people.
pub fn print(output: Output, value: &Value, human: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Output::Table => print!("{}", human(value)),
    }
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
}
