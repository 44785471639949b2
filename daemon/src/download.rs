//! A download on disk: the partial file in the data dir and its row in the
//! store, from registration to the verified file at its destination. The
//! network side fetches and verifies pieces; this module decides what is
//! written, what is recorded, and what reaches the destination.
//!
//! What it guarantees:
//!
//! - **Only verified bytes are written.** [`PartialDownload::write`] takes
//!   nothing but a [`VerifiedPiece`], which only
//!   [`veil_core::content::verify_range`] can make, and only one of this
//!   download's content covering exactly one whole piece ([`piece_range`]);
//!   anything else is refused before a byte is written.
//! - **The recorded bitfield never claims bytes that are not durable.** A
//!   piece is written at its offset in `<data dir>/downloads/<id>.part` and
//!   `sync_data`'d, and only then is its bit added in SQLite (WAL,
//!   `synchronous=FULL`); pieces that arrive together share one sync and
//!   one transaction ([`PartialDownload::write_batch`]). A crash or an IO error (a full disk: the partial
//!   file is sparse, so that is where one shows) at any point leaves the
//!   recorded pieces a subset of the durable ones. A held piece is never
//!   written again, so a failed write can only touch bytes of a piece that
//!   was not held. Bits are only added, in one transaction that reads and
//!   writes the stored bitfield ([`Store::mark_piece`]); they are cleared
//!   only when the whole download starts again.
//! - **A restart refetches nothing that was recorded.**
//!   [`PartialDownload::open`] reloads the row and checks the stored
//!   bitfield against the size ([`Bitfield::from_bytes`]) and the partial
//!   file's length against the size. If they do not fit (the partial file
//!   was deleted or truncated, the row is damaged), the download starts
//!   again from empty and says why ([`PartialDownload::reset_reason`]):
//!   none of its pieces can be trusted and refetching is the only remedy,
//!   so an error would only make the user cancel and ask again. Bytes that
//!   changed inside a partial file of the right length are not noticed
//!   there (that would cost a full hash at every start) but by `finish`.
//! - **Nothing but the content reaches the destination, and never part of
//!   it.** [`PartialDownload::finish`] re-hashes the whole partial file
//!   against the content id (defence in depth: it catches disk corruption
//!   and our own bugs), then renames it into place, atomically. Across
//!   filesystems (`EXDEV`) it copies into a hidden temp file beside the
//!   destination, hashing the very bytes it copies, fsyncs it and renames
//!   that. So the destination holds nothing or the whole verified file; a
//!   temp file left by a crash has its own name. A partial file that fails
//!   the re-hash is never moved: the download is marked failed and its
//!   pieces forgotten.
//! - **Nothing is overwritten.** A destination that exists is refused when
//!   the download is registered, and the final rename does not replace a
//!   file that appeared since (`renameat2(RENAME_NOREPLACE)`; where the
//!   system or filesystem lacks it, an existence check just before the
//!   rename).
//! - **A name from a record cannot escape.** Names are checked by the rule
//!   of `ContentRecord::validate` (no separator, no control character, not
//!   `.` or `..`). The destination is the caller's absolute path.
//! - **A finish cut short is completed, not redone.** If the daemon dies
//!   after the rename but before the row says done, `open` finds every
//!   piece recorded and a file at the destination, re-hashes that file and,
//!   if it is the content, marks the download done.
//!
//! The caller keeps one [`PartialDownload`] per download. The store is
//! shared and locked only for SQL, never across file IO or hashing.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use veil_core::content::{ContentId, MAX_CONTENT_SIZE, Outboard, VerifiedPiece};
use veil_core::record::MAX_NAME_BYTES;
use veil_core::transfer::{Bitfield, BitfieldError, PIECE_BYTES, piece_count, piece_range};

use crate::datadir::DataDir;
use crate::library::{HashFileError, hash_file};
use crate::store::{DownloadRow, Store};

/// Where a download stands, stored as its [`as_str`](Self::as_str) text
/// (and serialised as that text in the control API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    /// Pieces are wanted.
    Active,
    /// No pieces are wanted for now; pieces that still arrive are kept.
    Paused,
    /// The verified file is at its destination.
    Done,
    /// The finished file did not hash to the content id; its pieces were
    /// forgotten, and [`PartialDownload::resume`] starts it again.
    Failed,
}

impl DownloadState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            DownloadState::Active => "active",
            DownloadState::Paused => "paused",
            DownloadState::Done => "done",
            DownloadState::Failed => "failed",
        }
    }

    /// Pieces may be written and the download finished.
    fn takes_pieces(self) -> bool {
        matches!(self, DownloadState::Active | DownloadState::Paused)
    }
}

impl fmt::Display for DownloadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DownloadState {
    type Err = DownloadError;

    fn from_str(s: &str) -> Result<Self, DownloadError> {
        Ok(match s {
            "active" => DownloadState::Active,
            "paused" => DownloadState::Paused,
            "done" => DownloadState::Done,
            "failed" => DownloadState::Failed,
            other => {
                return Err(DownloadError::Store(anyhow::anyhow!(
                    "unknown download state {other:?}"
                )));
            }
        })
    }
}

/// Why [`PartialDownload::open`] started a download again from empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetReason {
    /// The partial file was gone.
    #[error("the partial file was missing")]
    PartMissing,
    /// The partial file had another length than the content.
    #[error("the partial file was {got} bytes long, not {want}")]
    PartLength { got: u64, want: u64 },
    /// The stored bitfield does not fit the content's size.
    #[error("the stored bitfield was damaged: {0}")]
    Bitfield(BitfieldError),
}

