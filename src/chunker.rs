//! Content-defined chunking with FastCDC (v2020) and a secret gear seed.
//!
//! Parameters come from the repository config ([`ChunkerParams`]); the seed comes from the master key so
//! that chunk boundaries do not reveal plaintext to someone who only sees blob sizes.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization};

use crate::error::{Error, Result};
use crate::format::ChunkerParams;

/// Splits byte streams into chunks.
#[derive(Clone, Debug)]
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
}

impl Chunker {
    /// A chunker with validated `params` and a secret `seed`.
    ///
    /// # Errors
    /// [`Error::Format`] when `params` are out of range.
    pub fn new(params: ChunkerParams, seed: u64) -> Result<Self> {
        params.validate()?;
        Ok(Self { params, seed })
    }

    /// The largest chunk this chunker makes.
    pub fn max_size(&self) -> usize {
        self.params.max_size as usize
    }

    fn cdc<'a>(&self, data: &'a [u8]) -> FastCDC<'a> {
        let p = &self.params;
        FastCDC::with_level_and_seed(
            data,
            p.min_size,
            p.avg_size,
            p.max_size,
            Normalization::Level1,
            self.seed,
        )
    }

    /// Chunk lengths of a whole in-memory buffer.
    pub fn split(&self, data: &[u8]) -> Vec<usize> {
        if data.is_empty() {
            return vec![];
        }
        self.cdc(data).map(|c| c.length).collect()
    }

    /// Reads `r` to its end and calls `batch` with runs of consecutive chunks (in order) of at least
    /// `batch_bytes` (but the last). Memory stays near `batch_bytes + max_size`.
    ///
    /// # Errors
    /// Read errors (named by `what`) and whatever `batch` returns.
    pub fn stream<R: Read>(
        &self,
        mut r: R,
        batch_bytes: usize,
        what: &str,
        mut batch: impl FnMut(Vec<Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        let max = self.max_size();
        let cap = batch_bytes.max(2 * max);
        // One buffer for the whole stream: `filled` bytes are valid; no per-read zeroing or reallocation.
        let mut buf: Vec<u8> = vec![0; cap];
        let mut filled = 0;
        let mut eof = false;
        loop {
            while !eof && filled < cap {
                match r.read(&mut buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(format!("reading {what}"), e)),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            let data = &buf[..filled];
            let cdc = self.cdc(data);
            let mut pos = 0;
            let mut out = Vec::new();
            // Without EOF, only cut where at least `max` bytes remain, so that a cut is never premature.
            while pos < filled && (eof || filled - pos >= max) {
                let (_, end) = cdc.cut(pos, filled - pos);
                out.push(data[pos..end].to_vec());
                pos = end;
            }
            buf.copy_within(pos..filled, 0);
            filled -= pos;
            if !out.is_empty() {
                batch(out)?;
            }
            if eof && filled == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn streaming_equals_whole_buffer() {
        let c = Chunker::new(ChunkerParams::config(), 42).unwrap();
        let d = data(1_000_000, 1);
        let whole = c.split(&d);
        let mut streamed = vec![];
        c.stream(&d[..], 100_000, "t", |b| {
            streamed.extend(b.iter().map(|x| x.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(streamed, whole);
        assert_eq!(whole.iter().sum::<usize>(), d.len());
        assert!(whole.iter().all(|&l| l <= 64 * 1024));
        let avg = d.len() / whole.len();
        assert!(
            (4_000..20_000).contains(&avg),
            "average chunk {avg} near 8 KiB"
        );
    }

    #[test]
    fn seed_changes_boundaries_and_edits_stay_local() {
        let d = data(300_000, 2);
        let a = Chunker::new(ChunkerParams::config(), 1).unwrap();
        let b = Chunker::new(ChunkerParams::config(), 2).unwrap();
        assert_ne!(a.split(&d), b.split(&d));
        let mut e = d.clone();
        e[150_000] ^= 1;
        let (x, y) = (a.split(&d), a.split(&e));
        let same = x.iter().zip(&y).filter(|(p, q)| p == q).count();
        assert!(same + 3 >= x.len(), "one edit changes at most a few chunks");
    }

    proptest! {
        #[test]
        fn chunks_cover_input(len in 0usize..200_000, seed in any::<u64>()) {
            let d = data(len, seed);
            let c = Chunker::new(ChunkerParams::config(), seed).unwrap();
            prop_assert_eq!(c.split(&d).iter().sum::<usize>(), len);
        }
    }
}
