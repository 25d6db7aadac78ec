//! Capture against its physical limit (see `keepwire_records::capture_limit`).
//!
//! `cargo bench -p keepwire-records --bench capture`
//! (`KEEPWIRE_BENCH_MESSAGES`, default 5,000). Figures are printed, never
//! asserted; the target is capture ≥ 80 % of the bare rate.

fn main() {
    let n: u64 = std::env::var("KEEPWIRE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let tmp = tempfile::tempdir().expect("temporary directory");
    let f = keepwire_records::capture_limit::measure(tmp.path(), n).expect("capture benchmark");
    println!("{n} messages of 1 KiB, P256_AES128, one core");
    println!(
        "bare MLS decrypt + verify (member storing nothing): {:.0} msgs/s",
        f.bare_per_s
    );
    println!(
        "records capture, one durable write per record: {:.0} msgs/s = {:.0} % of bare",
        f.single_per_s,
        100.0 * f.single_per_s / f.bare_per_s
    );
    println!(
        "records capture, batches of {} on one thread: {:.0} msgs/s = {:.0} % of bare",
        keepwire_records::capture_limit::BATCH,
        f.batched_per_s,
        100.0 * f.batched_per_s / f.bare_per_s
    );
    println!(
        "records capture, batches pipelined (archive writer thread, as the service runs): {:.0} msgs/s = {:.0} % of bare (target >= 80 %)",
        f.pipelined_per_s,
        100.0 * f.pipelined_per_s / f.bare_per_s
    );
}