/// Why a download operation failed.
///
/// None of these is a peer's fault: pieces arrive already verified. The
/// first group are refused requests (a bad record or API misuse) and change
/// nothing; `Corrupt` and `Io` are local faults and leave the recorded
/// state consistent (nothing recorded that is not on disk, nothing recorded
/// lost), as the variant says.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The name (from a signed record) is not a plain file name.
    #[error("invalid file name: {reason}")]
    BadName { reason: &'static str },
    /// The size is over [`MAX_CONTENT_SIZE`].
    #[error("content of {size} bytes is larger than the limit of {MAX_CONTENT_SIZE} bytes")]
    TooLarge { size: u64 },
    /// The destination is not an absolute UTF-8 path naming a file.
    #[error("the destination must be an absolute UTF-8 path to a file: {}", .0.display())]
    BadDest(PathBuf),
    /// Something is already at the destination; it is left alone.
    #[error("{} already exists; choose another destination", .0.display())]
    DestExists(PathBuf),
    /// Another unfinished download will write the same destination.
    #[error("{} is already the destination of the download of {other}", dest.display())]
    DestTaken { dest: PathBuf, other: ContentId },
    /// This content is already being (or was) downloaded.
    #[error("a download of {id} is already registered ({state})")]
    AlreadyRegistered { id: ContentId, state: String },
    /// No download of this content is registered.
    #[error("no download of {0} is registered")]
    NotFound(ContentId),
    /// The operation does not apply in the download's state.
    #[error("the download of {id} is {state}: cannot {op}")]
    WrongState {
        id: ContentId,
        state: DownloadState,
        op: &'static str,
    },
    /// The download is done; its file is at `dest`.
    #[error("the download of {id} is done: {}", dest.display())]
    Finished { id: ContentId, dest: PathBuf },
    /// A verified piece of other content (API misuse).
    #[error("a piece of {got} was offered to the download of {want}")]
    WrongContent { got: ContentId, want: ContentId },
    /// A verified range that is not exactly one piece (API misuse).
    #[error("bytes {start}..{end} are not one whole piece of content of {size} bytes")]
    NotAPiece { start: u64, end: u64, size: u64 },
    /// `finish` before every piece is held; nothing changed.
    #[error("{held} of {pieces} pieces held: finishing needs them all")]
    Incomplete { held: u64, pieces: u64 },
    /// The complete partial file does not hash to the content id (changed
    /// on disk after it was written). Nothing reached the destination; the
    /// download is marked failed and its pieces forgotten.
    #[error(
        "the downloaded file does not hash to {id} (it changed on disk): nothing was moved, \
         the download is marked failed and will start again when resumed"
    )]
    Corrupt { id: ContentId },
    /// A file operation failed. Nothing was recorded for it.
    #[error("cannot {what} {}: {error}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// The store failed (or holds something this code did not write).
    #[error("store: {0:#}")]
    Store(anyhow::Error),
}

/// One download, as `veil downloads` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadInfo {
    pub id: ContentId,
    pub name: String,
    pub size: u64,
    pub dest: PathBuf,
    pub state: DownloadState,
    /// Pieces in the content.
    pub pieces: u64,
    /// Pieces held (0 if the stored bitfield is damaged: `open` will start
    /// again).
    pub held: u64,
    /// Bytes in the pieces held.
    pub held_bytes: u64,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub updated: u64,
}

/// Every registered download, oldest first, with its progress.
pub fn list(store: &Mutex<Store>) -> Result<Vec<DownloadInfo>, DownloadError> {
    let rows = lock(store)?.downloads().map_err(DownloadError::Store)?;
    rows.into_iter()
        .map(|row| {
            let bits = Bitfield::from_bytes(row.size, &row.pieces)
                .unwrap_or_else(|_| Bitfield::new(row.size));
            Ok(DownloadInfo {
                id: row.content_id,
                state: row.state.parse()?,
                pieces: piece_count(row.size),
                held: bits.held(),
                held_bytes: held_bytes(&bits, row.size),
                name: row.name,
                size: row.size,
                dest: PathBuf::from(row.dest_path),
                created: row.created,
                updated: row.updated,
            })
        })
        .collect()
}

/// Forget the download of `id`: remove its partial file, then its row.
/// Never touches the destination (a done download's file stays there).
/// Works whatever state the download and its partial file are in.
pub fn remove(store: &Mutex<Store>, datadir: &DataDir, id: ContentId) -> Result<(), DownloadError> {
    forget(store, &part_path(datadir, &id), id)
}

