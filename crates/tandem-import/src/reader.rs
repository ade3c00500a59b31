//! Streaming readers: one row at a time from a CSV file (header row, any one-byte delimiter,
//! RFC 4180 quoting) or a JSON-lines file (one object per line), in memory bounded by
//! `ROW_BYTES_MAX`, each row turned into an `identify` event or a rejection.
//!
//! Every row carries the [`Position`] where it starts and where the next one starts, so a
//! checkpoint can name the first row not yet acknowledged and a later run can seek straight to it.

use crate::event::{EventBuilder, ImportIdentity};
use crate::limits::{READ_BUFFER_BYTES, REPORT_RAW_BYTES_MAX, ROW_BYTES_MAX};
use crate::mapping::{Mapping, MappingError, Target};
use crate::reject::{Reason, RejectedRow, Rejection};
use crate::value::Cell;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

/// Where a row starts in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Byte offset.
    pub byte: u64,
    /// Line (1-based) of the file at that offset.
    pub line: u64,
    /// The number the row starting here gets (1 is the first data row).
    pub row: u64,
}

/// The file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header row naming the columns, then one record per row.
    Csv { delimiter: u8 },
    /// One JSON object per line; its members are the columns. Blank lines are skipped (row numbers
    /// stay line numbers).
    JsonLines,
}

/// One row read: its event or its rejection, and where it starts and ends.
#[derive(Debug, Clone)]
pub struct Row {
    pub row: u64,
    pub line: u64,
    /// The `identify` event's JSON, or why the row is not imported.
    pub outcome: Result<Vec<u8>, RejectedRow>,
    pub start: Position,
    pub end: Position,
}

/// Problems that stop an import (a row's own problems are rejections, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the file: {0}")]
    Io(#[from] io::Error),
    #[error("the file is empty: a CSV import needs a header row naming the columns")]
    EmptyFile,
    #[error("column {column} of the header row is not UTF-8 text; re-save the file as UTF-8")]
    HeaderNotUtf8 { column: usize },
    #[error("{0}")]
    Mapping(#[from] MappingError),
    #[error("no column maps to userId or anonymousId, so no row could be imported (the columns are {columns}); name one with --map COLUMN=userId")]
    NoIdentityColumn { columns: String },
    #[error("row {row} (line {line}) runs past {ROW_BYTES_MAX} bytes without ending: most likely an unclosed quote (\") that swallows the rows after it. Fix that row and run the import again; the rows before it are imported")]
    RowTooLarge { row: u64, line: u64 },
}

/// Marks the I/O error a CSV row over `ROW_BYTES_MAX` turns into.
#[derive(Debug)]
struct RowTooLong;

impl std::fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row longer than {ROW_BYTES_MAX} bytes")
    }
}

impl std::error::Error for RowTooLong {}

/// The CSV parser's input: counts the bytes read for the current row and fails the read once one
/// row has taken more than `ROW_BYTES_MAX` (plus the read buffer, which may hold the next rows'
/// bytes), since the parser would otherwise grow its record without bound; and notes where line
/// breaks are, to give each row its line number (the csv crate's own count misses line breaks
/// inside quoted cells).
struct Tracked<R> {
    inner: R,
    since_mark: usize,
    /// Offset of the next byte `inner` returns.
    offset: u64,
    /// Offsets of the `\r` and `\n` bytes read but not yet passed (true for `\n`).
    breaks: VecDeque<(u64, bool)>,
    /// `\n` bytes passed.
    newlines: u64,
}

impl<R> Tracked<R> {
    /// The 1-based line of offset `byte`; offsets asked for never go backwards.
    fn line_at(&mut self, byte: u64) -> u64 {
        while let Some(&(at, newline)) = self.breaks.front() {
            if at >= byte {
                break;
            }
            self.newlines += u64::from(newline);
            self.breaks.pop_front();
        }
        self.newlines + 1
    }

