//! Where a repository's secrets come from, read without asking anyone: a password file (its first
//! line), a password command (the first line it prints), an environment variable holding the
//! password, and a key file. The command line adds a prompt on a terminal on top
//! (`cli::SecretOptions`); the daemon and the metrics collector never prompt.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The default cache folder: `$XDG_CACHE_HOME/gatevault`, else `~/.cache/gatevault`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("gatevault"))
}

/// The sources of one repository's secrets.
#[derive(Clone, Copy, Debug)]
pub struct SecretSource<'a> {
    /// File holding the password (first line).
    pub password_file: Option<&'a Path>,
    /// Command printing the password (run with `sh -c`).
    pub password_command: Option<&'a str>,
    /// Key file.
    pub key_file: Option<&'a Path>,
    /// The environment variable that may hold the password itself.
    pub password_env: Option<&'a str>,
    /// How messages name the repository (`repository`, `source repository`, `repository offsite`).
    pub what: &'a str,
}

/// The first line of `b`, without its line end.
fn first_line(b: &[u8]) -> Zeroizing<Vec<u8>> {
    let line = b.split(|c| *c == b'\n').next().unwrap_or(&[]);
    Zeroizing::new(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
}

impl SecretSource<'_> {
    /// The password from the first source given: file, command, environment variable.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read or the command cannot run;
    /// [`Error::NoCredentials`] when the command fails.
    pub fn password(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        if let Some(f) = self.password_file {
            let s = Zeroizing::new(std::fs::read(f).map_err(|e| {
                Error::io(
                    format!("reading the {} password file {}", self.what, f.display()),
                    e,
                )
            })?);
            return Ok(Some(first_line(&s)));
        }
        if let Some(c) = self.password_command {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(c)
                .output()
                .map_err(|e| {
                    Error::io(
                        format!("running the {} password command {c:?}", self.what),
                        e,
                    )
                })?;
            if !out.status.success() {
                return Err(Error::NoCredentials(format!(
                    "{} password command {c:?} failed with {}",
                    self.what, out.status
                )));
            }
            return Ok(Some(first_line(&Zeroizing::new(out.stdout))));
        }
        Ok(self
            .password_env
            .and_then(|v| std::env::var(v).ok())
            .map(|p| Zeroizing::new(p.into_bytes())))
    }

    /// The key of the key file, if one is given.
    ///
    /// # Errors
    /// [`Error::NoCredentials`] when it cannot be read; [`Error::Format`] when it is not a key file.
    pub fn key(&self) -> Result<Option<Zeroizing<[u8; 32]>>> {
        let Some(f) = self.key_file else {
            return Ok(None);
        };
        let b = Zeroizing::new(std::fs::read(f).map_err(|e| {
            Error::NoCredentials(format!(
                "cannot read the {} key file {}: {e}",
                self.what,
                f.display()
            ))
        })?);
        Ok(Some(crate::crypto::keyslot::parse_key_file(
            &b,
            &f.display().to_string(),
        )?))
    }
}
