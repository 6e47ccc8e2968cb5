//! Blobs and packs: compression, encryption and the pack file layout.
//!
//! A pack is `blob envelope* | header envelope | header length u32 LE`. Blobs are collected as
//! compressed plaintext and only sealed when the pack is finished, so that their order can be shuffled and
//! each pack gets its own subkey. Every compressed blob is decompressed and compared before it is
//! accepted, so a compressor bug cannot store data that does not restore.

use std::cell::RefCell;

use rand::seq::SliceRandom;

use crate::crypto::{Kind, RepoKeys};
use crate::error::{Error, Result};
use crate::format::{self, BlobType, PackEntry};
use crate::id::{BlobId, PackId};

/// Blob plaintext flag: stored as is.
const RAW: u8 = 0;
/// Blob plaintext flag: zstd frame.
const ZSTD: u8 = 1;
/// Blob plaintext flag: base blob id, then a zstd frame made with the base's plaintext as dictionary.
const DELTA: u8 = 2;

/// How many deltas a chain may hold: a delta's base may itself be a delta, down to this depth. Writers
/// start a new self-contained blob instead of going deeper; readers refuse longer chains.
pub const MAX_DELTA_DEPTH: usize = 32;

/// Resolves the plaintext of a delta blob's base (resolving the base's own chain, if any).
pub type BaseResolver<'a> = &'a (dyn Fn(&BlobId) -> Result<Vec<u8>> + Sync);

/// A resolver for contexts where no delta is expected: any base is an error.
pub fn no_base(id: &BlobId) -> Result<Vec<u8>> {
    Err(Error::integrity(
        format!("blob {id}"),
        "is the base of a delta blob, which this context cannot resolve",
    ))
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Frames without the content size: the entry's raw length already says it (saves up to 8 bytes a blob).
fn lean(mut c: zstd::bulk::Compressor<'static>) -> Option<zstd::bulk::Compressor<'static>> {
    c.set_parameter(zstd::stream::raw::CParameter::ContentSizeFlag(false))
        .ok()?;
    Some(c)
}

/// Lets a delta see all of its base: a window and match tables covering base and data (zstd would
/// otherwise size them for the small input alone and miss most of a large base, such as a tree).
fn reach(
    mut c: zstd::bulk::Compressor<'static>,
    span: usize,
) -> Option<zstd::bulk::Compressor<'static>> {
    use zstd::stream::raw::CParameter;
    let log = (usize::BITS - span.max(1 << 10).leading_zeros()).clamp(10, 27);
    c.set_parameter(CParameter::WindowLog(log)).ok()?;
    c.set_parameter(CParameter::HashLog(log.min(24))).ok()?;
    c.set_parameter(CParameter::ChainLog(log.min(24))).ok()?;
    Some(c)
}

fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, lean(zstd::bulk::Compressor::new(level).ok()?)?));
        }
        c.as_mut()?.1.compress(data).ok()
    })
}

fn decompress(data: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("set above").decompress(data, raw_len)
    })
}

/// Whether zstd is worth trying on `data`: large blobs are sampled first, so incompressible data
/// (archives, random bytes, ciphertext) costs one small trial instead of a full pass.
fn worth_compressing(data: &[u8], level: i32) -> bool {
    const SAMPLE: usize = 64 * 1024;
    if data.len() <= 2 * SAMPLE {
        return true;
    }
    let mid = data.len() / 2;
    let sample = &data[mid - SAMPLE / 2..mid + SAMPLE / 2];
    compress(sample, level.min(3)).is_some_and(|c| c.len() < SAMPLE * 95 / 100)
}

