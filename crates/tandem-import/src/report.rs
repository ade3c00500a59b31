//! The rejection report: one line per rejected row (its number, line, reason, message and the raw
//! row), as CSV (`row,line,reason,message,raw`, opens in a spreadsheet) or JSON lines. A resumed
//! import cuts the report back to the length its checkpoint recorded, so no row is reported twice.

use crate::reject::RejectedRow;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const CSV_HEADER: &[u8] = b"row,line,reason,message,raw\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Csv,
    JsonLines,
}

impl ReportFormat {
    /// CSV for a `.csv` or `.tsv` path, JSON lines otherwise.
    pub fn for_path(path: &Path) -> ReportFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") || ext.eq_ignore_ascii_case("tsv") => {
                ReportFormat::Csv
            }
            _ => ReportFormat::JsonLines,
        }
    }
}

/// An open report file.
pub struct Report {
    path: PathBuf,
    format: ReportFormat,
    file: BufWriter<File>,
    /// Bytes written (buffered or not).
    length: u64,
    /// Bytes known to be on disk (fsync'd).
    synced: u64,
}

impl Report {
    /// Creates (or empties) the report at `path`.
    pub fn create(path: &Path) -> io::Result<Report> {
        let format = ReportFormat::for_path(path);
        let file = File::create(path)?;
        crate::checkpoint::sync_parent_dir(path)?;
        let mut report = Report {
            path: path.to_path_buf(),
            format,
            file: BufWriter::new(file),
            length: 0,
            synced: 0,
        };
        if format == ReportFormat::Csv {
            report.file.write_all(CSV_HEADER)?;
            report.length = CSV_HEADER.len() as u64;
        }
        Ok(report)
    }

    /// Opens an existing report to continue it after `length` bytes (what a checkpoint recorded);
    /// anything after that was written for rows that will be read again, and is cut.
    pub fn resume(path: &Path, length: u64) -> io::Result<Report> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let actual = file.metadata()?.len();
        if actual < length {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the report {} has {actual} bytes but the checkpoint recorded {length}: it was changed since",
                    path.display()
                ),
            ));
        }
        file.set_len(length)?;
        file.seek(SeekFrom::Start(length))?;
        Ok(Report {
            path: path.to_path_buf(),
            format: ReportFormat::for_path(path),
            file: BufWriter::new(file),
            length,
            synced: length,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, rejected: &RejectedRow) -> io::Result<()> {
        let mut line = Vec::with_capacity(rejected.raw.len() + rejected.message.len() + 64);
        match self.format {
            ReportFormat::JsonLines => {
                serde_json::to_writer(&mut line, rejected).map_err(io::Error::other)?;
                line.push(b'\n');
            }
            ReportFormat::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(&mut line);
                writer
                    .write_record([
                        rejected.row.to_string().as_str(),
                        rejected.line.to_string().as_str(),
                        rejected.reason.as_str(),
                        rejected.message.as_str(),
                        rejected.raw.as_str(),
                    ])
                    .map_err(io::Error::other)?;
                writer.flush()?;
            }
        }
        self.file.write_all(&line)?;
        self.length += line.len() as u64;
        Ok(())
    }

    /// Makes everything written durable; returns the durable length (for the checkpoint).
    pub fn sync(&mut self) -> io::Result<u64> {
        if self.synced != self.length {
            self.file.flush()?;
            self.file.get_ref().sync_data()?;
            self.synced = self.length;
        }
        Ok(self.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::Reason;

    fn rejected(row: u64, raw: &str) -> RejectedRow {
        RejectedRow {
            row,
            line: row + 1,
            reason: Reason::MalformedEmail,
            message: "column \"email\": \"x\" is not an email address".into(),
            raw: raw.into(),
        }
    }

    #[test]
    fn csv_reports_quote_what_needs_quoting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut report = Report::create(&path).unwrap();
        report.write(&rejected(3, "u1,\"x\"\nsecond line")).unwrap();
        let length = report.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(length, text.len() as u64);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader.headers().unwrap(),
            vec!["row", "line", "reason", "message", "raw"]
        );
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(
            record,
            vec![
                "3",
                "4",
                "malformed_email",
                "column \"email\": \"x\" is not an email address",
                "u1,\"x\"\nsecond line"
            ]
        );
    }

    #[test]
    fn resuming_cuts_what_the_checkpoint_did_not_cover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut report = Report::create(&path).unwrap();
        report.write(&rejected(1, "a")).unwrap();
        let checkpointed = report.sync().unwrap();
        report.write(&rejected(2, "b")).unwrap();
        report.sync().unwrap();
        drop(report);
        let mut report = Report::resume(&path, checkpointed).unwrap();
        report.write(&rejected(2, "b")).unwrap();
        report.sync().unwrap();
        let rows: Vec<u64> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["row"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(rows, vec![1, 2], "row 2 once");
        assert!(
            Report::resume(&path, 1_000_000).is_err(),
            "a shorter file than recorded"
        );
    }
}
