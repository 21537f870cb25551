//! MCP sessions over HTTP, bounded: at most `mcp_max_sessions` at once, and a session with no
//! traffic and no call in flight for `mcp_session_idle_seconds` is closed.
//!
//! rmcp's own idle timeout counts only messages, so a long `execute` (which sends nothing
//! until its command ends) would look idle and lose its session halfway. Here a call keeps
//! its session alive for as long as its response stream is open; rmcp's timeout is off, and
//! a sweeper closes the sessions that are idle by this measure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};
use tokio_util::sync::CancellationToken;

pub struct BoundedSessions {
    inner: LocalSessionManager,
    activity: Arc<Activity>,
    max: usize,
    idle: Duration,
}

#[derive(Default)]
struct Activity {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<SessionId, Use>,
    /// Sessions being created: they count against the cap already.
    creating: usize,
}

struct Use {
    last: Instant,
    calls: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("too many MCP sessions (the limit is {0})")]
    Full(usize),
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

impl BoundedSessions {
    pub fn new(max: usize, idle: Duration) -> Self {
        let mut inner = LocalSessionManager::default();
        // Idleness is judged here, where calls in flight are known.
        inner.session_config.keep_alive = None;
        Self {
            inner,
            activity: Arc::default(),
            max,
            idle,
        }
    }

    /// Whether a new session would be refused now.
    pub fn is_full(&self) -> bool {
        let table = self.activity.lock();
        table.sessions.len() + table.creating >= self.max
    }

    pub fn len(&self) -> usize {
        self.activity.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Close idle sessions every so often until `stop` is cancelled.
    pub fn spawn_sweeper(self: &Arc<Self>, stop: CancellationToken) {
        let sessions = Arc::downgrade(self);
        let period = (self.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let Some(sessions) = sessions.upgrade() else {
                    return;
                };
                sessions.close_idle().await;
            }
        });
    }

    async fn close_idle(&self) {
        let idle: Vec<SessionId> = {
            let table = self.activity.lock();
            table
                .sessions
                .iter()
                .filter(|(_, u)| u.calls == 0 && u.last.elapsed() >= self.idle)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in idle {
            tracing::debug!(session = %id, "closing idle MCP session");
            if let Err(err) = self.close_session(&id).await {
                tracing::warn!(session = %id, %err, "cannot close idle MCP session");
            }
        }
    }

    fn touch(&self, id: &SessionId) {
        if let Some(u) = self.activity.lock().sessions.get_mut(id) {
            u.last = Instant::now();
        }
    }
}

impl Activity {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A session's place being created; given back if creation fails or is abandoned.
struct Creating<'a>(&'a Activity);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.0.lock().creating -= 1;
    }
}

/// A call in flight: its session is not idle until the call's response stream is dropped.
struct Call {
    activity: Arc<Activity>,
    id: SessionId,
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(u) = self.activity.lock().sessions.get_mut(&self.id) {
            u.calls = u.calls.saturating_sub(1);
            u.last = Instant::now();
        }
    }
}

impl SessionManager for BoundedSessions {
    type Error = SessionsError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let creating = {
            let mut table = self.activity.lock();
            if table.sessions.len() + table.creating >= self.max {
                return Err(SessionsError::Full(self.max));
            }
            table.creating += 1;
            Creating(&self.activity)
        };
        let (id, transport) = self.inner.create_session().await?;
        self.activity.lock().sessions.insert(
            id.clone(),
            Use {
                last: Instant::now(),
                calls: 0,
            },
        );
        drop(creating);
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.touch(id);
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.touch(id);
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.activity.lock().sessions.remove(id);
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let call = {
            let mut table = self.activity.lock();
            if let Some(u) = table.sessions.get_mut(id) {
                u.calls += 1;
                u.last = Instant::now();
            }
            Call {
                activity: self.activity.clone(),
                id: id.clone(),
            }
        };
        let stream = self.inner.create_stream(id, message).await?;
        Ok(stream.map(move |message| {
            let _in_flight = &call;
            message
        }))
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id);
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        Ok(self.inner.resume(id, last_event_id).await?)
    }
}
