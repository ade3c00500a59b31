//! The transport: writing objects (durably) to a local directory or an S3-compatible store,
//! classifying failures into [`Outcome`]s, and rewriting objects for a data-subject deletion.

use super::config::{self, FileFormat, FilesSettings, S3Settings};
use super::request::{plan_objects, without_subject, Rewrite};
use crate::destination::{
    BatchLimits, BatchOutcome, BuildContext, DeleteOutcome, Destination, OutboundEvent, Outcome,
};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Directories remembered as created and fsynced (so each is fsynced once, not per object).
/// Past this many the memory is cleared and directories are fsynced again once each: a few
/// extra fsyncs instead of unbounded memory (there are event types × days directories).
const DURABLE_DIRECTORIES_REMEMBERED_MAX: usize = 10_000;

pub struct Files {
    settings: FilesSettings,
    /// The prefix with its placeholders replaced.
    prefix: String,
    backend: Backend,
    /// Writes take it shared, a deletion exclusively: a rewrite never races a write of the same
    /// object in this process.
    rewrite_lock: tokio::sync::RwLock<()>,
}

enum Backend {
    Local(LocalBackend),
    S3(Arc<dyn ObjectStore>),
}

/// A local directory. Reads, listings and deletions go through `object_store`'s
/// `LocalFileSystem`; writes do not, because its `put` (0.13) writes a staging file and renames
/// it without any fsync: a power loss could then leave a torn object under its final name.
/// [`write_durably`] writes the staging file, fsyncs it, renames it, fsyncs the directory.
struct LocalBackend {
    root: PathBuf,
    /// Built on first use (it needs the directory to exist; `build` must not touch the disk).
    store: OnceLock<Arc<dyn ObjectStore>>,
    durable_directories: Arc<Mutex<HashSet<PathBuf>>>,
}

pub fn build(
    settings: &serde_json::Value,
    context: &BuildContext,
) -> Result<Arc<dyn Destination>, String> {
    let settings = config::parse(settings)
        .map_err(|problems| crate::destination::describe_problems(&problems))?;
    let prefix = settings
        .prefix
        .replace("{workspace}", &context.workspace_id)
        .replace("{destination}", &context.destination_id);
    let backend = match (&settings.path, &settings.s3) {
        (Some(path), _) => Backend::Local(LocalBackend {
            root: context.data_dir.join(path),
            store: OnceLock::new(),
            durable_directories: Arc::default(),
        }),
        (None, Some(s3)) => Backend::S3(s3_store(s3)?),
        (None, None) => return Err("one of `path` or `s3` is required".into()),
    };
    Ok(Arc::new(Files {
        settings,
        prefix,
        backend,
        rewrite_lock: tokio::sync::RwLock::new(()),
    }))
}

fn s3_store(s3: &S3Settings) -> Result<Arc<dyn ObjectStore>, String> {
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_allow_http(s3.allow_http)
        .with_virtual_hosted_style_request(s3.virtual_hosted_style);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let (Some(key), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
        builder = builder
            .with_access_key_id(key)
            .with_secret_access_key(secret);
    }
    if let Some(token) = &s3.session_token {
        builder = builder.with_token(token);
    }
    let store = builder
        .build()
        .map_err(|error| format!("cannot set up the S3 client: {error}"))?;
    Ok(Arc::new(store))
}

impl Destination for Files {
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            events_max: config::FILES_BATCH_EVENTS_MAX,
            bytes_max: config::FILES_BATCH_BYTES_MAX,
            age_ms: config::FILES_BATCH_AGE_MS_DEFAULT,
            events_cap: config::FILES_BATCH_EVENTS_MAX,
        }
    }

    /// Objects are partitioned by type and day, so order between batches means nothing here:
    /// lanes may take any events.
    fn ordered(&self) -> bool {
        false
    }

    fn send<'a>(&'a self, batch: &'a [OutboundEvent]) -> BoxFuture<'a, BatchOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn delete_user<'a>(
        &'a self,
        identifiers: &'a [(String, String)],
    ) -> BoxFuture<'a, DeleteOutcome> {
        Box::pin(self.delete_subject(identifiers))
    }
}

