//! One module per former test binary; test names read `suite::<module>::<test>`.

// HTTP API.
mod auth;
mod concurrency;
// Hostile clients: stalled connections, slow and oversized requests, token rules, MCP sessions.
mod hostile;
mod http_api;
mod lifecycle;
mod output;
mod robustness;
mod shutdown;
mod signals;
// The CLI's client subcommands against a running agent.
mod cli;
// MCP front end (stdio and streamable HTTP), with rmcp's client.
mod mcp_http;
mod mcp_stdio;
// MCP with the policy chain and the sample plugins (ampersand, deny).
mod mcp_policy;
// Policy plugins over HTTP with the real components, faulty ones included.
mod plugins;
// The built-in policy plugins run natively by default; `builtin:NAME.wasm` runs the component.
mod native_policy;
// What an operator relies on: serve --token, sessionless MCP, start-body typos, the CLI.
mod operator;
// Tool plugins (serve, test_summary, faulty tools) over MCP, HTTP and the CLI.
mod tools;
// Containment: the orphan matrix in cgroup and subreaper modes.
mod containment;
// Soak: stalled connections, MCP churn and start bursts; bounded fds, RSS and /health.
mod soak;
// The output spool: reads over the whole output, waits on output, ports and quiet.
mod spool;
mod waits;
// Reloading the configuration (SIGHUP, POST /api/v0/reload); plugins that cannot load.
mod reload;
// [env]: what commands inherit from the agent's environment.
mod env_inherit;
// Logs: JSON format, filter mistakes, exit lines, audit records naming the process.
mod logging;
// The policy audit file under concurrent requests: records joined by request_id.
mod audit;
// Signal names (INT, HUP, QUIT, USR1, USR2) in the API and MCP.
mod signal_names;
// The list's total past its cap.
mod list_total;
// Stdin pipes, terminals, input and waiting_for_input; MCP reads over the spool.
mod stdin;
// Input beyond text: concurrent writes (409), binary data_base64, terminal resize.
mod input_extras;
// /metrics (Prometheus) and the OpenAPI description.
mod metrics;
// Policy plugins written in Python and JavaScript (plugins/examples/).
mod languages;
// MCP and CLI answers that cannot be misread: waits apart from kill deadlines, success,
// argument errors, the stdio working directory, plugin check's exit codes, front end `cli`.
mod unambiguous;
// Live-process limits per agent and per chat (429).
mod limits;
// Output filters: secrets masked for every client, faulty filters contained, filters off.
mod filters;
// The built-in redact: native by default, its component on request, the same answers.
mod native_filters;
