//! The data dir: where keys, the database, the control socket, its token,
//! the instance lock and partial downloads live.
//!
//! **Invariant:** only `veild` creates the data dir. It is made (or tightened
//! to) mode 0700, and the daemon runs with umask 077, so every file in it is
//! 0600. The CLI finds everything through the data dir alone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Environment variable that overrides the default data dir.
pub const ENV_DATA_DIR: &str = "VEIL_DATA_DIR";

/// File names inside the data dir.
pub const NODE_KEY_FILE: &str = "node.key";
pub const PUBLISHER_KEY_FILE: &str = "publisher.key";
/// The service key file (the sharer's rendezvous service: a pseudonym and
/// an x25519 key, unlinkable to the node key and the publisher key).
pub const SERVICE_KEY_FILE: &str = "service.key";
/// The rater pseudonym's key file (signs our user's ratings, nothing else).
pub const RATER_KEY_FILE: &str = "rater.key";
pub const DB_FILE: &str = "veil.db";
pub const SOCKET_FILE: &str = "control.sock";
pub const TOKEN_FILE: &str = "control.token";
pub const LOCK_FILE: &str = "veild.lock";
/// Directory of partial downloads (`crate::download`).
pub const DOWNLOADS_DIR: &str = "downloads";
/// Which network the data dir belongs to (`mainnet 23`, `testnet 8`).
pub const NETWORK_FILE: &str = "network";

/// Longest Unix socket path the kernel accepts (sun_path minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A resolved data dir path (which may not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Resolve from an explicit flag (already merged with `VEIL_DATA_DIR` by
    /// clap) or the XDG data dir (`$XDG_DATA_HOME/veil`, usually
    /// `~/.local/share/veil`).
    pub fn resolve(explicit: Option<PathBuf>) -> anyhow::Result<DataDir> {
        let root = match explicit {
            Some(p) => p,
            None => dirs::data_dir()
                .context("no home or XDG data dir is known; pass --data-dir or set VEIL_DATA_DIR")?
                .join("veil"),
        };
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(root)
        };
        Ok(DataDir { root })
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A file inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where partial downloads are kept until they are complete and
    /// verified (`crate::download`).
    pub fn downloads_dir(&self) -> PathBuf {
        self.file(DOWNLOADS_DIR)
    }

    /// The control socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.file(SOCKET_FILE)
    }

    /// Create the dir (0700) or tighten an existing one to 0700, and set the
    /// process umask to 077. Daemon only.
    pub fn create_private(&self) -> anyhow::Result<()> {
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create data dir {}", self.root.display()))?;
        let meta = fs::metadata(&self.root)
            .with_context(|| format!("cannot read data dir {}", self.root.display()))?;
        if !meta.is_dir() {
            bail!("data dir {} is not a directory", self.root.display());
        }
        if meta.permissions().mode() & 0o777 != 0o700 {
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make data dir {} private", self.root.display()))?;
        }
        let sock = self.socket_path();
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "data dir path is too long for a control socket ({} > {MAX_SOCKET_PATH} bytes): {}",
                sock.as_os_str().len(),
                sock.display()
            );
        }
        Ok(())
    }
}

impl DataDir {
    /// Ties the data dir to one network: `testnet` and the proof-of-work
    /// difficulty are written at the first start, and a later start for
    /// another network is refused. The peers, guards and keys in a data
    /// dir are one network's: a test run on a real node's data dir would
    /// otherwise dial its real relays with test-network settings.
    pub fn claim_network(&self, testnet: bool, pow_bits: u8) -> anyhow::Result<()> {
        let want = format!("{} {pow_bits}", if testnet { "testnet" } else { "mainnet" });
        let path = self.file(NETWORK_FILE);
        match fs::read_to_string(&path) {
            Ok(have) if have.trim() == want => Ok(()),
            Ok(have) => bail!(
                "data dir {} belongs to another network ({}; this start is for {}): use another --data-dir, or the same --testnet and --pow-bits as before",
                self.root.display(),
                describe_network(have.trim()),
                describe_network(&want)
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_private(&path, format!("{want}\n").as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// `testnet 8` as words.
fn describe_network(marker: &str) -> String {
    match marker.split_once(' ') {
        Some(("mainnet", bits)) => format!("the real network, proof of work {bits} bits"),
        Some(("testnet", bits)) => format!("a test network, proof of work {bits} bits"),
        _ => format!("unreadable marker {marker:?}"),
    }
}

/// Write a file atomically with mode 0600: temp file, fsync, rename, fsync dir.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// The instance lock: an OS advisory lock on `veild.lock`, held for the
/// daemon's lifetime and released by the kernel when the process dies, even
/// on SIGKILL.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Take the lock or explain who holds it.
    pub fn acquire(dir: &DataDir) -> anyhow::Result<InstanceLock> {
        let path = dir.file(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                bail!(
                    "another veild{who} is already running with data dir {}; stop it first or use a different --data-dir",
                    dir.path().display()
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Informational only: the lock, not this number, decides.
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(InstanceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve(Some(tmp.path().join("d"))).unwrap();
        dir.create_private().unwrap();
        let first = InstanceLock::acquire(&dir).unwrap();
        let err = InstanceLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
        drop(first);
        InstanceLock::acquire(&dir).unwrap();
    }

    #[test]
    fn a_data_dir_serves_one_network_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve(Some(tmp.path().join("d"))).unwrap();
        dir.create_private().unwrap();
        dir.claim_network(true, 8).unwrap();
        // The same network again is fine, every time.
        dir.claim_network(true, 8).unwrap();
        let err = dir.claim_network(false, 23).unwrap_err().to_string();
        assert!(
            err.contains("another network (a test network, proof of work 8 bits; this start is for the real network, proof of work 23 bits)"),
            "{err}"
        );
        let err = dir.claim_network(true, 9).unwrap_err().to_string();
        assert!(err.contains("another network"), "{err}");
        // A refused start changes nothing.
        assert_eq!(
            fs::read_to_string(dir.file(NETWORK_FILE)).unwrap(),
            "testnet 8\n"
        );
    }

    #[test]
    fn existing_dir_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("loose");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let dir = DataDir::resolve(Some(path.clone())).unwrap();
        dir.create_private().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        write_private(&dir.file("x"), b"secret").unwrap();
        let mode = fs::metadata(dir.file("x")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
