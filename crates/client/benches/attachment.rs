//! Attachment sealing and opening, the CPU half of every file transfer:
//! the device seals a file before upload and opens it after download, and
//! the records service opens each captured file (every segment, both
//! hashes) before archiving it. Prints MB/s for files of 1 MiB and
//! 100 MiB (`KEEPWIRE_BENCH_FILE_MB` for another size), three rounds
//! each, the median last — figures printed, never asserted.
//!
//! `cargo bench -p keepwire-client --bench attachment`

use std::time::Instant;

use keepwire_client::attachment::{open, seal};
use keepwire_protocol::attachment::BlobId;

fn mb_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn main() {
    let mut sizes = vec![1usize, 100];
    if let Some(mb) = std::env::var("KEEPWIRE_BENCH_FILE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        sizes = vec![mb];
    }
    println!(
        "attachment sealing and opening (STREAM, AES-256-GCM, 64 KiB segments, SHA-256 of both)"
    );
    for mb in sizes {
        let file: Vec<u8> = (0..mb << 20).map(|i| (i % 251) as u8).collect();
        let (mut sealing, mut opening) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let mut blob = Vec::with_capacity(file.len() + file.len() / 4096 + 16);
            let t = Instant::now();
            let sealed = seal(&mut &file[..], &mut blob).expect("seal");
            sealing.push(mb_s(file.len(), t.elapsed().as_secs_f64()));
            let reference =
                sealed.reference(BlobId::from_bytes([1; 16]), "f", "application/octet-stream");
            let t = Instant::now();
            open(&reference, &mut &blob[..], &mut std::io::sink()).expect("open");
            opening.push(mb_s(file.len(), t.elapsed().as_secs_f64()));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        println!(
            "{mb:>5} MiB  seal {:>7.0} MB/s   open {:>7.0} MB/s   (rounds: seal {:?}, open {:?})",
            median(&mut sealing.clone()),
            median(&mut opening.clone()),
            sealing.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
            opening.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
        );
    }
}
