//! Small helpers shared by several modules: who and where we are, byte sizes, time formatting.

/// The user name for snapshots, locks and key slots.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The host name for snapshots, locks and key slots.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Formats a byte count with binary units ("1.500 MiB").
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.3} {}", UNITS[u])
    }
}

/// Runs `f` holding an exclusive lock on `<file>.lock` beside `file` (creating its folder), so that
/// processes updating the same small cache file take turns.
///
/// # Errors
/// I/O errors creating the folder or taking the lock; `f`'s errors.
pub fn with_file_lock<T>(
    file: &std::path::Path,
    f: impl FnOnce() -> crate::error::Result<T>,
) -> crate::error::Result<T> {
    use crate::error::Error;
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating the folder of {}", file.display()), e))?;
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = file.with_file_name(name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    lock.lock()
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    let r = f();
    let _ = lock.unlock();
    r
}

/// Replaces `file` with `bytes` atomically (a temporary file beside it, fsynced, then renamed).
///
/// # Errors
/// I/O errors, naming `file`; the temporary file is removed.
pub fn replace_file(file: &std::path::Path, bytes: &[u8]) -> crate::error::Result<()> {
    use std::io::Write;
    let mut name = std::ffi::OsString::from(".");
    name.push(file.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = file.with_file_name(name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        crate::error::Error::io(format!("writing {}", file.display()), e)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_units() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.500 KiB");
        assert_eq!(super::bytes(3 * 1024 * 1024 * 1024), "3.000 GiB");
    }
}
