//! The index as the repository's index files state it, read without the local cache (which `check`,
//! `prune` and `erase` never trust), held compactly in memory.
//!
//! A repository of 10 million blobs gives 10 million entries, so the form matters. Every entry is 48
//! bytes (blob id, offset, lengths, and one word holding the number of the pack listing that gives it
//! and two flags), all in one vector grouped per pack listing; the rare delta base is kept aside by
//! entry number; packs are numbered listings found by binary search; and blobs are found through a
//! hash table of entry numbers (`hashbrown`'s `HashTable`: about 5 bytes a slot). Index files are folded
//! in as they are decoded, in whatever order they arrive, so the decoded files are never all held at
//! once; which location wins is settled afterwards by the order in which the files are listed.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;

use hashbrown::hash_table::{self, HashTable};
use hashbrown::DefaultHashBuilder;
use rayon::prelude::*;

use crate::backend::{Backend, FileType};
use crate::crypto::RepoKeys;
use crate::error::{Error, Result};
use crate::format::{BlobType, IndexFile, PackEntry};
use crate::id::{BlobId, IndexId, PackId};

/// Bit of [`Entry::tag`] set for a tree blob.
const TREE: u32 = 1 << 31;
/// Bit of [`Entry::tag`] set when the entry has a delta base (in [`IndexState::bases`]).
const HAS_BASE: u32 = 1 << 30;
/// The bits of [`Entry::tag`] holding the listing number.
const LISTING: u32 = HAS_BASE - 1;
/// Entry numbers stay below it (they are u32).
const MAX_ENTRIES: u32 = u32::MAX;
/// The fewest bytes an entry takes in an index file (type, id, offset, length, raw length).
const MIN_ENTRY_BYTES: u64 = 45;

/// One index entry.
#[derive(Clone, Copy, Debug)]
struct Entry {
    id: BlobId,
    offset: u32,
    length: u32,
    raw_length: u32,
    /// The number of the listing giving it, with the [`TREE`] and [`HAS_BASE`] bits.
    tag: u32,
}

// The figure the module documentation and docs/scale.md give.
const _: () = assert!(std::mem::size_of::<Entry>() == 48);

impl Entry {
    fn blob_type(&self) -> BlobType {
        if self.tag & TREE != 0 {
            BlobType::Tree
        } else {
            BlobType::Data
        }
    }

    fn listing(&self) -> usize {
        (self.tag & LISTING) as usize
    }

    fn is(&self, t: BlobType, id: &BlobId) -> bool {
        self.id == *id && self.blob_type() == t
    }
}

/// One pack as one index file lists it; its entries are `entries[start..start + len]`.
#[derive(Clone, Copy, Debug)]
struct Listing {
    pack: PackId,
    size: u64,
    /// The position of the index file in [`IndexState::files`].
    file: u32,
    start: u32,
    len: u32,
}

/// The index as the repository's index files state it: every blob's location (the first one an index
/// file gives, in the order the files are listed), and every pack with the entries the first index file
/// listing it gives. Files another one supersedes are ignored.
#[derive(Default)]
pub struct IndexState {
    /// The index files listed (superseded ones included: a new superseding file must name them all).
    pub files: Vec<IndexId>,
    /// Index files that could not be read, with the error, in the order listed.
    pub unreadable: Vec<(IndexId, Error)>,
    /// Index files ignored because another one present supersedes them, in the order listed.
    pub superseded: Vec<IndexId>,
    /// Every entry of the files read, grouped per listing, in the order of `listings`.
    entries: Vec<Entry>,
    /// Delta bases by entry number, ascending.
    bases: Vec<(u32, BlobId)>,
    /// Every pack listing of the files read.
    listings: Vec<Listing>,
    /// Per pack, the first listing of it; ascending by pack id.
    packs: Vec<u32>,
    /// Per blob, its first entry's number, hashed by the blob's type and id.
    table: HashTable<u32>,
    /// foldhash, seeded per process: SipHash was an eighth of `check`'s CPU time at 10 million ids.
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for IndexState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexState")
            .field("files", &self.files.len())
            .field("unreadable", &self.unreadable)
            .field("superseded", &self.superseded)
            .field("entries", &self.entries.len())
            .field("blobs", &self.table.len())
            .field("packs", &self.packs.len())
            .finish()
    }
}

