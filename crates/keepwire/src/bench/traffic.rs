//! Traffic through the real protocol: conversations of real MLS devices
//! (the client crate's `Device`, in memory) on real WebSockets, each
//! connection pipelined (many requests in flight, answers matched by id, as
//! the server allows). One phase sends a fixed number of 1 KiB messages and
//! measures every step a user would feel: the sender's receipt
//! (acknowledgement), the recipients' delivery, and the records service's
//! capture, read from the server's own record of what the records member
//! has acknowledged as archived.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use keepwire_client::{Device, Incoming};
use keepwire_protocol::content::Content;
use keepwire_protocol::{ClientFrame, ErrorCode, Request, ServerBody};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::server::ServerProc;
use super::stats::Samples;
use crate::net::read_frame;
use crate::session;

mod capture;
use capture::CapturePoller;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One device and its connection, outside the `Online` shell so its
/// requests can be pipelined.
pub struct Member {
    device: Device,
    ws: Ws,
    next_id: u64,
}

/// A conversation: one sender, the others receive (the records member is
/// the server's, in every conversation).
pub struct Group {
    conv: String,
    sender: Member,
    recipients: Vec<Member>,
}

/// How many enrolments and joins run at once during setup.
const SETUP_PARALLEL: usize = 16;

/// Enrol `codes` (in order: conversation `c` gets users `c*members ..`) as
/// in-memory devices and make `conversations` conversations of `members`
/// devices each; the first device of each creates it.
pub async fn setup(
    url: &str,
    names: &[String],
    codes: &[String],
    conversations: usize,
    members: usize,
) -> Result<Vec<Group>> {
    let gate = Arc::new(Semaphore::new(SETUP_PARALLEL));
    let mut set = JoinSet::new();
    for (i, code) in codes.iter().enumerate() {
        let (url, code, gate) = (url.to_string(), code.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut online = session::enroll_in_memory(&url, &code).await?;
            online.acknowledge_notice().await?;
            anyhow::Ok((i, online))
        });
    }
    let mut onlines: Vec<Option<session::Online>> = (0..codes.len()).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, online) = r??;
        onlines[i] = Some(online);
    }
    let mut groups = Vec::with_capacity(conversations);
    let mut it = onlines
        .into_iter()
        .map(|o| o.ok_or_else(|| anyhow!("a device was not enrolled")));
    for c in 0..conversations {
        let mut creator = it.next().context("too few devices")??;
        let others: Vec<String> = names[c * members + 1..(c + 1) * members].to_vec();
        let conv = creator
            .create(&others)
            .await
            .context("creating a conversation")?;
        let mut joins = JoinSet::new();
        for k in 1..members {
            let mut online = it.next().context("too few devices")??;
            let gate = gate.clone();
            joins.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                online.sync().await.context("joining a conversation")?;
                anyhow::Ok((k, online))
            });
        }
        let mut recipients: Vec<(usize, session::Online)> = Vec::new();
        while let Some(r) = joins.join_next().await {
            recipients.push(r??);
        }
        recipients.sort_by_key(|(k, _)| *k);
        groups.push(Group {
            conv,
            sender: member(creator),
            recipients: recipients.into_iter().map(|(_, o)| member(o)).collect(),
        });
    }
    Ok(groups)
}

fn member(online: session::Online) -> Member {
    let (ws, _pushes) = online.conn.into_parts();
    Member {
        device: online.device,
        ws,
        next_id: 1_000_000,
    }
}

/// What one phase sends, and how.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    /// Messages in all, spread evenly over the conversations' senders.
    pub messages: usize,
    /// Messages in flight (sent, not yet receipted) across all senders.
    pub window: usize,
    /// Encrypt every message before the timed part (the server measured
    /// without the clients' crypto); otherwise devices encrypt as they
    /// send and recipients decrypt what they receive.
    pub preencrypted: bool,
    /// Open-loop pacing in messages per second (all senders together).
    pub rate: Option<f64>,
}

/// What one phase measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct Figures {
    pub messages: usize,
    pub accepted_per_s: f64,
    pub captured_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// Per message, the latency to the last of its recipients.
    pub last_p50_ms: f64,
    pub last_p99_ms: f64,
    pub capture_p50_ms: f64,
    pub capture_p99_ms: f64,
    pub server_cpu_s_per_1k: f64,
    pub server_rss_mib: f64,
    /// Sends the server deferred ("records capture unavailable": the
    /// records service was at its backlog limit) and the sender retried.
    pub deferred: u64,
    pub seconds: f64,
    /// Paced phases: how late the generator itself handed messages to its
    /// sockets (after encrypting), against when they were due. This part
    /// of the latencies is the load generator's own CPU queue, not the
    /// server's.
    #[serde(default)]
    pub send_lag_p50_ms: f64,
    #[serde(default)]
    pub send_lag_p99_ms: f64,
}

