//! Sharing: walk a path, hash what changed, sign a record for each file and
//! index it.
//!
//! **Invariant:** a record is signed only for bytes whose hash was computed
//! while the file's size, mtime, ctime and inode stayed the same from open to
//! end of read; a file that changes under the hasher is retried and then
//! reported as failed, so no record with a wrong id is ever published.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use veil_core::content::Outboard;
use veil_core::identity::Pseudonym;
use veil_core::record::{ContentRecord, keywords_from_name};

use crate::api::{ApiError, ErrorKind, Progress, ShareFailure, ShareReport};
use crate::store::{FileRow, Store};

/// How long a freshly signed record stays valid. Republication before expiry
/// belongs to the publication layer.
pub const RECORD_LIFETIME_SECS: u64 = 3 * 24 * 3600;
/// How often a file that changes while being hashed is retried.
const HASH_ATTEMPTS: u32 = 3;
/// Progress is reported at least every this many bytes.
const PROGRESS_STEP: u64 = 8 << 20;

/// What sharing needs: the store and the publisher pseudonym.
#[derive(Debug, Clone)]
pub struct Library {
    pub store: Arc<Mutex<Store>>,
    pub publisher: Arc<Pseudonym>,
}

/// The identity of a file's contents as far as the filesystem tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// Why one file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashFileError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the file changed while it was being hashed ({HASH_ATTEMPTS} attempts); not shared")]
    Changed,
}

/// A file hashed while it provably did not change.
#[derive(Debug)]
pub struct HashedFile {
    pub outboard: Outboard,
    pub size: u64,
    pub mtime_ns: i64,
}

/// Hash `path` in one streaming pass, calling `on_bytes` with the bytes read
/// so far. Detects changes during the read and retries.
pub fn hash_file(path: &Path, on_bytes: &mut dyn FnMut(u64)) -> Result<HashedFile, HashFileError> {
    for _ in 0..HASH_ATTEMPTS {
        let file = File::open(path)?;
        let before = Stamp::of(&file.metadata()?);
        let reader = Counting {
            inner: BufReader::with_capacity(1 << 20, &file),
            done: 0,
            last_report: 0,
            on_bytes: &mut *on_bytes,
        };
        let outboard = match Outboard::compute(reader, before.size) {
            Ok(ob) => ob,
            // A size mismatch mid-read is a change, not a hard failure.
            Err(e)
                if e.kind() == io::ErrorKind::UnexpectedEof
                    || e.kind() == io::ErrorKind::InvalidData =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let after_fd = Stamp::of(&file.metadata()?);
        let after_path = Stamp::of(&fs::metadata(path)?);
        if before == after_fd && before == after_path {
            return Ok(HashedFile {
                outboard,
                size: before.size,
                mtime_ns: before.mtime_ns,
            });
        }
    }
    Err(HashFileError::Changed)
}

struct Counting<'a, R> {
    inner: R,
    done: u64,
    last_report: u64,
    on_bytes: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.last_report >= PROGRESS_STEP {
            self.last_report = self.done;
            (self.on_bytes)(self.done);
        }
        Ok(n)
    }
}

