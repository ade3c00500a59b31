//! The acknowledged-ids file: every messageId the server answered 200 for, one per line. The
//! crash test compares it with what the server still has after a restart, so a line is written
//! only after the 200 arrived. Workers pass request numbers (not strings) to a writer thread,
//! which expands them into ids; file I/O never runs on the async workers.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::body_pool::BodyPool;
use crate::error::LoadError;

/// Acknowledged requests waiting for the writer. The writer formats ids far faster than any
/// server acknowledges them, so this only fills if the disk stalls; then workers wait.
const ACKED_QUEUE_REQUESTS: usize = 4096;
/// Write buffer: a few hundred batches' ids per write() call.
const ACKED_BUFFER_BYTES: usize = 1 << 20;

pub struct AckedRecorder {
    sender: mpsc::Sender<u64>,
    writer: JoinHandle<io::Result<()>>,
    path: PathBuf,
}

impl AckedRecorder {
    /// Opens `path` for appending and starts the writer thread.
    pub fn start(path: &Path, pool: Arc<BodyPool>) -> Result<AckedRecorder, LoadError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LoadError::AckedIds {
                path: path.to_owned(),
                source,
            })?;
        let (sender, receiver) = mpsc::channel(ACKED_QUEUE_REQUESTS);
        let writer = std::thread::Builder::new()
            .name("tandem-load-acked".into())
            .spawn(move || write_ids(file, receiver, &pool))
            .map_err(|source| LoadError::AckedIds {
                path: path.to_owned(),
                source,
            })?;
        Ok(AckedRecorder {
            sender,
            writer,
            path: path.to_owned(),
        })
    }

    /// A handle for one worker.
    pub fn sender(&self) -> mpsc::Sender<u64> {
        self.sender.clone()
    }

    /// Waits until every worker's handle is dropped and all ids are flushed to the file.
    pub async fn finish(self) -> Result<(), LoadError> {
        drop(self.sender);
        let writer = self.writer;
        let written = tokio::task::spawn_blocking(move || writer.join())
            .await
            .expect("join task does not panic");
        let written = written.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        written.map_err(|source| LoadError::AckedIds {
            path: self.path,
            source,
        })
    }
}

fn write_ids(file: File, mut receiver: mpsc::Receiver<u64>, pool: &BodyPool) -> io::Result<()> {
    let mut output = BufWriter::with_capacity(ACKED_BUFFER_BYTES, file);
    let mut lines = Vec::new();
    while let Some(request) = receiver.blocking_recv() {
        lines.clear();
        pool.write_message_ids(request, &mut lines);
        output.write_all(&lines)?;
    }
    output.flush()
}