/// Turns a blob's plaintext into its stored plaintext: a flag byte and the (maybe compressed) bytes.
///
/// # Errors
/// [`Error::IntegrityMismatch`] when compressed output does not decompress to the input (a compressor bug).
pub fn encode_blob(data: &[u8], level: i32) -> Result<Vec<u8>> {
    if level > 0 && data.len() >= 64 && worth_compressing(data, level) {
        if let Some(c) = compress(data, level) {
            if c.len() + 16 < data.len() {
                let back = decompress(&c, data.len()).map_err(|e| {
                    Error::integrity(
                        "new blob",
                        format!("compressed data does not decompress: {e}"),
                    )
                })?;
                if back != data {
                    return Err(Error::integrity(
                        "new blob",
                        "compressed data decompresses to other bytes",
                    ));
                }
                let mut out = Vec::with_capacity(c.len() + 1);
                out.push(ZSTD);
                out.extend_from_slice(&c);
                return Ok(out);
            }
        }
    }
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(RAW);
    out.extend_from_slice(data);
    Ok(out)
}

/// Encodes `data` as a delta against `base` (the base's plaintext is the zstd dictionary). Returns
/// `None` when that is not at least a quarter smaller than `plain` (the ordinary encoding), so a base
/// that has drifted too far is replaced by a new self-contained blob.
///
/// # Errors
/// [`Error::IntegrityMismatch`] when the delta does not decode to `data` (a compressor bug).
pub fn encode_delta(
    data: &[u8],
    level: i32,
    plain: &[u8],
    base_id: &BlobId,
    base: &[u8],
) -> Result<Option<Vec<u8>>> {
    if level <= 0 || base.is_empty() {
        return Ok(None);
    }
    let Some(mut c) = zstd::bulk::Compressor::with_dictionary(level, base)
        .ok()
        .and_then(lean)
        .and_then(|c| reach(c, base.len() + data.len()))
    else {
        return Ok(None);
    };
    let Ok(frame) = c.compress(data) else {
        return Ok(None);
    };
    if 1 + frame.len() >= plain.len() * 3 / 4 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(1 + frame.len());
    out.push(DELTA);
    out.extend_from_slice(&frame);
    let back = decode_blob_with(&out, data.len(), Some(base_id), "new delta blob", &|_| {
        Ok(base.to_vec())
    })?;
    if back != data {
        return Err(Error::integrity("new delta blob", "decodes to other bytes"));
    }
    Ok(Some(out))
}

/// Reverses [`encode_blob`]; a delta blob is an error here (see [`decode_blob_with`]).
///
/// # Errors
/// [`Error::IntegrityMismatch`] naming `what` on an unknown flag, bad zstd data or a wrong length.
pub fn decode_blob(stored: &[u8], raw_len: usize, what: &str) -> Result<Vec<u8>> {
    decode_blob_with(stored, raw_len, None, what, &no_base)
}

/// Reverses [`encode_blob`] and [`encode_delta`]; a delta's base is `base_id` (from its pack-header or
/// index entry, and bound into its authenticated data) and its plaintext is fetched with `base`.
///
/// # Errors
/// [`Error::IntegrityMismatch`] naming `what` on an unknown flag, bad zstd data, a wrong length, or a
/// base that cannot be resolved.
pub fn decode_blob_with(
    stored: &[u8],
    raw_len: usize,
    base_id: Option<&BlobId>,
    what: &str,
    base: BaseResolver<'_>,
) -> Result<Vec<u8>> {
    let (flag, body) = stored
        .split_first()
        .ok_or_else(|| Error::integrity(what, "empty blob"))?;
    let out = match *flag {
        RAW => body.to_vec(),
        ZSTD => {
            decompress(body, raw_len).map_err(|e| Error::integrity(what, format!("zstd: {e}")))?
        }
        DELTA => {
            let base_id = base_id
                .ok_or_else(|| Error::integrity(what, "a delta whose entry names no base"))?;
            let dict = base(base_id)
                .map_err(|e| Error::integrity(what, format!("its base blob {base_id}: {e}")))?;
            let mut d = zstd::bulk::Decompressor::with_dictionary(&dict)
                .map_err(|e| Error::integrity(what, format!("zstd dictionary: {e}")))?;
            d.decompress(body, raw_len)
                .map_err(|e| Error::integrity(what, format!("zstd delta: {e}")))?
        }
        f => {
            return Err(Error::integrity(
                what,
                format!("unknown compression flag {f}"),
            ))
        }
    };
    if out.len() != raw_len {
        return Err(Error::integrity(
            what,
            format!("length {} where the index says {raw_len}", out.len()),
        ));
    }
    Ok(out)
}

