//! Repository locks: shared for jobs that add data, exclusive for jobs that remove it.
//!
//! A lock is an encrypted object under `locks/`. A holder refreshes it every five minutes by writing a
//! new lock and removing the old one (names are write-once). A lock older than [`STALE_AFTER`], or one of
//! this host whose process is gone, is stale. If a refresh fails, or the holder was suspended for longer
//! than the stale time (restic#2715: another host may have taken over meanwhile), the lock is *lost*
//! and [`LockGuard::check`] fails, so the job aborts before it commits anything.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{Backend, FileType};
use crate::crypto::{Kind, RepoKeys};
use crate::error::{Error, Result};
use crate::format::Lock;
use crate::id::LockId;

/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its lock.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

fn load_lock(backend: &dyn Backend, keys: &RepoKeys, id: &LockId) -> Result<Lock> {
    let what = format!("lock {id}");
    let env = backend.read(FileType::Lock, &id.to_hex())?;
    let plain = keys.open_object(Kind::Lock, &id.0, &env, &what)?;
    serde_json::from_slice(&plain).map_err(|e| Error::format(what, e))
}

fn write_lock(backend: &dyn Backend, keys: &RepoKeys, lock: &Lock) -> Result<LockId> {
    let id = LockId::random();
    let plain = serde_json::to_vec(lock).map_err(|e| Error::format("lock", e))?;
    backend.write(
        FileType::Lock,
        &id.to_hex(),
        &keys.seal_object(Kind::Lock, &id.0, &plain),
    )?;
    Ok(id)
}

/// Whether `lock` is stale at `now`.
pub fn is_stale(lock: &Lock, now: chrono::DateTime<chrono::Utc>) -> bool {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(&lock.time) else {
        return true;
    };
    let age = now.signed_duration_since(t.with_timezone(&chrono::Utc));
    if age.to_std().map(|a| a > STALE_AFTER).unwrap_or(false) {
        return true;
    }
    // Same host: the holder's process must still exist.
    lock.hostname == crate::util::hostname()
        && !std::path::Path::new(&format!("/proc/{}", lock.pid)).exists()
        && cfg!(target_os = "linux")
}

/// Every lock with its content (unreadable locks are returned as errors).
///
/// # Errors
/// Backend errors listing `locks/`.
pub fn list_locks(backend: &dyn Backend, keys: &RepoKeys) -> Result<Vec<(LockId, Result<Lock>)>> {
    Ok(backend
        .list(FileType::Lock)?
        .into_iter()
        .filter_map(|(n, _)| LockId::from_hex(&n).ok())
        .map(|id| (id, load_lock(backend, keys, &id)))
        .collect())
}

