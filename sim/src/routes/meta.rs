//! What a health checker can probe: `GET /docs` and `GET /openapi.json` (as FastAPI serves
//! them once the model is loaded) and, with `--json-health` only, `GET /health` (what a
//! `generate_json` backend answers; CosyVoice's FastAPI server has none).

use super::fastapi::ROUTES;
use crate::form::Want;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

pub async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn docs() -> Html<&'static str> {
    Html(
        r#"<!DOCTYPE html>
<html>
<head>
<link type="text/css" rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
<title>FastAPI - Swagger UI</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>const ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui'})</script>
</body>
</html>
"#,
    )
}

/// A FastAPI-like OpenAPI document listing the inference routes and their form fields.
pub async fn openapi() -> Response {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut props = Map::new();
        for (name, want) in route.fields {
            let schema = match want {
                Want::Text => json!({"type": "string", "title": name}),
                Want::File => json!({"type": "string", "format": "binary", "title": name}),
            };
            props.insert((*name).to_string(), schema);
        }
        let required: Vec<Value> = route.fields.iter().map(|(n, _)| json!(n)).collect();
        let op = |method: &str| {
            json!({
                "summary": route.path.trim_start_matches('/'),
                "operationId": format!("{}_{method}", route.path.trim_start_matches('/')),
                "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "properties": props, "required": required
                }}}},
                "responses": {
                    "200": {"description": "Successful Response"},
                    "422": {"description": "Validation Error"}
                }
            })
        };
        paths.insert(
            route.path.to_string(),
            json!({"get": op("get"), "post": op("post")}),
        );
    }
    Json(json!({
        "openapi": "3.1.0",
        "info": {"title": "FastAPI", "version": "0.1.0"},
        "paths": paths
    }))
    .into_response()
}