struct SenderOut {
    conv: usize,
    ack: Samples,
    /// (seq, when it was first sent)
    sent: Vec<(u64, Instant)>,
    last_receipt: Instant,
    deferred: u64,
    /// When paced: handed to the socket writer minus due.
    lag: Samples,
}

/// Run one phase over `groups` and give them back for the next one.
pub async fn run_phase(
    server: &ServerProc,
    groups: Vec<Group>,
    phase: Phase,
) -> Result<(Vec<Group>, Figures)> {
    let nconv = groups.len();
    let per_sender = phase.messages / nconv;
    let total = per_sender * nconv;
    let text = "x".repeat(1024);
    let mut groups = groups;
    // Prepared frames, when the clients' crypto is kept out of the timing.
    let mut prepared: Vec<Option<Vec<String>>> = Vec::with_capacity(nconv);
    for g in groups.iter_mut() {
        if phase.preencrypted {
            let mut frames = Vec::with_capacity(per_sender);
            for i in 0..per_sender {
                let req = encrypt(&mut g.sender.device, &g.conv, &text)?;
                frames.push(ClientFrame::new(g.sender.next_id + i as u64, req).to_json());
            }
            prepared.push(Some(frames));
        } else {
            prepared.push(None);
        }
    }

    let convs: Vec<String> = groups.iter().map(|g| g.conv.clone()).collect();
    let poller = CapturePoller::start(server, convs.clone())?;
    let cpu0 = server.cpu_seconds();
    let gate = Arc::new(Semaphore::new(phase.window.max(1)));
    let t0 = Instant::now();
    let mut senders = JoinSet::new();
    let mut receivers = JoinSet::new();
    for (c, (g, frames)) in groups.into_iter().zip(prepared).enumerate() {
        let gate = gate.clone();
        senders.spawn(send_all(
            c,
            g.sender,
            g.conv.clone(),
            per_sender,
            frames,
            gate,
            t0,
            phase,
            nconv,
        ));
        for (r, m) in g.recipients.into_iter().enumerate() {
            receivers.spawn(receive_all(
                c,
                r,
                m,
                g.conv.clone(),
                per_sender,
                !phase.preencrypted,
            ));
        }
    }
    let limit = Duration::from_secs(600);
    let mut sender_outs = Vec::new();
    let mut back_senders = HashMap::new();
    while let Some(r) = tokio::time::timeout(limit, senders.join_next())
        .await
        .context("senders did not finish within 10 minutes")?
    {
        let (m, out) = r??;
        back_senders.insert(out.conv, m);
        sender_outs.push(out);
    }
    let mut targets = vec![0u64; nconv];
    for o in &sender_outs {
        targets[o.conv] = o.sent.iter().map(|(s, _)| *s).max().unwrap_or(0);
    }
    let mut arrivals: Vec<(usize, usize, Arrivals)> = Vec::new();
    let mut back_recipients: HashMap<(usize, usize), Member> = HashMap::new();
    while let Some(r) = tokio::time::timeout(limit, receivers.join_next())
        .await
        .context("recipients did not receive everything within 10 minutes")?
    {
        let (c, k, m, a) = r??;
        back_recipients.insert((c, k), m);
        arrivals.push((c, k, a));
    }
    let captured = poller.finish(targets).await?;
    let cpu = server.cpu_seconds() - cpu0;
    let (rss, _) = server.rss();

    // Join the three views of each message by (conversation, seq).
    let mut sent_at: HashMap<(usize, u64), Instant> = HashMap::new();
    let mut ack = Samples::default();
    let mut last_receipt = t0;
    let mut deferred = 0;
    let mut lag = Samples::default();
    for o in sender_outs {
        last_receipt = last_receipt.max(o.last_receipt);
        deferred += o.deferred;
        ack.extend(o.ack);
        lag.extend(o.lag);
        for (seq, at) in o.sent {
            sent_at.insert((o.conv, seq), at);
        }
    }
    let mut e2e = Samples::default();
    let mut last: HashMap<(usize, u64), Instant> = HashMap::new();
    for (c, _, a) in &arrivals {
        for (seq, at) in a {
            if let Some(s) = sent_at.get(&(*c, *seq)) {
                e2e.push(at.saturating_duration_since(*s));
                let e = last.entry((*c, *seq)).or_insert(*at);
                *e = (*e).max(*at);
            }
        }
    }
    let mut last_lat = Samples::default();
    for (k, at) in &last {
        if let Some(s) = sent_at.get(k) {
            last_lat.push(at.saturating_duration_since(*s));
        }
    }
    let mut capture = Samples::default();
    let mut captured_end = t0;
    for ((c, seq), s) in &sent_at {
        if let Some(at) = captured.when(*c, *seq) {
            capture.push(at.saturating_duration_since(*s));
            captured_end = captured_end.max(at);
        }
    }
    if capture.len() != total {
        bail!(
            "only {} of {total} messages were seen archived",
            capture.len()
        );
    }
    let mut groups = Vec::with_capacity(nconv);
    for (c, conv) in convs.into_iter().enumerate() {
        let sender = back_senders.remove(&c).context("a sender went missing")?;
        let mut recipients = Vec::new();
        let mut k = 0;
        while let Some(m) = back_recipients.remove(&(c, k)) {
            recipients.push(m);
            k += 1;
        }
        groups.push(Group {
            conv,
            sender,
            recipients,
        });
    }
    let accept_s = (last_receipt - t0).as_secs_f64();
    let figures = Figures {
        messages: total,
        accepted_per_s: total as f64 / accept_s,
        captured_per_s: total as f64 / (captured_end - t0).as_secs_f64(),
        ack_p50_ms: ack.ms(0.5),
        ack_p99_ms: ack.ms(0.99),
        ack_p999_ms: ack.ms(0.999),
        e2e_p50_ms: e2e.ms(0.5),
        e2e_p99_ms: e2e.ms(0.99),
        last_p50_ms: last_lat.ms(0.5),
        last_p99_ms: last_lat.ms(0.99),
        capture_p50_ms: capture.ms(0.5),
        capture_p99_ms: capture.ms(0.99),
        server_cpu_s_per_1k: cpu * 1000.0 / total as f64,
        server_rss_mib: rss as f64 / (1024.0 * 1024.0),
        deferred,
        seconds: (captured_end.max(last_receipt) - t0).as_secs_f64(),
        send_lag_p50_ms: if lag.len() > 0 { lag.ms(0.5) } else { 0.0 },
        send_lag_p99_ms: if lag.len() > 0 { lag.ms(0.99) } else { 0.0 },
    };
    Ok((groups, figures))
}

