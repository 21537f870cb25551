//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' annotations and
//! reply types: served at `/api/v0/openapi.json`, printed by `procwarden openapi`, and checked
//! into `docs/openapi.json` (a test fails when the file and the code differ).

use axum::Json;
use procwarden_process::output_read::{MAX_CONTEXT, MAX_READ_BYTES};
use utoipa::Number;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::{admin, input, metrics, routes, tools};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "procwarden",
        description = "Runs shell commands for AI coding agents: each in its own process group, with bounded output, per-chat isolation and WebAssembly command-policy plugins. Every error is JSON `{message, detail?}`. With a token configured, every route needs `Authorization: Bearer TOKEN`. MCP (streamable HTTP) is served at `/mcp` and is not described here.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::start,
        routes::list,
        routes::output,
        routes::signal,
        input::write,
        input::resize,
        routes::health,
        admin::reload,
        tools::list,
        tools::call,
        metrics::scrape,
        document,
    ),
    modifiers(&Refinements),
)]
pub struct ApiDoc;

/// The description as JSON text, as `docs/openapi.json` holds it (pretty, newline-terminated).
pub fn json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"));
    text.push('\n');
    text
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v0/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object)),
)]
pub async fn document() -> Json<Document> {
    Json(ApiDoc::openapi())
}

/// What the annotations cannot say on their own.
struct Refinements;

/// Answers any route can give, from the layers every request passes: the request head or
/// body refused before a handler (400, 413, 414, 431), a missing token (401), the browser
/// guard (403), the request deadline (503).
const COMMON_ERRORS: [(&str, &str); 7] = [
    (
        "400",
        "The request is not valid (a header, the query or the body)",
    ),
    ("401", "A valid bearer token is required"),
    (
        "403",
        "Refused: a web page's Host or Origin without a token, or a policy plugin",
    ),
    ("413", "The request body is too large"),
    ("414", "The request URI is too long"),
    ("431", "The request header is too large"),
    (
        "503",
        "The agent is shutting down, or the request took too long",
    ),
];

impl Modify for Refinements {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        // Bodies refuse fields they do not know (400 naming the field).
        for name in ["StartBody", "SignalBody"] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
        // A start needs a command with something besides whitespace in it (400 "Command is
        // required."): the body type defaults it to "" only to give that message.
        if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut("StartBody") {
            if !body.required.iter().any(|name| name == "command") {
                body.required.insert(0, "command".to_owned());
            }
            if let Some(RefOr::T(Schema::Object(command))) = body.properties.get_mut("command") {
                command.pattern = Some(r"\S".to_owned());
            }
        }
        // What the handlers check beyond the types, so that generated requests (and clients)
        // can tell a valid body from one that is refused with 400.
        for (body, field) in [
            ("StartBody", "rows"),
            ("StartBody", "cols"),
            ("ResizeBody", "rows"),
            ("ResizeBody", "cols"),
        ] {
            if let Some(object) = property(components, body, field) {
                object.minimum = Some(Number::UInt(1));
                object.maximum = Some(Number::UInt(MAX_TERMINAL_SIDE));
            }
        }
        if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut("SignalBody")
            && !body.required.iter().any(|name| name == "signal")
        {
            body.required.push("signal".to_owned());
        }
        if let Some(signal) = property(components, "SignalBody", "signal") {
            signal.pattern = Some(SIGNAL_PATTERN.to_owned());
        }
        // A start reply carries the output snapshot's fields too when it waited (`?wait=true`).
        let snapshot = match components.schemas.get("OutputSnapshot") {
            Some(RefOr::T(Schema::Object(object))) => Some(object.properties.clone()),
            _ => None,
        };
        if let (Some(snapshot), Some(RefOr::T(Schema::Object(reply)))) =
            (snapshot, components.schemas.get_mut("StartReply"))
        {
            for (name, schema) in snapshot {
                reply.properties.entry(name).or_insert(schema);
            }
        }
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_common_errors(operation);
            }
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                refine_read_parameters(operation);
            }
        }
        add_start_links(openapi);
    }
}

/// A terminal's rows or columns: 1 to this (the agent refuses more).
const MAX_TERMINAL_SIDE: usize = 1000;

/// The signal names `POST /{id}/signal` takes: `terminate`, `kill`, or TERM, KILL, INT, HUP,
/// QUIT, USR1, USR2 in any case with an optional `SIG` prefix.
const SIGNAL_PATTERN: &str = "^(terminate|kill|([Ss][Ii][Gg])?([Tt][Ee][Rr][Mm]|[Kk][Ii][Ll][Ll]|[Ii][Nn][Tt]|[Hh][Uu][Pp]|[Qq][Uu][Ii][Tt]|[Uu][Ss][Rr][12]))$";

