//! The agent's Prometheus metrics (`GET /metrics`), every one named `procwarden_*`.
//!
//! Events are counted where they happen (starts, denials, waits, exits, plugin calls through
//! the chain's observer, HTTP requests in a middleware); states (processes, chats, waiters,
//! MCP sessions) are read when the metrics are scraped. The registry lives here alone: the
//! process and extensions crates only expose plain numbers and a call observer.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use procwarden_extensions::policy::{CallObserver, Denial, DenialCause, FrontEnd, PluginCall};
use procwarden_process::Census;

/// The `Content-Type` of what [`Metrics::render`] returns (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontEndLabels {
    front_end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    plugin: String,
    /// `refused` (the plugin said no) or `plugin_failed` / `runtime_failed`.
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCallLabels {
    plugin: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    ended_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The matched route template (`/api/v0/processes/{id}/output`), never the raw path, so
    /// IDs do not make a series each; `unmatched` for requests no route took.
    route: String,
    status: u16,
}

/// Plugin calls take from tens of microseconds to their CPU budget (milliseconds by default).
fn plugin_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    processes: Family<StateLabels, Gauge>,
    chats: Gauge,
    waiting: Gauge,
    mcp_sessions: Gauge,
    starts: Family<FrontEndLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    plugin_calls: Family<PluginCallLabels, Counter>,
    plugin_failures: Family<PluginLabels, Counter>,
    plugin_seconds: Family<PluginLabels, Histogram>,
    waits: Family<WaitLabels, Counter>,
    output_bytes: Counter,
    http_requests: Family<HttpLabels, Counter>,
    /// Open MCP sessions, from the HTTP transport when it runs.
    mcp_session_count: OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
}