/// Remove the partial file, then the row.
fn forget(store: &Mutex<Store>, part: &Path, id: ContentId) -> Result<(), DownloadError> {
    // The file first: a crash in between leaves a row whose file is
    // missing (`open` starts it again, `remove` finishes the job), never a
    // file that nothing refers to.
    match fs::remove_file(part) {
        Ok(()) => {
            if let Some(dir) = part.parent() {
                sync_dir(dir).map_err(io_err("sync", dir))?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", part)(e)),
    }
    if lock(store)?
        .remove_download(&id)
        .map_err(DownloadError::Store)?
    {
        Ok(())
    } else {
        Err(DownloadError::NotFound(id))
    }
}

/// A download in progress: its partial file, open, and its recorded
/// bitfield. See the module docs for what it guarantees.
#[derive(Debug)]
pub struct PartialDownload {
    store: Arc<Mutex<Store>>,
    id: ContentId,
    size: u64,
    name: String,
    dest: PathBuf,
    part: PathBuf,
    file: File,
    bits: Bitfield,
    state: DownloadState,
    reset: Option<ResetReason>,
}

impl PartialDownload {
    /// Register a download of `size` bytes of content `id`, named `name`
    /// (from its record), to be finished at `dest`, and create its partial
    /// file (sparse, `size` bytes). The state is active and no piece is held.
    ///
    /// Refused, with nothing created: a bad name or destination, a size
    /// over [`MAX_CONTENT_SIZE`], a destination that exists or that another
    /// unfinished download will write, a second download of `id`.
    pub fn create(
        store: &Arc<Mutex<Store>>,
        datadir: &DataDir,
        id: ContentId,
        size: u64,
        name: &str,
        dest: &Path,
    ) -> Result<PartialDownload, DownloadError> {
        check_name(name)?;
        if size > MAX_CONTENT_SIZE {
            return Err(DownloadError::TooLarge { size });
        }
        let dest_text = check_dest(dest)?;
        if exists(dest)? {
            return Err(DownloadError::DestExists(dest.to_owned()));
        }
        let bits = Bitfield::new(size);
        {
            let mut s = lock(store)?;
            if let Some(row) = s.download(&id).map_err(DownloadError::Store)? {
                return Err(DownloadError::AlreadyRegistered {
                    id,
                    state: row.state,
                });
            }
            let done = DownloadState::Done.as_str();
            let all = s.downloads().map_err(DownloadError::Store)?;
            if let Some(other) = all
                .iter()
                .find(|d| d.dest_path == dest_text && d.state != done)
            {
                return Err(DownloadError::DestTaken {
                    dest: dest.to_owned(),
                    other: other.content_id,
                });
            }
            let now = now_secs();
            let row = DownloadRow {
                content_id: id,
                size,
                name: name.to_owned(),
                dest_path: dest_text,
                pieces: bits.as_bytes().to_vec(),
                state: DownloadState::Active.as_str().to_owned(),
                created: now,
                updated: now,
            };
            if !s.insert_download(&row).map_err(DownloadError::Store)? {
                return Err(DownloadError::AlreadyRegistered {
                    id,
                    state: "registered".into(),
                });
            }
        }
        // The row claims no piece, so it is safe before the file exists; a
        // crash in between leaves a row whose file `open` recreates.
        let part = part_path(datadir, &id);
        let file = match new_part(datadir, &part, size) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&part);
                if let Ok(mut s) = lock(store) {
                    let _ = s.remove_download(&id);
                }
                return Err(e);
            }
        };
        Ok(PartialDownload {
            store: Arc::clone(store),
            id,
            size,
            name: name.to_owned(),
            dest: dest.to_owned(),
            part,
            file,
            bits,
            state: DownloadState::Active,
            reset: None,
        })
    }

    /// Reload a registered download (after a restart), in the state it was
    /// left in, with every recorded piece held. If the partial file or the
    /// stored bitfield does not fit the size, the download starts again
    /// from empty ([`reset_reason`](Self::reset_reason) says why). A done
    /// download is [`DownloadError::Finished`], and so is one whose finish
    /// was cut short after its file reached the destination.
    pub fn open(
        store: &Arc<Mutex<Store>>,
        datadir: &DataDir,
        id: ContentId,
    ) -> Result<PartialDownload, DownloadError> {
        let row = lock(store)?
            .download(&id)
            .map_err(DownloadError::Store)?
            .ok_or(DownloadError::NotFound(id))?;
        let state: DownloadState = row.state.parse()?;
        let dest = PathBuf::from(&row.dest_path);
        if state == DownloadState::Done {
            return Err(DownloadError::Finished { id, dest });
        }
        let part = part_path(datadir, &id);
        let part_len = match fs::metadata(&part) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("inspect", &part)(e)),
        };
        let bits = Bitfield::from_bytes(row.size, &row.pieces);
        if let Ok(b) = &bits
            && b.is_complete()
            && state.takes_pieces()
            && fs::symlink_metadata(&dest).is_ok()
            && is_content(&dest, id, row.size)
        {
            // Finished but for the record: the rename (or the copy) was
            // done and the crash came before the row said so.
            let _ = fs::remove_file(&part);
            let now = now_secs();
            lock(store)?
                .set_download_state(&id, DownloadState::Done.as_str(), None, now)
                .map_err(DownloadError::Store)?;
            tracing::info!("a finish cut short was completed");
            tracing::debug!(?id, "finish completed");
            return Err(DownloadError::Finished { id, dest });
        }
        let reset = match (bits, part_len) {
            (Err(e), _) => Err(ResetReason::Bitfield(e)),
            (Ok(_), None) => Err(ResetReason::PartMissing),
            (Ok(_), Some(got)) if got != row.size => Err(ResetReason::PartLength {
                got,
                want: row.size,
            }),
            (Ok(bits), Some(_)) => Ok(bits),
        };
        let (bits, file, reset) = match reset {
            Ok(bits) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&part)
                    .map_err(io_err("open", &part))?;
                (bits, file, None)
            }
            Err(reason) => {
                tracing::warn!(%reason, "a download starts again from empty");
                tracing::debug!(?id, "download restarted from empty");
                let bits = Bitfield::new(row.size);
                // Forget the pieces before touching the file, so that no
                // moment claims bytes that are not there.
                lock(store)?
                    .set_download_state(&id, state.as_str(), Some(bits.as_bytes()), now_secs())
                    .map_err(DownloadError::Store)?;
                let file = new_part(datadir, &part, row.size)?;
                (bits, file, Some(reason))
            }
        };
        Ok(PartialDownload {
            store: Arc::clone(store),
            id,
            size: row.size,
            name: row.name,
            dest,
            part,
            file,
            bits,
            state,
            reset,
        })
    }

    /// The content id.
    pub fn id(&self) -> ContentId {
        self.id
    }

    /// The content size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file name from the record.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where `finish` puts the file.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The state.
    pub fn state(&self) -> DownloadState {
        self.state
    }

    /// The pieces held (each durable on disk and recorded).
    pub fn bitfield(&self) -> &Bitfield {
        &self.bits
    }

    /// The pieces still wanted, in order.
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.missing()
    }

    /// Bytes in the pieces held.
    pub fn held_bytes(&self) -> u64 {
        held_bytes(&self.bits, self.size)
    }

    /// Every piece is held: `finish` may be called.
    pub fn is_complete(&self) -> bool {
        self.bits.is_complete()
    }

    /// Why `open` started this download again from empty, if it did.
    pub fn reset_reason(&self) -> Option<&ResetReason> {
        self.reset.as_ref()
    }

    /// Write a verified piece at its offset, make it durable, then record
    /// it. Returns false (and writes nothing) if the piece was already
    /// held. Refuses a piece of other content or a range that is not
    /// exactly one piece, and any piece unless active or paused. On an IO
    /// or store error nothing new is recorded and nothing held is touched.
    pub fn write(&mut self, piece: VerifiedPiece) -> Result<bool, DownloadError> {
        Ok(self.write_batch(vec![piece])? == 1)
    }

    /// [`PartialDownload::write`] for several pieces: each new one is
    /// written at its offset, then one `sync_data` makes them all durable
    /// and one transaction records them all. A sync and a commit cost
    /// milliseconds each, far more than writing a 64 KiB piece, so a
    /// download writes what has arrived together. Returns how many pieces
    /// were new. Every piece is checked first: if one is refused, nothing
    /// is written. On an IO or store error nothing new is recorded.
    pub fn write_batch(&mut self, pieces: Vec<VerifiedPiece>) -> Result<u64, DownloadError> {
        if !self.state.takes_pieces() {
            return Err(self.wrong_state("write a piece"));
        }
        let mut new: Vec<(u64, VerifiedPiece)> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            if piece.id() != self.id {
                return Err(DownloadError::WrongContent {
                    got: piece.id(),
                    want: self.id,
                });
            }
            let start = piece.offset();
            let end = start.saturating_add(piece.data().len() as u64);
            let index = start / PIECE_BYTES;
            if piece_range(self.size, index) != Some(start..end) {
                return Err(DownloadError::NotAPiece {
                    start,
                    end,
                    size: self.size,
                });
            }
            if !self.bits.has(index) && !new.iter().any(|(i, _)| *i == index) {
                new.push((index, piece));
            }
        }
        if new.is_empty() {
            return Ok(0);
        }
        // Durable first, recorded second.
        for (_, piece) in &new {
            self.file
                .write_all_at(piece.data(), piece.offset())
                .map_err(io_err("write", &self.part))?;
        }
        self.file.sync_data().map_err(io_err("sync", &self.part))?;
        let indices: Vec<u64> = new.iter().map(|(i, _)| *i).collect();
        let stored = lock(&self.store)?
            .mark_pieces(&self.id, &indices, now_secs())
            .map_err(DownloadError::Store)?
            .ok_or(DownloadError::NotFound(self.id))?;
        self.bits = Bitfield::from_bytes(self.size, &stored)
            .map_err(|e| DownloadError::Store(anyhow::anyhow!("stored bitfield: {e}")))?;
        Ok(new.len() as u64)
    }

    /// Stop wanting pieces (pieces still written are kept). Pausing a
    /// paused download does nothing.
    pub fn pause(&mut self) -> Result<(), DownloadError> {
        match self.state {
            DownloadState::Paused => Ok(()),
            DownloadState::Active => self.set_state(DownloadState::Paused),
            _ => Err(self.wrong_state("pause")),
        }
    }

    /// Want pieces again, after a pause or a failed finish (which starts
    /// from empty). Resuming an active download does nothing.
    pub fn resume(&mut self) -> Result<(), DownloadError> {
        match self.state {
            DownloadState::Active => Ok(()),
            DownloadState::Paused | DownloadState::Failed => self.set_state(DownloadState::Active),
            DownloadState::Done => Err(self.wrong_state("resume")),
        }
    }

    /// Stop the download and forget it: its partial file and its row go
    /// (see [`remove`]).
    pub fn cancel(self) -> Result<(), DownloadError> {
        forget(&self.store, &self.part, self.id)
    }

    /// Verify the complete partial file against the content id and move it
    /// to the destination (creating its directory), then mark the download
    /// done. Returns the destination.
    ///
    /// On any error the destination holds what it held before, or (an
    /// error syncing after the move) the whole verified file, which
    /// [`open`](Self::open) then records as done. `Incomplete`,
    /// `DestExists` and `Io` change nothing recorded (reopen to try again);
    /// `Corrupt` marks the download failed and forgets its pieces.
    pub fn finish(self) -> Result<PathBuf, DownloadError> {
        if !self.state.takes_pieces() {
            return Err(self.wrong_state("finish"));
        }
        if !self.bits.is_complete() {
            return Err(DownloadError::Incomplete {
                held: self.bits.held(),
                pieces: self.bits.pieces(),
            });
        }
        let PartialDownload {
            store,
            id,
            size,
            dest,
            part,
            file,
            ..
        } = self;
        drop(file);
        if !is_content_checked(&part, id, size)? {
            return Err(fail(&store, id, size));
        }
        let (dir, _) = split_dest(&dest).ok_or_else(|| DownloadError::BadDest(dest.clone()))?;
        fs::create_dir_all(dir).map_err(io_err("create the directory", dir))?;
        match rename_noreplace(&part, &dest) {
            Ok(()) => sync_dir(dir).map_err(io_err("sync", dir))?,
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                match copy_into_place(&part, &dest, id, size) {
                    Ok(()) => {}
                    Err(DownloadError::Corrupt { .. }) => return Err(fail(&store, id, size)),
                    Err(e) => return Err(e),
                }
                fs::remove_file(&part).map_err(io_err("remove", &part))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(DownloadError::DestExists(dest));
            }
            Err(e) => return Err(io_err("move the download to", &dest)(e)),
        }
        if let Some(parts) = part.parent() {
            sync_dir(parts).map_err(io_err("sync", parts))?;
        }
        lock(&store)?
            .set_download_state(&id, DownloadState::Done.as_str(), None, now_secs())
            .map_err(DownloadError::Store)?;
        Ok(dest)
    }

    fn set_state(&mut self, state: DownloadState) -> Result<(), DownloadError> {
        let found = lock(&self.store)?
            .set_download_state(&self.id, state.as_str(), None, now_secs())
            .map_err(DownloadError::Store)?;
        if !found {
            return Err(DownloadError::NotFound(self.id));
        }
        self.state = state;
        Ok(())
    }

    fn wrong_state(&self, op: &'static str) -> DownloadError {
        DownloadError::WrongState {
            id: self.id,
            state: self.state,
            op,
        }
    }
}