/// A property of a component schema, when both are inline objects.
fn property<'a>(
    components: &'a mut utoipa::openapi::Components,
    schema: &str,
    field: &str,
) -> Option<&'a mut utoipa::openapi::schema::Object> {
    match components.schemas.get_mut(schema)? {
        RefOr::T(Schema::Object(object)) => match object.properties.get_mut(field)? {
            RefOr::T(Schema::Object(property)) => Some(property),
            _ => None,
        },
        _ => None,
    }
}

/// The output-read query parameters (start and output): the ranges the agent accepts.
fn refine_read_parameters(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        if parameter.parameter_in != ParameterIn::Query {
            continue;
        }
        let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else {
            continue;
        };
        match parameter.name.as_str() {
            "limit" => {
                schema.minimum = Some(Number::UInt(1));
                schema.maximum = Some(Number::UInt(MAX_READ_BYTES as usize));
            }
            "context" => schema.maximum = Some(Number::UInt(MAX_CONTEXT)),
            "grep" => schema.min_length = Some(1),
            _ => {}
        }
    }
}

/// The operations that act on a started process, by `operationId`, with what each link says.
const PROCESS_LINKS: [(&str, &str); 4] = [
    ("output", "Read the started process's output"),
    ("write", "Write to the started process's stdin"),
    ("resize", "Resize the started process's terminal"),
    ("signal", "Signal the started process's group"),
];

/// Links from a start reply's `id` (and the chat it was started in) to the operations on that
/// process, so that clients and stateful fuzzers (schemathesis) can follow a start with calls
/// on a real process.
fn add_start_links(openapi: &mut Document) {
    let Some(RefOr::T(reply)) = openapi
        .paths
        .paths
        .get_mut("/api/v0/processes/start")
        .and_then(|item| item.post.as_mut())
        .and_then(|operation| operation.responses.responses.get_mut("200"))
    else {
        return;
    };
    for (operation_id, description) in PROCESS_LINKS {
        let link = LinkBuilder::new()
            .operation_id(operation_id)
            .parameter("path.id", "$response.body#/id")
            .parameter(
                "header.procwarden-chat-id",
                "$request.header.procwarden-chat-id",
            )
            .description(description)
            .build();
        reply.links.insert(operation_id.to_owned(), RefOr::T(link));
    }
}

fn add_common_errors(operation: &mut Operation) {
    for (status, description) in COMMON_ERRORS {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
}

/// A response whose body is the JSON error `{message, detail?}`.
pub fn error_response(description: &str) -> Response {
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::content::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    <ErrorBody as utoipa::ToSchema>::name(),
                ))))
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// `docs/openapi.json` must be what the code describes. To regenerate it after changing
    /// the API: `cargo run --release -p procwarden -- openapi > docs/openapi.json`, or run
    /// this test with `PROCWARDEN_UPDATE_OPENAPI=1`.
    #[test]
    fn checked_in_description_matches_the_code() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated = super::json();
        if std::env::var_os("PROCWARDEN_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the API the code describes; regenerate it with \
             `cargo run --release -p procwarden -- openapi > docs/openapi.json` \
             (or PROCWARDEN_UPDATE_OPENAPI=1 cargo test --release -p procwarden openapi)"
        );
    }

    /// The start reply's links name operations that exist, once each, and fill their `{id}`.
    #[test]
    fn start_links_reach_the_process_operations() {
        let doc: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        let links = doc["paths"]["/api/v0/processes/start"]["post"]["responses"]["200"]["links"]
            .as_object()
            .unwrap();
        assert_eq!(links.len(), super::PROCESS_LINKS.len());
        for (name, link) in links {
            let targets: Vec<(&String, &serde_json::Value)> = doc["paths"]
                .as_object()
                .unwrap()
                .iter()
                .flat_map(|(path, item)| {
                    item.as_object().unwrap().values().map(move |op| (path, op))
                })
                .filter(|(_, op)| op["operationId"] == link["operationId"])
                .collect();
            assert_eq!(targets.len(), 1, "link {name}: {}", link["operationId"]);
            assert!(
                targets[0].0.contains("{id}"),
                "link {name}: {}",
                targets[0].0
            );
            assert_eq!(
                link["parameters"]["path.id"], "$response.body#/id",
                "link {name}"
            );
        }
    }

    #[test]
    fn every_operation_documents_the_json_error_body() {
        let doc: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let error = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], serde_json::json!(["message"]));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for status in ["400", "401", "503"] {
                    let schema =
                        &operation["responses"][status]["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
