//! The data directory holds DKIM private keys, password hashes, message bodies and the
//! database: only its owner may read it. New directories are made 0700 and files 0600
//! whatever the process umask. An existing data directory that group or others can write is
//! refused (they could replace keys or bodies under us); group- or other-readable entries
//! inside are tightened, with a warning.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Group and other permission bits.
const NOT_OWNER: u32 = 0o077;

/// Creates `dir` (and missing parents) 0700.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Options for a new file only the owner may read or write.
pub(crate) fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Creates `path` empty 0600 when it does not exist (so SQLite, which gives its WAL and
/// shared-memory files the database file's mode, never creates them wider).
pub(crate) fn ensure_private_file(path: &Path) -> io::Result<()> {
    match private_file_options()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `dir` a private data directory: creates it 0700, or checks an existing one.
/// Refuses one that group or others can write; tightens what group or others can read,
/// in it and below (without following symbolic links), and returns what it tightened.
pub fn prepare(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let Some(mode) = check(dir)? else {
        return Ok(Vec::new());
    };
    let mut tightened = Vec::new();
    tighten(dir, mode, &mut tightened);
    tighten_below(dir, &mut tightened);
    for path in &tightened {
        tracing::warn!(
            path = %path.display(),
            "was readable by group or others; now only by its owner"
        );
    }
    Ok(tightened)
}

/// The checks of [`prepare`] without its walk over everything below: creates `dir` 0700
/// (returning `None`), or refuses it (not a directory, another user's, writable by group or
/// others) or returns its mode. For a caller that must know the directory is safe before
/// it writes there, and opens the backend (which prepares it) afterwards.
pub fn check(dir: &Path) -> io::Result<Option<u32>> {
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(dir)?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("data directory {} is not a directory", dir.display()),
        ));
    }
    let owner = std::os::unix::fs::MetadataExt::uid(&meta);
    let me = rustix::process::geteuid().as_raw();
    if owner != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "data directory {} belongs to uid {owner}, not to this user (uid {me}): its \
                 owner could read or replace every key and message; run baton as its owner \
                 (e.g. `sudo -u \\#{owner} baton ...`) or use a directory of your own",
                dir.display()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "data directory {} is writable by group or others (mode {mode:o}): it holds DKIM \
                 private keys, password hashes and messages; fix it with `chmod 700 {}`",
                dir.display(),
                dir.display()
            ),
        ));
    }
    Ok(Some(mode))
}

fn tighten(path: &Path, mode: u32, tightened: &mut Vec<PathBuf>) {
    if mode & NOT_OWNER == 0 {
        return;
    }
    match fs::set_permissions(path, fs::Permissions::from_mode(mode & !NOT_OWNER)) {
        Ok(()) => tightened.push(path.to_path_buf()),
        // Not ours to change (another owner): say so rather than refuse to start.
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "readable by group or others and could not be tightened"
        ),
    }
}

fn tighten_below(dir: &Path, tightened: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        tighten(&path, meta.permissions().mode() & 0o7777, tightened);
        if meta.is_dir() {
            tighten_below(&path, tightened);
        }
    }
}