/// Opens one blob envelope read from pack `pack`, decompresses it and checks its id.
///
/// # Errors
/// [`Error::IntegrityMismatch`] naming the pack and blob when anything does not match.
pub fn open_blob(
    keys: &RepoKeys,
    pack: &PackId,
    e: &PackEntry,
    envelope: &[u8],
) -> Result<Vec<u8>> {
    open_blob_with(keys, pack, e, envelope, &no_base)
}

/// [`open_blob`] for blobs that may be deltas: `base` resolves their base. The base named inside the
/// blob must be the one its pack header or index entry names.
///
/// # Errors
/// As [`open_blob`], and when the base cannot be resolved.
pub fn open_blob_with(
    keys: &RepoKeys,
    pack: &PackId,
    e: &PackEntry,
    envelope: &[u8],
    base: BaseResolver<'_>,
) -> Result<Vec<u8>> {
    let mut buf = envelope.to_vec();
    open_blob_in_place(keys, pack, e, &mut buf, base)
        .map(std::borrow::Cow::into_owned)
        .map_err(|err| explain(keys, pack, e, envelope, err))
}

/// [`open_blob_with`] without copying: decrypts inside `envelope`; a stored (uncompressed) blob comes
/// back as a slice of it, a compressed or delta blob as a new buffer. Used by restore and check, which
/// own the pack bytes they read.
///
/// # Errors
/// As [`open_blob_with`], but a blob of the other type is not told apart: on an error the envelope's
/// bytes are spent, and [`explain`] on the bytes read again gives the precise error.
pub fn open_blob_in_place<'b>(
    keys: &RepoKeys,
    pack: &PackId,
    e: &PackEntry,
    envelope: &'b mut [u8],
    base: BaseResolver<'_>,
) -> Result<std::borrow::Cow<'b, [u8]>> {
    let what = format!("blob {} in pack {}", e.id, pack);
    let stored = open_stored(keys, pack, e, envelope, &what)?;
    let data = match stored.split_first() {
        Some((&RAW, body)) if body.len() == e.raw_length as usize => {
            std::borrow::Cow::Borrowed(body)
        }
        _ => std::borrow::Cow::Owned(decode_blob_with(
            stored,
            e.raw_length as usize,
            e.base.as_ref(),
            &what,
            base,
        )?),
    };
    if keys.blob_id(&data) != e.id {
        return Err(Error::integrity(what, "content does not hash to its id"));
    }
    Ok(data)
}

/// Checks that a blob's envelope authenticates as blob `e` of pack `pack` (its bytes are intact and in
/// the right place) without decoding it; `repair index` uses this to salvage blobs of damaged packs.
///
/// # Errors
/// [`Error::IntegrityMismatch`] as [`open_blob`].
pub fn authenticate(keys: &RepoKeys, pack: &PackId, e: &PackEntry, envelope: &[u8]) -> Result<()> {
    let what = format!("blob {} in pack {}", e.id, pack);
    open_stored(keys, pack, e, &mut envelope.to_vec(), &what)
        .map(|_| ())
        .map_err(|err| explain(keys, pack, e, envelope, err))
}

/// Decrypts a blob's envelope and returns its stored plaintext (flag and payload, as
/// [`encode_blob`] or [`encode_delta`] made it), for moving the blob to another pack unchanged.
///
/// # Errors
/// [`Error::IntegrityMismatch`] as [`open_blob`].
pub fn unseal(keys: &RepoKeys, pack: &PackId, e: &PackEntry, envelope: &[u8]) -> Result<Vec<u8>> {
    let what = format!("blob {} in pack {}", e.id, pack);
    let mut buf = envelope.to_vec();
    match open_stored(keys, pack, e, &mut buf, &what) {
        Ok(plain) => Ok(plain.to_vec()),
        Err(err) => Err(explain(keys, pack, e, envelope, err)),
    }
}