impl Files {
    async fn send_batch(&self, batch: &[OutboundEvent]) -> BatchOutcome {
        let objects = match plan_objects(batch, &self.prefix, self.settings.format) {
            Ok(objects) => objects,
            Err(error) => return BatchOutcome::All(Outcome::reject(error)),
        };
        let _shared = self.rewrite_lock.read().await;
        let mut outcomes = vec![Outcome::Delivered; batch.len()];
        let mut first_failure = None;
        for object in objects {
            let outcome = self.put(&object.path, object.body).await;
            if !outcome.is_delivered() {
                first_failure.get_or_insert_with(|| outcome.clone());
                for index in object.events {
                    outcomes[index] = outcome.clone();
                }
            }
        }
        match first_failure {
            None => BatchOutcome::All(Outcome::Delivered),
            Some(failure) if outcomes.iter().all(|outcome| *outcome == failure) => {
                BatchOutcome::All(failure)
            }
            Some(_) => BatchOutcome::PerEvent(outcomes),
        }
    }

    /// Writes one object; [`Outcome::Delivered`] only once it is complete and durable.
    async fn put(&self, path: &str, body: Vec<u8>) -> Outcome {
        match &self.backend {
            Backend::Local(local) => {
                let target = local.root.join(path);
                let (root, directories) = (local.root.clone(), local.durable_directories.clone());
                let written = tokio::task::spawn_blocking(move || {
                    write_durably(&root, &target, &body, &directories)
                })
                .await;
                match written {
                    Ok(Ok(())) => Outcome::Delivered,
                    Ok(Err(error)) => classify_io(&error, path),
                    Err(error) => Outcome::retry(format!("writing {path} stopped: {error}")),
                }
            }
            Backend::S3(store) => {
                let location = ObjectPath::from(path);
                match store.put(&location, PutPayload::from(body)).await {
                    Ok(_) => Outcome::Delivered,
                    Err(error) => classify_store(&error, path),
                }
            }
        }
    }

    fn store(&self) -> Result<Arc<dyn ObjectStore>, std::io::Error> {
        match &self.backend {
            Backend::S3(store) => Ok(store.clone()),
            Backend::Local(local) => {
                if let Some(store) = local.store.get() {
                    return Ok(store.clone());
                }
                std::fs::create_dir_all(&local.root)?;
                let store: Arc<dyn ObjectStore> = Arc::new(
                    LocalFileSystem::new_with_prefix(&local.root)
                        .map_err(|error| std::io::Error::other(error.to_string()))?,
                );
                Ok(local.store.get_or_init(|| store).clone())
            }
        }
    }

    /// Rewrites every object holding events of the subject without them (deletes objects left
    /// empty). Writes by this destination wait meanwhile, so none is lost between the read and
    /// the rewrite of an object.
    async fn delete_subject(&self, identifiers: &[(String, String)]) -> DeleteOutcome {
        let _exclusive = self.rewrite_lock.write().await;
        let failed = |error: String, retryable: bool| DeleteOutcome::Failed { error, retryable };
        // At most a directory creation, once: not worth a blocking task.
        let store = match self.store() {
            Ok(store) => store,
            Err(error) => return failed(format!("cannot open the directory: {error}"), true),
        };
        let prefix = ObjectPath::from(self.prefix.as_str());
        let listed: Result<Vec<_>, _> = store.list(Some(&prefix)).try_collect().await;
        let objects = match listed {
            Ok(objects) => objects,
            Err(error) => return failed(format!("cannot list {prefix}: {error}"), true),
        };
        for object in objects {
            let location = object.location;
            let Some(format) = FileFormat::of_object(location.as_ref()) else {
                continue;
            };
            let body = match store.get(&location).await {
                Ok(found) => found.bytes().await,
                Err(error) => Err(error),
            };
            let body = match body {
                Ok(body) => body,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(error) => return failed(format!("cannot read {location}: {error}"), true),
            };
            let rewrite = match without_subject(format, body, identifiers) {
                Ok(rewrite) => rewrite,
                Err(error) => return failed(format!("cannot rewrite {location}: {error}"), false),
            };
            let result = match rewrite {
                Rewrite::Untouched => continue,
                Rewrite::Replace { body, .. } => match self.put(location.as_ref(), body).await {
                    Outcome::Delivered => Ok(()),
                    Outcome::Retry { error, .. } => Err((error, true)),
                    Outcome::Reject { error } => Err((error, false)),
                },
                Rewrite::Delete { .. } => self.remove(&store, &location).await,
            };
            if let Err((error, retryable)) = result {
                return failed(format!("cannot rewrite {location}: {error}"), retryable);
            }
        }
        DeleteOutcome::Deleted
    }

