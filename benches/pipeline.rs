//! Micro-benchmarks of the storage pipeline, all in memory: chunking, blob ids, compression, encryption,
//! and the whole chunk + hash + compress + pack path.
//!
//! Inputs are deterministic (a seeded xorshift generator), so runs compare. Every group reports
//! throughput in bytes of plaintext. `cargo bench --bench pipeline` takes about a minute or two with the
//! defaults set here (1 s warm-up, 3 s measurement); criterion's options override them, for example
//! `cargo bench --bench pipeline -- --warm-up-time 0.5 --measurement-time 1 compress`.
//! Whole-command figures against restic are the job of `scripts/bench`.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use rayon::prelude::*;

use gatevault::chunker::Chunker;
use gatevault::crypto::{Cipher, Kind, MasterKey, RepoKeys};
use gatevault::format::{BlobType, ChunkerParams};
use gatevault::id::{BlobId, RepoId};
use gatevault::pack::{self, PackBuilder};
use gatevault::repo::DEFAULT_PACK_SIZE;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// zstd level of new repositories.
const LEVEL: i32 = 3;

/// A seeded xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` incompressible bytes.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&r.next().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// `n` bytes of NDJSON that looks like an API-gateway export (compresses about 5-10x).
fn gateway_json(n: usize, seed: u64) -> Vec<u8> {
    const METHODS: [&str; 4] = ["\"GET\"", "\"GET\",\"POST\"", "\"PUT\"", "\"DELETE\""];
    const PLUGINS: [&str; 4] = ["rate-limiting", "jwt", "cors", "request-transformer"];
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 512);
    while out.len() < n {
        let svc = r.below(700);
        let line = format!(
            "{{\"service\":\"svc-{svc}\",\"route\":{{\"name\":\"svc-{svc}-r{}\",\"paths\":[\"/api/v{}/svc-{svc}/{}\"],\"methods\":[{}],\"strip_path\":{}}},\"upstream\":{{\"host\":\"10.{}.{}.{}\",\"port\":{},\"timeout_ms\":{},\"retries\":{}}},\"plugins\":[{{\"name\":\"{}\",\"config\":{{\"minute\":{},\"policy\":\"local\"}}}}],\"tags\":[\"team-{}\",\"tier-{}\"]}}\n",
            r.below(20),
            1 + r.below(3),
            r.next() % 100_000,
            METHODS[r.below(4) as usize],
            r.below(2) == 0,
            r.below(256),
            r.below(256),
            r.below(256),
            8000 + r.below(100),
            1000 * (1 + r.below(60)),
            r.below(5),
            PLUGINS[r.below(4) as usize],
            60 * (1 + r.below(100)),
            r.below(40),
            r.below(3),
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(n);
    out
}

/// `n` bytes of gateway JSON and random data in alternating runs of 64 KiB to 2 MiB.
fn mixed(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        let len =
            (64 * KIB + r.below(2 * MIB as u64 - 64 * KIB as u64) as usize).min(n - out.len());
        if i % 2 == 0 {
            out.extend_from_slice(&gateway_json(len, seed + i));
        } else {
            out.extend_from_slice(&random_bytes(len, seed + i));
        }
        i += 1;
    }
    out
}

/// Fixed keys, so that chunk boundaries (from the key's chunker seed) are the same in every run.
fn keys(cipher: Cipher) -> RepoKeys {
    // `MasterKey::to_bytes` layout: format 1 | repository secret | current epoch | 1 epoch | epoch 0 key.
    let mut b = vec![1u8];
    b.extend_from_slice(&[0x42; 32]);
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&[0x43; 32]);
    let master = MasterKey::from_bytes(&b).expect("fixed master key");
    RepoKeys::new(master, RepoId([7; 32]), cipher)
}

fn bench_chunk(c: &mut Criterion) {
    let data = mixed(16 * MIB, 1);
    let mut g = c.benchmark_group("chunk");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for params in [ChunkerParams::config(), ChunkerParams::bulk()] {
        let name = params.preset.clone();
        let chunker = Chunker::new(params, 0x5eed).expect("preset is valid");
        g.bench_function(BenchmarkId::new("split_16MiB", name), |b| {
            b.iter(|| chunker.split(black_box(&data)).len())
        });
    }
    g.finish();
}

fn bench_hash(c: &mut Criterion) {
    let k = keys(Cipher::XChaCha20Poly1305);
    let mut g = c.benchmark_group("hash");
    g.sample_size(20);
    for (label, size) in [("8KiB", 8 * KIB), ("2MiB", 2 * MIB)] {
        let data = random_bytes(size, 2);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("blob_id", label), |b| {
            b.iter(|| k.blob_id(black_box(&data)))
        });
    }
    g.finish();
}

