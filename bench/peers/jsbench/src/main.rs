//! JetStream durable publish benchmark: N messages of SIZE bytes to a file
//! stream, WINDOW publishes awaiting their acknowledgement at once (the
//! same "in flight" as `keepwire bench`). Prints one JSON line.
//! usage: jsbench URL N SIZE WINDOW SYSTEM-LABEL ROUND
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::stream::{FuturesUnordered, StreamExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        return Err("usage: jsbench URL N SIZE WINDOW SYSTEM-LABEL ROUND".into());
    }
    let (url, n, size, window) = (&a[1], a[2].parse::<usize>()?, a[3].parse::<usize>()?, a[4].parse::<usize>()?);
    let client = async_nats::connect(url.as_str()).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream("BENCH").await;
    js.create_stream(stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![7u8; size]);
    let t0 = Instant::now();
    let mut lats: Vec<Duration> = Vec::with_capacity(n);
    let mut inflight = FuturesUnordered::new();
    for _ in 0..n {
        if inflight.len() >= window {
            if let Some(l) = inflight.next().await {
                lats.push(l?);
            }
        }
        let s = Instant::now();
        let ack = js.publish("bench.a", payload.clone()).await?;
        inflight.push(async move { ack.await.map(|_| s.elapsed()) });
    }
    while let Some(l) = inflight.next().await {
        lats.push(l?);
    }
    let dt = t0.elapsed().as_secs_f64();
    lats.sort();
    let p = |q: f64| lats[((lats.len() as f64 * q).ceil() as usize).clamp(1, lats.len()) - 1].as_secs_f64() * 1e3;
    let stored = js.get_stream("BENCH").await?.info().await?.state.messages;
    js.delete_stream("BENCH").await?;
    if stored != n as u64 {
        return Err(format!("only {stored} of {n} messages stored").into());
    }
    println!(
        "{{\"system\":\"{}\",\"scenario\":\"throughput\",\"mode\":\"\",\"window\":{window},\"label\":\"{}\",\"messages\":{n},\"accepted_per_s\":{:.1},\"ack_p50_ms\":{:.3},\"ack_p99_ms\":{:.3},\"ack_p999_ms\":{:.3}}}",
        a[5], a[6], n as f64 / dt, p(0.5), p(0.99), p(0.999)
    );
    Ok(())
}