/// One pack of an [`IndexState`]: its id, size and the entries the first index file listing it gives.
#[derive(Clone, Copy, Debug)]
pub struct IndexedPack<'a> {
    /// The pack.
    pub id: PackId,
    /// Its size in bytes, as that index file gives it.
    pub size: u64,
    state: &'a IndexState,
    start: u32,
    len: u32,
}

impl<'a> IndexedPack<'a> {
    /// How many entries the index file gives for it.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the index file gives no entry for it.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its entries, in the order the index file lists them.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = PackEntry> + 'a {
        let s = self.state;
        (self.start..self.start + self.len).map(move |k| s.entry(k))
    }
}

impl IndexState {
    /// Reads and decrypts every index file of the repository in parallel, folding each into the state
    /// as it is decoded.
    ///
    /// # Errors
    /// Backend errors listing `index/`; [`Error::Format`] when the index holds more entries than this
    /// form can number (about 4 billion). Unreadable files go to [`IndexState::unreadable`].
    pub fn read(backend: &dyn Backend, keys: &RepoKeys) -> Result<Self> {
        let mut files = Vec::new();
        let mut bytes = 0u64;
        for (name, size) in backend.list(FileType::Index)? {
            if let Ok(id) = IndexId::from_hex(&name) {
                files.push(id);
                bytes += size;
            }
        }
        Self::build(files, bytes / MIN_ENTRY_BYTES, |id| {
            super::load_index_file(backend, keys, id)
        })
    }

    /// Folds the files `load` gives for `files` (at most `hint` entries in all, if that is known) in
    /// parallel, and settles which location wins.
    fn build(
        files: Vec<IndexId>,
        hint: u64,
        load: impl Fn(&IndexId) -> Result<IndexFile> + Sync,
    ) -> Result<Self> {
        let mut fold = Fold::default();
        // An upper bound from the files' sizes: the vector then never moves while it grows (pages not
        // written to take no memory).
        let _ = fold
            .entries
            .try_reserve(usize::try_from(hint).unwrap_or(0).min(MAX_ENTRIES as usize));
        let fold = Mutex::new(fold);
        files.par_iter().enumerate().try_for_each(|(i, id)| {
            let f = load(id);
            let file = u32::try_from(i).map_err(|_| too_many("index files"))?;
            fold.lock().unwrap_or_else(|e| e.into_inner()).add(file, f)
        })?;
        Ok(fold
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .finish(files))
    }

    /// Where blob `id` of type `t` is: the pack and entry the first index file listing it gives.
    pub fn blob(&self, t: BlobType, id: &BlobId) -> Option<(PackId, PackEntry)> {
        let k = self.find(t, id)?;
        let l = &self.listings[self.entries[k as usize].listing()];
        Some((l.pack, self.entry(k)))
    }

    /// Whether any index file read lists blob `id` of type `t`.
    pub fn contains_blob(&self, t: BlobType, id: &BlobId) -> bool {
        self.find(t, id).is_some()
    }

    /// How many distinct blobs the index files read list.
    pub fn blob_count(&self) -> usize {
        self.table.len()
    }

