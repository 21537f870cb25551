//! Tool plugins as MCP tools: each loaded tool is a route of the session's tool router,
//! listed next to the built-in tools with its own schema, and called in the session's chat.

use std::sync::Arc;

use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock, JsonObject, MetaObject, Tool};

use super::format;
use super::handler::ProcwardenMcp;
use crate::agent::Agent;
use procwarden_extensions::tool::ToolOutput;

/// Adds a route for every tool plugin of `agent`.
pub fn add_routes(router: &mut ToolRouter<ProcwardenMcp>, agent: &Agent) {
    for spec in agent.tool_specs() {
        let schema: JsonObject = spec.input_schema.as_object().cloned().unwrap_or_default();
        let tool = Tool::new(
            spec.name.clone(),
            spec.description.clone(),
            Arc::new(schema),
        );
        router.add_route(ToolRoute::new_dyn(
            tool,
            |ctx: ToolCallContext<'_, ProcwardenMcp>| {
                Box::pin(async move {
                    let result = call(ctx).await;
                    Ok(CallToolResponse::Complete(result))
                })
            },
        ));
    }
}

async fn call(ctx: ToolCallContext<'_, ProcwardenMcp>) -> CallToolResult {
    let service = ctx.service;
    let chat = match service.chat_of(&ctx.request_context) {
        Ok(chat) => chat,
        Err(message) => return format::tool_error(message),
    };
    let args = ctx
        .arguments
        .map_or(serde_json::Value::Null, serde_json::Value::Object);
    match service
        .agent()
        .call_tool(&ctx.name, args, chat.as_deref())
        .await
    {
        Ok(reply) => {
            let mut result = match reply.output {
                ToolOutput::Text(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
                ToolOutput::Json(json) => CallToolResult::structured(json),
            };
            // Beside the tool's own result, which stays as the tool shaped it.
            if let Some(redactions) = reply.redactions {
                let mut meta = JsonObject::new();
                meta.insert(REDACTIONS_META.into(), redactions.into());
                result.meta = Some(MetaObject(meta));
            }
            result
        }
        Err(err) => format::tool_error(err.to_string()),
    }
}

/// The `_meta` key of a tool plugin's result that counts the output filters' changes.
pub const REDACTIONS_META: &str = "redactions";
