//! Web accounts and sessions, in their own SQLite file
//! (`<data>/accounts.db`, apart from the recording index so that backups and
//! retention of recordings never touch credentials).
//!
//! * Passwords: argon2id (RFC 9106 second recommended option: m = 64 MiB,
//!   t = 3, p = 1 — about a quarter of a second on a Pi 4), PHC strings.
//! * Sessions: a random 256-bit token in an HttpOnly cookie; only its BLAKE3
//!   hash is stored, so a leaked database opens no session. Each session has
//!   its own CSRF token that every mutation must echo in `X-CSRF-Token`.
//! * First run: while there is no account, a one-time setup token (printed
//!   by the server and written to `<data>/web-setup-link`, mode 0600) lets
//!   its holder create the first admin.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};

/// Sessions expire this long after they were last used.
pub const SESSION_IDLE_US: i64 = 30 * 24 * 3600 * 1_000_000;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (argon2 hashes anything, but a 1 MB password
/// is a denial-of-service vector, not a password).
pub const MAX_PASSWORD_BYTES: usize = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS account (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
  password TEXT NOT NULL,
  created_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS session (
  token_hash TEXT PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
  csrf TEXT NOT NULL,
  created_us INTEGER NOT NULL,
  last_used_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS session_account ON session (account_id);
";

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including accounts and cameras.
    Admin,
    /// Watch live and recorded video; change nothing.
    Viewer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
    fn parse(s: &str) -> Role {
        if s == "admin" {
            Role::Admin
        } else {
            Role::Viewer
        }
    }
}

/// An account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// A live session as the request handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its account.
    pub account: Account,
    /// The CSRF token mutations must present.
    pub csrf: String,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// SQLite failed.
    #[error("accounts database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The setup link was used already, or is wrong.
    #[error("the setup link is not valid (already used, or from an earlier start)")]
    BadSetupToken,
    /// The name is taken.
    #[error("an account named {0:?} exists")]
    NameTaken(String),
    /// A name or password was refused.
    #[error("{0}")]
    Invalid(String),
    /// Hashing failed.
    #[error("password hashing: {0}")]
    Hash(String),
    /// The setup link file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn hasher() -> Argon2<'static> {
    // m = 64 MiB (in KiB), t = 3, p = 1 (RFC 9106 §4, second option).
    let params = Params::new(64 * 1024, 3, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a login name: 1–64 characters, letters, digits, `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(
            "a name has 1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
        ))
    }
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::Invalid(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::Invalid(format!(
            "a password has at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Hashes a password with argon2id into a PHC string.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`.
pub fn verify_password(phc: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash to verify against when the account does not exist, so a wrong
/// name costs as long as a wrong password (no account enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password, never valid").unwrap_or_default())
}

/// The account store.
#[derive(Debug)]
pub struct Accounts {
    conn: Mutex<Connection>,
    /// Hash of the one-time setup token while no account exists.
    setup: Mutex<Option<String>>,
    setup_file: PathBuf,
}

impl Accounts {
    /// Opens (creating) `<data>/accounts.db`; if no account exists, makes a
    /// setup token and writes the setup link path file.
    pub fn open(data_dir: &Path) -> Result<Accounts, AccountError> {
        let conn = Connection::open(data_dir.join("accounts.db"))?;
        Self::with_connection(conn, data_dir.join("web-setup-link"))
    }

    /// An in-memory store (tests).
    pub fn open_in_memory(setup_file: PathBuf) -> Result<Accounts, AccountError> {
        Self::with_connection(Connection::open_in_memory()?, setup_file)
    }

    fn with_connection(conn: Connection, setup_file: PathBuf) -> Result<Accounts, AccountError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Accounts {
            conn: Mutex::new(conn),
            setup: Mutex::new(None),
            setup_file,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any account exists.
    pub fn has_accounts(&self) -> Result<bool, AccountError> {
        let n: i64 = self
            .db()
            .query_row("SELECT count(*) FROM account", [], |r| r.get(0))?;
        Ok(n > 0)
    }

    /// While no account exists: a fresh one-time setup token (replacing any
    /// earlier one), whose link is also written to `<data>/web-setup-link`
    /// for `base_url`. `None` once set up (and the file is removed).
    pub fn begin_setup(&self, base_url: &str) -> Result<Option<String>, AccountError> {
        if self.has_accounts()? {
            let _ = std::fs::remove_file(&self.setup_file);
            *self.setup.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Ok(None);
        }
        let token = random_hex(24);
        *self.setup.lock().unwrap_or_else(|p| p.into_inner()) = Some(token_hash(&token));
        let link = format!("{base_url}/#setup={token}");
        write_private(&self.setup_file, &link).map_err(|source| AccountError::Io {
            path: self.setup_file.clone(),
            source,
        })?;
        Ok(Some(link))
    }

    /// Whether first-run setup is pending.
    pub fn setup_pending(&self) -> bool {
        self.setup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Creates the first admin with the setup token; the token is spent.
    pub fn complete_setup(
        &self,
        token: &str,
        name: &str,
        password: &str,
    ) -> Result<Account, AccountError> {
        check_name(name)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        let mut setup = self.setup.lock().unwrap_or_else(|p| p.into_inner());
        let Some(expected) = setup.as_deref() else {
            return Err(AccountError::BadSetupToken);
        };
        if !constant_time_eq(expected.as_bytes(), token_hash(token).as_bytes()) {
            return Err(AccountError::BadSetupToken);
        }
        let account = self.insert(name, Role::Admin, &hash)?;
        *setup = None;
        let _ = std::fs::remove_file(&self.setup_file);
        Ok(account)
    }

    fn insert(&self, name: &str, role: Role, hash: &str) -> Result<Account, AccountError> {
        let r = self.db().query_row(
            "INSERT INTO account (name, role, password, created_us) VALUES (?1, ?2, ?3, ?4)
             RETURNING id",
            params![name, role.as_str(), hash, now_us()],
            |r| r.get::<_, i64>(0),
        );
        match r {
            Ok(id) => Ok(Account {
                id,
                name: name.to_owned(),
                role,
            }),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(AccountError::NameTaken(name.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates an account (admin only, checked by the caller).
    pub fn create(&self, name: &str, role: Role, password: &str) -> Result<Account, AccountError> {
        check_name(name)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        self.insert(name, role, &hash)
    }

    /// All accounts.
    pub fn list(&self) -> Result<Vec<Account>, AccountError> {
        let db = self.db();
        let mut st = db.prepare("SELECT id, name, role FROM account ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(Account {
                id: r.get(0)?,
                name: r.get(1)?,
                role: Role::parse(&r.get::<_, String>(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an account and its sessions; refuses to delete the last admin.
    pub fn delete(&self, id: i64) -> Result<bool, AccountError> {
        let db = self.db();
        let admins: i64 = db.query_row(
            "SELECT count(*) FROM account WHERE role = 'admin' AND id != ?1",
            [id],
            |r| r.get(0),
        )?;
        let role: Option<String> = db
            .query_row("SELECT role FROM account WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        if role.as_deref() == Some("admin") && admins == 0 {
            return Err(AccountError::Invalid(
                "the last admin cannot be removed".into(),
            ));
        }
        Ok(db.execute("DELETE FROM account WHERE id = ?1", [id])? > 0)
    }

    /// Checks a name and password; `None` if either is wrong. Always runs
    /// one argon2 verification, whether or not the name exists.
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<Account>, AccountError> {
        let row: Option<(i64, String, String)> = self
            .db()
            .query_row(
                "SELECT id, role, password FROM account WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        match row {
            Some((id, role, phc)) if verify_password(&phc, password) => Ok(Some(Account {
                id,
                name: name.to_owned(),
                role: Role::parse(&role),
            })),
            Some(_) => Ok(None),
            None => {
                let _ = verify_password(decoy_hash(), password);
                Ok(None)
            }
        }
    }

    /// Starts a session; returns the cookie token (never stored) and the
    /// session.
    pub fn start_session(&self, account: &Account) -> Result<(String, Session), AccountError> {
        let token = random_hex(32);
        let csrf = random_hex(16);
        let now = now_us();
        self.db().execute(
            "INSERT INTO session (token_hash, account_id, csrf, created_us, last_used_us)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![token_hash(&token), account.id, csrf, now],
        )?;
        Ok((
            token,
            Session {
                account: account.clone(),
                csrf,
            },
        ))
    }

    /// The session for a cookie token, if it exists and has not expired
    /// (and marks it used).
    pub fn session(&self, token: &str) -> Result<Option<Session>, AccountError> {
        let now = now_us();
        let hash = token_hash(token);
        let db = self.db();
        let row: Option<(i64, String, String, String, i64)> = db
            .query_row(
                "SELECT a.id, a.name, a.role, s.csrf, s.last_used_us
                 FROM session s JOIN account a ON a.id = s.account_id
                 WHERE s.token_hash = ?1",
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, name, role, csrf, last)) = row else {
            return Ok(None);
        };
        if now - last > SESSION_IDLE_US {
            db.execute("DELETE FROM session WHERE token_hash = ?1", [&hash])?;
            return Ok(None);
        }
        // Writing on every request would be a write per segment fetch;
        // a minute's resolution is plenty for a 30-day idle limit.
        if now - last > 60_000_000 {
            db.execute(
                "UPDATE session SET last_used_us = ?2 WHERE token_hash = ?1",
                params![hash, now],
            )?;
        }
        Ok(Some(Session {
            account: Account {
                id,
                name,
                role: Role::parse(&role),
            },
            csrf,
        }))
    }

    /// Ends one session.
    pub fn end_session(&self, token: &str) -> Result<(), AccountError> {
        self.db().execute(
            "DELETE FROM session WHERE token_hash = ?1",
            [token_hash(token)],
        )?;
        Ok(())
    }

    /// Ends every session of an account ("log out everywhere"); returns how
    /// many there were.
    pub fn end_all_sessions(&self, account_id: i64) -> Result<usize, AccountError> {
        Ok(self
            .db()
            .execute("DELETE FROM session WHERE account_id = ?1", [account_id])?)
    }

    /// Changes a password and ends the account's other sessions.
    pub fn set_password(&self, account_id: i64, password: &str) -> Result<(), AccountError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let db = self.db();
        db.execute(
            "UPDATE account SET password = ?2 WHERE id = ?1",
            params![account_id, hash],
        )?;
        db.execute("DELETE FROM session WHERE account_id = ?1", [account_id])?;
        Ok(())
    }
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    kodama_net::durable::write_atomic(path, format!("{text}\n").as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Accounts::open(dir.path()).expect("open");
        (dir, a)
    }

    #[test]
    fn setup_link_works_once_and_only_with_its_token() {
        let (dir, a) = store();
        let link = a
            .begin_setup("http://127.0.0.1:8080")
            .expect("setup")
            .expect("no accounts yet");
        let token = link.split("#setup=").nth(1).expect("token in link");
        let file = std::fs::read_to_string(dir.path().join("web-setup-link")).expect("file");
        assert_eq!(file.trim(), link);
        assert!(matches!(
            a.complete_setup("wrong", "owner", "correct horse"),
            Err(AccountError::BadSetupToken)
        ));
        assert!(matches!(
            a.complete_setup(token, "owner", "short"),
            Err(AccountError::Invalid(_))
        ));
        let admin = a
            .complete_setup(token, "owner", "correct horse")
            .expect("setup");
        assert_eq!(admin.role, Role::Admin);
        assert!(!dir.path().join("web-setup-link").exists());
        assert!(matches!(
            a.complete_setup(token, "again", "correct horse"),
            Err(AccountError::BadSetupToken)
        ));
        assert_eq!(a.begin_setup("http://x").expect("no-op"), None);
    }

    #[test]
    fn passwords_are_argon2id_and_verified() {
        let (_dir, a) = store();
        let v = a
            .create("family", Role::Viewer, "pass phrase 1")
            .expect("create");
        let phc: String = a
            .db()
            .query_row("SELECT password FROM account", [], |r| r.get(0))
            .expect("row");
        assert!(phc.starts_with("$argon2id$v=19$m=65536,t=3,p=1$"), "{phc}");
        assert_eq!(
            a.verify("family", "pass phrase 1").expect("verify"),
            Some(v)
        );
        assert_eq!(a.verify("family", "pass phrase 2").expect("verify"), None);
        assert_eq!(a.verify("nobody", "pass phrase 1").expect("verify"), None);
        assert!(matches!(
            a.create("family", Role::Admin, "another one"),
            Err(AccountError::NameTaken(_))
        ));
        assert!(matches!(
            a.create("bad name", Role::Admin, "another one"),
            Err(AccountError::Invalid(_))
        ));
    }

    #[test]
    fn sessions_are_stored_hashed_and_end_everywhere() {
        let (_dir, a) = store();
        let acct = a
            .create("owner", Role::Admin, "long enough")
            .expect("create");
        let (t1, s1) = a.start_session(&acct).expect("session");
        let (t2, _) = a.start_session(&acct).expect("session");
        let stored: Vec<String> = {
            let db = a.db();
            let mut st = db.prepare("SELECT token_hash FROM session").expect("prep");
            let rows = st.query_map([], |r| r.get(0)).expect("query");
            rows.collect::<Result<_, _>>().expect("rows")
        };
        assert!(!stored.contains(&t1) && !stored.contains(&t2));
        assert_eq!(a.session(&t1).expect("lookup"), Some(s1));
        assert_eq!(a.session("not a token").expect("lookup"), None);
        a.end_session(&t1).expect("logout");
        assert_eq!(a.session(&t1).expect("lookup"), None);
        assert!(a.session(&t2).expect("lookup").is_some());
        let (_t3, _) = a.start_session(&acct).expect("session");
        assert_eq!(a.end_all_sessions(acct.id).expect("all"), 2);
        assert_eq!(a.session(&t2).expect("lookup"), None);
    }

    #[test]
    fn the_last_admin_stays() {
        let (_dir, a) = store();
        let admin = a
            .create("owner", Role::Admin, "long enough")
            .expect("create");
        let viewer = a
            .create("kid", Role::Viewer, "long enough")
            .expect("create");
        assert!(matches!(a.delete(admin.id), Err(AccountError::Invalid(_))));
        assert!(a.delete(viewer.id).expect("delete"));
        assert_eq!(a.list().expect("list"), vec![admin]);
    }
}
