//! A device's connection to the server: WebSocket, challenge, requests
//! matched to responses by id, pushed frames queued in arrival order.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use keepwire_protocol::{ClientFrame, Delivery, ProtocolError, Request, ServerBody, ServerFrame};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub mod http;

pub struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    pushes: VecDeque<ServerBody>,
    /// Requests sent with [`Conn::post`] whose answers have not come yet.
    posted: std::collections::BTreeSet<u64>,
    pub nonce: Vec<u8>,
}

/// The refusal a server sent, kept typed so callers can branch on its code.
#[derive(Debug, thiserror::Error)]
#[error("server refused: {0}")]
pub struct Refused(pub ProtocolError);

/// An extra certificate authority to trust (an agency's internal CA), on
/// top of the system's; set once at startup from `--ca-cert`.
static EXTRA_CA: OnceLock<PathBuf> = OnceLock::new();

pub fn trust_ca(path: Option<PathBuf>) {
    if let Some(p) = path {
        let _ = EXTRA_CA.set(p);
    }
}

pub(crate) fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = EXTRA_CA.get() {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read CA certificate {}", path.display()))?;
        for c in certs {
            roots
                .add(c)
                .with_context(|| format!("unusable CA certificate in {}", path.display()))?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(keepwire_schema::tls_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Conn {
    /// Connect to `server` (`http://` on loopback, `https://` with TLS).
    pub async fn connect(server: &str) -> Result<Self> {
        let server = server.trim_end_matches('/');
        let (url, connector) = if let Some(rest) = server.strip_prefix("https://") {
            (
                format!("wss://{rest}/v1/ws"),
                Some(Connector::Rustls(tls_config()?)),
            )
        } else if let Some(rest) = server.strip_prefix("http://") {
            (format!("ws://{rest}/v1/ws"), Some(Connector::Plain))
        } else {
            bail!("server URL must start with https:// (or http:// on loopback): {server}");
        };
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            &url,
            Some(
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(keepwire_protocol::MAX_FRAME_BYTES * 2))
                    .max_frame_size(Some(keepwire_protocol::MAX_FRAME_BYTES * 2)),
            ),
            true, // no Nagle delay: requests are small and answered at once
            connector,
        )
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
        let mut conn = Conn {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            posted: Default::default(),
            nonce: Vec::new(),
        };
        match conn.read().await?.body {
            ServerBody::Challenge { nonce, .. } => conn.nonce = nonce,
            other => bail!("server did not start with a challenge: {other:?}"),
        }
        Ok(conn)
    }

    /// The next frame that is not the answer to a posted request (those
    /// are checked and dropped here: a refusal is an error).
    async fn read(&mut self) -> Result<ServerFrame> {
        loop {
            let f = read_frame(&mut self.ws).await?;
            if let Some(f) = self.unless_posted(f)? {
                return Ok(f);
            }
        }
    }

    fn unless_posted(&mut self, f: ServerFrame) -> Result<Option<ServerFrame>> {
        match f.id {
            Some(id) if self.posted.remove(&id) => match f.body {
                ServerBody::Error { code, message } => {
                    Err(Refused(ProtocolError::new(code, message)).into())
                }
                _ => Ok(None),
            },
            _ => Ok(Some(f)),
        }
    }

    async fn send(&mut self, req: Request) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(Message::Text(ClientFrame::new(id, req).to_json().into()))
            .await
            .context("sending request")?;
        Ok(id)
    }

    /// Send a request without waiting for its answer: the server handles a
    /// connection's requests in order, so later ones see its effect. The
    /// answer is checked when it arrives, during a later read; a refusal
    /// then fails that read. How the records service reports what it
    /// archived: waiting for each answer cost a round trip per report
    /// (measured: 7 reports of 0.5 ms per captured batch at 1,200 msgs/s,
    /// a third of the capture cycle).
    pub async fn post(&mut self, req: Request) -> Result<()> {
        let id = self.send(req).await?;
        self.posted.insert(id);
        Ok(())
    }

    /// Wait for the answers to every posted request (pushes that arrive
    /// meanwhile are queued); a refusal among them is an error.
    pub async fn flush_posted(&mut self) -> Result<()> {
        while !self.posted.is_empty() {
            let f = read_frame(&mut self.ws).await?;
            if let Some(f) = self.unless_posted(f)? {
                if f.id.is_none() {
                    self.pushes.push_back(f.body);
                }
            }
        }
        Ok(())
    }

    /// Send a request and wait for its response; pushes that arrive
    /// meanwhile are queued for [`Conn::next_push`].
    pub async fn request(&mut self, req: Request) -> Result<ServerBody> {
        let id = self.send(req).await?;
        self.answer(id).await
    }

    /// The answer to request `id`; pushes meanwhile are queued.
    async fn answer(&mut self, id: u64) -> Result<ServerBody> {
        loop {
            let f = self.read().await?;
            match f.id {
                Some(rid) if rid == id => {
                    return match f.body {
                        ServerBody::Error { code, message } => {
                            Err(Refused(ProtocolError::new(code, message)).into())
                        }
                        body => Ok(body),
                    }
                }
                Some(_) => continue,
                None => self.pushes.push_back(f.body),
            }
        }
    }

    /// The socket and the pushes queued so far, for a caller that drives
    /// the connection itself (the load generator pipelines requests).
    pub fn into_parts(
        self,
    ) -> (
        WebSocketStream<MaybeTlsStream<TcpStream>>,
        VecDeque<ServerBody>,
    ) {
        (self.ws, self.pushes)
    }

    /// One chunk of an upload, as a binary frame; the server's answer
    /// (where the upload stands), pushes meanwhile queued.
    pub async fn upload_chunk(
        &mut self,
        blob: &keepwire_protocol::attachment::BlobId,
        offset: u64,
        bytes: &[u8],
    ) -> Result<ServerBody> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = keepwire_protocol::BlobChunk {
            id,
            blob: blob.clone(),
            offset,
            bytes: bytes.to_vec(),
        };
        self.ws
            .send(Message::Binary(frame.encode().into()))
            .await
            .context("sending a file")?;
        self.answer(id).await
    }

    /// Up to `len` bytes of `blob` from `offset` (`blob_fetch`, answered
    /// by one binary frame); pushes that arrive meanwhile are queued.
    pub async fn fetch_blob(
        &mut self,
        blob: &keepwire_protocol::attachment::BlobId,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>> {
        let id = self
            .send(Request::BlobFetch {
                blob: blob.clone(),
                offset,
                len,
            })
            .await?;
        loop {
            let text = match self.ws.next().await {
                None => bail!("server closed the connection"),
                Some(Err(e)) => return Err(anyhow!("connection error: {e}")),
                Some(Ok(Message::Binary(bytes))) => {
                    let data = keepwire_protocol::BlobData::decode(&bytes)
                        .map_err(|e| anyhow!("server sent an unreadable binary frame: {e}"))?;
                    if data.id == id {
                        return Ok(data.bytes);
                    }
                    continue;
                }
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) => bail!("server closed the connection"),
                Some(Ok(_)) => continue,
            };
            let f = ServerFrame::from_json(&text)
                .with_context(|| format!("server sent an unreadable frame: {text}"))?;
            let Some(f) = self.unless_posted(f)? else {
                continue;
            };
            match (f.id, f.body) {
                (Some(rid), ServerBody::Error { code, message }) if rid == id => {
                    return Err(Refused(ProtocolError::new(code, message)).into())
                }
                (None, body) => self.pushes.push_back(body),
                _ => {}
            }
        }
    }

    /// Whether pushes are queued (read while waiting for a response).
    pub fn has_queued(&self) -> bool {
        !self.pushes.is_empty()
    }

    /// Ask for what is pending (`sync`); the replay is queued when this
    /// returns (it precedes the answer on the wire). True when the server
    /// stopped at its budget: process what came, then sync again.
    pub async fn sync(&mut self) -> Result<bool> {
        match self.request(Request::Sync).await? {
            ServerBody::Synced { more } => Ok(more),
            other => bail!("unexpected answer to sync: {other:?}"),
        }
    }

    pub fn queued_push(&mut self) -> Option<ServerBody> {
        self.pushes.pop_front()
    }

    /// Put pushes back in front of any that arrived since, keeping order.
    pub fn requeue_front(&mut self, pushes: Vec<ServerBody>) {
        for p in pushes.into_iter().rev() {
            self.pushes.push_front(p);
        }
    }

    /// Take out the queued deliveries of `conv` that precede `seq`, in
    /// order, leaving every other push queued as it was: what must be
    /// processed before one's own commit at `seq` is applied (they arrived
    /// while the commit was on its way).
    pub fn take_deliveries_before(&mut self, conv: &str, seq: u64) -> Vec<Delivery> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.pushes.len());
        for p in self.pushes.drain(..) {
            match p {
                ServerBody::Deliver(d) if d.conv == conv && d.seq < seq => taken.push(d),
                other => kept.push_back(other),
            }
        }
        self.pushes = kept;
        taken
    }

    /// A pushed frame that is already here (queued, or buffered by the
    /// socket), without waiting: how the records service gathers a batch.
    pub fn try_next_push(&mut self) -> Result<Option<ServerBody>> {
        use futures_util::FutureExt;
        if let Some(p) = self.pushes.pop_front() {
            return Ok(Some(p));
        }
        // Reading a frame is cancel-safe (an unfinished one stays buffered
        // in the socket), so one that is not all here yet is simply left.
        while let Some(f) = read_frame(&mut self.ws).now_or_never() {
            if let Some(f) = self.unless_posted(f?)? {
                if f.id.is_none() {
                    return Ok(Some(f.body));
                }
            }
        }
        Ok(None)
    }

    /// The next pushed frame, waiting for one if none is queued.
    pub async fn next_push(&mut self) -> Result<ServerBody> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(p);
        }
        loop {
            let f = self.read().await?;
            if f.id.is_none() {
                return Ok(f.body);
            }
        }
    }
}

/// The next frame the server sent on `stream` (any WebSocket stream or its
/// read half), skipping pings; a close or an unreadable frame is an error.
/// Reading is cancel-safe: an unfinished frame stays buffered.
pub async fn read_frame<S>(stream: &mut S) -> Result<ServerFrame>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            None => bail!("server closed the connection"),
            Some(Err(e)) => return Err(anyhow!("connection error: {e}")),
            Some(Ok(Message::Text(t))) => {
                return ServerFrame::from_json(&t)
                    .with_context(|| format!("server sent an unreadable frame: {t}"))
            }
            Some(Ok(Message::Close(_))) => bail!("server closed the connection"),
            Some(Ok(_)) => continue,
        }
    }
}
