//! The data directory's lock: one server per `--data-dir`.
//!
//! Two servers on one directory corrupt it: the second's snapshot deletes the log segment the
//! first is still appending to, and writes the first acknowledged are gone. So, as RocksDB's and
//! etcd's `LOCK` and PostgreSQL's `postmaster.pid` do, a server takes an exclusive advisory lock
//! (`flock(2)` on Unix, `LockFileEx` on Windows, through std's `File::try_lock`) on `LOCK` in the
//! directory before recovery reads anything, and holds it for its whole life.
//!
//! The kernel releases the lock when the process dies, however it dies, so a `kill -9` never
//! leaves a directory locked: a stale `LOCK` file is just a file. The holder's PID is written into
//! it for the refusal message only; it is never trusted to decide anything.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error(
        "data directory {} is in use by another nanodb-server ({}); one server per --data-dir",
        dir.display(),
        holder_text(*pid)
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The holder's PID, as it wrote it into the lock file (when readable).
        pid: Option<u32>,
    },
    /// The lock file could not be created, opened or locked.
    #[error("cannot lock data directory {}: {path}: {source}", dir.display(), path = path.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The lock file (or the directory, if it could not be created).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("PID {pid}"),
        None => "PID unknown".to_string(),
    }
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    /// Open for as long as the lock is held: the lock belongs to this open file.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, or says who holds it. Never waits.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io =
            |path: &Path, source| LockError::Io { dir: dir.to_path_buf(), path: path.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: until this process holds the lock, the PID inside is the
        // holder's, which the refusal message reports.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held { dir: dir.to_path_buf(), pid: read_pid(&mut file) });
            }
            Err(TryLockError::Error(e)) => return Err(io(&path, e)),
        }
        // Ours now: record who holds it. Failing to write the PID only makes a later refusal
        // message less helpful; the lock itself is what excludes.
        let pid = std::process::id();
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{pid}"));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not write the PID into the lock file");
        }
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID a holder wrote into the lock file, if it is there and readable.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let first = DirLock::acquire(&data).expect("first lock (creating the directory)");
        assert_eq!(
            std::fs::read_to_string(first.path()).expect("lock file").trim(),
            std::process::id().to_string()
        );
        // A second open of the file is a second lock owner, even in the same process.
        let err = DirLock::acquire(&data).expect_err("second lock");
        assert!(matches!(err, LockError::Held { pid: Some(p), .. } if p == std::process::id()), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&data.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("PID {}", std::process::id())), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        drop(first);
        let again = DirLock::acquire(&data).expect("free once released");
        drop(again);
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Left by a process that died: a file with some PID, but no lock on it.
        std::fs::write(dir.path().join(LOCK_FILE), "4294967\n").expect("write");
        let lock = DirLock::acquire(dir.path()).expect("a stale file is not a lock");
        assert_eq!(
            std::fs::read_to_string(lock.path()).expect("read").trim(),
            std::process::id().to_string(),
            "the PID is replaced, not appended"
        );
    }
}