/// Share `root` (a file or a directory tree). Unchanged files (same size and
/// mtime as recorded) are skipped. Returns once every file is indexed and
/// its record signed.
pub fn share(
    lib: &Library,
    root: &Path,
    now: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<ShareReport, ApiError> {
    let meta = fs::metadata(root)
        .map_err(|e| ApiError::new(ErrorKind::BadPath, format!("{}: {e}", root.display())))?;
    let mut report = ShareReport::default();
    let mut candidates = Vec::new();
    if meta.is_file() {
        candidates.push((root.to_path_buf(), meta));
    } else if meta.is_dir() {
        for entry in walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
        {
            match entry {
                Ok(e) if e.file_type().is_file() => match e.metadata() {
                    Ok(m) => candidates.push((e.into_path(), m)),
                    Err(err) => report.failed.push(ShareFailure {
                        path: e.path().display().to_string(),
                        error: err.to_string(),
                    }),
                },
                Ok(_) => {}
                Err(err) => report.failed.push(ShareFailure {
                    path: err
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    error: err.to_string(),
                }),
            }
        }
    } else {
        return Err(ApiError::new(
            ErrorKind::BadPath,
            format!("{}: not a regular file or directory", root.display()),
        ));
    }

    let mut todo = Vec::new();
    for (path, meta) in candidates {
        let Some(path_str) = path.to_str().map(str::to_owned) else {
            report.failed.push(ShareFailure {
                path: path.display().to_string(),
                error: "path is not valid UTF-8".into(),
            });
            continue;
        };
        let stamp = Stamp::of(&meta);
        let known = lock(&lib.store)?.file_stamp(&path_str).map_err(internal)?;
        if known == Some((stamp.size, stamp.mtime_ns)) {
            report.unchanged += 1;
        } else {
            todo.push((path, path_str, stamp.size));
        }
    }
    let total: u64 = todo.iter().map(|t| t.2).sum();
    progress(Progress::Scanned {
        files: todo.len() as u64,
        bytes: total,
    });

    let mut base = 0u64;
    for (path, path_str, size) in todo {
        let hashed = {
            let mut on_bytes = |n: u64| {
                progress(Progress::Hashing {
                    path: path_str.clone(),
                    done: base + n.min(size),
                    total,
                })
            };
            hash_file(&path, &mut on_bytes)
        };
        base += size;
        progress(Progress::Hashing {
            path: path_str.clone(),
            done: base,
            total,
        });
        let hashed = match hashed {
            Ok(h) => h,
            Err(e) => {
                report.failed.push(ShareFailure {
                    path: path_str,
                    error: e.to_string(),
                });
                continue;
            }
        };
        match index_file(lib, &path, path_str.clone(), hashed, now) {
            Ok((row, replaced)) => {
                if replaced {
                    report.updated.push(row.entry());
                } else {
                    report.added.push(row.entry());
                }
            }
            Err(e) => report.failed.push(ShareFailure {
                path: path_str,
                error: format!("{e:#}"),
            }),
        }
    }
    Ok(report)
}

fn index_file(
    lib: &Library,
    path: &Path,
    path_str: String,
    hashed: HashedFile,
    now: u64,
) -> anyhow::Result<(FileRow, bool)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("file name is not valid UTF-8"))?
        .to_owned();
    let record = ContentRecord {
        content_id: hashed.outboard.root(),
        size: hashed.size,
        keywords: keywords_from_name(&name),
        media_type: media_type(&name).map(str::to_owned),
        name,
        created: now,
        expires: now + RECORD_LIFETIME_SECS,
    };
    let signed = record
        .sign(&lib.publisher)
        .map_err(|e| anyhow::anyhow!("cannot sign a record: {e}"))?;
    let row = FileRow {
        path: path_str,
        content_id: *hashed.outboard.root().as_bytes(),
        size: hashed.size,
        mtime_ns: hashed.mtime_ns,
        name: record.name.clone(),
        keywords: record.keywords.clone(),
        outboard: hashed.outboard.as_bytes().to_vec(),
        record: signed.to_bytes(),
        expires: record.expires,
        shared_at: now,
    };
    let replaced = lock(&lib.store)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .upsert_file(&row)?;
    Ok((row, replaced))
}

/// Stop sharing `path` (a file, or every file under a directory).
pub fn unshare(lib: &Library, path: &str) -> Result<u64, ApiError> {
    lock(&lib.store)?.remove_path(path).map_err(internal)
}

/// Lock the store; a poisoned lock means a panic elsewhere, reported as an
/// internal error rather than propagated.
pub fn lock(store: &Mutex<Store>) -> Result<std::sync::MutexGuard<'_, Store>, ApiError> {
    store
        .lock()
        .map_err(|_| ApiError::new(ErrorKind::Internal, "store lock poisoned"))
}

/// Map an internal failure to an API error.
pub fn internal(e: anyhow::Error) -> ApiError {
    ApiError::new(ErrorKind::Internal, format!("{e:#}"))
}

/// A media type from a file name's extension, for the few common kinds.
pub fn media_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "md" => "text/plain",
        "html" | "htm" => "text/html",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "epub" => "application/epub+zip",
        "iso" => "application/x-iso9660-image",
        _ => return None,
    })
}
