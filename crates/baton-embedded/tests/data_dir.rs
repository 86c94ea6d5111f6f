//! The data directory is private: created 0700 with 0600 files whatever the umask, refused
//! when others can write it, tightened when others can read it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use baton_embedded::{EmbeddedBackend, EmbeddedOptions, prepare_data_dir};
use baton_store::{BlobStore, Ledger};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Every entry under `root` (itself included) that group or others may access.
fn loose(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        if mode(&path) & 0o077 != 0 {
            out.push((path.clone(), mode(&path)));
        }
        if path.is_dir() {
            for entry in fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    out
}

#[tokio::test]
async fn everything_created_is_for_the_owner_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let backend = EmbeddedBackend::open(
        &dir,
        EmbeddedOptions {
            inline_max: 16,
            ..EmbeddedOptions::default()
        },
    )
    .expect("open");
    let store = backend.blob_store();
    for (key, len) in [("small", 8), ("large", 4096)] {
        let mut w = store.create(key).await.expect("create");
        w.write(&vec![b'x'; len]).await.expect("write");
        w.commit().await.expect("commit");
    }
    backend
        .ledger()
        .put("users", "alice", b"{\"password_hash\":\"$argon2id$...\"}")
        .await
        .expect("put");
    assert_eq!(mode(&dir), 0o700);
    let names: Vec<String> = fs::read_dir(dir.join("spool"))
        .expect("spool")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("seg-")), "{names:?}");
    assert!(dir.join("spool/large/large").exists());
    assert!(dir.join("baton.db-wal").exists());
    assert_eq!(loose(&dir), vec![]);
}

#[test]
fn a_data_dir_others_can_write_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    for loose_mode in [0o777, 0o770, 0o702] {
        fs::create_dir_all(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(loose_mode)).expect("chmod");
        let err = prepare_data_dir(&dir).expect_err("refused").to_string();
        assert!(
            err.contains(&format!("chmod 700 {}", dir.display())),
            "{err}"
        );
        let err = match EmbeddedBackend::open_for_admin(&dir) {
            Ok(_) => panic!("opened a {loose_mode:o} data directory"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("writable by group or others"), "{err}");
        assert_eq!(
            fs::read_dir(&dir).expect("read").count(),
            0,
            "nothing written"
        );
    }
}

#[test]
fn a_readable_data_dir_is_tightened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    fs::create_dir_all(dir.join("spool/large")).expect("mkdir");
    fs::write(dir.join("spool/seg-0000000001.log"), b"body").expect("write");
    fs::write(dir.join("baton.db"), b"").expect("write");
    for d in [dir.join("spool/large"), dir.join("spool"), dir.clone()] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for f in ["spool/seg-0000000001.log", "baton.db"] {
        fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let tightened = prepare_data_dir(&dir).expect("prepare");
    assert_eq!(tightened.len(), 5, "{tightened:?}");
    assert_eq!(loose(&dir), vec![]);
    assert_eq!(mode(&dir.join("baton.db")), 0o600);
    assert_eq!(mode(&dir.join("spool")), 0o700);
    assert!(prepare_data_dir(&dir).expect("again").is_empty());
}

#[test]
fn a_data_dir_of_another_user_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    // As root (CI), hand it to nobody; otherwise a root-owned directory stands in.
    let foreign = match std::os::unix::fs::chown(&dir, Some(65534), Some(65534)) {
        Ok(()) => dir.clone(),
        Err(_) => PathBuf::from("/"),
    };
    let err = prepare_data_dir(&foreign).expect_err("refused").to_string();
    assert!(err.contains("belongs to uid"), "{err}");
}