/// Removes stale locks (or all with `all`); returns how many were removed.
///
/// # Errors
/// Backend errors.
pub fn remove_locks(backend: &dyn Backend, keys: &RepoKeys, all: bool) -> Result<usize> {
    let now = chrono::Utc::now();
    let mut n = 0;
    for (id, l) in list_locks(backend, keys)? {
        let stale = match &l {
            Ok(l) => is_stale(l, now),
            Err(Error::NotFound { .. }) => continue,
            Err(_) => true, // unreadable: not a lock of this repository's keys
        };
        if all || stale {
            match backend.remove(FileType::Lock, &id.to_hex()) {
                Ok(()) | Err(Error::NotFound { .. }) => n += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

struct Shared {
    current: LockId,
    lost: Option<String>,
    last_ok: Instant,
}

/// A held lock; released on drop.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    shared: Arc<Mutex<Shared>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Takes a lock, failing at once if a conflicting live lock exists.
    ///
    /// # Errors
    /// [`Error::Locked`] describing the holder; backend errors.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        keys: Arc<RepoKeys>,
        exclusive: bool,
        command: &str,
    ) -> Result<Self> {
        Self::acquire_with(backend, keys, exclusive, command, REFRESH_EVERY)
    }

    /// [`LockGuard::acquire`] with a chosen refresh interval (tests).
    ///
    /// # Errors
    /// As [`LockGuard::acquire`].
    pub fn acquire_with(
        backend: Arc<dyn Backend>,
        keys: Arc<RepoKeys>,
        exclusive: bool,
        command: &str,
        refresh: Duration,
    ) -> Result<Self> {
        let make = |exclusive| Lock {
            time: chrono::Utc::now().to_rfc3339(),
            exclusive,
            hostname: crate::util::hostname(),
            username: crate::util::username(),
            pid: std::process::id(),
            command: command.to_string(),
        };
        let mine = write_lock(backend.as_ref(), &keys, &make(exclusive))?;
        let now = chrono::Utc::now();
        for (id, l) in list_locks(backend.as_ref(), &keys)? {
            if id == mine {
                continue;
            }
            let Ok(l) = l else { continue };
            if is_stale(&l, now) || !(exclusive || l.exclusive) {
                continue;
            }
            let _ = backend.remove(FileType::Lock, &mine.to_hex());
            return Err(Error::Locked {
                detail: format!(
                    "{} by {}@{} (pid {}, {}) since {}",
                    if l.exclusive { "exclusively" } else { "" },
                    l.username,
                    l.hostname,
                    l.pid,
                    if l.command.is_empty() {
                        "unknown command"
                    } else {
                        &l.command
                    },
                    l.time
                )
                .replace("  ", " "),
            });
        }
        let shared = Arc::new(Mutex::new(Shared {
            current: mine,
            lost: None,
            last_ok: Instant::now(),
        }));
        let (tx, rx) = mpsc::channel::<()>();
        let (b, s, k, cmd) = (backend.clone(), shared.clone(), keys, command.to_string());
        let thread = std::thread::spawn(move || loop {
            match rx.recv_timeout(refresh) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
            if g.lost.is_some() {
                return;
            }
            if g.last_ok.elapsed() > STALE_AFTER {
                g.lost = Some("the process was suspended longer than the stale time".into());
                return;
            }
            let lock = Lock {
                time: chrono::Utc::now().to_rfc3339(),
                exclusive,
                hostname: crate::util::hostname(),
                username: crate::util::username(),
                pid: std::process::id(),
                command: cmd.clone(),
            };
            match write_lock(b.as_ref(), &k, &lock) {
                Ok(new) => {
                    let old = std::mem::replace(&mut g.current, new);
                    g.last_ok = Instant::now();
                    if let Err(e) = b.remove(FileType::Lock, &old.to_hex()) {
                        // Our old lock vanished: someone removed it, so it may have been taken over.
                        g.lost = Some(format!(
                            "old lock {} could not be removed ({e})",
                            old.short()
                        ));
                        return;
                    }
                }
                Err(e) => {
                    g.lost = Some(format!("refresh failed: {e}"));
                    return;
                }
            }
        });
        Ok(Self {
            backend,
            shared,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Fails if the lock has been lost; call before every commit point.
    ///
    /// # Errors
    /// [`Error::LockLost`].
    pub fn check(&self) -> Result<()> {
        let g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &g.lost {
            return Err(Error::LockLost(why.clone()));
        }
        if g.last_ok.elapsed() > STALE_AFTER {
            return Err(Error::LockLost(
                "not refreshed within the stale time".into(),
            ));
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.backend.remove(FileType::Lock, &g.current.to_hex());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::crypto::{Cipher, MasterKey};
    use crate::id::RepoId;

    fn setup() -> (Arc<dyn Backend>, Arc<RepoKeys>) {
        let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        (
            b,
            Arc::new(RepoKeys::new(
                MasterKey::generate(),
                RepoId::random(),
                Cipher::XChaCha20Poly1305,
            )),
        )
    }

    #[test]
    fn shared_and_exclusive_conflicts() {
        let (b, k) = setup();
        let s1 = LockGuard::acquire(b.clone(), k.clone(), false, "backup").unwrap();
        let s2 = LockGuard::acquire(b.clone(), k.clone(), false, "backup").unwrap();
        let e = LockGuard::acquire(b.clone(), k.clone(), true, "prune")
            .err()
            .unwrap();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        assert_eq!(
            b.list(FileType::Lock).unwrap().len(),
            2,
            "the refused lock was removed"
        );
        drop((s1, s2));
        assert!(b.list(FileType::Lock).unwrap().is_empty());
        let x = LockGuard::acquire(b.clone(), k.clone(), true, "prune").unwrap();
        assert!(matches!(
            LockGuard::acquire(b.clone(), k.clone(), false, "backup"),
            Err(Error::Locked { .. })
        ));
        x.check().unwrap();
    }

    #[test]
    fn stale_locks_are_ignored_and_removed() {
        let (b, k) = setup();
        let old = Lock {
            time: (chrono::Utc::now() - chrono::Duration::minutes(31)).to_rfc3339(),
            exclusive: true,
            hostname: "elsewhere".into(),
            username: "u".into(),
            pid: 1,
            command: "prune".into(),
        };
        write_lock(b.as_ref(), &k, &old).unwrap();
        let fresh = Lock {
            time: chrono::Utc::now().to_rfc3339(),
            ..old.clone()
        };
        assert!(is_stale(&old, chrono::Utc::now()));
        assert!(!is_stale(&fresh, chrono::Utc::now()));
        let g = LockGuard::acquire(b.clone(), k.clone(), true, "x").unwrap();
        drop(g);
        assert_eq!(remove_locks(b.as_ref(), &k, false).unwrap(), 1);
        assert!(b.list(FileType::Lock).unwrap().is_empty());
    }

    #[test]
    fn refresh_replaces_lock_and_loss_is_reported() {
        let (b, k) = setup();
        let g = LockGuard::acquire_with(
            b.clone(),
            k.clone(),
            false,
            "backup",
            Duration::from_millis(20),
        )
        .unwrap();
        let first = b.list(FileType::Lock).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        let later = b.list(FileType::Lock).unwrap();
        assert_eq!(later.len(), 1);
        assert_ne!(first[0].0, later[0].0, "refresh wrote a new lock");
        // Someone removes our lock (e.g. `unlock --remove-all` elsewhere): the next refresh notices.
        remove_locks(b.as_ref(), &k, true).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        assert!(matches!(g.check(), Err(Error::LockLost(_))));
    }
}
