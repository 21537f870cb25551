//! The bench's load generator: one kept-alive HTTP/1.1 connection per client, as load tools
//! such as wrk use, so the figures measure the agent rather than a client library's
//! connection pool and URL handling. Its CPU still counts against the agent: it runs in the
//! same process, on the same two cores.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One connection to the agent; requests on it go one at a time.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the agent at {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
            driver,
        })
    }

    /// `POST path` with a JSON body; the reply's JSON body (an error unless 200).
    pub async fn post(&mut self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let body = Full::new(Bytes::from(serde_json::to_vec(body)?));
        self.send(Method::POST, path, body).await
    }

    /// `GET path`; the reply's JSON body (an error unless 200).
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, Full::new(Bytes::new())).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Full<Bytes>,
    ) -> anyhow::Result<Value> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(body)?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