/// Decrypts a blob's envelope in place. The item id in its authenticated data binds the base its entry
/// names, so an entry with another (or no) base does not open it.
fn open_stored<'b>(
    keys: &RepoKeys,
    pack: &PackId,
    e: &PackEntry,
    envelope: &'b mut [u8],
    what: &str,
) -> Result<&'b mut [u8]> {
    let item = crate::crypto::blob_item_id(&e.id, e.base.as_ref());
    let len = keys
        .open_in_place(
            Kind::Pack,
            &pack.0,
            blob_kind(e.blob_type),
            &item,
            envelope,
            what,
        )?
        .len();
    // The plaintext lies just before the tag.
    let start = envelope.len() - crate::crypto::TAG_LEN - len;
    Ok(&mut envelope[start..start + len])
}

/// The error to report for blob `e` of pack `pack` when opening it failed with `err`, given its
/// envelope as read (an attempt to open it in place leaves the bytes it decrypted unspecified, so
/// callers that opened in place read it again): a blob of the other type under this id (type
/// confusion) gets its own error, anything else keeps `err`.
pub fn explain(
    keys: &RepoKeys,
    pack: &PackId,
    e: &PackEntry,
    envelope: &[u8],
    err: Error,
) -> Error {
    let what = format!("blob {} in pack {}", e.id, pack);
    let item = crate::crypto::blob_item_id(&e.id, e.base.as_ref());
    let (other, other_name, name) = match e.blob_type {
        BlobType::Data => (Kind::TreeBlob, "tree", "data"),
        BlobType::Tree => (Kind::DataBlob, "data", "tree"),
    };
    if keys
        .open(Kind::Pack, &pack.0, other, &item, envelope, &what)
        .is_ok()
    {
        return Error::WrongType {
            object: what,
            expected: format!("{name} blob"),
            actual: format!("a {other_name} blob"),
        };
    }
    err
}

/// [`explain`] for a caller that opened the envelope in place: reads it from the pack again.
pub fn explain_read(
    backend: &dyn crate::backend::Backend,
    keys: &RepoKeys,
    pack: &PackId,
    e: &PackEntry,
    err: Error,
) -> Error {
    let read = backend.read_range(
        crate::backend::FileType::Pack,
        &pack.to_hex(),
        e.offset as u64,
        e.length as u64,
    );
    match read {
        Ok(envelope) => explain(keys, pack, e, &envelope, err),
        Err(_) => err,
    }
}

fn blob_kind(t: BlobType) -> Kind {
    match t {
        BlobType::Data => Kind::DataBlob,
        BlobType::Tree => Kind::TreeBlob,
    }
}

/// A blob waiting in a pack being built.
struct PendingBlob {
    id: BlobId,
    raw_length: u32,
    stored: Vec<u8>,
    base: Option<BlobId>,
}

/// Collects blobs of one type until the pack is full.
pub struct PackBuilder {
    blob_type: BlobType,
    blobs: Vec<PendingBlob>,
    size: usize,
}

/// A finished pack: its id, bytes and header entries.
pub struct FinishedPack {
    /// The new pack id.
    pub id: PackId,
    /// The whole pack file.
    pub bytes: Vec<u8>,
    /// Header entries (shuffled order).
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack of `blob_type` blobs.
    pub fn new(blob_type: BlobType) -> Self {
        Self {
            blob_type,
            blobs: Vec::new(),
            size: 0,
        }
    }

    /// Adds a blob's stored plaintext (from [`encode_blob`]).
    pub fn add(&mut self, id: BlobId, raw_length: u32, stored: Vec<u8>) {
        self.add_with_base(id, raw_length, stored, None);
    }

    /// Adds a blob's stored plaintext; `base` must be given exactly for a delta (from
    /// [`encode_delta`] against that base).
    pub fn add_with_base(
        &mut self,
        id: BlobId,
        raw_length: u32,
        stored: Vec<u8>,
        base: Option<BlobId>,
    ) {
        self.size += stored.len();
        self.blobs.push(PendingBlob {
            id,
            raw_length,
            stored,
            base,
        });
    }

    /// Bytes collected so far.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the pack holds nothing.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Shuffles the blobs, seals them under a fresh pack's subkey and appends the header.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the pack would exceed 4 GiB.
    pub fn finish(self, keys: &RepoKeys) -> Result<FinishedPack> {
        self.finish_into(keys, Vec::new())
    }

