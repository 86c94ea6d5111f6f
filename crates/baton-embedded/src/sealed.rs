//! Ledger tables sealed at rest. Values of [`SEALED_TABLES`] (the DKIM private keys) are
//! encrypted with AES-256-GCM under a master key kept next to the database
//! ([`MASTER_KEY_FILE`]: 32 random bytes, 0600, made on first use), so the database alone (a
//! backup, a copied `baton.db`) does not give the keys away. On AWS the same table is
//! encrypted by KMS instead (`infra/template.yaml`).
//!
//! Stored form: [`MAGIC`] ‖ 12-byte random nonce ‖ ciphertext ‖ tag, with `table NUL key`
//! (for DKIM: the domain and selector) as associated data, so a sealed value cannot be moved
//! to another record. A value without the prefix was written before sealing existed: it
//! reads as it is, and [`Sealer::seal_legacy_rows`] seals it when the backend opens.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use baton_store::StoreError;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, params};

use crate::backend_err;
use crate::data_dir::private_file_options;

/// The ledger tables whose values are encrypted: the pipeline's DKIM keys and the relay's
/// own secrets (the return-path MAC key).
pub const SEALED_TABLES: &[&str] = &["dkim_keys", "secrets"];
/// The master key's file name in the data directory. Losing it loses the sealed keys
/// (rotate them: `baton domain rotate-dkim`); back it up with the database.
pub const MASTER_KEY_FILE: &str = "master.key";
/// Marks (and versions) a sealed value.
pub const MAGIC: &[u8] = b"baton-sealed:v1:";
const MASTER_KEY_LEN: usize = 32;

pub(crate) fn is_sealed_table(table: &str) -> bool {
    SEALED_TABLES.contains(&table)
}

pub(crate) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
    path: PathBuf,
}

fn aad(table: &str, key: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(table.len() + key.len() + 1);
    aad.extend_from_slice(table.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key.as_bytes());
    aad
}

impl Sealer {
    /// Reads the data directory's master key, creating it when there is none yet. A missing
    /// key while `conn`'s database already holds sealed values is an error, not a new key:
    /// a new key could never open them.
    pub(crate) fn load_or_create(data_dir: &Path, conn: &Connection) -> Result<Self, StoreError> {
        let path = data_dir.join(MASTER_KEY_FILE);
        // A link could hand us a key someone else chose (or keeps a copy of).
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(StoreError::Corrupt {
                key: path.display().to_string(),
                reason: "the master key must be a regular file, not a symbolic link".into(),
            });
        }
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if holds_sealed_values(conn)? {
                    return Err(StoreError::Corrupt {
                        key: path.display().to_string(),
                        reason: "the master key is missing but the database holds DKIM keys \
                                 sealed with it: restore the file from a backup"
                            .into(),
                    });
                }
                create_master_key(&path)?
            }
            Err(e) => return Err(e.into()),
        };
        let bad_length = || StoreError::Corrupt {
            key: path.display().to_string(),
            reason: format!(
                "a master key is {MASTER_KEY_LEN} bytes, this file holds {}",
                bytes.len()
            ),
        };
        if bytes.len() != MASTER_KEY_LEN {
            return Err(bad_length());
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad_length())?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
            path,
        })
    }

    /// The stored form of `value` for record `key` of `table`: sealed for a sealed table.
    pub(crate) fn seal(&self, table: &str, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        if !is_sealed_table(table) {
            return Ok(value.to_vec());
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| backend_err("no random numbers for a nonce"))?;
        let mut sealed = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(table, key)),
                &mut sealed,
            )
            .map_err(|_| backend_err("sealing failed"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The value of a stored record: opened when sealed, as it is otherwise.
    pub(crate) fn open(
        &self,
        table: &str,
        key: &str,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        if !is_sealed_table(table) {
            return Ok(stored);
        }
        let Some(rest) = stored.strip_prefix(MAGIC) else {
            return Ok(stored);
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            key: format!("{table}/{key}"),
            reason,
        };
        if rest.len() < NONCE_LEN {
            return Err(corrupt("sealed value too short".into()));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt("bad nonce".into()))?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(table, key)), &mut buf)
            .map_err(|_| {
                corrupt(format!(
                    "cannot decrypt it with the master key {}: not the key it was sealed with, \
                     or the record is damaged",
                    self.path.display()
                ))
            })?;
        Ok(plain.to_vec())
    }

    /// Seals the values of sealed tables stored in plain form by older versions.
    pub(crate) fn seal_legacy_rows(&self, conn: &Connection) -> Result<usize, StoreError> {
        // The plain values must not live on in free space of the page they leave (FAST:
        // zeroed where the page is written anyway, so the hot path pays nothing).
        conn.pragma_update(None, "secure_delete", "FAST")
            .map_err(backend_err)?;
        let mut sealed = 0;
        for table in SEALED_TABLES {
            let rows: Vec<(String, Vec<u8>)> = {
                let mut stmt = conn
                    .prepare(
                        "SELECT key, value FROM ledger WHERE tbl = ?1 AND substr(value, 1, ?2) != ?3",
                    )
                    .map_err(backend_err)?;
                stmt.query_map(params![table, MAGIC.len(), MAGIC], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(backend_err)?
                .collect::<Result<_, _>>()
                .map_err(backend_err)?
            };
            for (key, plain) in rows {
                let value = self.seal(table, &key, &plain)?;
                // Only if unchanged meanwhile (another process may have written it).
                sealed += conn
                    .execute(
                        "UPDATE ledger SET value = ?4 WHERE tbl = ?1 AND key = ?2 AND value = ?3",
                        params![table, key, plain, value],
                    )
                    .map_err(backend_err)?;
            }
        }
        if sealed > 0 {
            // Copy the sealed pages over the plain ones now and empty the WAL, rather than
            // leave plaintext keys in it until the next checkpoint.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(backend_err)?;
        }
        Ok(sealed)
    }
}

fn holds_sealed_values(conn: &Connection) -> Result<bool, StoreError> {
    for table in SEALED_TABLES {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM ledger WHERE tbl = ?1 AND substr(value, 1, ?2) = ?3",
                params![table, MAGIC.len(), MAGIC],
                |r| r.get(0),
            )
            .map_err(backend_err)?;
        if n > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A new random master key at `path`, 0600. Written to a temporary file and linked into
/// place, so a process opening the same directory at the same time sees the whole key or
/// none, and the first one to link wins.
fn create_master_key(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut key = vec![0u8; MASTER_KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| backend_err("no random numbers for the master key"))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = private_file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(&key)?;
    file.sync_all()?;
    drop(file);
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(fs::read(path)?),
        Err(e) => Err(e.into()),
    }
}