fn encrypt(device: &mut Device, conv: &str, text: &str) -> Result<Request> {
    let content = Content::text(text, None, false, 0);
    Ok(device.encrypt(conv, &content)?)
}

/// One sender: a writer draining a queue into the socket, a producer
/// putting messages in it as the window (and the pace) allow, and a reader
/// matching receipts to requests. A send the server defers because capture
/// is at its backlog limit is sent again, as a device would.
#[allow(clippy::too_many_arguments)]
async fn send_all(
    c: usize,
    m: Member,
    conv: String,
    count: usize,
    prepared: Option<Vec<String>>,
    gate: Arc<Semaphore>,
    t0: Instant,
    phase: Phase,
    nconv: usize,
) -> Result<(Member, SenderOut)> {
    let Member {
        device,
        ws,
        next_id,
    } = m;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let inflight: Mutex<HashMap<u64, (Instant, String, OwnedSemaphorePermit)>> =
        Mutex::new(HashMap::new());
    let inflight = &inflight;
    let writer = async move {
        while let Some(t) = rx.recv().await {
            sink.send(Message::Text(t.into()))
                .await
                .context("sending")?;
        }
        anyhow::Ok(sink)
    };
    let tx_retry = tx.clone();
    let text = "x".repeat(1024);
    let conv_ref = &conv;
    let producer = async move {
        let mut device = device;
        let mut prepared = prepared.map(|v| v.into_iter());
        let mut lag = Samples::default();
        for i in 0..count {
            let permit = gate.clone().acquire_owned().await?;
            // Paced, a message's latency counts from when it was due, so a
            // generator falling behind shows up in the figures instead of
            // hiding the queue it built (coordinated omission).
            let mut due = None;
            if let Some(rate) = phase.rate {
                let at = t0 + Duration::from_secs_f64((i * nconv + c) as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                due = Some(at);
            }
            let id = next_id + i as u64;
            let frame = match prepared.as_mut() {
                Some(p) => p.next().context("prepared frames ran out")?,
                None => ClientFrame::new(id, encrypt(&mut device, conv_ref, &text)?).to_json(),
            };
            let sent = due.unwrap_or_else(Instant::now);
            if due.is_some() {
                lag.push(sent.elapsed());
            }
            lock(inflight).insert(id, (sent, frame.clone(), permit));
            tx.send(frame)
                .map_err(|_| anyhow!("connection writer stopped"))?;
        }
        anyhow::Ok((device, lag))
    };
    let reader = async move {
        let mut out = SenderOut {
            conv: c,
            ack: Samples::default(),
            sent: Vec::with_capacity(count),
            last_receipt: t0,
            deferred: 0,
            lag: Samples::default(),
        };
        while out.sent.len() < count {
            let f = read_frame(&mut stream).await?;
            let Some(id) = f.id else { continue };
            match f.body {
                ServerBody::Receipt(r) => {
                    let (at, _, _permit) = lock(inflight)
                        .remove(&id)
                        .ok_or_else(|| anyhow!("a receipt for an unknown request {id}"))?;
                    let now = Instant::now();
                    out.ack.push(now - at);
                    out.sent.push((r.seq, at));
                    out.last_receipt = now;
                }
                ServerBody::Error {
                    code: ErrorCode::RecordsUnavailable,
                    ..
                } => {
                    out.deferred += 1;
                    let frame = lock(inflight)
                        .get(&id)
                        .map(|(_, f, _)| f.clone())
                        .ok_or_else(|| anyhow!("a refusal for an unknown request {id}"))?;
                    // Resent a moment later, without holding up the
                    // receipts behind it on this connection.
                    let tx = tx_retry.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let _ = tx.send(frame);
                    });
                }
                ServerBody::Error { code, message } => {
                    bail!("the server refused a message: {code}: {message}")
                }
                _ => {}
            }
        }
        drop(tx_retry);
        anyhow::Ok((stream, out))
    };
    // The first failure ends the sender at once (and releases its window
    // permits), instead of leaving the other two waiting for it.
    let (sink, (device, lag), (stream, mut out)) = tokio::try_join!(writer, producer, reader)?;
    out.lag = lag;
    let ws = stream
        .reunite(sink)
        .map_err(|_| anyhow!("socket halves do not match"))?;
    Ok((
        Member {
            device,
            ws,
            next_id: next_id + count as u64,
        },
        out,
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a task panicked; its data (timestamps) is
    // still usable for the rest of the run.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Arrivals = Vec<(u64, Instant)>;

/// One recipient: timestamps each delivery as it arrives (after decrypting
/// it, when devices do their own crypto) and acknowledges every 32nd and
/// the last, as its cursor.
async fn receive_all(
    c: usize,
    k: usize,
    mut m: Member,
    conv: String,
    expect: usize,
    decrypt: bool,
) -> Result<(usize, usize, Member, Arrivals)> {
    let mut arrivals = Vec::with_capacity(expect);
    while arrivals.len() < expect {
        let f = read_frame(&mut m.ws).await?;
        match (f.id, f.body) {
            (None, ServerBody::Deliver(d)) if d.conv == conv => {
                if decrypt {
                    match m.device.process(&d)? {
                        Incoming::Application { .. } => m.device.save(&d.conv, d.seq)?,
                        other => bail!("expected a message, got {other:?}"),
                    }
                }
                arrivals.push((d.seq, Instant::now()));
                if arrivals.len() % 32 == 0 || arrivals.len() == expect {
                    let ack = Request::Ack {
                        conv: conv.clone(),
                        seq: d.seq,
                    };
                    let frame = ClientFrame::new(m.next_id, ack).to_json();
                    m.next_id += 1;
                    m.ws.send(Message::Text(frame.into())).await?;
                }
            }
            (Some(_), ServerBody::Error { code, message }) => {
                bail!("the server refused an acknowledgement: {code}: {message}")
            }
            _ => {}
        }
    }
    Ok((c, k, m, arrivals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_archived_when_the_first_acknowledgement_covers_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // conversation 0 acknowledged up to 3 at 10 ms, up to 7 at 20 ms
        let c = super::capture::Captured(vec![vec![(3, at(10)), (7, at(20))], vec![]]);
        assert_eq!(c.when(0, 1), Some(at(10)));
        assert_eq!(c.when(0, 3), Some(at(10)));
        assert_eq!(c.when(0, 4), Some(at(20)));
        assert_eq!(c.when(0, 7), Some(at(20)));
        assert_eq!(c.when(0, 8), None, "not archived yet");
        assert_eq!(c.when(1, 1), None);
        assert_eq!(c.when(2, 1), None, "unknown conversation");
    }
}