    /// Deletes an object; locally, the directory is fsynced so the deletion survives a crash.
    async fn remove(
        &self,
        store: &Arc<dyn ObjectStore>,
        location: &ObjectPath,
    ) -> Result<(), (String, bool)> {
        match store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err((error.to_string(), true)),
        }
        if let Backend::Local(local) = &self.backend {
            let directory = local.root.join(location.as_ref());
            let directory = directory.parent().unwrap_or(&local.root).to_path_buf();
            let synced = tokio::task::spawn_blocking(move || sync_directory(&directory)).await;
            match synced {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err((error.to_string(), true)),
                Err(error) => return Err((error.to_string(), true)),
            }
        }
        Ok(())
    }
}

/// Writes `body` at `target` so that, once this returns, it survives a crash and is never seen
/// torn: a staging file `<target>#<n>` (a name `LocalFileSystem` listings skip) is written and
/// fsynced, renamed over `target` (atomic), and the directory is fsynced (the rename itself).
/// New directories are fsynced into their parents up to `root`.
pub(super) fn write_durably(
    root: &Path,
    target: &Path,
    body: &[u8],
    durable_directories: &Mutex<HashSet<PathBuf>>,
) -> std::io::Result<()> {
    static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);
    let directory = target.parent().unwrap_or(root);
    ensure_durable_directory(root, directory, durable_directories)?;
    let mut staging = target.as_os_str().to_owned();
    staging.push(format!(
        "#{}{:010}",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let staging = PathBuf::from(staging);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staging)?;
        file.write_all(body)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&staging, target)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(error);
    }
    sync_directory(directory)
}

fn ensure_durable_directory(
    root: &Path,
    directory: &Path,
    durable_directories: &Mutex<HashSet<PathBuf>>,
) -> std::io::Result<()> {
    if durable_directories.lock().contains(directory) {
        return Ok(());
    }
    std::fs::create_dir_all(directory)?;
    // Each directory's entry lives in its parent: fsync from the new directory up to the root's
    // parent (the root itself may have just been created).
    let stop = root.parent();
    let mut current = Some(directory);
    while let Some(path) = current {
        sync_directory(path)?;
        if Some(path) == stop || path.as_os_str().is_empty() {
            break;
        }
        current = path.parent();
    }
    let mut remembered = durable_directories.lock();
    if remembered.len() >= DURABLE_DIRECTORIES_REMEMBERED_MAX {
        remembered.clear();
    }
    remembered.insert(directory.to_path_buf());
    Ok(())
}

fn sync_directory(directory: &Path) -> std::io::Result<()> {
    std::fs::File::open(directory)?.sync_all()
}

/// Local I/O errors: a denied permission or a path that cannot be a directory or file will not
/// fix itself (reject → DLQ, replayable after the fix); a full disk, exhausted quota or any
/// other I/O error is transient (retry: space gets freed, the disk comes back).
pub(super) fn classify_io(error: &std::io::Error, path: &str) -> Outcome {
    let message = format!("writing {path}: {error}");
    match error.kind() {
        ErrorKind::PermissionDenied
        | ErrorKind::ReadOnlyFilesystem
        | ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::InvalidFilename
        | ErrorKind::InvalidInput => Outcome::reject(message),
        _ => Outcome::retry(message),
    }
}

/// Object-store errors: denied or unauthenticated access, a missing bucket and an invalid path
/// are permanent; everything else (network, 5xx after the client's own retries, throttling) is
/// transient.
pub(super) fn classify_store(error: &object_store::Error, path: &str) -> Outcome {
    let message = format!("writing {path}: {error}");
    match error {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotFound { .. }
        | object_store::Error::InvalidPath { .. } => Outcome::reject(message),
        _ => Outcome::retry(message),
    }
}
