//! A device's connection to the server: WebSocket, challenge, requests
//! matched to responses by id, pushed frames queued in arrival order.

use std::collections::VecDeque;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use keepwire_protocol::{ClientFrame, ProtocolError, Request, ServerBody, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    pushes: VecDeque<ServerBody>,
    pub nonce: Vec<u8>,
}

/// The refusal a server sent, kept typed so callers can branch on its code.
#[derive(Debug, thiserror::Error)]
#[error("server refused: {0}")]
pub struct Refused(pub ProtocolError);

impl Conn {
    pub async fn connect(server: &str) -> Result<Self> {
        let url = format!(
            "{}/v1/ws",
            server.trim_end_matches('/').replacen("http", "ws", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            &url,
            Some(
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(keepwire_protocol::MAX_FRAME_BYTES * 2))
                    .max_frame_size(Some(keepwire_protocol::MAX_FRAME_BYTES * 2)),
            ),
            false,
        )
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
        let mut conn = Conn {
            ws,
            next_id: 1,
            pushes: VecDeque::new(),
            nonce: Vec::new(),
        };
        match conn.read().await?.body {
            ServerBody::Challenge { nonce, .. } => conn.nonce = nonce,
            other => bail!("server did not start with a challenge: {other:?}"),
        }
        Ok(conn)
    }

    async fn read(&mut self) -> Result<ServerFrame> {
        loop {
            match self.ws.next().await {
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

    /// Send a request and wait for its response; pushes that arrive
    /// meanwhile are queued for [`Conn::next_push`].
    pub async fn request(&mut self, req: Request) -> Result<ServerBody> {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(Message::Text(ClientFrame::new(id, req).to_json().into()))
            .await
            .context("sending request")?;
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

    pub fn queued_push(&mut self) -> Option<ServerBody> {
        self.pushes.pop_front()
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