/// Mark the download failed and forget its pieces, after its file failed
/// the re-hash. Returns the error to report.
fn fail(store: &Mutex<Store>, id: ContentId, size: u64) -> DownloadError {
    tracing::warn!("a finished download does not hash to its id; starting again");
    tracing::debug!(?id, "download failed its re-hash");
    let empty = Bitfield::new(size);
    let recorded = lock(store).and_then(|mut s| {
        s.set_download_state(
            &id,
            DownloadState::Failed.as_str(),
            Some(empty.as_bytes()),
            now_secs(),
        )
        .map_err(DownloadError::Store)
    });
    match recorded {
        Ok(_) => DownloadError::Corrupt { id },
        Err(e) => e,
    }
}

/// The rule of `ContentRecord::validate` for names: 1 to
/// [`MAX_NAME_BYTES`] bytes, no control character or path separator, not
/// `.` or `..`.
fn check_name(name: &str) -> Result<(), DownloadError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_BYTES {
        "longer than 255 bytes"
    } else if name
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        "control character or path separator"
    } else if name.starts_with('.') {
        // A hidden file (".bash_login" in a home directory), or "." / "..".
        "starts with a dot"
    } else if name.ends_with(".part") {
        "ends with .part (the daemon's partial files)"
    } else {
        return Ok(());
    };
    Err(DownloadError::BadName { reason })
}

/// The destination as stored text: absolute, UTF-8, naming a file.
fn check_dest(dest: &Path) -> Result<String, DownloadError> {
    let bad = || DownloadError::BadDest(dest.to_owned());
    if !dest.is_absolute() || split_dest(dest).is_none() {
        return Err(bad());
    }
    dest.to_str().map(str::to_owned).ok_or_else(bad)
}

/// The directory and the file name of a destination (None for `/` or a
/// path ending in `..`).
fn split_dest(dest: &Path) -> Option<(&Path, &std::ffi::OsStr)> {
    Some((dest.parent()?, dest.file_name()?))
}

fn part_path(datadir: &DataDir, id: &ContentId) -> PathBuf {
    datadir
        .downloads_dir()
        .join(format!("{}.part", id.to_hex()))
}

/// Create (or empty) the partial file at `size` bytes, sparse, durably,
/// in the private downloads dir.
fn new_part(datadir: &DataDir, part: &Path, size: u64) -> Result<File, DownloadError> {
    let dir = datadir.downloads_dir();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err("create", &dir))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(part)
        .map_err(io_err("create", part))?;
    file.set_len(size).map_err(io_err("size", part))?;
    file.sync_all().map_err(io_err("sync", part))?;
    sync_dir(&dir).map_err(io_err("sync", &dir))?;
    Ok(file)
}

