//! Users and API keys, kept in `<data_dir>/auth/users.json` (mode 0600).
//!
//! Why a JSON file and not SQLite: a lab has tens of users and keys, not millions; the file is
//! read whole, written whole (temp file + fsync + rename, so a crash never leaves half a file),
//! diffable, and backed up with the rest of the data dir. No C library to build. The server
//! only reads it and reloads it when its modification time or size changes, so
//! `fieldlab users revoke` takes effect on a running server at the next request.
//!
//! Nothing secret is stored in the clear: passwords as argon2id PHC strings, API keys as the
//! SHA-256 of their random secret (a 256-bit random secret needs no slow hash; a password does).

use crate::AuthError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use fieldlab_core::Role;
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 12;
/// API keys look like `flk_<12 hex id>_<43 base64url chars>`.
pub const KEY_PREFIX: &str = "flk_";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserFile {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub keys: Vec<ApiKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub roles: Vec<Role>,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created: String,
    #[serde(default)]
    pub revoked: bool,
    /// Bumped by `passwd` and `revoke`: tokens carry the generation they were issued under and
    /// die with it.
    #[serde(default)]
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public part of the key, also its MQTT user name's fallback.
    pub id: String,
    /// Who or what holds it (a device id for device keys).
    pub name: String,
    pub roles: Vec<Role>,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub created: String,
    #[serde(default)]
    pub revoked: bool,
}

/// Hash a password with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane — OWASP's
/// minimum recommendation) and a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::Invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(e.to_string()))
}

/// Check a password against a PHC string; any parse problem is a mismatch.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A newly minted key: the full secret string is shown once and never stored.
pub struct NewKey {
    pub key: ApiKey,
    pub secret: String,
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn check_name(name: &str) -> Result<(), AuthError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err(AuthError::Invalid(format!(
            "`{name}` is not a valid name: use 1-64 letters, digits, '.', '_', '-' or '@'"
        )));
    }
    Ok(())
}

impl UserFile {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn add_user(
        &mut self,
        name: &str,
        roles: &[Role],
        password: &str,
    ) -> Result<(), AuthError> {
        check_name(name)?;
        if self.user(name).is_some() {
            return Err(AuthError::Invalid(format!(
                "user `{name}` exists; use `fieldlab users passwd {name}` to change the password"
            )));
        }
        if roles.is_empty() {
            return Err(AuthError::Invalid(
                "give the user at least one --role".into(),
            ));
        }
        self.users.push(User {
            name: name.into(),
            roles: roles.to_vec(),
            password_hash: hash_password(password)?,
            created: now(),
            revoked: false,
            generation: 0,
        });
        Ok(())
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, AuthError> {
        self.users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| {
                AuthError::Invalid(format!("no user `{name}`; see `fieldlab users list`"))
            })
    }

    /// Set a new password (also re-enables a revoked user); existing tokens stop working.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), AuthError> {
        let hash = hash_password(password)?;
        let u = self.user_mut(name)?;
        u.password_hash = hash;
        u.revoked = false;
        u.generation += 1;
        Ok(())
    }

    /// Revoke a user: password and every token issued to it stop working at once.
    pub fn revoke_user(&mut self, name: &str) -> Result<(), AuthError> {
        let u = self.user_mut(name)?;
        u.revoked = true;
        u.generation += 1;
        Ok(())
    }

    pub fn add_key(&mut self, name: &str, roles: &[Role]) -> Result<NewKey, AuthError> {
        check_name(name)?;
        if roles.is_empty() {
            return Err(AuthError::Invalid(
                "give the key at least one --role".into(),
            ));
        }
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let secret_part = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let key = ApiKey {
            id: id.clone(),
            name: name.into(),
            roles: roles.to_vec(),
            secret_sha256: sha256_hex(&secret_part),
            created: now(),
            revoked: false,
        };
        self.keys.push(key.clone());
        Ok(NewKey {
            key,
            secret: format!("{KEY_PREFIX}{id}_{secret_part}"),
        })
    }

    pub fn revoke_key(&mut self, id_or_name: &str) -> Result<usize, AuthError> {
        let mut n = 0;
        for k in &mut self.keys {
            if (k.id == id_or_name || k.name == id_or_name) && !k.revoked {
                k.revoked = true;
                n += 1;
            }
        }
        if n == 0 {
            return Err(AuthError::Invalid(format!(
                "no active key with id or name `{id_or_name}`; see `fieldlab users key list`"
            )));
        }
        Ok(n)
    }

    /// The active key matching a presented `flk_<id>_<secret>` string.
    pub fn check_key(&self, presented: &str) -> Option<&ApiKey> {
        let rest = presented.strip_prefix(KEY_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let k = self.keys.iter().find(|k| k.id == id && !k.revoked)?;
        let want = k.secret_sha256.as_bytes();
        let got = sha256_hex(secret);
        bool::from(want.ct_eq(got.as_bytes())).then_some(k)
    }

    /// The active user with this name and password. Unknown and revoked users cost one
    /// argon2 check too (a dummy hash), so timing does not tell who exists.
    pub fn check_password(&self, name: &str, password: &str) -> Option<&User> {
        crate::login::check_password_uniform(self, name, password)
    }
}