/// What [`Metrics::render`] reads from the agent at scrape time.
pub struct Gauges {
    pub census: Census,
    pub waiters: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("procwarden");
        let processes = Family::<StateLabels, Gauge>::default();
        registry.register(
            "processes",
            "Tracked processes by state: running (the shell runs), exited (output may still come), finished",
            processes.clone(),
        );
        let chats = Gauge::default();
        registry.register("chats", "Chats that own tracked processes", chats.clone());
        let waiting = Gauge::default();
        registry.register(
            "waiters",
            "Requests blocked waiting on a process right now",
            waiting.clone(),
        );
        let mcp_sessions = Gauge::default();
        registry.register(
            "mcp_sessions",
            "Open MCP sessions on the streamable HTTP endpoint",
            mcp_sessions.clone(),
        );
        let starts = Family::<FrontEndLabels, Counter>::default();
        registry.register(
            "starts",
            "Processes started, by front end (http, mcp, cli, tool)",
            starts.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "denials",
            "Start requests the policy chain denied, by plugin and cause",
            denials.clone(),
        );
        let plugin_calls = Family::<PluginCallLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Policy plugin calls by plugin and outcome (allowed, denied, failed)",
            plugin_calls.clone(),
        );
        let plugin_failures = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_failures",
            "Policy plugin calls that failed (trap, time or memory limit, not loaded)",
            plugin_failures.clone(),
        );
        let plugin_seconds: Family<PluginLabels, Histogram> =
            Family::new_with_constructor(plugin_histogram);
        registry.register(
            "plugin_call_seconds",
            "Duration of policy plugin calls, instance creation included",
            plugin_seconds.clone(),
        );
        let waits = Family::<WaitLabels, Counter>::default();
        registry.register(
            "waits",
            "Completed waits on a process, by what ended them (exit, regex, quiet, port, output, timeout)",
            waits.clone(),
        );
        let output_bytes = Counter::default();
        registry.register(
            "output_bytes",
            "Bytes of output produced by processes that exited",
            output_bytes.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            http_requests.clone(),
        );
        Self {
            registry,
            processes,
            chats,
            waiting,
            mcp_sessions,
            starts,
            denials,
            plugin_calls,
            plugin_failures,
            plugin_seconds,
            waits,
            output_bytes,
            http_requests,
            mcp_session_count: OnceLock::new(),
        }
    }

    pub fn started(&self, front_end: &FrontEnd) {
        let front_end = match front_end {
            FrontEnd::Http => "http",
            FrontEnd::Mcp => "mcp",
            FrontEnd::Cli => "cli",
            // One series for every tool: tool names are the operator's, but unbounded.
            FrontEnd::Tool(_) => "tool",
        };
        self.starts
            .get_or_create(&FrontEndLabels { front_end })
            .inc();
    }

    pub fn denied(&self, denial: &Denial) {
        let cause = match denial.cause {
            DenialCause::Refused => "refused",
            DenialCause::PluginFailed => "plugin_failed",
            DenialCause::RuntimeFailed => "runtime_failed",
        };
        self.denials
            .get_or_create(&DenialLabels {
                plugin: denial.plugin.clone(),
                cause,
            })
            .inc();
    }

    /// A wait ended; `ended_by` is the reply's `ended_by` (`exit`, `timeout`, ...).
    pub fn waited(&self, ended_by: &'static str) {
        self.waits.get_or_create(&WaitLabels { ended_by }).inc();
    }

    pub fn output_produced(&self, bytes: u64) {
        self.output_bytes.inc_by(bytes);
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The observer a policy chain reports its calls to.
    pub fn plugin_observer(self: &Arc<Self>) -> CallObserver {
        let metrics = Arc::downgrade(self);
        Arc::new(move |call: &PluginCall<'_>| {
            let Some(metrics) = metrics.upgrade() else {
                return;
            };
            let plugin = call.plugin.to_owned();
            metrics
                .plugin_calls
                .get_or_create(&PluginCallLabels {
                    plugin: plugin.clone(),
                    outcome: call.outcome.name(),
                })
                .inc();
            if call.outcome == procwarden_extensions::policy::CallOutcome::Failed {
                metrics
                    .plugin_failures
                    .get_or_create(&PluginLabels {
                        plugin: plugin.clone(),
                    })
                    .inc();
            }
            metrics
                .plugin_seconds
                .get_or_create(&PluginLabels { plugin })
                .observe(call.duration.as_secs_f64());
        })
    }

    /// Where the number of open MCP sessions comes from (the HTTP transport); set once.
    pub fn count_mcp_sessions(&self, count: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.mcp_session_count.set(Box::new(count));
    }

    /// Every metric in the Prometheus text format, the states read from `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let Gauges { census, waiters } = gauges;
        for (state, n) in [
            ("running", census.running),
            ("exited", census.exited),
            ("finished", census.finished),
        ] {
            self.processes
                .get_or_create(&StateLabels { state })
                .set(gauge(n));
        }
        self.chats.set(gauge(census.chats));
        self.waiting.set(gauge(*waiters));
        self.mcp_sessions.set(gauge(
            self.mcp_session_count.get().map_or(0, |count| count()),
        ));
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(error = %err, "encoding the metrics failed");
        }
        text
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_metric_is_named_procwarden_and_counts() {
        let metrics = Arc::new(Metrics::new());
        metrics.started(&FrontEnd::Http);
        metrics.started(&FrontEnd::Tool("grep".into()));
        metrics.denied(&Denial {
            plugin: "deny".into(),
            reason: "no".into(),
            cause: DenialCause::Refused,
        });
        metrics.waited("exit");
        metrics.output_produced(42);
        metrics.http_request("GET", "/api/v0/processes/{id}/output", 200);
        let observe = metrics.plugin_observer();
        observe(&PluginCall {
            plugin: "deny",
            outcome: procwarden_extensions::policy::CallOutcome::Failed,
            duration: std::time::Duration::from_millis(2),
        });
        metrics.count_mcp_sessions(|| 3);
        let text = metrics.render(&Gauges {
            census: Census {
                running: 2,
                exited: 1,
                finished: 4,
                chats: 2,
            },
            waiters: 1,
        });
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("procwarden_"), "{line}");
        }
        for (series, expected) in [
            ("procwarden_starts_total{front_end=\"http\"}", 1.0),
            ("procwarden_starts_total{front_end=\"tool\"}", 1.0),
            (
                "procwarden_denials_total{plugin=\"deny\",cause=\"refused\"}",
                1.0,
            ),
            ("procwarden_waits_total{ended_by=\"exit\"}", 1.0),
            ("procwarden_output_bytes_total", 42.0),
            (
                "procwarden_http_requests_total{method=\"GET\",route=\"/api/v0/processes/{id}/output\",status=\"200\"}",
                1.0,
            ),
            (
                "procwarden_plugin_calls_total{plugin=\"deny\",outcome=\"failed\"}",
                1.0,
            ),
            ("procwarden_plugin_failures_total{plugin=\"deny\"}", 1.0),
            ("procwarden_plugin_call_seconds_count{plugin=\"deny\"}", 1.0),
            ("procwarden_processes{state=\"running\"}", 2.0),
            ("procwarden_processes{state=\"finished\"}", 4.0),
            ("procwarden_chats", 2.0),
            ("procwarden_waiters", 1.0),
            ("procwarden_mcp_sessions", 3.0),
        ] {
            assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
        }
    }
}
