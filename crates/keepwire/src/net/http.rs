//! Plain HTTP/1.1 requests, for talking to witnesses (C2SP tlog-witness is
//! HTTP), to a server's admin listener and to the records office: hyper's client connection over
//! a TCP stream, TLS for `https://` with the same roots as the server
//! connection ([`super::tls_config`]). One request per connection: a
//! checkpoint a minute needs no pool.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// POST `body` to `url`; the status and at most `limit` bytes of the
/// answer, all within `timeout`.
pub async fn post(
    url: &str,
    body: Vec<u8>,
    limit: usize,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    request("POST", url, None, body, limit, timeout).await
}

/// `method` `url` with `body` (and `authorization` as the `Authorization`
/// header when given); the status and at most `limit` bytes of the answer,
/// all within `timeout`.
pub async fn request(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
    limit: usize,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    tokio::time::timeout(
        timeout,
        request_now(method, url, authorization, body, limit),
    )
    .await
    .with_context(|| format!("{url}: no answer within {} s", timeout.as_secs()))?
}

async fn request_now(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
    limit: usize,
) -> Result<(u16, Vec<u8>)> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("`{url}` is not an http(s) URL"),
    };
    let host = uri
        .host()
        .with_context(|| format!("`{url}` names no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let method: hyper::Method = method.parse()?;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    if let Some(value) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("`{host}` is no TLS server name"))?;
        let tls = tokio_rustls::TlsConnector::from(super::tls_config()?)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {url}"))?;
        send(tls, request, limit).await
    } else {
        send(tcp, request, limit).await
    }
}

async fn send<T>(
    io: T,
    request: hyper::Request<Full<Bytes>>,
    limit: usize,
) -> Result<(u16, Vec<u8>)>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection is driven beside the request, and ends with it.
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok((status, body))
}
