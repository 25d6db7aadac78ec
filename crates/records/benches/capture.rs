//! Capture against its physical limit (see `keepwire_records::capture_limit`),
//! with the archive key opened by the file provider and, where SoftHSM2 is
//! installed, by an HSM (PKCS#11): capture makes no HSM call per record,
//! so the two rates should match.
//!
//! `cargo bench -p keepwire-records --bench capture`
//! (`KEEPWIRE_BENCH_MESSAGES`, default 5,000). Figures are printed, never
//! asserted; the targets are capture ≥ 80 % of the bare rate, and the HSM
//! within 5 % of the file provider.

use keepwire_records::capture_limit::{measure, CaptureFigures, BATCH};
use keepwire_records::keys::{softhsm, FileKeys, KeyProvider, Pkcs11Keys};

fn run(label: &str, n: u64, keys: &dyn KeyProvider) -> CaptureFigures {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let f = measure(tmp.path(), n, keys).expect("capture benchmark");
    println!("[{label}]");
    println!(
        "  bare MLS decrypt + verify (member storing nothing): {:.0} msgs/s",
        f.bare_per_s
    );
    println!(
        "  records capture, one durable write per record: {:.0} msgs/s = {:.0} % of bare",
        f.single_per_s,
        100.0 * f.single_per_s / f.bare_per_s
    );
    println!(
        "  records capture, batches of {BATCH} on one thread: {:.0} msgs/s = {:.0} % of bare",
        f.batched_per_s,
        100.0 * f.batched_per_s / f.bare_per_s
    );
    println!(
        "  records capture, batches pipelined (as the service runs): {:.0} msgs/s = {:.0} % of bare (target >= 80 %)",
        f.pipelined_per_s,
        100.0 * f.pipelined_per_s / f.bare_per_s
    );
    f
}

fn main() {
    let n: u64 = std::env::var("KEEPWIRE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    println!("{n} messages of 1 KiB, P256_AES128, one core");
    let hsm_dir = tempfile::tempdir().expect("temporary directory");
    // SoftHSM reads its configuration once, before the first PKCS#11 call.
    let hsm = softhsm::Token::setup(hsm_dir.path()).and_then(|t| {
        let (var, conf) = t.env();
        std::env::set_var(var, conf);
        t.init("bench", "1234")
    });
    let keys_dir = tempfile::tempdir().expect("temporary directory");
    let file = FileKeys::open(&keys_dir.path().join("keys")).expect("key directory");
    let rounds = 3;
    let (mut on_file, mut on_hsm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        on_file.push(run("file provider", n, &file).pipelined_per_s);
        if let Ok(config) = &hsm {
            let token = Pkcs11Keys::open(config).expect("SoftHSM2 token");
            on_hsm.push(run("PKCS#11 (SoftHSM2)", n, &token).pipelined_per_s);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let file_rate = median(&mut on_file);
    match hsm {
        Ok(_) => {
            let hsm_rate = median(&mut on_hsm);
            println!(
                "pipelined capture, median of {rounds} interleaved rounds: file provider {file_rate:.0} msgs/s, \
                 PKCS#11 {hsm_rate:.0} msgs/s = {:+.1} % (target within 5 %)",
                100.0 * (hsm_rate / file_rate - 1.0)
            );
        }
        Err(e) => println!("PKCS#11 not measured: {e}"),
    }
}