    /// [`PackBuilder::finish`] into `buffer` (cleared first), which may be one a written pack left:
    /// reusing it spares the allocator a pack-sized block per pack.
    ///
    /// # Errors
    /// As [`PackBuilder::finish`].
    pub fn finish_into(mut self, keys: &RepoKeys, mut buffer: Vec<u8>) -> Result<FinishedPack> {
        let id = PackId::random();
        self.blobs.shuffle(&mut rand::thread_rng());
        let oc = keys.object(Kind::Pack, &id.0);
        let kind = blob_kind(self.blob_type);
        let overhead = keys.cipher().overhead();
        let total: usize = self.blobs.iter().map(|b| b.stored.len() + overhead).sum();
        if total > u32::MAX as usize / 2 {
            return Err(Error::InvalidInput("pack larger than 2 GiB".into()));
        }
        // Sealed straight into the pack buffer, each blob's plaintext freed once it is in: the peak is
        // about one pack, not three copies of it.
        buffer.clear();
        buffer.reserve(total + 64 + self.blobs.len() * 77);
        let mut bytes = buffer;
        let mut entries = Vec::with_capacity(self.blobs.len());
        for b in std::mem::take(&mut self.blobs) {
            let offset = bytes.len();
            oc.seal_append(
                kind,
                &crate::crypto::blob_item_id(&b.id, b.base.as_ref()),
                &b.stored,
                &mut bytes,
            );
            entries.push(PackEntry {
                blob_type: self.blob_type,
                id: b.id,
                offset: offset as u32,
                length: (bytes.len() - offset) as u32,
                raw_length: b.raw_length,
                base: b.base,
            });
        }
        let header = oc.seal(Kind::Pack, &id.0, &format::encode_pack_header(&entries));
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        Ok(FinishedPack { id, bytes, entries })
    }
}