    /// The type and base of every delta blob, as located by [`IndexState::blob`].
    pub fn delta_bases(&self) -> impl Iterator<Item = (BlobType, BlobId)> + '_ {
        self.bases.iter().filter_map(|(k, base)| {
            let e = &self.entries[*k as usize];
            (self.find(e.blob_type(), &e.id) == Some(*k)).then_some((e.blob_type(), *base))
        })
    }

    /// Pack `id`, if an index file read lists it.
    pub fn pack(&self, id: &PackId) -> Option<IndexedPack<'_>> {
        let i = self
            .packs
            .binary_search_by_key(id, |l| self.listings[*l as usize].pack)
            .ok()?;
        Some(self.indexed_pack(self.packs[i]))
    }

    /// Whether an index file read lists pack `id`.
    pub fn contains_pack(&self, id: &PackId) -> bool {
        self.pack(id).is_some()
    }

    /// Every pack the index files read list, by ascending id.
    pub fn packs(&self) -> impl ExactSizeIterator<Item = IndexedPack<'_>> + '_ {
        self.packs.iter().map(|l| self.indexed_pack(*l))
    }

    /// How many packs the index files read list.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    fn indexed_pack(&self, listing: u32) -> IndexedPack<'_> {
        let l = &self.listings[listing as usize];
        IndexedPack {
            id: l.pack,
            size: l.size,
            state: self,
            start: l.start,
            len: l.len,
        }
    }

    fn entry(&self, k: u32) -> PackEntry {
        let e = &self.entries[k as usize];
        let base = if e.tag & HAS_BASE != 0 {
            self.bases
                .binary_search_by_key(&k, |(n, _)| *n)
                .ok()
                .map(|i| self.bases[i].1)
        } else {
            None
        };
        PackEntry {
            blob_type: e.blob_type(),
            id: e.id,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
            base,
        }
    }

    /// The hash of a blob in the blob table (keyed per process, so that chosen ids cannot crowd it).
    fn hash(&self, t: BlobType, id: &BlobId) -> u64 {
        self.hasher.hash_one((t.byte(), &id.0))
    }

    fn find(&self, t: BlobType, id: &BlobId) -> Option<u32> {
        self.table
            .find(self.hash(t, id), |&k| self.entries[k as usize].is(t, id))
            .copied()
    }

    /// Fills the blob table: per blob, the entry of the file listed first (and the first in that file).
    fn index_blobs(&mut self) {
        let entries = &self.entries;
        let listings = &self.listings;
        let rank = |k: u32| (listings[entries[k as usize].listing()].file, k);
        let hash_of = |k: &u32| {
            let e = &entries[*k as usize];
            self.hasher.hash_one((e.blob_type().byte(), &e.id.0))
        };
        let mut table = HashTable::with_capacity(entries.len());
        for (k, e) in entries.iter().enumerate() {
            // Fits: `Fold::add` refuses more than `MAX_ENTRIES` entries.
            let k = k as u32;
            let t = e.blob_type();
            let same = |o: &u32| entries[*o as usize].is(t, &e.id);
            match table.entry(self.hash(t, &e.id), same, hash_of) {
                hash_table::Entry::Occupied(mut o) => {
                    if rank(k) < rank(*o.get()) {
                        *o.get_mut() = k;
                    }
                }
                hash_table::Entry::Vacant(v) => {
                    v.insert(k);
                }
            }
        }
        self.table = table;
    }

    /// Reads, decrypts and verifies blob `id` of type `t` through these entries, resolving a delta chain
    /// of at most `depth` deltas the same way. Returns the pack it came from and its plaintext.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no index file lists it; integrity and backend errors.
    pub fn load_blob(
        &self,
        backend: &dyn Backend,
        keys: &RepoKeys,
        t: BlobType,
        id: &BlobId,
        depth: usize,
    ) -> Result<(PackId, Vec<u8>)> {
        let (pack, e) = self.blob(t, id).ok_or_else(|| Error::NotFound {
            kind: format!("{t:?} blob").to_lowercase(),
            id: id.to_hex(),
        })?;
        let env = backend.read_range(
            FileType::Pack,
            &pack.to_hex(),
            e.offset as u64,
            e.length as u64,
        )?;
        let data = crate::pack::open_blob_with(keys, &pack, &e, &env, &|b| match depth {
            0 => Err(Error::integrity(
                format!("blob {id}"),
                "its delta chain is longer than allowed",
            )),
            _ => self
                .load_blob(backend, keys, t, b, depth - 1)
                .map(|(_, d)| d),
        })?;
        Ok((pack, data))
    }

    /// The plaintext of the base `id` of a delta blob of type `t` (one level less of chain allowed).
    ///
    /// # Errors
    /// As [`IndexState::load_blob`].
    pub fn load_base(
        &self,
        backend: &dyn Backend,
        keys: &RepoKeys,
        t: BlobType,
        id: &BlobId,
    ) -> Result<Vec<u8>> {
        self.load_blob(backend, keys, t, id, crate::pack::MAX_DELTA_DEPTH - 1)
            .map(|(_, d)| d)
    }

    /// Loads and parses tree `id`.
    ///
    /// # Errors
    /// As [`IndexState::load_blob`], and [`Error::IntegrityMismatch`] when it does not parse.
    pub fn load_tree(
        &self,
        backend: &dyn Backend,
        keys: &RepoKeys,
        id: &BlobId,
    ) -> Result<crate::format::Tree> {
        let (pack, b) = self.load_blob(
            backend,
            keys,
            BlobType::Tree,
            id,
            crate::pack::MAX_DELTA_DEPTH,
        )?;
        crate::format::Tree::decode(&b)
            .map_err(|err| Error::integrity(format!("tree {id} in pack {pack}"), err.to_string()))
    }
}

