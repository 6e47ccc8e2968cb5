//! The local snapshot cache (`<cache dir>/<repo id>/snapshots`) follows the repository: snapshots
//! removed or added behind its back, a damaged cache file and one from another repository change
//! nothing a command reports; `check` reads the repository itself.

mod util;
use util::*;

use std::path::PathBuf;

fn cache_file(r: &Repo) -> PathBuf {
    r.cache.join(r.repo_id()).join("snapshots")
}

/// A repository with three snapshots of a small tree.
fn three_snapshots() -> (Repo, Vec<String>) {
    let r = Repo::init();
    let src = r.scratch("src");
    std::fs::create_dir_all(&src).unwrap();
    for v in 0..3 {
        std::fs::write(src.join("kong.yaml"), format!("services: [{v}]\n")).unwrap();
        r.backup(&[&src], &["--tag", &format!("v={v}")]);
    }
    let ids = r.snapshot_ids();
    assert_eq!(ids.len(), 3);
    (r, ids)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn the_cache_follows_removed_and_added_snapshots() {
    let (r, ids) = three_snapshots();
    assert!(
        cache_file(&r).is_file(),
        "listing snapshots wrote the cache"
    );
    // Removed behind the cache's back (as another machine's forget would).
    std::fs::remove_file(r.path.join("snapshots").join(&ids[1])).unwrap();
    assert_eq!(
        sorted(r.snapshot_ids()),
        sorted(vec![ids[0].clone(), ids[2].clone()])
    );
    let src = r.root().join("src");
    std::fs::write(src.join("kong.yaml"), "services: [new]\n").unwrap();
    let new = r.backup(&[&src], &[])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let now = r.snapshots();
    assert_eq!(now.len(), 3);
    assert_eq!(now.last().unwrap()["id"], new.as_str(), "newest last");
    // The cached snapshots are the ones stored: same fields as read without the cache.
    let uncached = r.copy();
    assert!(!cache_file(&uncached).exists());
    assert_eq!(now, uncached.snapshots());
}

#[test]
fn a_damaged_or_foreign_cache_is_rebuilt() {
    let (r, ids) = three_snapshots();
    let path = cache_file(&r);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(r.snapshot_ids(), ids);
    assert_ne!(std::fs::read(&path).unwrap(), bytes, "rewritten");

    // Another repository's cache file in this one's place opens for nobody here.
    let (other, other_ids) = three_snapshots();
    std::fs::copy(cache_file(&other), &path).unwrap();
    assert_eq!(r.snapshot_ids(), ids);
    assert_ne!(sorted(ids), sorted(other_ids));
}

#[test]
fn check_reads_snapshots_from_the_repository_not_the_cache() {
    let (r, ids) = three_snapshots();
    let victim = r.path.join("snapshots").join(&ids[0]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let out = r.run_code(code::FAILURE, ["check"]);
    assert!(
        stdout(&out).contains(&ids[0]) || stderr(&out).contains(&ids[0]),
        "check names the damaged snapshot: {}",
        describe(&out)
    );
}
