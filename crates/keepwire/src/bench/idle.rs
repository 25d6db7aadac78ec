//! Idle connections: how many enrolled devices can stay connected, and
//! what each costs the server in memory. Devices here carry only their
//! signing key (they authenticate and then wait, as phones in pockets do),
//! so tens of thousands fit in the load generator. Connections come from
//! several 127.x source addresses, since one source address to one port
//! has only about 28,000 ephemeral ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::SinkExt;
use keepwire_client::device::{new_signature_key, sign_challenge};
use keepwire_protocol::{ClientFrame, Request, ServerBody};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::server::{provision, raise_fd_limit, ServerProc};
use crate::net::read_frame;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct IdleFigures {
    /// Devices asked for, and the ones the open-file limit allowed.
    pub requested: usize,
    pub devices: usize,
    pub connected: usize,
    pub enrol_s: f64,
    pub connect_s: f64,
    pub connects_per_s: f64,
    pub server_rss_before_mib: f64,
    pub server_rss_after_mib: f64,
    pub server_rss_per_connection_kib: f64,
    pub fd_limit: u64,
    pub source_addresses: usize,
}

/// Connections per source address (below the ~28,000 ephemeral ports).
const PER_SOURCE: usize = 10_000;
/// Connection attempts in flight at once.
const PARALLEL: usize = 256;

type Ws = WebSocketStream<TcpStream>;

async fn open(server: SocketAddr, source: IpAddr) -> Result<(Ws, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding to {source}"))?;
    let stream = socket.connect(server).await.context("connecting")?;
    stream.set_nodelay(true)?;
    // Idle devices need little buffer; the default 128 KiB each would make
    // the load generator, not the server, run out of memory.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{server}/v1/ws"),
        stream,
        Some(config),
    )
    .await
    .context("WebSocket handshake")?;
    match read_frame(&mut ws).await?.body {
        ServerBody::Challenge { nonce, .. } => Ok((ws, nonce)),
        other => bail!("expected a challenge, got {other:?}"),
    }
}

async fn request(ws: &mut Ws, req: Request) -> Result<ServerBody> {
    ws.send(Message::Text(ClientFrame::new(1, req).to_json().into()))
        .await?;
    loop {
        let f = read_frame(ws).await?;
        if f.id == Some(1) {
            return match f.body {
                ServerBody::Error { code, message } => bail!("refused: {code}: {message}"),
                body => Ok(body),
            };
        }
    }
}

/// The source address of connection `i` of a phase (0: enrolment, 1:
/// the measured connections): 127.1.1.1, 127.1.2.1, … then 127.2.1.1, …
/// — all loopback on Linux. Separate ranges per phase, since enrolment's
/// closed connections hold their ports for a while (TIME_WAIT).
fn source_for(phase: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1 + phase, 1 + (i / PER_SOURCE) as u8, 1))
}

pub async fn run(dir: &std::path::Path, requested: usize) -> Result<IdleFigures> {
    let fd_limit = raise_fd_limit(requested as u64 + 10_000);
    // Each connection is one descriptor in the server and one here; keep
    // room for the server's files and the runtime.
    let devices = requested.min(fd_limit.saturating_sub(1_000) as usize);
    if devices < requested {
        println!(
            "  the open-file limit is {fd_limit} and cannot be raised here (needs CAP_SYS_RESOURCE): {devices} of {requested} devices"
        );
    }
    if devices == 0 {
        bail!("the open-file limit ({fd_limit}) leaves no room for connections");
    }
    let names: Vec<String> = (0..devices).map(|i| format!("idle-{i}")).collect();
    let codes = provision(dir, &names)?;
    let server = ServerProc::start(dir, &[])?;
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .context("server address")?;
    let gate = Arc::new(Semaphore::new(PARALLEL));

    // Enrol every device (setup; timed for information only).
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (i, code) in codes.into_iter().enumerate() {
        let gate = gate.clone();
        set.spawn(async move {
            let _p = gate.acquire_owned().await?;
            let (secret, public) = new_signature_key()?;
            let (mut ws, nonce) = open(addr, source_for(0, i)).await?;
            let body = request(
                &mut ws,
                Request::Enroll {
                    code,
                    signature_key: public,
                    signature: sign_challenge(&secret, &nonce)?,
                },
            )
            .await?;
            let _ = ws.close(None).await;
            match body {
                ServerBody::Authenticated { device_id, .. } => anyhow::Ok((i, secret, device_id)),
                other => bail!("unexpected answer to enroll: {other:?}"),
            }
        });
    }
    let mut enrolled = Vec::with_capacity(devices);
    while let Some(r) = set.join_next().await {
        enrolled.push(r??);
    }
    let enrol_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_before, _) = server.rss();

    // Connect and authenticate them all, and keep them open.
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (i, secret, device_id) in enrolled {
        let gate = gate.clone();
        set.spawn(async move {
            let _p = gate.acquire_owned().await?;
            let (mut ws, nonce) = open(addr, source_for(1, i)).await?;
            let signature = sign_challenge(&secret, &nonce)?;
            match request(
                &mut ws,
                Request::Auth {
                    device_id,
                    signature,
                },
            )
            .await?
            {
                ServerBody::Authenticated { .. } => anyhow::Ok(ws),
                other => bail!("unexpected answer to auth: {other:?}"),
            }
        });
    }
    let mut open_conns = Vec::with_capacity(devices);
    while let Some(r) = set.join_next().await {
        open_conns.push(r??);
    }
    let connect_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, _) = server.rss();
    let connected = open_conns.len();
    drop(open_conns);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(IdleFigures {
        requested,
        devices,
        connected,
        enrol_s,
        connect_s,
        connects_per_s: connected as f64 / connect_s,
        server_rss_before_mib: mib(rss_before),
        server_rss_after_mib: mib(rss_after),
        server_rss_per_connection_kib: rss_after.saturating_sub(rss_before) as f64
            / 1024.0
            / connected.max(1) as f64,
        fd_limit,
        source_addresses: devices.div_ceil(PER_SOURCE),
    })
}