fn too_many(what: &str) -> Error {
    Error::Format {
        object: "the index".into(),
        reason: format!("more {what} than `check`, `prune` and `erase` can hold"),
    }
}

/// Index files folded in as they arrive, before the winners are settled.
#[derive(Default)]
struct Fold {
    entries: Vec<Entry>,
    bases: Vec<(u32, BlobId)>,
    listings: Vec<Listing>,
    supersedes: HashSet<IndexId>,
    /// Files that could not be read, by position.
    failed: Vec<(u32, Error)>,
}

impl Fold {
    /// Appends index file number `file`, or records why it could not be read.
    fn add(&mut self, file: u32, f: Result<IndexFile>) -> Result<()> {
        let f = match f {
            Ok(f) => f,
            Err(e) => {
                self.failed.push((file, e));
                return Ok(());
            }
        };
        self.supersedes.extend(f.supersedes);
        for p in f.packs {
            let listing = u32::try_from(self.listings.len())
                .ok()
                .filter(|n| *n <= LISTING)
                .ok_or_else(|| too_many("pack listings"))?;
            let start = self.entries.len();
            if start + p.blobs.len() >= MAX_ENTRIES as usize {
                return Err(too_many("entries"));
            }
            for e in p.blobs {
                let mut tag = listing;
                if e.blob_type == BlobType::Tree {
                    tag |= TREE;
                }
                if let Some(b) = e.base {
                    tag |= HAS_BASE;
                    self.bases.push((self.entries.len() as u32, b));
                }
                self.entries.push(Entry {
                    id: e.id,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                    tag,
                });
            }
            self.listings.push(Listing {
                pack: p.id,
                size: p.size,
                file,
                start: start as u32,
                len: (self.entries.len() - start) as u32,
            });
        }
        Ok(())
    }

    /// Drops the entries and listings of the files marked in `dead`, keeping the order of the rest.
    fn drop_files(&mut self, dead: &[bool]) {
        if !self.listings.iter().any(|l| dead[l.file as usize]) {
            return;
        }
        // Listings lie in the order of their entries, back to back: each one kept moves down.
        let mut moved: Vec<Option<(u32, u32)>> = Vec::with_capacity(self.listings.len());
        let (mut kept, mut end) = (0u32, 0u32);
        for l in &self.listings {
            if dead[l.file as usize] {
                moved.push(None);
            } else {
                moved.push(Some((kept, end)));
                kept += 1;
                end += l.len;
            }
        }
        let (entries, listings) = (&self.entries, &self.listings);
        self.bases.retain_mut(|(k, _)| {
            let l = entries[*k as usize].listing();
            match moved[l] {
                Some((_, start)) => {
                    *k = start + (*k - listings[l].start);
                    true
                }
                None => false,
            }
        });
        for (l, m) in self.listings.iter_mut().zip(&moved) {
            if let Some((n, start)) = *m {
                let (from, at, len) = (l.start as usize, start as usize, l.len as usize);
                self.entries.copy_within(from..from + len, at);
                for e in &mut self.entries[at..at + len] {
                    e.tag = (e.tag & !LISTING) | n;
                }
                l.start = start;
            }
        }
        self.entries.truncate(end as usize);
        let mut m = moved.iter();
        self.listings
            .retain(|_| m.next().is_some_and(|m| m.is_some()));
    }