/// Whether anything (even a dangling link) is at `path`.
fn exists(path: &Path) -> Result<bool, DownloadError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("inspect", path)(e)),
    }
}

/// The file at `path` is `size` bytes that hash to `id`; an IO error is an
/// error (the file may be fine).
fn is_content_checked(path: &Path, id: ContentId, size: u64) -> Result<bool, DownloadError> {
    match hash_file(path, &mut |_| {}) {
        Ok(h) => Ok(h.size == size && h.outboard.root() == id),
        Err(HashFileError::Changed) => Ok(false),
        Err(HashFileError::Io(e)) => Err(io_err("re-hash", path)(e)),
    }
}

/// A destination holds the content: a regular file of ours (not a
/// symlink, FIFO or device, and not another user's, who could change it
/// later) of `size` bytes that hash to `id`. Opened without following a
/// symlink and without blocking; false if anything else is there.
fn is_content(path: &Path, id: ContentId, size: u64) -> bool {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::MetadataExt;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::open(path, flags, Mode::empty()) else {
        return false;
    };
    let file = File::from(fd);
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !meta.file_type().is_file()
        || meta.uid() != rustix::process::geteuid().as_raw()
        || meta.len() != size
    {
        return false;
    }
    matches!(
        Outboard::compute(BufReader::with_capacity(1 << 20, &file), size),
        Ok(ob) if ob.root() == id
    )
}