    /// The line of the first cell of a record the parser started reading at `byte`: past the empty
    /// lines it skips (and the `\n` left over from a `\r\n`).
    fn content_line(&mut self, byte: u64) -> u64 {
        let mut line = self.line_at(byte);
        for (at, &(offset, newline)) in (byte..).zip(self.breaks.iter()) {
            if offset != at {
                break;
            }
            line += u64::from(newline);
        }
        line
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.since_mark > ROW_BYTES_MAX + READ_BUFFER_BYTES {
            return Err(io::Error::other(RowTooLong));
        }
        let read = self.inner.read(buffer)?;
        for (index, &byte) in buffer[..read].iter().enumerate() {
            if byte == b'\n' || byte == b'\r' {
                self.breaks
                    .push_back((self.offset + index as u64, byte == b'\n'));
            }
        }
        self.offset += read as u64;
        self.since_mark += read;
        Ok(read)
    }
}

impl<R: Seek> Seek for Tracked<R> {
    /// Line numbers after a seek are the caller's to set (`newlines`).
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        let offset = self.inner.seek(position)?;
        self.offset = offset;
        self.breaks.clear();
        Ok(offset)
    }
}

/// Rows of a file, read one at a time.
pub struct RowReader<R: Read + Seek> {
    source: Source<R>,
    identity: ImportIdentity,
}

enum Source<R: Read + Seek> {
    Csv(CsvRows<R>),
    JsonLines(JsonLines<R>),
}

impl<R: Read + Seek> RowReader<R> {
    /// Opens `input` (reading a CSV header and checking the mapping against it), at `resume`
    /// when given: a position a previous run of the same import returned.
    pub fn open(
        input: R,
        format: Format,
        mapping: Mapping,
        identity: ImportIdentity,
        resume: Option<Position>,
    ) -> Result<RowReader<R>, ReadError> {
        let source = match format {
            Format::Csv { delimiter } => {
                Source::Csv(CsvRows::open(input, delimiter, &mapping, resume)?)
            }
            Format::JsonLines => Source::JsonLines(JsonLines::open(input, mapping, resume)?),
        };
        Ok(RowReader { source, identity })
    }

    /// The next row, `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Row>, ReadError> {
        match &mut self.source {
            Source::Csv(rows) => rows.next_row(&self.identity),
            Source::JsonLines(rows) => rows.next_row(&self.identity),
        }
    }

    /// Where the next row starts (bytes read so far, for progress).
    pub fn position(&self) -> Position {
        match &self.source {
            Source::Csv(rows) => rows.position(),
            Source::JsonLines(rows) => rows.position(),
        }
    }

    /// A CSV file's columns and where each goes (`None` for JSON lines, mapped per member).
    pub fn columns(&self) -> Option<Vec<(String, Target)>> {
        match &self.source {
            Source::Csv(rows) => Some(
                rows.header
                    .iter()
                    .cloned()
                    .zip(rows.plan.iter().cloned())
                    .collect(),
            ),
            Source::JsonLines(_) => None,
        }
    }
}

struct CsvRows<R> {
    reader: csv::Reader<Tracked<R>>,
    header: Vec<String>,
    plan: Vec<Target>,
    record: csv::ByteRecord,
    /// Where the next row starts.
    next: Position,
    delimiter: u8,
}

