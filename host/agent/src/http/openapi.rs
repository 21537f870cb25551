//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' annotations and
//! reply types: served at `/api/v0/openapi.json`, printed by `procwarden openapi`, and checked
//! into `docs/openapi.json` (a test fails when the file and the code differ).

use axum::Json;
use utoipa::openapi::path::Operation;
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