/// Copy `src` into a new hidden file beside `dest`, hashing the bytes as
/// they are written; if they are the content, fsync and rename it to
/// `dest` (never replacing anything). On any error the temp file is gone
/// and nothing is at `dest`.
fn copy_into_place(src: &Path, dest: &Path, id: ContentId, size: u64) -> Result<(), DownloadError> {
    let (dir, _) = split_dest(dest).ok_or_else(|| DownloadError::BadDest(dest.to_owned()))?;
    // Not derived from the destination's name, so never too long.
    let tmp = dir.join(format!(
        ".veil-{}-{:016x}.tmp",
        &id.to_hex()[..16],
        rand::random::<u64>()
    ));
    let result = (|| {
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let input = File::open(src).map_err(io_err("open", src))?;
        let mut tee = Tee {
            input: BufReader::with_capacity(1 << 20, input),
            out: BufWriter::with_capacity(1 << 20, out),
        };
        let root = Outboard::compute(&mut tee, size)
            .map_err(io_err("copy the download to", &tmp))?
            .root();
        if root != id {
            return Err(DownloadError::Corrupt { id });
        }
        let out = tee
            .out
            .into_inner()
            .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        out.sync_all().map_err(io_err("sync", &tmp))?;
        match rename_noreplace(&tmp, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(DownloadError::DestExists(dest.to_owned()));
            }
            Err(e) => return Err(io_err("move the download to", dest)(e)),
        }
        sync_dir(dir).map_err(io_err("sync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads from `input` and writes every byte read to `out`.
struct Tee<R, W> {
    input: R,
    out: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Rename `from` to `to` unless something is at `to` (`AlreadyExists`).
/// `CrossesDevices` if they are on different filesystems.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use rustix::io::Errno;
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            // This filesystem or kernel cannot promise "no replace": fall
            // back to a check, with its small race.
            Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {}
            Err(e) => return Err(e.into()),
        }
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    fs::rename(from, to)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes in the pieces `bits` holds of content of `size` bytes.
fn held_bytes(bits: &Bitfield, size: u64) -> u64 {
    let full = bits.held() * PIECE_BYTES;
    match bits.pieces().checked_sub(1) {
        Some(last) if bits.has(last) => full - (bits.pieces() * PIECE_BYTES - size),
        _ => full,
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DownloadError + 'a {
    move |error| DownloadError::Io {
        what,
        path: path.to_owned(),
        error,
    }
}

fn lock(store: &Mutex<Store>) -> Result<MutexGuard<'_, Store>, DownloadError> {
    store
        .lock()
        .map_err(|_| DownloadError::Store(anyhow::anyhow!("store lock poisoned")))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use veil_core::content::{encode_range, verify_range};

    /// A data dir and a store in a temp dir, and content to download.
    struct Fixture {
        tmp: tempfile::TempDir,
        datadir: DataDir,
        db: PathBuf,
        store: Arc<Mutex<Store>>,
        data: Vec<u8>,
        outboard: Outboard,
    }

    /// Five whole pieces and a short last one.
    const SIZE: usize = 5 * PIECE_BYTES as usize + 1234;

    fn content(seed: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut v);
        v
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let datadir = DataDir::resolve(Some(tmp.path().join("data"))).unwrap();
            let db = tmp.path().join("veil.db");
            let store = Arc::new(Mutex::new(Store::open(&db).unwrap()));
            let data = content(1, SIZE);
            let outboard = Outboard::from_slice(&data);
            Fixture {
                tmp,
                datadir,
                db,
                store,
                data,
                outboard,
            }
        }

        fn id(&self) -> ContentId {
            self.outboard.root()
        }

        fn dest(&self) -> PathBuf {
            self.tmp.path().join("out").join("file.bin")
        }

        fn create(&self) -> PartialDownload {
            PartialDownload::create(
                &self.store,
                &self.datadir,
                self.id(),
                SIZE as u64,
                "file.bin",
                &self.dest(),
            )
            .unwrap()
        }

        fn open(&self) -> Result<PartialDownload, DownloadError> {
            PartialDownload::open(&self.store, &self.datadir, self.id())
        }

        /// The real stream for `range`, verified: what the network side
        /// hands over.
        fn verified(&self, range: std::ops::Range<u64>) -> VerifiedPiece {
            let enc = encode_range(&self.data[..], &self.outboard, range.clone()).unwrap();
            verify_range(self.id(), SIZE as u64, range, &enc).unwrap()
        }

        fn piece(&self, index: u64) -> VerifiedPiece {
            self.verified(piece_range(SIZE as u64, index).unwrap())
        }

        fn part(&self) -> PathBuf {
            part_path(&self.datadir, &self.id())
        }

        fn row(&self) -> Option<DownloadRow> {
            self.store.lock().unwrap().download(&self.id()).unwrap()
        }

        fn write_all(&self, dl: &mut PartialDownload) {
            for i in 0..piece_count(SIZE as u64) {
                dl.write(self.piece(i)).unwrap();
            }
        }
    }

    #[test]
    fn pieces_out_of_order_make_the_file_and_finish_moves_it_to_dest() {
        let f = Fixture::new();
        let mut dl = f.create();
        assert_eq!(dl.state(), DownloadState::Active);
        assert_eq!(fs::metadata(f.part()).unwrap().len(), SIZE as u64);
        assert_eq!(dl.bitfield().pieces(), 6);
        for i in [3, 0, 5, 1] {
            assert!(dl.write(f.piece(i)).unwrap(), "piece {i} is new");
        }
        assert!(
            !dl.write(f.piece(3)).unwrap(),
            "a held piece is not rewritten"
        );
        assert_eq!(dl.missing().collect::<Vec<_>>(), [2, 4]);
        let info = &list(&f.store).unwrap()[0];
        assert_eq!((info.held, info.pieces), (4, 6));
        assert_eq!(info.held_bytes, 3 * PIECE_BYTES + 1234);
        for i in [4, 2] {
            dl.write(f.piece(i)).unwrap();
        }
        assert!(dl.is_complete());
        assert_eq!(dl.finish().unwrap(), f.dest());
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
        assert!(!f.part().exists(), "the partial file was moved, not copied");
        let info = &list(&f.store).unwrap()[0];
        assert_eq!(info.state, DownloadState::Done);
        assert_eq!((info.held, info.held_bytes), (6, SIZE as u64));
        assert!(matches!(f.open(), Err(DownloadError::Finished { .. })));
    }

    #[test]
    fn a_batch_is_written_synced_and_recorded_together() {
        let f = Fixture::new();
        let mut dl = f.create();
        dl.write(f.piece(1)).unwrap();
        // Held and repeated pieces count once; the rest are new.
        let batch = vec![f.piece(1), f.piece(0), f.piece(4), f.piece(0)];
        assert_eq!(dl.write_batch(batch).unwrap(), 2);
        assert_eq!(dl.missing().collect::<Vec<_>>(), [2, 3, 5]);
        assert_eq!(f.row().unwrap().pieces, dl.bitfield().as_bytes());
        // One piece refused refuses the whole batch: nothing is written.
        let before = fs::read(f.part()).unwrap();
        let batch = vec![f.piece(2), f.verified(0..PIECE_BYTES / 2)];
        assert!(matches!(
            dl.write_batch(batch),
            Err(DownloadError::NotAPiece { .. })
        ));
        assert_eq!(fs::read(f.part()).unwrap(), before);
        assert_eq!(dl.missing().collect::<Vec<_>>(), [2, 3, 5]);
        assert_eq!(
            dl.write_batch(vec![f.piece(2), f.piece(3), f.piece(5)])
                .unwrap(),
            3
        );
        assert!(dl.is_complete());
        assert_eq!(dl.finish().unwrap(), f.dest());
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
    }

    #[test]
    fn a_restart_keeps_the_recorded_pieces() {
        let mut f = Fixture::new();
        {
            let mut dl = f.create();
            for i in [0, 2, 5] {
                dl.write(f.piece(i)).unwrap();
            }
            dl.pause().unwrap();
        }
        // The daemon stops: the store is closed and opened again.
        f.store = Arc::new(Mutex::new(Store::open(&f.db).unwrap()));
        let mut dl = f.open().unwrap();
        assert_eq!(dl.reset_reason(), None);
        assert_eq!(dl.state(), DownloadState::Paused, "the state survives too");
        assert_eq!(dl.missing().collect::<Vec<_>>(), [1, 3, 4]);
        dl.resume().unwrap();
        for i in dl.missing().collect::<Vec<_>>() {
            assert!(dl.write(f.piece(i)).unwrap());
        }
        dl.finish().unwrap();
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
    }

    #[test]
    fn pieces_of_other_content_or_not_one_whole_piece_are_refused() {
        let f = Fixture::new();
        let mut dl = f.create();
        // Same size, other bytes: a genuine piece, of the wrong content.
        let other = content(2, SIZE);
        let ob = Outboard::from_slice(&other);
        let r = piece_range(SIZE as u64, 0).unwrap();
        let enc = encode_range(&other[..], &ob, r.clone()).unwrap();
        let foreign = verify_range(ob.root(), SIZE as u64, r, &enc).unwrap();
        assert!(matches!(
            dl.write(foreign),
            Err(DownloadError::WrongContent { .. })
        ));
        // Genuine pieces of this content that are not one whole piece.
        let p = PIECE_BYTES;
        let last = piece_range(SIZE as u64, 5).unwrap();
        for range in [
            0..p / 2,
            p / 2..p + p / 2,
            0..2 * p,
            last.start..last.end - 1,
            last.start + 1024..last.end,
        ] {
            let piece = f.verified(range.clone());
            assert!(
                matches!(dl.write(piece), Err(DownloadError::NotAPiece { .. })),
                "{range:?}"
            );
        }
        assert_eq!(dl.bitfield().held(), 0);
        let row = f.row().unwrap();
        assert_eq!(row.pieces, Bitfield::new(SIZE as u64).as_bytes());
        assert!(
            fs::read(f.part()).unwrap().iter().all(|&b| b == 0),
            "nothing was written"
        );
    }

    #[test]
    fn finish_before_complete_is_refused_and_dest_stays_empty() {
        let f = Fixture::new();
        let mut dl = f.create();
        for i in 0..5 {
            dl.write(f.piece(i)).unwrap();
        }
        assert!(matches!(
            dl.finish(),
            Err(DownloadError::Incomplete { held: 5, pieces: 6 })
        ));
        assert!(!f.dest().exists());
        assert!(!f.dest().parent().unwrap().exists());
        // Nothing changed: reopen, add the last piece, finish.
        let mut dl = f.open().unwrap();
        dl.write(f.piece(5)).unwrap();
        dl.finish().unwrap();
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
    }

    #[test]
    fn a_partial_file_changed_on_disk_fails_finish_and_starts_again() {
        let f = Fixture::new();
        let mut dl = f.create();
        f.write_all(&mut dl);
        // Flip one byte of a piece that was verified and recorded.
        let file = OpenOptions::new().write(true).open(f.part()).unwrap();
        file.write_all_at(&[f.data[70_000] ^ 1], 70_000).unwrap();
        drop(file);
        assert!(matches!(dl.finish(), Err(DownloadError::Corrupt { .. })));
        assert!(!f.dest().exists(), "nothing reaches the destination");
        let row = f.row().unwrap();
        assert_eq!(row.state, "failed");
        assert_eq!(row.pieces, Bitfield::new(SIZE as u64).as_bytes());
        // A failed download takes no piece until resumed, then every one.
        let mut dl = f.open().unwrap();
        assert!(matches!(
            dl.write(f.piece(0)),
            Err(DownloadError::WrongState { .. })
        ));
        dl.resume().unwrap();
        assert_eq!(dl.missing().count(), 6);
        f.write_all(&mut dl);
        dl.finish().unwrap();
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
    }

    #[test]
    fn bad_names_sizes_destinations_and_duplicates_are_refused() {
        let f = Fixture::new();
        let id = f.id();
        let create = |name: &str, size: u64, dest: &Path| {
            PartialDownload::create(&f.store, &f.datadir, id, size, name, dest)
        };
        let dest = f.dest();
        let long = "x".repeat(256);
        for name in [
            "a/b",
            "..",
            ".",
            "",
            "../x",
            "a\\b",
            "a\nb",
            "a\0b",
            &long,
            ".bash_login",
            "x.part",
        ] {
            assert!(
                matches!(create(name, 10, &dest), Err(DownloadError::BadName { .. })),
                "{name:?}"
            );
        }
        assert!(matches!(
            create("ok", MAX_CONTENT_SIZE + 1, &dest),
            Err(DownloadError::TooLarge { .. })
        ));
        for bad in ["relative/file", "/", "/tmp/.."] {
            assert!(
                matches!(
                    create("ok", 10, Path::new(bad)),
                    Err(DownloadError::BadDest(_))
                ),
                "{bad}"
            );
        }
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, b"mine").unwrap();
        assert!(matches!(
            create("ok", 10, &dest),
            Err(DownloadError::DestExists(_))
        ));
        assert_eq!(fs::read(&dest).unwrap(), b"mine");
        assert!(f.row().is_none(), "nothing registered");
        assert!(!f.part().exists(), "no partial file");
        // One download per content, one unfinished download per
        // destination.
        let other_dest = f.tmp.path().join("second");
        create("ok", 10, &other_dest).unwrap();
        assert!(matches!(
            create("ok", 10, &f.tmp.path().join("third")),
            Err(DownloadError::AlreadyRegistered { .. })
        ));
        let other = PartialDownload::create(
            &f.store,
            &f.datadir,
            ContentId::from_bytes([3; 32]),
            10,
            "ok",
            &other_dest,
        );
        assert!(matches!(other, Err(DownloadError::DestTaken { .. })));
    }

    #[test]
    fn cancel_removes_the_partial_file_and_the_row() {
        let f = Fixture::new();
        let mut dl = f.create();
        dl.write(f.piece(1)).unwrap();
        assert!(f.part().exists());
        dl.cancel().unwrap();
        assert!(!f.part().exists());
        assert!(f.row().is_none());
        assert!(list(&f.store).unwrap().is_empty());
        assert!(matches!(f.open(), Err(DownloadError::NotFound(_))));
        // `remove` works without a handle, whatever is left on disk.
        let _dl = f.create();
        fs::remove_file(f.part()).unwrap();
        remove(&f.store, &f.datadir, f.id()).unwrap();
        assert!(f.row().is_none());
        assert!(matches!(
            remove(&f.store, &f.datadir, f.id()),
            Err(DownloadError::NotFound(_))
        ));
    }

    #[test]
    fn a_failed_write_records_nothing() {
        let f = Fixture::new();
        let mut dl = f.create();
        dl.write(f.piece(0)).unwrap();
        let before = f.row().unwrap().pieces;
        // A handle on which every write fails, as a full disk would.
        dl.file = File::open(f.part()).unwrap();
        let err = dl.write(f.piece(1)).unwrap_err();
        assert!(
            matches!(err, DownloadError::Io { what: "write", .. }),
            "{err}"
        );
        assert_eq!(f.row().unwrap().pieces, before, "nothing recorded");
        assert!(dl.bitfield().has(0) && !dl.bitfield().has(1));
        // The held piece is intact and the download carries on.
        let mut dl = f.open().unwrap();
        assert_eq!(dl.missing().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        f.write_all(&mut dl);
        dl.finish().unwrap();
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
    }

    #[test]
    fn a_failed_move_leaves_dest_alone_and_the_download_finishable() {
        let f = Fixture::new();
        let mut dl = f.create();
        f.write_all(&mut dl);
        // The destination's directory is a file.
        let dir = f.dest().parent().unwrap().to_owned();
        fs::write(&dir, b"in the way").unwrap();
        let err = dl.finish().unwrap_err();
        assert!(matches!(err, DownloadError::Io { .. }), "{err}");
        assert_eq!(fs::read(&dir).unwrap(), b"in the way");
        fs::remove_file(&dir).unwrap();
        // A file that appeared at the destination since is not replaced.
        fs::create_dir_all(&dir).unwrap();
        fs::write(f.dest(), b"mine").unwrap();
        let dl = f.open().unwrap();
        assert!(dl.is_complete(), "nothing was forgotten");
        assert!(matches!(dl.finish(), Err(DownloadError::DestExists(_))));
        assert_eq!(fs::read(f.dest()).unwrap(), b"mine");
        assert!(f.part().exists());
        fs::remove_file(f.dest()).unwrap();
        f.open().unwrap().finish().unwrap();
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
    }

    #[test]
    fn open_starts_again_when_the_partial_file_does_not_fit() {
        let f = Fixture::new();
        let mut dl = f.create();
        dl.write(f.piece(2)).unwrap();
        drop(dl);
        // Truncated.
        OpenOptions::new()
            .write(true)
            .open(f.part())
            .unwrap()
            .set_len(100)
            .unwrap();
        let dl = f.open().unwrap();
        assert_eq!(
            dl.reset_reason(),
            Some(&ResetReason::PartLength {
                got: 100,
                want: SIZE as u64
            })
        );
        assert_eq!(dl.bitfield().held(), 0);
        assert_eq!(f.row().unwrap().pieces, [0]);
        assert_eq!(fs::metadata(f.part()).unwrap().len(), SIZE as u64);
        drop(dl);
        // Deleted.
        let mut dl = f.open().unwrap();
        dl.write(f.piece(2)).unwrap();
        drop(dl);
        fs::remove_file(f.part()).unwrap();
        let dl = f.open().unwrap();
        assert_eq!(dl.reset_reason(), Some(&ResetReason::PartMissing));
        assert_eq!(dl.bitfield().held(), 0);
        drop(dl);
        // A stored bitfield that does not fit the size.
        f.store
            .lock()
            .unwrap()
            .set_download_state(&f.id(), "active", Some(&[0, 0]), 0)
            .unwrap();
        let mut dl = f.open().unwrap();
        assert!(matches!(
            dl.reset_reason(),
            Some(ResetReason::Bitfield(BitfieldError::Length { .. }))
        ));
        f.write_all(&mut dl);
        dl.finish().unwrap();
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
    }

    #[test]
    fn a_finish_cut_short_after_the_rename_is_completed_at_open() {
        let f = Fixture::new();
        let mut dl = f.create();
        f.write_all(&mut dl);
        drop(dl);
        // What a crash between the rename and the row update leaves.
        fs::create_dir_all(f.dest().parent().unwrap()).unwrap();
        fs::rename(f.part(), f.dest()).unwrap();
        assert!(matches!(f.open(), Err(DownloadError::Finished { .. })));
        assert_eq!(f.row().unwrap().state, "done");
        assert_eq!(fs::read(f.dest()).unwrap(), f.data);
    }

    /// From a local attacker's chair: while the download runs, it puts a
    /// FIFO, or a symlink to its own copy of the (public) content, where
    /// the file will go. `open` must neither block on the FIFO nor adopt
    /// the symlink as the finished file.
    #[test]
    fn a_fifo_or_symlink_at_the_destination_is_never_taken_for_the_file() {
        let f = Fixture::new();
        let mut dl = f.create();
        f.write_all(&mut dl);
        drop(dl);
        fs::create_dir_all(f.dest().parent().unwrap()).unwrap();
        let theirs = f.dest().with_extension("theirs");
        fs::write(&theirs, &f.data).unwrap();
        std::os::unix::fs::symlink(&theirs, f.dest()).unwrap();
        let dl = f.open().expect("not taken for finished");
        assert!(dl.is_complete());
        assert_eq!(f.row().unwrap().state, "active");
        assert!(f.part().exists(), "the verified pieces are kept");
        drop(dl);

        fs::remove_file(f.dest()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            f.dest(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        // Would block for ever on a plain open of the FIFO.
        let (tx, rx) = std::sync::mpsc::channel();
        let fixture = std::sync::Arc::new(f);
        let f2 = fixture.clone();
        std::thread::spawn(move || {
            let _ = tx.send(f2.open().map(|d| d.is_complete()));
        });
        let opened = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("open returned instead of blocking on the FIFO");
        assert!(matches!(opened, Ok(true)));
        assert_eq!(fixture.row().unwrap().state, "active");
    }

    #[test]
    fn across_filesystems_the_file_is_copied_verified_and_renamed() {
        let f = Fixture::new();
        let mut dl = f.create();
        f.write_all(&mut dl);
        drop(dl);
        // The copy path on its own, on any filesystem: the same file at a
        // new place, and no temp file left.
        let elsewhere = f.tmp.path().join("copy").join("file.bin");
        fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
        copy_into_place(&f.part(), &elsewhere, f.id(), SIZE as u64).unwrap();
        assert_eq!(fs::read(&elsewhere).unwrap(), f.data);
        assert_eq!(
            fs::read_dir(elsewhere.parent().unwrap()).unwrap().count(),
            1
        );
        // It never replaces, and it copies nothing that is not the content.
        assert!(matches!(
            copy_into_place(&f.part(), &elsewhere, f.id(), SIZE as u64),
            Err(DownloadError::DestExists(_))
        ));
        let wrong = f.tmp.path().join("copy").join("wrong.bin");
        assert!(matches!(
            copy_into_place(
                &f.part(),
                &wrong,
                ContentId::from_bytes([0; 32]),
                SIZE as u64
            ),
            Err(DownloadError::Corrupt { .. })
        ));
        assert!(!wrong.exists());
        assert_eq!(
            fs::read_dir(elsewhere.parent().unwrap()).unwrap().count(),
            1
        );
        // A real EXDEV where the machine has a second filesystem.
        let shm = Path::new("/dev/shm");
        let here = fs::metadata(f.tmp.path()).unwrap().dev();
        match fs::metadata(shm) {
            Ok(m) if m.is_dir() && m.dev() != here => {
                let other = tempfile::tempdir_in(shm).unwrap();
                let dest = other.path().join("sub").join("file.bin");
                let store = &f.store;
                // Re-register the same content towards the other
                // filesystem.
                remove(store, &f.datadir, f.id()).unwrap();
                let mut dl = PartialDownload::create(
                    store,
                    &f.datadir,
                    f.id(),
                    SIZE as u64,
                    "file.bin",
                    &dest,
                )
                .unwrap();
                f.write_all(&mut dl);
                assert_eq!(dl.finish().unwrap(), dest);
                assert_eq!(fs::read(&dest).unwrap(), f.data);
                assert!(!f.part().exists());
                assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 1);
            }
            _ => eprintln!("no second filesystem at /dev/shm: EXDEV itself not exercised"),
        }
    }

    #[test]
    fn held_bytes_count_the_short_last_piece_by_its_length() {
        let f = Fixture::new();
        let mut dl = f.create();
        assert_eq!(dl.held_bytes(), 0);
        dl.write(f.piece(5)).unwrap();
        assert_eq!(dl.held_bytes(), 1234);
        dl.write(f.piece(0)).unwrap();
        assert_eq!(dl.held_bytes(), PIECE_BYTES + 1234);
        assert_eq!(list(&f.store).unwrap()[0].held_bytes, dl.held_bytes());
    }

    #[test]
    fn states_serialise_as_they_are_stored() {
        use DownloadState::*;
        for state in [Active, Paused, Done, Failed] {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str());
            assert_eq!(
                serde_json::from_value::<DownloadState>(json).unwrap(),
                state
            );
            assert_eq!(state.as_str().parse::<DownloadState>().unwrap(), state);
        }
    }

    #[test]
    fn pause_and_resume_are_recorded() {
        let f = Fixture::new();
        let mut dl = f.create();
        dl.pause().unwrap();
        dl.pause().unwrap();
        assert_eq!(list(&f.store).unwrap()[0].state, DownloadState::Paused);
        // A piece that arrives while paused is kept.
        assert!(dl.write(f.piece(0)).unwrap());
        dl.resume().unwrap();
        assert_eq!(f.row().unwrap().state, "active");
        assert_eq!(dl.bitfield().held(), 1);
    }

    #[test]
    fn empty_content_finishes_at_once() {
        let f = Fixture::new();
        let id = veil_core::content::content_id(b"");
        let dest = f.tmp.path().join("empty");
        let dl = PartialDownload::create(&f.store, &f.datadir, id, 0, "empty", &dest).unwrap();
        assert!(dl.is_complete());
        dl.finish().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"");
    }
}