impl<R: Read + Seek> CsvRows<R> {
    fn open(
        input: R,
        delimiter: u8,
        mapping: &Mapping,
        resume: Option<Position>,
    ) -> Result<CsvRows<R>, ReadError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(READ_BUFFER_BYTES)
            .from_reader(Tracked {
                inner: input,
                since_mark: 0,
                offset: 0,
                breaks: VecDeque::new(),
                newlines: 0,
            });
        let mut record = csv::ByteRecord::new();
        let has_header = reader
            .read_byte_record(&mut record)
            .map_err(|error| csv_error(error, 0, 1))?;
        if !has_header {
            return Err(ReadError::EmptyFile);
        }
        let header = record
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let name = std::str::from_utf8(name)
                    .map_err(|_| ReadError::HeaderNotUtf8 { column: index + 1 })?;
                let name = if index == 0 {
                    name.trim_start_matches('\u{feff}')
                } else {
                    name
                };
                Ok(name.trim().to_string())
            })
            .collect::<Result<Vec<String>, ReadError>>()?;
        let plan = mapping.plan_header(&header)?;
        if !plan
            .iter()
            .any(|target| matches!(target, Target::UserId | Target::AnonymousId))
        {
            return Err(ReadError::NoIdentityColumn {
                columns: header
                    .iter()
                    .map(|name| format!("{name:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let next = match resume {
            Some(position) => {
                let mut at = csv::Position::new();
                at.set_byte(position.byte)
                    .set_line(position.line)
                    .set_record(position.row);
                reader
                    .seek_raw(SeekFrom::Start(position.byte), at)
                    .map_err(|error| csv_error(error, position.row, position.line))?;
                reader.get_mut().newlines = position.line.saturating_sub(1);
                position
            }
            None => {
                let byte = reader.position().byte();
                Position {
                    byte,
                    line: reader.get_mut().line_at(byte),
                    row: 1,
                }
            }
        };
        Ok(CsvRows {
            reader,
            header,
            plan,
            record,
            next,
            delimiter,
        })
    }

    fn position(&self) -> Position {
        self.next
    }

    fn next_row(&mut self, identity: &ImportIdentity) -> Result<Option<Row>, ReadError> {
        let start = self.next;
        self.reader.get_mut().since_mark = 0;
        let more = self
            .reader
            .read_byte_record(&mut self.record)
            .map_err(|error| csv_error(error, start.row, start.line))?;
        if !more {
            return Ok(None);
        }
        let row = start.row;
        let line = self.reader.get_mut().content_line(start.byte);
        let end_byte = self.reader.position().byte();
        self.next = Position {
            byte: end_byte,
            line: self.reader.get_mut().line_at(end_byte),
            row: row + 1,
        };
        let outcome = self.event(identity, row).map_err(|rejection| RejectedRow {
            row,
            line,
            reason: rejection.reason,
            message: rejection.message,
            raw: cut_for_report(self.raw_record()),
        });
        Ok(Some(Row {
            row,
            line,
            outcome,
            start,
            end: self.next,
        }))
    }

    fn event(&self, identity: &ImportIdentity, row: u64) -> Result<Vec<u8>, Rejection> {
        if self.record.len() != self.header.len() {
            return Err(Rejection::new(
                Reason::WrongColumnCount,
                format!(
                    "{} cells, but the header has {} columns",
                    self.record.len(),
                    self.header.len()
                ),
            ));
        }
        let mut builder = EventBuilder::new(identity);
        for (index, bytes) in self.record.iter().enumerate() {
            let name = &self.header[index];
            let text = std::str::from_utf8(bytes).map_err(|_| {
                Rejection::new(
                    Reason::InvalidUtf8,
                    format!(
                        "column {name:?} (column {}) is not UTF-8 text; re-save the file as UTF-8",
                        index + 1
                    ),
                )
            })?;
            builder.apply(name, &self.plan[index], Cell::Text(text))?;
        }
        builder.finish(row)
    }

    /// The current record written back as one CSV line (quoting as needed).
    fn raw_record(&self) -> String {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let written = writer.write_byte_record(&self.record);
        let bytes = match (written, writer.into_inner()) {
            (Ok(()), Ok(bytes)) => bytes,
            _ => self.record.as_slice().to_vec(),
        };
        let text = String::from_utf8_lossy(&bytes);
        text.strip_suffix('\n').unwrap_or(&text).to_string()
    }
}

fn csv_error(error: csv::Error, row: u64, line: u64) -> ReadError {
    match error.into_kind() {
        csv::ErrorKind::Io(error)
            if error
                .get_ref()
                .is_some_and(|inner| inner.is::<RowTooLong>()) =>
        {
            ReadError::RowTooLarge { row, line }
        }
        csv::ErrorKind::Io(error) => ReadError::Io(error),
        // Reading byte records with `flexible` on, the csv parser reports nothing but I/O errors.
        other => ReadError::Io(io::Error::other(format!("{other:?}"))),
    }
}

struct JsonLines<R> {
    input: BufReader<R>,
    mapping: Mapping,
    /// Offset and line number of the next line.
    byte: u64,
    line: u64,
    buffer: Vec<u8>,
}

/// One line as read: its bytes are in the buffer, the count is what was consumed (with `\n`).
enum Line {
    End,
    Complete(u64),
    /// Longer than `ROW_BYTES_MAX`: the buffer holds its start only.
    TooLong(u64),
}

impl<R: Read + Seek> JsonLines<R> {
    fn open(
        mut input: R,
        mapping: Mapping,
        resume: Option<Position>,
    ) -> Result<JsonLines<R>, ReadError> {
        let (byte, line) = match resume {
            Some(position) => {
                input.seek(SeekFrom::Start(position.byte))?;
                (position.byte, position.line)
            }
            None => (0, 1),
        };
        Ok(JsonLines {
            input: BufReader::with_capacity(READ_BUFFER_BYTES, input),
            mapping,
            byte,
            line,
            buffer: Vec::new(),
        })
    }

    fn position(&self) -> Position {
        Position {
            byte: self.byte,
            line: self.line,
            row: self.line,
        }
    }

    fn next_row(&mut self, identity: &ImportIdentity) -> Result<Option<Row>, ReadError> {
        loop {
            let start = self.position();
            let line = self.read_line()?;
            let consumed = match line {
                Line::End => return Ok(None),
                Line::Complete(consumed) | Line::TooLong(consumed) => consumed,
            };
            self.byte += consumed;
            self.line += 1;
            let mut text: &[u8] = &self.buffer;
            if start.byte == 0 {
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            let text = text.strip_suffix(b"\n").unwrap_or(text);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) && !matches!(line, Line::TooLong(_)) {
                continue;
            }
            let row = start.line;
            let outcome = match line {
                Line::TooLong(_) => Err(Rejection::new(
                    Reason::RowTooLarge,
                    format!("the line is {consumed} bytes; at most {ROW_BYTES_MAX} are read"),
                )),
                _ => self.event(text, identity, row),
            };
            let outcome = outcome.map_err(|rejection| RejectedRow {
                row,
                line: row,
                reason: rejection.reason,
                message: rejection.message,
                raw: cut_for_report(String::from_utf8_lossy(text).into_owned()),
            });
            return Ok(Some(Row {
                row,
                line: row,
                outcome,
                start,
                end: self.position(),
            }));
        }
    }

    fn event(
        &self,
        text: &[u8],
        identity: &ImportIdentity,
        row: u64,
    ) -> Result<Vec<u8>, Rejection> {
        let value: serde_json::Value = serde_json::from_slice(text)
            .map_err(|error| Rejection::new(Reason::InvalidJson, format!("not JSON: {error}")))?;
        let serde_json::Value::Object(members) = value else {
            return Err(Rejection::new(
                Reason::InvalidJson,
                "a line must be a JSON object ({\"column\": value, …})",
            ));
        };
        let mut builder = EventBuilder::new(identity);
        for (name, value) in &members {
            let target = self.mapping.target_for(name);
            builder.apply(name, &target, Cell::Json(value))?;
        }
        builder.finish(row)
    }

    /// Reads up to and including the next `\n` into the buffer, keeping at most `ROW_BYTES_MAX`
    /// bytes of it.
    fn read_line(&mut self) -> io::Result<Line> {
        self.buffer.clear();
        let mut consumed = 0u64;
        let mut too_long = false;
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Ok(match (consumed, too_long) {
                    (0, _) => Line::End,
                    (_, true) => Line::TooLong(consumed),
                    (_, false) => Line::Complete(consumed),
                });
            }
            let (chunk, ends) = match available.iter().position(|&byte| byte == b'\n') {
                Some(newline) => (&available[..=newline], true),
                None => (available, false),
            };
            if self.buffer.len() + chunk.len() > ROW_BYTES_MAX + 1 {
                too_long = true;
            }
            if !too_long {
                self.buffer.extend_from_slice(chunk);
            } else if self.buffer.len() < REPORT_RAW_BYTES_MAX {
                let room = REPORT_RAW_BYTES_MAX - self.buffer.len();
                self.buffer
                    .extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
            let length = chunk.len();
            self.input.consume(length);
            consumed += length as u64;
            if ends {
                return Ok(if too_long {
                    Line::TooLong(consumed)
                } else {
                    Line::Complete(consumed)
                });
            }
        }
    }
}

/// A raw row for the report: cut at `REPORT_RAW_BYTES_MAX` bytes (on a character boundary), the
/// cut marked.
fn cut_for_report(mut text: String) -> String {
    if text.len() <= REPORT_RAW_BYTES_MAX {
        return text;
    }
    let mut end = REPORT_RAW_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("…[{cut} more bytes]"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::io::Cursor;

    fn identity() -> ImportIdentity {
        ImportIdentity::given("test", "test.csv", "").unwrap()
    }

    fn read_all(
        text: &[u8],
        format: Format,
        mapping: Mapping,
        resume: Option<Position>,
    ) -> Result<Vec<Row>, ReadError> {
        let mut reader = RowReader::open(
            Cursor::new(text.to_vec()),
            format,
            mapping,
            identity(),
            resume,
        )?;
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row()? {
            rows.push(row);
        }
        Ok(rows)
    }

    fn csv(text: &str) -> Vec<Row> {
        read_all(
            text.as_bytes(),
            Format::Csv { delimiter: b',' },
            Mapping::default(),
            None,
        )
        .unwrap()
    }

    fn event(row: &Row) -> Value {
        serde_json::from_slice(row.outcome.as_ref().expect("an event")).unwrap()
    }

    fn rejection(row: &Row) -> &RejectedRow {
        row.outcome.as_ref().expect_err("a rejection")
    }

    #[test]
    fn csv_quoting_edge_cases() {
        let rows = csv(concat!(
            "\u{feff}user_id,name,notes\r\n",
            "u1,\"Doe, Jane\",\"said \"\"hi\"\"\"\r\n",
            "u2,\"two\nlines\",\r\n",
            "\r\n",
            "u3,,\"\"\r\n",
            "u4,  padded  ,x",
        ));
        assert_eq!(rows.len(), 4, "the blank line is no row");
        assert_eq!(
            event(&rows[0])["traits"],
            json!({"name": "Doe, Jane", "notes": "said \"hi\""})
        );
        assert_eq!(
            event(&rows[0])["userId"],
            "u1",
            "the BOM is not part of the first column"
        );
        assert_eq!(event(&rows[1])["traits"], json!({"name": "two\nlines"}));
        assert_eq!(
            event(&rows[2]).get("traits"),
            None,
            "empty cells set nothing"
        );
        assert_eq!(
            event(&rows[3])["traits"],
            json!({"name": "padded", "notes": "x"})
        );
        assert_eq!(
            rows.iter().map(|r| (r.row, r.line)).collect::<Vec<_>>(),
            vec![(1, 2), (2, 3), (3, 6), (4, 7)],
            "rows count records, lines count the file's lines"
        );
        for pair in rows.windows(2) {
            assert!(pair[0].end.byte <= pair[1].start.byte);
        }
    }

    #[test]
    fn other_delimiters() {
        let rows = read_all(
            b"user_id;plan\nu1;\"a;b\"\n",
            Format::Csv { delimiter: b';' },
            Mapping::default(),
            None,
        )
        .unwrap();
        assert_eq!(event(&rows[0])["traits"]["plan"], "a;b");
        let rows = read_all(
            b"user_id\tplan\nu1\tpro\n",
            Format::Csv { delimiter: b'\t' },
            Mapping::default(),
            None,
        )
        .unwrap();
        assert_eq!(event(&rows[0])["traits"]["plan"], "pro");
    }

    #[test]
    fn csv_rejections_keep_the_row_and_reason() {
        let rows = csv(concat!(
            "user_id,email,plan\n",
            "u1,a@example.com,pro\n",
            "u2,not-an-email,pro\n",
            ",b@example.com,free\n",
            "u4,c@example.com\n",
            "u5,d@example.com,pro,extra\n",
            "u6,\"e@example.com\",\"quoted, \"\"plan\"\"\"\n",
        ));
        let reasons: Vec<Option<Reason>> = rows
            .iter()
            .map(|row| row.outcome.as_ref().err().map(|r| r.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                None,
                Some(Reason::MalformedEmail),
                Some(Reason::MissingIdentity),
                Some(Reason::WrongColumnCount),
                Some(Reason::WrongColumnCount),
                None
            ]
        );
        let bad_email = rejection(&rows[1]);
        assert_eq!((bad_email.row, bad_email.line), (2, 3));
        assert_eq!(bad_email.raw, "u2,not-an-email,pro");
        assert_eq!(
            rejection(&rows[3]).message,
            "2 cells, but the header has 3 columns"
        );
        assert_eq!(rejection(&rows[4]).raw, "u5,d@example.com,pro,extra");
    }

    #[test]
    fn a_cell_that_is_not_utf8_rejects_its_row_only() {
        let rows = read_all(
            b"user_id,name\nu1,caf\xe9\nu2,ok\n",
            Format::Csv { delimiter: b',' },
            Mapping::default(),
            None,
        )
        .unwrap();
        let rejected = rejection(&rows[0]);
        assert_eq!(rejected.reason, Reason::InvalidUtf8);
        assert!(
            rejected.message.contains("\"name\""),
            "{}",
            rejected.message
        );
        assert_eq!(rejected.raw, "u1,caf\u{fffd}");
        assert!(rows[1].outcome.is_ok());
    }

    #[test]
    fn header_problems_stop_before_any_row() {
        let open = |text: &[u8], mapping: Mapping| {
            read_all(text, Format::Csv { delimiter: b',' }, mapping, None).unwrap_err()
        };
        assert!(matches!(
            open(b"", Mapping::default()),
            ReadError::EmptyFile
        ));
        assert!(matches!(
            open(b"email,plan\na@example.com,pro\n", Mapping::default()),
            ReadError::NoIdentityColumn { .. }
        ));
        assert!(matches!(
            open(b"user_id,n\xffme\n", Mapping::default()),
            ReadError::HeaderNotUtf8 { column: 2 }
        ));
        let mut mapping = Mapping::default();
        mapping.add_flag("customer_no=userId").unwrap();
        let error = open(b"user_id,email\n", mapping);
        assert!(error.to_string().contains("customer_no"), "{error}");
        // A header alone is a file with no rows, not an error.
        assert!(csv("user_id,email\n").is_empty());
    }

    #[test]
    fn an_unclosed_quote_stops_at_the_row_that_opened_it() {
        let mut text = String::from("user_id,notes\nu1,fine\nu2,\"never closed\n");
        while text.len() < ROW_BYTES_MAX + 2 * READ_BUFFER_BYTES + 100 {
            text.push_str("u9,more rows swallowed by the quote\n");
        }
        let mut reader = RowReader::open(
            Cursor::new(text.into_bytes()),
            Format::Csv { delimiter: b',' },
            Mapping::default(),
            identity(),
            None,
        )
        .unwrap();
        assert!(reader.next_row().unwrap().unwrap().outcome.is_ok());
        match reader.next_row() {
            Err(ReadError::RowTooLarge { row: 2, line: 3 }) => {}
            other => panic!("expected RowTooLarge for row 2, got {other:?}"),
        }
    }

    #[test]
    fn a_quote_left_open_at_the_end_of_the_file_swallows_the_rest_into_one_cell() {
        // What every CSV reader does; the row count in the summary shows it.
        let rows = csv("user_id,notes\nu1,\"open\nu2,x\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(event(&rows[0])["traits"]["notes"], "open\nu2,x");
    }

    #[test]
    fn resuming_at_a_position_continues_with_the_same_rows_and_numbers() {
        for (format, text) in [
            (
                Format::Csv { delimiter: b',' },
                "user_id,n\nu1,1\nu2,\"a\nb\"\n\nu3,3\r\nu4,4\nu5,5",
            ),
            (
                Format::JsonLines,
                "{\"user_id\":\"u1\"}\n\n{\"user_id\":\"u2\"}\r\n{\"user_id\":\"u3\"}\nnot json\n{\"user_id\":\"u5\"}",
            ),
        ] {
            let all = read_all(text.as_bytes(), format, Mapping::default(), None).unwrap();
            for (index, row) in all.iter().enumerate() {
                let rest =
                    read_all(text.as_bytes(), format, Mapping::default(), Some(row.start)).unwrap();
                let expected: Vec<_> = all[index..]
                    .iter()
                    .map(|r| (r.row, r.line, r.outcome.clone()))
                    .collect();
                let got: Vec<_> = rest
                    .iter()
                    .map(|r| (r.row, r.line, r.outcome.clone()))
                    .collect();
                assert_eq!(got, expected, "{format:?} resumed at row {}", row.row);
                let after_end =
                    read_all(text.as_bytes(), format, Mapping::default(), Some(row.end)).unwrap();
                assert_eq!(after_end.len(), all.len() - index - 1);
            }
        }
    }

    #[test]
    fn json_lines() {
        let text = concat!(
            "\u{feff}{\"userId\": 42, \"email\": \"a@example.com\", \"plan\": {\"tier\": \"pro\"}, \"score\": 9.5, \"gone\": null}\n",
            "\n",
            "{\"anonymousId\": \"a-2\", \"vip\": true}\r\n",
            "{\"userId\": \"u3\"\n",
            "[1, 2]\n",
            "{\"email\": \"b@example.com\"}\n",
            "{\"user_id\": \"u6\", \"userId\": \"u6\"}\n",
            "{\"userId\": \"u7\", \"email\": \"nope\"}",
        );
        let rows = read_all(text.as_bytes(), Format::JsonLines, Mapping::default(), None).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.row).collect::<Vec<_>>(),
            vec![1, 3, 4, 5, 6, 7, 8]
        );
        let first = event(&rows[0]);
        assert_eq!(first["userId"], "42");
        assert_eq!(
            first["traits"],
            json!({"email": "a@example.com", "plan": {"tier": "pro"}, "score": 9.5})
        );
        assert_eq!(event(&rows[1])["traits"], json!({"vip": true}));
        let reasons: Vec<Reason> = rows[2..].iter().map(|r| rejection(r).reason).collect();
        assert_eq!(
            reasons,
            vec![
                Reason::InvalidJson,
                Reason::InvalidJson,
                Reason::MissingIdentity,
                Reason::ConflictingColumns,
                Reason::MalformedEmail
            ]
        );
        assert_eq!(rejection(&rows[2]).raw, "{\"userId\": \"u3\"");
        assert!(rejection(&rows[2]).message.starts_with("not JSON: "));
    }

    #[test]
    fn a_json_line_over_the_limit_is_rejected_and_the_next_line_read() {
        let long = format!(
            "{{\"userId\": \"u1\", \"x\": \"{}\"}}",
            "y".repeat(ROW_BYTES_MAX)
        );
        let text = format!("{long}\n{{\"userId\": \"u2\"}}\n");
        let rows = read_all(text.as_bytes(), Format::JsonLines, Mapping::default(), None).unwrap();
        assert_eq!(rows.len(), 2);
        let rejected = rejection(&rows[0]);
        assert_eq!(rejected.reason, Reason::RowTooLarge);
        assert!(rejected.raw.len() < REPORT_RAW_BYTES_MAX + 64);
        assert!(rejected.raw.ends_with("more bytes]"), "the cut is marked");
        assert_eq!(event(&rows[1])["userId"], "u2");
        assert_eq!(rows[1].row, 2);
    }

    #[test]
    fn event_sized_rows_are_rejected_as_too_large() {
        let text = format!("user_id,notes\nu1,{}\nu2,ok\n", "n".repeat(40_000));
        let rows = csv(&text);
        assert_eq!(rejection(&rows[0]).reason, Reason::EventTooLarge);
        assert!(rows[1].outcome.is_ok());
    }
}
