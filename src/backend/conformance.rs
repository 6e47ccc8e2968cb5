//! The conformance suite every backend must pass (run from each backend's tests).

use super::{Backend, FileType};
use crate::error::Error;

/// Runs every conformance check against an empty `backend`; panics on the first violation.
pub fn run_all(b: &dyn Backend) {
    b.create().expect("create");
    let name = "0a".repeat(32);
    let other = "ff".repeat(32);

    // Empty listings.
    for t in [
        FileType::Key,
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Lock,
        FileType::Record,
        FileType::Audit,
    ] {
        assert!(
            b.list(t).unwrap().is_empty(),
            "{t} listing of a new repository is empty"
        );
    }

    // Write, read, stat, list.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    b.write(FileType::Pack, &name, &data).unwrap();
    assert_eq!(b.read(FileType::Pack, &name).unwrap(), data);
    assert_eq!(b.stat(FileType::Pack, &name).unwrap(), data.len() as u64);
    assert!(b.exists(FileType::Pack, &name).unwrap());
    assert!(!b.exists(FileType::Pack, &other).unwrap());
    assert_eq!(
        b.list(FileType::Pack).unwrap(),
        vec![(name.clone(), data.len() as u64)]
    );
    // Types are separate namespaces.
    assert!(b.list(FileType::Index).unwrap().is_empty());
    assert!(matches!(
        b.read(FileType::Index, &name),
        Err(Error::NotFound { .. })
    ));

    // The audit log and records are folders of their own too.
    b.write(FileType::Audit, &format!("{:064x}", 1), b"entry")
        .unwrap();
    assert_eq!(
        b.list(FileType::Audit).unwrap(),
        vec![(format!("{:064x}", 1), 5)]
    );
    assert!(b.list(FileType::Record).unwrap().is_empty());
    assert!(matches!(
        b.write(FileType::Audit, &format!("{:064x}", 1), b"other"),
        Err(Error::AlreadyExists { .. })
    ));

    // Ranges.
    assert_eq!(
        b.read_range(FileType::Pack, &name, 100, 50).unwrap(),
        data[100..150].to_vec()
    );
    assert_eq!(
        b.read_range(FileType::Pack, &name, 9_990, 10).unwrap(),
        data[9_990..].to_vec()
    );
    assert!(
        b.read_range(FileType::Pack, &name, 9_990, 11).is_err(),
        "a range past the end is an error"
    );
    assert_eq!(
        b.read_ranges(FileType::Pack, &name, &[(9_000, 6), (0, 6), (100, 50)])
            .unwrap(),
        vec![
            data[9_000..9_006].to_vec(),
            data[..6].to_vec(),
            data[100..150].to_vec()
        ]
    );
    assert!(
        b.read_ranges(FileType::Pack, &name, &[(0, 6), (9_990, 11)])
            .is_err(),
        "one range past the end fails them all"
    );
    assert!(matches!(
        b.read_ranges(FileType::Index, &name, &[(0, 1)]),
        Err(Error::NotFound { .. })
    ));

    // Create-only.
    let e = b.write(FileType::Pack, &name, b"other bytes").unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { .. }),
        "overwrite refused, got {e:?}"
    );
    assert_eq!(
        b.read(FileType::Pack, &name).unwrap(),
        data,
        "refused overwrite left the object intact"
    );

    // Config is one object.
    b.write(FileType::Config, "", b"{}").unwrap();
    assert_eq!(b.read(FileType::Config, "").unwrap(), b"{}");
    assert!(matches!(
        b.write(FileType::Config, "", b"{}"),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(
        matches!(b.create(), Err(Error::AlreadyExists { .. })),
        "create on an existing repository fails"
    );

    // Empty objects and removal.
    b.write(FileType::Lock, &other, b"").unwrap();
    assert_eq!(b.read(FileType::Lock, &other).unwrap(), Vec::<u8>::new());
    b.remove(FileType::Lock, &other).unwrap();
    assert!(matches!(
        b.remove(FileType::Lock, &other),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        b.stat(FileType::Lock, &other),
        Err(Error::NotFound { .. })
    ));
    assert!(b.list(FileType::Lock).unwrap().is_empty());

    // Many objects list completely.
    for i in 0..300u32 {
        let n = format!("{:064x}", i * 7919);
        b.write(FileType::Snapshot, &n, &i.to_le_bytes()).unwrap();
    }
    let mut listed = b.list(FileType::Snapshot).unwrap();
    listed.sort();
    assert_eq!(listed.len(), 300);
    assert!(listed.iter().all(|(_, s)| *s == 4));
}
