//! The OpenAPI 3 definition (with the API Gateway extensions) of one REST API, rebuilt from the
//! snapshot's entities, for `PutRestApi` in `overwrite` mode.
//!
//! Why rebuilt rather than the snapshot's raw export: an export is the definition *deployed* to one
//! stage, which may be older than the API's working definition (the entities); an API without a
//! stage has no export at all; the export names the API's own host (its id), which a recreated API
//! does not have; and the entities are what the plan compares, what the verify compares and what a
//! staging restore rewrites, so a document built from them carries exactly that. (moto 5.2 adds a
//! reason: its export is Swagger 2.0 without integrations, which its own `PutRestApi` refuses.)
//!
//! What OpenAPI carries: resources (paths, also those without methods), methods with parameters,
//! request models, responses, authorization and API key requirement, validator and integration;
//! models, authorizers, request validators, gateway responses, documentation parts, binary media
//! types, the API key source, the policy and the minimum compression size. Stages, deployments,
//! usage plans, API keys, domain names and the endpoint type are not part of a definition: the
//! restore sets them through their own calls. Integrations without a URI (MOCK) are left out, for
//! moto's sake (see [`operation`]); the read-back after the import puts them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::gateway::canonical::str_field;
use crate::gateway::Entity;

/// The OpenAPI document of the API whose entities are `entities` (all below one
/// `aws/rest-apis/<api>/` folder). `links` maps VPC link names to their ids in the target.
pub(super) fn document(entities: &[&Entity], links: &BTreeMap<String, String>) -> Value {
    let of = |kind: &'static str| entities.iter().filter(move |e| e.kind == kind);
    let mut doc = Map::new();
    doc.insert("openapi".into(), json!("3.0.1"));
    let mut info = Map::new();
    if let Some(api) = of("rest-api").next() {
        let v = &api.value;
        info.insert(
            "title".into(),
            json!(str_field(v, "name").unwrap_or(&api.key)),
        );
        copy(v, "description", &mut info, "description");
        copy(v, "version", &mut info, "version");
        let x = |name: &str| format!("x-amazon-apigateway-{name}");
        if v.get("binaryMediaTypes")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            copy(v, "binaryMediaTypes", &mut doc, &x("binary-media-types"));
        }
        copy(v, "apiKeySource", &mut doc, &x("api-key-source"));
        copy(
            v,
            "minimumCompressionSize",
            &mut doc,
            &x("minimum-compression-size"),
        );
        if let Some(p) = str_field(v, "policy") {
            // The extension takes the policy as an object.
            let text = policy_text(p);
            let policy = serde_json::from_str::<Value>(&text).unwrap_or(json!(text));
            doc.insert(x("policy"), policy);
        }
        let mut endpoint = Map::new();
        copy(
            v,
            "disableExecuteApiEndpoint",
            &mut endpoint,
            "disableExecuteApiEndpoint",
        );
        if let Some(ids) = v.pointer("/endpointConfiguration/vpcEndpointIds") {
            endpoint.insert("vpcEndpointIds".into(), ids.clone());
        }
        if !endpoint.is_empty() {
            doc.insert(x("endpoint-configuration"), Value::Object(endpoint));
        }
    }
    doc.insert("info".into(), Value::Object(info));

    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for r in of("resource") {
        let path = str_field(&r.value, "path").unwrap_or(&r.key);
        // The root always exists; listing it without methods would make some importers add a second.
        if path != "/" {
            paths.entry(path.to_string()).or_default();
        }
    }
    let mut schemes = Map::new();
    for m in of("method") {
        let Some((verb, path)) = m.key.split_once(' ') else {
            continue;
        };
        let path = str_field(&m.value, "resourcePath").unwrap_or(path);
        let name = if verb == "ANY" {
            "x-amazon-apigateway-any-method".to_string()
        } else {
            verb.to_ascii_lowercase()
        };
        let op = operation(&m.value, links, &mut schemes);
        paths
            .entry(path.to_string())
            .or_default()
            .insert(name, Value::Object(op));
    }
    doc.insert(
        "paths".into(),
        Value::Object(
            paths
                .into_iter()
                .map(|(k, v)| (k, Value::Object(v)))
                .collect(),
        ),
    );

    let mut schemas = Map::new();
    for m in of("model") {
        let json_type = str_field(&m.value, "contentType").is_none_or(|c| c == "application/json");
        let schema = str_field(&m.value, "schema").and_then(|s| serde_json::from_str(s).ok());
        // Models of other content types, or whose schema is not JSON, are created one by one.
        if let (true, Some(schema)) = (json_type, schema) {
            schemas.insert(str_field(&m.value, "name").unwrap_or(&m.key).into(), schema);
        }
    }
    for a in of("authorizer") {
        let name = str_field(&a.value, "name").unwrap_or(&a.key).to_string();
        schemes.insert(name, authorizer(&a.value));
    }
    let mut components = Map::new();
    if !schemas.is_empty() {
        components.insert("schemas".into(), Value::Object(schemas));
    }
    if !schemes.is_empty() {
        components.insert("securitySchemes".into(), Value::Object(schemes));
    }
    if !components.is_empty() {
        doc.insert("components".into(), Value::Object(components));
    }

    let validators: Map<String, Value> = of("request-validator")
        .map(|v| {
            let mut out = Map::new();
            copy(
                &v.value,
                "validateRequestBody",
                &mut out,
                "validateRequestBody",
            );
            copy(
                &v.value,
                "validateRequestParameters",
                &mut out,
                "validateRequestParameters",
            );
            (
                str_field(&v.value, "name").unwrap_or(&v.key).to_string(),
                Value::Object(out),
            )
        })
        .collect();
    if !validators.is_empty() {
        doc.insert(
            "x-amazon-apigateway-request-validators".into(),
            Value::Object(validators),
        );
    }

    // Default responses are what an API has without any: only changed ones are listed.
    let responses: Map<String, Value> = of("gateway-response")
        .filter(|g| g.value.get("defaultResponse") != Some(&json!(true)))
        .map(|g| {
            let mut out = Map::new();
            for f in ["statusCode", "responseParameters", "responseTemplates"] {
                copy(&g.value, f, &mut out, f);
            }
            (
                str_field(&g.value, "responseType")
                    .unwrap_or(&g.key)
                    .to_string(),
                Value::Object(out),
            )
        })
        .collect();
    if !responses.is_empty() {
        doc.insert(
            "x-amazon-apigateway-gateway-responses".into(),
            Value::Object(responses),
        );
    }

    let parts: Vec<Value> = of("documentation-part")
        .map(|p| {
            let mut out = Map::new();
            copy(&p.value, "location", &mut out, "location");
            copy(&p.value, "properties", &mut out, "properties");
            Value::Object(out)
        })
        .collect();
    if !parts.is_empty() {
        doc.insert(
            "x-amazon-apigateway-documentation".into(),
            json!({ "documentationParts": parts }),
        );
    }
    Value::Object(doc)
}