    /// Settles the state of the files `files` folded in.
    fn finish(mut self, files: Vec<IndexId>) -> IndexState {
        // A file another one supersedes is ignored: it is still there only because it could not be
        // deleted yet (an object lock), and the packs it names may be gone.
        let dead: Vec<bool> = files
            .iter()
            .map(|id| self.supersedes.contains(id))
            .collect();
        self.drop_files(&dead);
        self.failed.sort_by_key(|(i, _)| *i);
        let unreadable = self
            .failed
            .into_iter()
            .filter(|(i, _)| !dead[*i as usize])
            .map(|(i, e)| (files[i as usize], e))
            .collect();
        let superseded = files
            .iter()
            .zip(&dead)
            .filter(|(_, d)| **d)
            .map(|(id, _)| *id)
            .collect();
        let listings = self.listings;
        // Per pack, the listing of the file listed first (and the first in that file).
        let mut packs: Vec<u32> = (0..listings.len() as u32).collect();
        packs.sort_unstable_by_key(|l| {
            let x = &listings[*l as usize];
            (x.pack, x.file, *l)
        });
        packs.dedup_by_key(|l| listings[*l as usize].pack);
        let mut s = IndexState {
            files,
            unreadable,
            superseded,
            entries: self.entries,
            bases: self.bases,
            listings,
            packs,
            ..IndexState::default()
        };
        s.index_blobs();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::IndexPack;

    fn entry(t: BlobType, id: u8, offset: u32, base: Option<u8>) -> PackEntry {
        PackEntry {
            blob_type: t,
            id: BlobId([id; 32]),
            offset,
            length: 10 + u32::from(id),
            raw_length: 20 + u32::from(id),
            base: base.map(|b| BlobId([b; 32])),
        }
    }

    fn pack(id: u8, size: u64, blobs: Vec<PackEntry>) -> IndexPack {
        IndexPack {
            id: PackId([id; 32]),
            size,
            blobs,
        }
    }

    fn file(supersedes: &[u8], packs: Vec<IndexPack>) -> IndexFile {
        IndexFile {
            supersedes: supersedes.iter().map(|i| IndexId([*i; 32])).collect(),
            packs,
        }
    }

    /// Folds `files` (file `i` is `IndexId([i + 1; 32])`; `None` is unreadable) in the order `arrival`
    /// gives, as parallel decoding may.
    fn fold(files: &[Option<IndexFile>], arrival: &[usize]) -> IndexState {
        let ids: Vec<IndexId> = (0..files.len())
            .map(|i| IndexId([i as u8 + 1; 32]))
            .collect();
        let mut f = Fold::default();
        for &i in arrival {
            let loaded = files[i]
                .clone()
                .ok_or_else(|| Error::integrity(format!("index file {}", ids[i]), "damaged"));
            f.add(i as u32, loaded).unwrap();
        }
        f.finish(ids)
    }

    fn orders(n: usize) -> Vec<Vec<usize>> {
        vec![(0..n).collect(), (0..n).rev().collect()]
    }

    #[test]
    fn the_first_file_listed_gives_a_blob_its_location_whatever_the_arrival_order() {
        let files = vec![
            Some(file(
                &[],
                vec![pack(1, 100, vec![entry(BlobType::Data, 7, 0, None)])],
            )),
            Some(file(
                &[],
                vec![pack(
                    2,
                    200,
                    vec![
                        entry(BlobType::Data, 7, 50, None),
                        entry(BlobType::Data, 8, 90, None),
                        // Listed twice in one file: the first one wins.
                        entry(BlobType::Data, 8, 120, None),
                    ],
                )],
            )),
        ];
        for arrival in orders(2) {
            let s = fold(&files, &arrival);
            let (p, e) = s.blob(BlobType::Data, &BlobId([7; 32])).unwrap();
            assert_eq!((p, e.offset), (PackId([1; 32]), 0), "{arrival:?}");
            let (p, e) = s.blob(BlobType::Data, &BlobId([8; 32])).unwrap();
            assert_eq!((p, e.offset), (PackId([2; 32]), 90), "{arrival:?}");
            assert_eq!(e.length, 18);
            assert_eq!(e.raw_length, 28);
            assert_eq!(s.blob_count(), 2);
            // The pack keeps every entry its listing gives, the copy located elsewhere included.
            let p2 = s.pack(&PackId([2; 32])).unwrap();
            let offsets: Vec<u32> = p2.entries().map(|e| e.offset).collect();
            assert_eq!(offsets, vec![50, 90, 120]);
            assert_eq!(p2.size, 200);
        }
    }

    #[test]
    fn the_first_file_listing_a_pack_gives_its_size_and_entries() {
        let files = vec![
            Some(file(
                &[],
                vec![pack(5, 300, vec![entry(BlobType::Data, 1, 0, None)])],
            )),
            Some(file(
                &[],
                vec![
                    pack(
                        5,
                        999,
                        vec![
                            entry(BlobType::Data, 1, 0, None),
                            entry(BlobType::Data, 2, 40, None),
                        ],
                    ),
                    pack(3, 50, vec![entry(BlobType::Tree, 1, 0, None)]),
                ],
            )),
        ];
        for arrival in orders(2) {
            let s = fold(&files, &arrival);
            let p = s.pack(&PackId([5; 32])).unwrap();
            assert_eq!((p.size, p.len()), (300, 1), "{arrival:?}");
            // Blob 2 appears only in the later file's listing of pack 5: it is still located.
            let (pid, e) = s.blob(BlobType::Data, &BlobId([2; 32])).unwrap();
            assert_eq!((pid, e.offset), (PackId([5; 32]), 40));
            // The same id as a tree is another blob.
            let (pid, e) = s.blob(BlobType::Tree, &BlobId([1; 32])).unwrap();
            assert_eq!((pid, e.blob_type), (PackId([3; 32]), BlobType::Tree));
            let ids: Vec<PackId> = s.packs().map(|p| p.id).collect();
            assert_eq!(ids, vec![PackId([3; 32]), PackId([5; 32])]);
            assert_eq!(s.pack_count(), 2);
        }
    }

    #[test]
    fn superseded_files_are_ignored_and_unreadable_ones_recorded() {
        let files = vec![
            // Superseded by file 3, readable: nothing of it counts.
            Some(file(
                &[],
                vec![pack(
                    9,
                    10,
                    vec![
                        entry(BlobType::Data, 1, 0, Some(4)),
                        entry(BlobType::Data, 3, 30, None),
                    ],
                )],
            )),
            // Unreadable, not superseded.
            None,
            // Unreadable and superseded: only superseded.
            None,
            Some(file(
                &[1, 3],
                vec![pack(
                    8,
                    20,
                    vec![
                        entry(BlobType::Data, 1, 5, None),
                        entry(BlobType::Data, 2, 25, Some(1)),
                    ],
                )],
            )),
        ];
        for arrival in orders(4) {
            let s = fold(&files, &arrival);
            assert_eq!(s.superseded, vec![IndexId([1; 32]), IndexId([3; 32])]);
            let unreadable: Vec<IndexId> = s.unreadable.iter().map(|(id, _)| *id).collect();
            assert_eq!(unreadable, vec![IndexId([2; 32])]);
            assert_eq!(s.files.len(), 4);
            assert!(!s.contains_pack(&PackId([9; 32])));
            assert!(!s.contains_blob(BlobType::Data, &BlobId([3; 32])));
            let (p, e) = s.blob(BlobType::Data, &BlobId([1; 32])).unwrap();
            assert_eq!((p, e.offset, e.base), (PackId([8; 32]), 5, None));
            // The kept entries moved down with their base.
            let (_, e) = s.blob(BlobType::Data, &BlobId([2; 32])).unwrap();
            assert_eq!(e.base, Some(BlobId([1; 32])));
            assert_eq!(s.blob_count(), 2);
            assert_eq!(s.entries.len(), 2);
            assert_eq!(
                s.delta_bases().collect::<Vec<_>>(),
                vec![(BlobType::Data, BlobId([1; 32]))]
            );
        }
    }

    #[test]
    fn absent_ids_are_not_found() {
        let files = vec![Some(file(
            &[],
            vec![pack(1, 10, vec![entry(BlobType::Data, 1, 0, None)])],
        ))];
        let s = fold(&files, &[0]);
        assert!(s.contains_blob(BlobType::Data, &BlobId([1; 32])));
        assert!(s.blob(BlobType::Tree, &BlobId([1; 32])).is_none());
        assert!(s.blob(BlobType::Data, &BlobId([2; 32])).is_none());
        assert!(s.pack(&PackId([2; 32])).is_none());
        // An empty index: no table at all.
        let empty = fold(&[], &[]);
        assert!(empty.blob(BlobType::Data, &BlobId([1; 32])).is_none());
        assert_eq!((empty.pack_count(), empty.blob_count()), (0, 0));
        let unreadable = fold(&[None], &[0]);
        assert_eq!(unreadable.unreadable.len(), 1);
        assert!(unreadable.blob(BlobType::Data, &BlobId([1; 32])).is_none());
    }

    #[test]
    fn delta_bases_are_kept_for_the_located_copy_only() {
        let files = vec![
            Some(file(
                &[],
                vec![pack(
                    1,
                    10,
                    vec![
                        entry(BlobType::Tree, 5, 0, Some(6)),
                        entry(BlobType::Data, 7, 9, None),
                    ],
                )],
            )),
            // A later copy of data blob 7 as a delta: not the located one.
            Some(file(
                &[],
                vec![pack(2, 10, vec![entry(BlobType::Data, 7, 0, Some(8))])],
            )),
        ];
        for arrival in orders(2) {
            let s = fold(&files, &arrival);
            let (_, e) = s.blob(BlobType::Tree, &BlobId([5; 32])).unwrap();
            assert_eq!(e.base, Some(BlobId([6; 32])));
            let (_, e) = s.blob(BlobType::Data, &BlobId([7; 32])).unwrap();
            assert_eq!(e.base, None);
            let later: Vec<PackEntry> = s.pack(&PackId([2; 32])).unwrap().entries().collect();
            assert_eq!(later[0].base, Some(BlobId([8; 32])));
            assert_eq!(
                s.delta_bases().collect::<Vec<_>>(),
                vec![(BlobType::Tree, BlobId([6; 32]))]
            );
        }
    }

    #[test]
    fn many_blobs_are_all_found_in_parallel_builds() {
        // 40 files of 3 packs of 100 blobs; every blob also listed again in the next file.
        let n = 40u32;
        let id = |f: u32, p: u32, b: u32| {
            let mut x = [0u8; 32];
            x[..4].copy_from_slice(&f.to_le_bytes());
            x[4..8].copy_from_slice(&p.to_le_bytes());
            x[8..12].copy_from_slice(&b.to_le_bytes());
            BlobId(x)
        };
        let make = |f: u32| {
            let mut packs = Vec::new();
            for p in 0..3 {
                let mut blobs = Vec::new();
                for g in [f, f.wrapping_sub(1)] {
                    for b in 0..100 {
                        blobs.push(PackEntry {
                            blob_type: BlobType::Data,
                            id: id(g, p, b),
                            offset: b * 100 + f,
                            length: 100,
                            raw_length: 90,
                            base: None,
                        });
                    }
                }
                let mut pid = [0u8; 32];
                pid[..4].copy_from_slice(&f.to_le_bytes());
                pid[4] = p as u8;
                packs.push(IndexPack {
                    id: PackId(pid),
                    size: 1,
                    blobs,
                });
            }
            IndexFile {
                supersedes: vec![],
                packs,
            }
        };
        let files: Vec<IndexId> = (0..n).map(|_| IndexId::random()).collect();
        let order = files.clone();
        let s = IndexState::build(files, 0, |i| {
            let f = order.iter().position(|x| x == i).unwrap() as u32;
            Ok(make(f))
        })
        .unwrap();
        assert_eq!(s.pack_count(), 3 * n as usize);
        // Blobs of file f are listed by f and f + 1; blobs of "file -1" only by file 0.
        assert_eq!(s.blob_count(), (n as usize + 1) * 300);
        for f in 0..n {
            for p in 0..3 {
                for b in 0..100 {
                    let (_, e) = s.blob(BlobType::Data, &id(f, p, b)).unwrap();
                    assert_eq!(e.offset, b * 100 + f, "file {f} pack {p} blob {b}");
                }
            }
        }
        assert!(s.blob(BlobType::Data, &id(n, 0, 0)).is_none());
    }
}