/// Modification time and size of the file when it was last read; `None`: no file.
type Stamp = Option<(SystemTime, u64)>;

/// The users file on disk.
#[derive(Debug)]
pub struct UserDb {
    path: PathBuf,
    cache: Mutex<(Stamp, std::sync::Arc<UserFile>)>,
}

impl UserDb {
    /// `<data_dir>/auth/users.json`; the file need not exist yet.
    pub fn open(data_dir: &Path) -> UserDb {
        UserDb {
            path: data_dir.join("auth").join("users.json"),
            cache: Mutex::new((None, Default::default())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current contents, re-read when the file changed on disk.
    pub fn current(&self) -> Result<std::sync::Arc<UserFile>, AuthError> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io_err(e)),
        };
        let mut c = self.cache.lock();
        if c.0 != stamp || stamp.is_none() {
            let file = match stamp {
                None => UserFile::default(),
                Some(_) => {
                    let text = std::fs::read_to_string(&self.path).map_err(|e| self.io_err(e))?;
                    serde_json::from_str(&text)
                        .map_err(|e| AuthError::Internal(format!("{}: {e}", self.path.display())))?
                }
            };
            *c = (stamp, std::sync::Arc::new(file));
        }
        Ok(c.1.clone())
    }

    /// Read, change and write back atomically (temp file, fsync, rename; mode 0600).
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut UserFile) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let mut file = (*self.current()?).clone();
        let out = f(&mut file)?;
        let dir = self.path.parent().expect("users.json has a parent");
        create_private_dir(dir).map_err(|e| self.io_err(e))?;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&file).expect("users serialise");
        write_private(&tmp, text.as_bytes()).map_err(|e| self.io_err(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io_err(e))?;
        // Invalidate: mtime granularity may hide two writes in the same tick.
        self.cache.lock().0 = None;
        Ok(out)
    }

    fn io_err(&self, e: std::io::Error) -> AuthError {
        AuthError::Internal(format!("{}: {e}", self.path.display()))
    }
}

/// Create a directory readable only by its owner.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Write a file with mode 0600 and fsync it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_keys_round_trip_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let db = UserDb::open(dir.path());
        assert!(db.current().unwrap().users.is_empty());
        db.update(|f| f.add_user("ann", &[Role::Admin], "correct horse battery"))
            .unwrap();
        let e = db
            .update(|f| f.add_user("bob", &[Role::Viewer], "short"))
            .unwrap_err();
        assert!(e.to_string().contains("at least 12"), "{e}");
        let cur = db.current().unwrap();
        assert!(cur.check_password("ann", "correct horse battery").is_some());
        assert!(cur.check_password("ann", "wrong horse battery").is_none());
        assert!(!cur.users[0].password_hash.contains("correct"));
        assert!(cur.users[0].password_hash.starts_with("$argon2id$"));

        let k = db.update(|f| f.add_key("dev1", &[Role::Device])).unwrap();
        assert!(k.secret.starts_with("flk_"));
        let cur = db.current().unwrap();
        assert_eq!(cur.check_key(&k.secret).unwrap().name, "dev1");
        let mut tampered = k.secret.clone();
        tampered.pop();
        tampered.push('x');
        assert!(cur.check_key(&tampered).is_none());
        let text = std::fs::read_to_string(db.path()).unwrap();
        assert!(!text.contains(&k.secret[17..]), "the secret is not stored");

        db.update(|f| f.revoke_user("ann")).unwrap();
        db.update(|f| f.revoke_key("dev1")).unwrap();
        let cur = db.current().unwrap();
        assert!(cur.check_password("ann", "correct horse battery").is_none());
        assert!(cur.check_key(&k.secret).is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(db.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
