//! Which front end sent an HTTP request, for the policy context (`front-end` in policy 0.2.0).
//! The `procwarden` command line talks to the agent over HTTP and says so in a header, so
//! plugins see its requests as `cli` rather than `http`.
//!
//! The header is the client's own word, like the chat header: a plugin may use it to tailor
//! its decision (a reason worded for a person at a terminal), never as a security boundary.

use axum::http::HeaderMap;
use procwarden_extensions::policy::FrontEnd;

/// The header naming the front end; the CLI sends `cli`.
pub const CLIENT_HEADER: &str = "procwarden-client";
/// The header's value for the command line.
pub const CLI: &str = "cli";

/// The front end of an HTTP API request: `cli` when the header says so, else `http`.
pub fn from_headers(headers: &HeaderMap) -> FrontEnd {
    let is_cli = headers
        .get(CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(CLI));
    if is_cli {
        FrontEnd::Cli
    } else {
        FrontEnd::Http
    }
}

/// The front end of an HTTP API request by name (`cli` or `http`), as output filters see it.
pub fn name(headers: &HeaderMap) -> &'static str {
    match from_headers(headers) {
        FrontEnd::Cli => CLI,
        _ => "http",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cli_value_names_the_cli() {
        let mut headers = HeaderMap::new();
        assert!(matches!(from_headers(&headers), FrontEnd::Http));
        headers.insert(CLIENT_HEADER, "CLI".parse().unwrap());
        assert!(matches!(from_headers(&headers), FrontEnd::Cli));
        assert_eq!(name(&headers), "cli");
        headers.insert(CLIENT_HEADER, "mcp".parse().unwrap());
        assert!(matches!(from_headers(&headers), FrontEnd::Http));
        assert_eq!(name(&headers), "http");
    }
}