/// Reads the header of a whole pack file.
///
/// # Errors
/// [`Error::IntegrityMismatch`] or [`Error::Format`] naming the pack.
pub fn read_header(keys: &RepoKeys, id: &PackId, pack: &[u8]) -> Result<Vec<PackEntry>> {
    let what = format!("header of pack {id}");
    let (blobs_len, env) =
        format::split_pack_trailer(pack).map_err(|e| Error::integrity(&what, e.to_string()))?;
    let plain = keys.open(Kind::Pack, &id.0, Kind::Pack, &id.0, env, &what)?;
    format::decode_pack_header(&plain, blobs_len as u64)
        .map_err(|e| Error::integrity(&what, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Cipher, MasterKey};
    use crate::id::RepoId;
    use proptest::prelude::*;

    fn keys() -> RepoKeys {
        RepoKeys::new(
            MasterKey::generate(),
            RepoId::random(),
            Cipher::XChaCha20Poly1305,
        )
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let random: Vec<u8> = (0..300_000).map(|_| rand::random::<u8>()).collect();
        assert_eq!(encode_blob(&random, 3).unwrap()[0], RAW);
        let text = b"{\"route\":\"orders\"}\n".repeat(1000);
        let e = encode_blob(&text, 3).unwrap();
        assert_eq!(e[0], ZSTD);
        assert!(e.len() < text.len() / 10);
        assert_eq!(decode_blob(&e, text.len(), "t").unwrap(), text);
        assert!(decode_blob(&e, text.len() + 1, "t").is_err());
        assert_eq!(
            encode_blob(&text, 0).unwrap()[0],
            RAW,
            "level 0 turns compression off"
        );
    }

    proptest! {
        // chunk -> pack -> encrypt -> decrypt -> unpack gives the input back.
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..5000), 1..20), aes in any::<bool>()) {
            let k = RepoKeys::new(MasterKey::generate(), RepoId::random(), if aes { Cipher::Aes256Gcm } else { Cipher::XChaCha20Poly1305 });
            let mut pb = PackBuilder::new(BlobType::Data);
            let mut want = std::collections::HashMap::new();
            for b in &blobs {
                let id = k.blob_id(b);
                if want.insert(id, b.clone()).is_none() {
                    pb.add(id, b.len() as u32, encode_blob(b, 3).unwrap());
                }
            }
            let fp = pb.finish(&k).unwrap();
            let entries = read_header(&k, &fp.id, &fp.bytes).unwrap();
            prop_assert_eq!(&entries, &fp.entries);
            for e in &entries {
                let env = &fp.bytes[e.offset as usize..(e.offset + e.length) as usize];
                prop_assert_eq!(&open_blob(&k, &fp.id, e, env).unwrap(), &want[&e.id]);
            }
        }
    }

    #[test]
    fn flipped_byte_names_pack_and_blob() {
        let k = keys();
        let mut pb = PackBuilder::new(BlobType::Data);
        let data = b"some gateway config".to_vec();
        pb.add(
            k.blob_id(&data),
            data.len() as u32,
            encode_blob(&data, 3).unwrap(),
        );
        let mut fp = pb.finish(&k).unwrap();
        fp.bytes[10] ^= 1;
        let e = fp.entries[0];
        let err = open_blob(&k, &fp.id, &e, &fp.bytes[..e.length as usize])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&fp.id.to_hex()) && err.contains(&e.id.to_hex()),
            "{err}"
        );
        let n = fp.bytes.len();
        fp.bytes[n - 10] ^= 1;
        assert!(read_header(&k, &fp.id, &fp.bytes).is_err());
        assert!(read_header(&k, &fp.id, &fp.bytes[..3]).is_err());
    }

    #[test]
    fn delta_blobs_round_trip_and_are_bound_to_their_base() {
        let k = keys();
        // Gateway-like lines whose values do not repeat, so that plain compression gains little.
        let mut x = 7u64;
        let base: Vec<u8> = (0..300)
            .flat_map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("{{\"route\":\"r{:x}\",\"key\":\"{:016x}\"}}\n", x >> 40, x).into_bytes()
            })
            .collect();
        let mut edited = base.clone();
        edited.splice(5000..5010, b"CHANGED!!!".iter().copied());
        let base_id = k.blob_id(&base);
        let plain = encode_blob(&edited, 3).unwrap();
        let delta = encode_delta(&edited, 3, &plain, &base_id, &base)
            .unwrap()
            .expect("a small edit pays as a delta");
        assert!(
            delta.len() < plain.len() / 4,
            "delta {} vs plain {}",
            delta.len(),
            plain.len()
        );
        assert_eq!(delta[0], DELTA);
        // Unrelated data does not pay as a delta.
        let other: Vec<u8> = (0..20_000).map(|_| rand::random::<u8>()).collect();
        assert!(
            encode_delta(&other, 3, &encode_blob(&other, 3).unwrap(), &base_id, &base)
                .unwrap()
                .is_none()
        );

        let mut pb = PackBuilder::new(BlobType::Data);
        let id = k.blob_id(&edited);
        pb.add_with_base(id, edited.len() as u32, delta, Some(base_id));
        let fp = pb.finish(&k).unwrap();
        let e = read_header(&k, &fp.id, &fp.bytes).unwrap()[0];
        assert_eq!(e.base, Some(base_id), "the header names the base");
        let env = &fp.bytes[e.offset as usize..(e.offset + e.length) as usize];
        let resolve = |b: &BlobId| {
            if *b == base_id {
                Ok(base.clone())
            } else {
                Err(Error::integrity("t", "no"))
            }
        };
        assert_eq!(
            open_blob_with(&k, &fp.id, &e, env, &resolve).unwrap(),
            edited
        );
        assert!(
            open_blob(&k, &fp.id, &e, env).is_err(),
            "a delta needs its base"
        );
        let wrong = |_: &BlobId| Ok(b"some other base".to_vec());
        assert!(
            open_blob_with(&k, &fp.id, &e, env, &wrong).is_err(),
            "a wrong base is detected"
        );
        let mut no_base = e;
        no_base.base = None;
        assert!(
            open_blob_with(&k, &fp.id, &no_base, env, &resolve).is_err(),
            "entry and blob must agree on the base"
        );
    }
}
