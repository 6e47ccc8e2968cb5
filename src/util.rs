//! Small helpers shared by several modules: who and where we are, byte sizes, time formatting.

/// The most bytes one `write(2)` to a file is given. On the Linux 6.18 kernel of the development
/// machine, the kernel's copy of written bytes into the page cache (`copy_folio_from_iter_atomic`,
/// over 90% of the time in `perf`) is several times slower per byte for writes of 2 MiB than for
/// writes of 1.5 MiB or less: `dd` of 2 GiB to a new file took 1.6-6.6 s of system time at `bs=2M`,
/// 0.4-0.6 s at `bs=1M`. Restoring 2 GiB in whole-blob writes (2 MiB on average) took 3.0-3.8 s of
/// system time, in pieces of 1 MiB 1.9-2.1 s.
pub const WRITE_PIECE: usize = 1 << 20;

/// `w.write_all(data)` in pieces of at most [`WRITE_PIECE`] bytes.
///
/// # Errors
/// As [`std::io::Write::write_all`].
pub fn write_all(w: &mut (impl std::io::Write + ?Sized), data: &[u8]) -> std::io::Result<()> {
    data.chunks(WRITE_PIECE).try_for_each(|p| w.write_all(p))
}

/// `f.write_all_at(data, offset)` in pieces of at most [`WRITE_PIECE`] bytes.
///
/// # Errors
/// As [`std::os::unix::fs::FileExt::write_all_at`].
pub fn write_all_at(f: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = offset;
    for p in data.chunks(WRITE_PIECE) {
        f.write_all_at(p, at)?;
        at += p.len() as u64;
    }
    Ok(())
}

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

    /// A writer that records the size of each write it is given.
    struct Sizes(Vec<usize>, Vec<u8>);

    impl std::io::Write for Sizes {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.push(b.len());
            self.1.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn large_writes_go_in_pieces_and_land_whole() {
        let data: Vec<u8> = (0..super::WRITE_PIECE * 5 / 2 + 7)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut w = Sizes(vec![], vec![]);
        super::write_all(&mut w, &data).unwrap();
        assert_eq!(w.0.len(), 3, "{:?}", w.0);
        assert!(w.0.iter().all(|&n| n <= super::WRITE_PIECE));
        assert_eq!(w.1, data);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::File::create(&path).unwrap();
        super::write_all_at(&f, &data, 4096).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 4096 + data.len());
        assert!(back[..4096].iter().all(|&b| b == 0));
        assert_eq!(&back[4096..], &data[..]);
    }
}
