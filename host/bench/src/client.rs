//! The bench's load generator: one kept-alive HTTP/1.1 connection per client, as load tools
//! such as wrk use. It writes each request in one system call and reads the reply on the
//! same task, with no connection driver task in between and no connection pool, because its
//! CPU counts against the agent: it runs in the same process, on the same two cores. Replies
//! are still checked: the status must be 200 and the body valid JSON.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most header lines a reply may have.
const MAX_HEADERS: usize = 32;

/// One connection to the agent; requests on it go one at a time.
pub struct Connection {
    stream: TcpStream,
    host: String,
    /// Request being written, then reply bytes read and not yet consumed.
    out: Vec<u8>,
    input: Vec<u8>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the agent at {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: addr.to_string(),
            out: Vec::with_capacity(512),
            input: Vec::with_capacity(4096),
        })
    }

    /// `POST path` with a JSON body; the reply's JSON body (an error unless 200).
    pub async fn post(&mut self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(body)?;
        self.send("POST", path, &body).await
    }

    /// `GET path`; the reply's JSON body (an error unless 200).
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Value> {
        self.send("GET", path, &[]).await
    }

    /// `GET path`; the reply's body, unparsed, once it has arrived whole (an error unless
    /// 200): for timing a reply without the client's own JSON work.
    pub async fn get_bytes(&mut self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.request("GET", path, &[]).await
    }

    async fn send(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Value> {
        let body = self.request(method, path, body).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// One request; the reply's body (an error unless 200).
    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.write_request(method, path, body).await?;
        let (status, body) = self.read_reply().await?;
        if status != 200 {
            bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    async fn write_request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<()> {
        use std::io::Write as _;
        self.out.clear();
        write!(
            self.out,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            self.host,
            body.len()
        )?;
        self.out.extend_from_slice(body);
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// Reads one reply: its status and body (framed by `content-length`).
    async fn read_reply(&mut self) -> anyhow::Result<(u16, Vec<u8>)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut reply = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = reply.parse(&self.input)? {
                let status = reply.code.context("reply without a status")?;
                let length = reply
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .context("reply without content-length")?;
                let length: usize = std::str::from_utf8(length.value)?.trim().parse()?;
                while self.input.len() < head + length {
                    self.fill().await?;
                }
                let body = self.input[head..head + length].to_vec();
                self.input.drain(..head + length);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let n = self.stream.read_buf(&mut self.input).await?;
        if n == 0 {
            bail!("the agent closed the connection");
        }
        Ok(())
    }
}
