//! Reading a CSV file into named, cleaned cells, with errors that name the row and column.
//! Cells are trimmed and lowercased (Unicode-aware, so non-ASCII letters are kept and
//! lowercased as Python's `str.lower` does), as the reference evaluation lowercases
//! every cell. Header names are matched case-insensitively.

use crate::error::{EvalError, Result};
use std::path::{Path, PathBuf};

/// The parsed file: a header and rows of cleaned cells.
pub struct Table {
    path: PathBuf,
    header: Vec<String>,
    lowered_header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// One data row, read by column name.
pub struct Row<'a> {
    table: &'a Table,
    /// 1-based, header excluded.
    pub number: usize,
    cells: &'a [String],
}

fn clean(cell: &str) -> String {
    cell.trim().to_lowercase()
}

impl Table {
    /// Reads and parses `path`. A UTF-8 byte-order mark and a missing final newline are
    /// accepted; a row with a different number of cells than the header is refused.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// Parses CSV bytes; `path` names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        let err = |row: usize, column: &str, message: String| EvalError::Dataset {
            path: path.to_path_buf(),
            row,
            column: column.to_string(),
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(bytes);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| err(0, "-", e.to_string()))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        if header.iter().all(|h| h.is_empty()) {
            return Err(err(0, "-", "the file is empty or has no header".into()));
        }
        let lowered_header: Vec<String> = header.iter().map(|h| h.to_lowercase()).collect();
        for (i, name) in lowered_header.iter().enumerate() {
            if name.is_empty() {
                return Err(err(0, &format!("#{}", i + 1), "empty column name".into()));
            }
            if lowered_header[..i].contains(name) {
                return Err(err(0, &header[i], "duplicate column".into()));
            }
        }
        let mut rows = Vec::new();
        for (index, record) in reader.records().enumerate() {
            let number = index + 1;
            let record = record.map_err(|e| err(number, "-", e.to_string()))?;
            if record.iter().all(|c| c.trim().is_empty()) {
                continue; // a blank line (e.g. trailing) is not a row
            }
            if record.len() < header.len() {
                return Err(err(
                    number,
                    &header[record.len()],
                    format!(
                        "missing: the row has {} cells, the header {}",
                        record.len(),
                        header.len()
                    ),
                ));
            }
            if record.len() > header.len() {
                return Err(err(
                    number,
                    &format!("#{}", header.len() + 1),
                    format!(
                        "extra cell: the row has {} cells, the header {}",
                        record.len(),
                        header.len()
                    ),
                ));
            }
            rows.push(record.iter().map(clean).collect());
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            lowered_header,
            rows,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the header has this column (case-insensitive).
    pub fn has_column(&self, name: &str) -> bool {
        self.index(name).is_some()
    }

    fn index(&self, name: &str) -> Option<usize> {
        let name = name.to_lowercase();
        self.lowered_header.iter().position(|h| *h == name)
    }

    /// Fails, naming the column, if the header lacks any of `names`.
    pub fn require_columns<S: AsRef<str>>(&self, names: &[S]) -> Result<()> {
        for name in names {
            if !self.has_column(name.as_ref()) {
                return Err(self.error(0, name.as_ref(), "missing column in the header"));
            }
        }
        Ok(())
    }

    /// The data rows, in file order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().enumerate().map(move |(i, cells)| Row {
            table: self,
            number: i + 1,
            cells,
        })
    }

    /// A dataset error at `row` (0 = header) and `column`.
    pub fn error(&self, row: usize, column: &str, message: impl Into<String>) -> EvalError {
        EvalError::Dataset {
            path: self.path.clone(),
            row,
            column: column.to_string(),
            message: message.into(),
        }
    }

    /// How many numbered columns `prefix1`, `prefix2`, .. the header has, counting from 1
    /// until the first gap.
    pub fn count_numbered(&self, prefix: &str) -> usize {
        (1..)
            .take_while(|i| self.has_column(&format!("{prefix}{i}")))
            .count()
    }
}

impl Row<'_> {
    /// The cleaned cell, which must be non-empty.
    pub fn required(&self, column: &str) -> Result<String> {
        let value = self.optional(column)?;
        value.ok_or_else(|| {
            self.table
                .error(self.number, &self.header_name(column), "empty cell")
        })
    }

    /// The cleaned cell, `None` if empty; an error if the header lacks the column.
    pub fn optional(&self, column: &str) -> Result<Option<String>> {
        let index = self
            .table
            .index(column)
            .ok_or_else(|| self.table.error(0, column, "missing column in the header"))?;
        let value = &self.cells[index];
        Ok((!value.is_empty()).then(|| value.clone()))
    }

    /// The column's name as the file spells it.
    fn header_name(&self, column: &str) -> String {
        self.table
            .index(column)
            .map_or_else(|| column.to_string(), |i| self.table.header[i].clone())
    }
}