fn bench_compress(c: &mut Criterion) {
    let mut g = c.benchmark_group("compress");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let inputs = [
        ("json_4MiB", gateway_json(4 * MIB, 3)),
        ("random_4MiB", random_bytes(4 * MIB, 4)),
    ];
    for (label, data) in &inputs {
        g.throughput(Throughput::Bytes(data.len() as u64));
        let stored = pack::encode_blob(data, LEVEL).expect("encodes");
        eprintln!(
            "compress/{label}: stored as {} bytes ({:.1}% of the input)",
            stored.len(),
            100.0 * stored.len() as f64 / data.len() as f64
        );
        g.bench_function(BenchmarkId::new("encode_blob_level3", label), |b| {
            b.iter(|| pack::encode_blob(black_box(data), LEVEL).expect("encodes"))
        });
        g.bench_function(BenchmarkId::new("decode_blob", label), |b| {
            b.iter(|| pack::decode_blob(black_box(&stored), data.len(), "bench").expect("decodes"))
        });
    }
    g.finish();
}

fn bench_encrypt(c: &mut Criterion) {
    let data = random_bytes(2 * MIB, 5);
    let (pack_id, blob_id) = ([1u8; 32], [2u8; 32]);
    let mut g = c.benchmark_group("encrypt");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (label, cipher) in [
        ("xchacha20-poly1305", Cipher::XChaCha20Poly1305),
        ("aes-256-gcm", Cipher::Aes256Gcm),
    ] {
        let k = keys(cipher);
        let oc = k.object(Kind::Pack, &pack_id);
        let env = oc.seal(Kind::DataBlob, &blob_id, &data);
        assert_eq!(
            oc.open(Kind::DataBlob, &blob_id, &env, "bench")
                .expect("opens"),
            data
        );
        g.bench_function(BenchmarkId::new("seal_2MiB", label), |b| {
            b.iter(|| oc.seal(Kind::DataBlob, &blob_id, black_box(&data)))
        });
        g.bench_function(BenchmarkId::new("open_2MiB", label), |b| {
            b.iter(|| {
                oc.open(Kind::DataBlob, &blob_id, black_box(&env), "bench")
                    .expect("opens")
            })
        });
    }
    g.finish();
}

/// Chunks, hashes, deduplicates, compresses and packs `data` as a backup does, on the current rayon pool,
/// keeping the packs in memory; returns the finished packs as (bytes, number of blobs).
fn run_pipeline(k: &RepoKeys, chunker: &Chunker, data: &[u8]) -> Vec<(Vec<u8>, usize)> {
    let mut chunks = Vec::new();
    let mut pos = 0;
    for len in chunker.split(data) {
        chunks.push(&data[pos..pos + len]);
        pos += len;
    }
    let encode = |c: &&[u8]| -> (BlobId, u32, Vec<u8>) {
        (
            k.blob_id(c),
            c.len() as u32,
            pack::encode_blob(c, LEVEL).expect("encodes"),
        )
    };
    let blobs: Vec<_> = chunks.par_iter().map(encode).collect();
    let mut seen = HashSet::new();
    let mut packs = Vec::new();
    let mut builder = PackBuilder::new(BlobType::Data);
    let finish = |b: PackBuilder| {
        let fp = b.finish(k).expect("pack finishes");
        (fp.bytes, fp.entries.len())
    };
    for (id, len, stored) in blobs {
        if !seen.insert(id) {
            continue;
        }
        builder.add(id, len, stored);
        if builder.size() >= DEFAULT_PACK_SIZE as usize {
            packs.push(finish(std::mem::replace(
                &mut builder,
                PackBuilder::new(BlobType::Data),
            )));
        }
    }
    if !builder.is_empty() {
        packs.push(finish(builder));
    }
    packs
}

fn bench_pipeline(c: &mut Criterion) {
    let data = mixed(32 * MIB, 6);
    let k = keys(Cipher::XChaCha20Poly1305);
    let chunker = Chunker::new(ChunkerParams::config(), k.chunker_seed()).expect("preset is valid");
    let packs = run_pipeline(&k, &chunker, &data);
    let stored: usize = packs.iter().map(|(b, _)| b.len()).sum();
    let blobs: usize = packs.iter().map(|(_, n)| n).sum();
    assert!(
        blobs >= data.len() / (64 * KIB),
        "every chunk is stored ({blobs} blobs)"
    );
    eprintln!(
        "pipeline: 32 MiB mixed input -> {} packs, {blobs} blobs, {stored} bytes stored ({:.1}%)",
        packs.len(),
        100.0 * stored as f64 / data.len() as f64
    );
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    let threads = rayon::current_num_threads();
    for (label, pool) in [
        (format!("{threads}_threads"), None),
        ("1_thread".to_string(), Some(&one)),
    ] {
        g.bench_function(
            BenchmarkId::new("chunk_hash_encode_pack_32MiB", label),
            |b| {
                b.iter(|| match pool {
                    Some(p) => p.install(|| run_pipeline(&k, &chunker, black_box(&data)).len()),
                    None => run_pipeline(&k, &chunker, black_box(&data)).len(),
                })
            },
        );
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_chunk, bench_hash, bench_compress, bench_encrypt, bench_pipeline
}
criterion_main!(benches);