/// The policy of a REST API entity as JSON text: API Gateway returns it with its quotes (and
/// slashes) backslash-escaped, as the content of a JSON string.
pub(super) fn policy_text(p: &str) -> String {
    if !p.contains("\\\"") {
        return p.to_string();
    }
    serde_json::from_str::<String>(&format!("\"{p}\"")).unwrap_or_else(|_| p.to_string())
}

/// Copies `v[from]` to `out[to]` where present.
fn copy(v: &Value, from: &str, out: &mut Map<String, Value>, to: &str) {
    if let Some(x) = v.get(from) {
        out.insert(to.into(), x.clone());
    }
}

/// The OpenAPI operation of one method entity; adds the security schemes it uses to `schemes`.
fn operation(
    m: &Value,
    links: &BTreeMap<String, String>,
    schemes: &mut Map<String, Value>,
) -> Map<String, Value> {
    let mut op = Map::new();
    copy(m, "operationName", &mut op, "operationId");

    let mut parameters = vec![];
    if let Some(Value::Object(params)) = m.get("requestParameters") {
        for (name, required) in params {
            let Some(rest) = name.strip_prefix("method.request.") else {
                continue;
            };
            let Some((place, pname)) = rest.split_once('.') else {
                continue;
            };
            let place = match place {
                "path" => "path",
                "querystring" => "query",
                "header" => "header",
                // Multi-value parameters have no OpenAPI form: the method is then put one by one.
                _ => continue,
            };
            let required = place == "path" || required.as_bool().unwrap_or(false);
            parameters.push(json!({
                "name": pname, "in": place, "required": required, "schema": {"type": "string"}
            }));
        }
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(Value::Object(models)) = m.get("requestModels") {
        op.insert("requestBody".into(), json!({ "content": content(models) }));
    }

    let mut responses = Map::new();
    if let Some(Value::Object(rs)) = m.get("methodResponses") {
        for (code, r) in rs {
            let mut out = Map::new();
            out.insert("description".into(), json!(format!("{code} response")));
            if let Some(Value::Object(params)) = r.get("responseParameters") {
                let headers: Map<String, Value> = params
                    .keys()
                    .filter_map(|p| p.strip_prefix("method.response.header."))
                    .map(|h| (h.to_string(), json!({"schema": {"type": "string"}})))
                    .collect();
                if !headers.is_empty() {
                    out.insert("headers".into(), Value::Object(headers));
                }
            }
            if let Some(Value::Object(models)) = r.get("responseModels") {
                out.insert("content".into(), content(models));
            }
            responses.insert(code.clone(), Value::Object(out));
        }
    }
    op.insert("responses".into(), Value::Object(responses));

    let mut requirement = Map::new();
    match str_field(m, "authorizationType") {
        Some("CUSTOM" | "COGNITO_USER_POOLS") => {
            if let Some(a) = str_field(m, "authorizer") {
                let scopes = m
                    .get("authorizationScopes")
                    .cloned()
                    .unwrap_or_else(|| json!([]));
                requirement.insert(a.to_string(), scopes);
            }
        }
        Some("AWS_IAM") => {
            schemes.insert(
                "sigv4".into(),
                json!({"type": "apiKey", "name": "Authorization", "in": "header",
                       "x-amazon-apigateway-authtype": "awsSigv4"}),
            );
            requirement.insert("sigv4".into(), json!([]));
        }
        _ => {}
    }
    if m.get("apiKeyRequired") == Some(&json!(true)) {
        schemes.insert(
            "api_key".into(),
            json!({"type": "apiKey", "name": "x-api-key", "in": "header"}),
        );
        requirement.insert("api_key".into(), json!([]));
    }
    if !requirement.is_empty() {
        op.insert("security".into(), json!([requirement]));
    }
    copy(
        m,
        "requestValidator",
        &mut op,
        "x-amazon-apigateway-request-validator",
    );
    // An integration without a URI (MOCK) is left out and put on its own after the import: moto 5.2's
    // import fails on one with an internal error (it requires a URI), where AWS takes it.
    if let Some(i) = m
        .get("methodIntegration")
        .filter(|i| i.get("uri").is_some())
    {
        op.insert(
            "x-amazon-apigateway-integration".into(),
            Value::Object(integration(i, links)),
        );
    }
    op
}

/// `{content type: {schema: {$ref: model}}}`.
fn content(models: &Map<String, Value>) -> Value {
    Value::Object(
        models
            .iter()
            .filter_map(|(ct, model)| {
                let model = model.as_str()?;
                Some((
                    ct.clone(),
                    json!({"schema": {"$ref": format!("#/components/schemas/{model}")}}),
                ))
            })
            .collect(),
    )
}

/// The `x-amazon-apigateway-integration` object of a method's integration.
fn integration(i: &Value, links: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut out = Map::new();
    for f in [
        "type",
        "httpMethod",
        "uri",
        "connectionType",
        "connectionId",
        "credentials",
        "requestParameters",
        "requestTemplates",
        "passthroughBehavior",
        "contentHandling",
        "timeoutInMillis",
        "cacheNamespace",
        "cacheKeyParameters",
        "tlsConfig",
    ] {
        copy(i, f, &mut out, f);
    }
    if let Some(id) = str_field(i, "connection").and_then(|name| links.get(name)) {
        out.insert("connectionId".into(), json!(id));
    }
    if let Some(Value::Object(rs)) = i.get("integrationResponses") {
        let mut responses = Map::new();
        for (code, r) in rs {
            let mut x = Map::new();
            x.insert(
                "statusCode".into(),
                r.get("statusCode").cloned().unwrap_or_else(|| json!(code)),
            );
            for f in ["responseParameters", "responseTemplates", "contentHandling"] {
                copy(r, f, &mut x, f);
            }
            let pattern = str_field(r, "selectionPattern")
                .filter(|p| !p.is_empty())
                .unwrap_or("default");
            responses.insert(pattern.to_string(), Value::Object(x));
        }
        out.insert("responses".into(), Value::Object(responses));
    }
    out
}

/// The security scheme of an authorizer entity.
fn authorizer(a: &Value) -> Value {
    let kind = str_field(a, "type").unwrap_or("TOKEN");
    let header = str_field(a, "identitySource")
        .and_then(|s| s.strip_prefix("method.request.header."))
        .filter(|_| kind == "TOKEN")
        .unwrap_or("Unused");
    let mut x = Map::new();
    x.insert("type".into(), json!(kind.to_ascii_lowercase()));
    for f in [
        "authorizerUri",
        "authorizerCredentials",
        "authorizerResultTtlInSeconds",
        "identitySource",
        "identityValidationExpression",
        "providerARNs",
    ] {
        copy(a, f, &mut x, f);
    }
    let authtype = str_field(a, "authType")
        .map(str::to_string)
        .unwrap_or_else(|| {
            if kind == "COGNITO_USER_POOLS" {
                "cognito_user_pools".into()
            } else {
                "custom".into()
            }
        });
    json!({
        "type": "apiKey", "name": header, "in": "header",
        "x-amazon-apigateway-authtype": authtype,
        "x-amazon-apigateway-authorizer": Value::Object(x),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: &str, key: &str, v: Value) -> Entity {
        Entity::new("aws/rest-apis/orders/x", kind, key, v)
    }

    #[test]
    fn the_definition_carries_methods_integrations_and_the_api_extensions() {
        let entities = [
            e(
                "rest-api",
                "orders",
                json!({"name": "orders", "description": "Order service", "apiKeySource": "HEADER",
                       "binaryMediaTypes": ["image/png"], "endpointConfiguration": {"types": ["REGIONAL"]},
                       "policy": "{\\\"Version\\\":\\\"2012-10-17\\\"}"}),
            ),
            e("resource", "/", json!({"path": "/"})),
            e(
                "resource",
                "/orders",
                json!({"path": "/orders", "pathPart": "orders"}),
            ),
            e(
                "resource",
                "/empty",
                json!({"path": "/empty", "pathPart": "empty"}),
            ),
            e(
                "method",
                "GET /orders",
                json!({"httpMethod": "GET", "authorizationType": "CUSTOM", "authorizer": "jwt",
                       "apiKeyRequired": true, "resourcePath": "/orders",
                       "requestParameters": {"method.request.querystring.page": false,
                                             "method.request.multivalueheader.x": false},
                       "methodIntegration": {"type": "HTTP_PROXY", "httpMethod": "GET",
                           "uri": "http://orders.internal/orders", "connectionType": "VPC_LINK",
                           "connection": "orders-link",
                           "integrationResponses": {"200": {"statusCode": "200"},
                               "500": {"statusCode": "500", "selectionPattern": "5\\d{2}"}}}}),
            ),
            e(
                "method",
                "POST /orders",
                json!({"httpMethod": "POST", "authorizationType": "NONE", "resourcePath": "/orders",
                       "requestValidator": "body-only", "requestModels": {"application/json": "Order"},
                       "methodResponses": {"201": {"statusCode": "201",
                           "responseModels": {"application/json": "Empty"}}},
                       "methodIntegration": {"type": "MOCK",
                           "integrationResponses": {"201": {"statusCode": "201",
                               "responseTemplates": {"application/json": "{}"}}}}}),
            ),
            e(
                "model",
                "Order",
                json!({"name": "Order", "contentType": "application/json",
                       "schema": "{\"type\": \"object\"}"}),
            ),
            e(
                "authorizer",
                "jwt",
                json!({"name": "jwt", "type": "TOKEN", "authorizerUri": "arn:aws:apigateway:x",
                       "identitySource": "method.request.header.Authorization",
                       "authorizerResultTtlInSeconds": 300}),
            ),
            e(
                "request-validator",
                "body-only",
                json!({"name": "body-only", "validateRequestBody": true, "validateRequestParameters": false}),
            ),
            e(
                "gateway-response",
                "DEFAULT_4XX",
                json!({"responseType": "DEFAULT_4XX", "defaultResponse": false, "statusCode": "400"}),
            ),
            e(
                "gateway-response",
                "DEFAULT_5XX",
                json!({"responseType": "DEFAULT_5XX", "defaultResponse": true}),
            ),
            e("stage", "prod", json!({"stageName": "prod"})),
        ];
        let refs: Vec<&Entity> = entities.iter().collect();
        let links = BTreeMap::from([("orders-link".to_string(), "vl1".to_string())]);
        let d = document(&refs, &links);

        assert_eq!(d["openapi"], "3.0.1");
        assert_eq!(
            d["info"],
            json!({"title": "orders", "description": "Order service"})
        );
        assert_eq!(
            d["x-amazon-apigateway-binary-media-types"],
            json!(["image/png"])
        );
        assert_eq!(d["x-amazon-apigateway-policy"]["Version"], "2012-10-17");
        assert_eq!(
            d["paths"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["/empty", "/orders"]
        );
        let get = &d["paths"]["/orders"]["get"];
        assert_eq!(get["security"], json!([{"jwt": [], "api_key": []}]));
        assert_eq!(
            get["parameters"],
            json!([{"name": "page", "in": "query", "required": false, "schema": {"type": "string"}}])
        );
        let integration = &get["x-amazon-apigateway-integration"];
        assert_eq!(integration["connectionId"], "vl1");
        assert_eq!(integration["responses"]["default"]["statusCode"], "200");
        assert_eq!(integration["responses"]["5\\d{2}"]["statusCode"], "500");
        let post = &d["paths"]["/orders"]["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Order"
        );
        assert_eq!(post["x-amazon-apigateway-request-validator"], "body-only");
        // A MOCK integration (no URI) is put after the import.
        assert!(
            post.get("x-amazon-apigateway-integration").is_none(),
            "{post}"
        );
        assert_eq!(
            post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Empty"
        );
        assert_eq!(
            d["components"]["schemas"]["Order"],
            json!({"type": "object"})
        );
        let jwt = &d["components"]["securitySchemes"]["jwt"];
        assert_eq!(jwt["name"], "Authorization");
        assert_eq!(jwt["x-amazon-apigateway-authorizer"]["type"], "token");
        assert_eq!(
            d["x-amazon-apigateway-request-validators"]["body-only"]["validateRequestBody"],
            true
        );
        let responses = d["x-amazon-apigateway-gateway-responses"]
            .as_object()
            .unwrap();
        assert_eq!(responses.keys().collect::<Vec<_>>(), ["DEFAULT_4XX"]);
        assert!(d.get("x-amazon-apigateway-documentation").is_none());
    }
}
