//! The served OpenAPI document, checked structurally: what `openapi-spec-validator` and
//! client generators rely on, and what the handlers really answer.
//!
//! The checker returns every problem it finds; the first test wants none in the served
//! document, the others feed it broken documents to show that it notices.

use refact_server::openapi::ApiDoc;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::OpenApi;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
const ERROR_SCHEMA: &str = "#/components/schemas/ErrorBody";

/// The document as `/openapi.json` serves it (the route serialises `ApiDoc::openapi()`;
/// `routes::tests` checks that the served bytes are this document).
fn served() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the document serialises")
}

/// Resolves a local `$ref` (`#/a/b`) against the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    let pointer = pointer
        .split('/')
        .map(|part| part.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join("/");
    doc.pointer(&pointer)
}

/// Follows `$ref`s until an inline object.
fn deref<'a>(doc: &'a Value, mut value: &'a Value) -> Option<&'a Value> {
    for _ in 0..16 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => value = resolve(doc, reference)?,
            None => return Some(value),
        }
    }
    None
}

/// Every `$ref` anywhere in `value`, with the JSON path where it sits.
fn refs(value: &Value, path: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" {
                    if let Some(target) = child.as_str() {
                        out.push((path.clone(), target.to_string()));
                    }
                } else {
                    refs(child, format!("{path}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// `{name}` segments of a path template.
fn template_names(template: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        names.insert(rest[start + 1..start + len].to_string());
        rest = &rest[start + len + 1..];
    }
    names
}

/// True when a response (or the component it refers to) carries the error schema as JSON.
fn uses_error_schema(doc: &Value, response: &Value) -> bool {
    deref(doc, response)
        .and_then(|r| r.pointer("/content/application~1json/schema/$ref"))
        .and_then(Value::as_str)
        == Some(ERROR_SCHEMA)
}

/// A schema that can only be satisfied by a string (path segments, plain text).
fn is_string_schema(doc: &Value, schema: Option<&Value>) -> bool {
    let Some(schema) = schema.and_then(|s| deref(doc, s)) else {
        return false;
    };
    match schema.get("type") {
        Some(Value::String(t)) => t == "string" && schema.get("format").is_none(),
        _ => false,
    }
}

/// Every structural problem of the document, one line each.
fn problems(doc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut problem = |text: String| found.push(text);

    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1"))
    {
        problem(format!("openapi is {}, not 3.1.x", doc["openapi"]));
    }

    let mut all_refs = Vec::new();
    refs(doc, String::new(), &mut all_refs);
    for (at, target) in &all_refs {
        if !target.starts_with("#/") || resolve(doc, target).is_none() {
            problem(format!("{at}: $ref {target} does not resolve"));
        }
    }

    // The error body itself: {"error": {"code", "message", "field"}}, all present.
    match resolve(doc, ERROR_SCHEMA).and_then(|body| deref(doc, &body["properties"]["error"])) {
        Some(detail) => {
            let required: BTreeSet<&str> = detail["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for field in ["code", "message", "field"] {
                if !required.contains(field) {
                    problem(format!("ErrorBody.error.{field} is not required"));
                }
            }
        }
        None => problem("ErrorBody has no `error` object".into()),
    }

    let mut operation_ids: BTreeMap<String, String> = BTreeMap::new();
    let Some(paths) = doc["paths"].as_object() else {
        problem("no paths".into());
        return found;
    };
    for (template, item) in paths {
        let in_template = template_names(template);
        let shared = item["parameters"].as_array().cloned().unwrap_or_default();
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let at = format!("{} {template}", method.to_uppercase());

            // operationId: present, unique, usable as a method name.
            match operation["operationId"].as_str() {
                Some(id) => {
                    let identifier = id.starts_with(|c: char| c.is_ascii_lowercase())
                        && id.chars().all(|c| c.is_ascii_alphanumeric());
                    if !identifier {
                        problem(format!("{at}: operationId `{id}` is not a camelCase name"));
                    }
                    if let Some(other) = operation_ids.insert(id.to_string(), at.clone()) {
                        problem(format!("{at}: operationId `{id}` also used by {other}"));
                    }
                }
                None => problem(format!("{at}: no operationId")),
            }

            // Parameters: path ones exactly the template's, no duplicates.
            let mut declared_path = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut typed_input = false;
            let parameters = shared
                .iter()
                .chain(operation["parameters"].as_array().into_iter().flatten());
            for parameter in parameters {
                let Some(parameter) = deref(doc, parameter) else {
                    continue; // reported as an unresolved $ref
                };
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                let location = parameter["in"].as_str().unwrap_or_default().to_string();
                if !seen.insert((name.clone(), location.clone())) {
                    problem(format!(
                        "{at}: parameter `{name}` in {location} declared twice"
                    ));
                }
                if !matches!(location.as_str(), "path" | "query" | "header" | "cookie") {
                    problem(format!("{at}: parameter `{name}` has `in: {location}`"));
                }
                if location == "path" {
                    if !in_template.contains(&name) {
                        problem(format!(
                            "{at}: parameter `{name}` is `in: path` but not in the template"
                        ));
                    }
                    if parameter["required"] != json!(true) {
                        problem(format!("{at}: path parameter `{name}` is not required"));
                    }
                    declared_path.insert(name.clone());
                }
                if parameter.get("schema").is_none() && parameter.get("content").is_none() {
                    problem(format!("{at}: parameter `{name}` has no schema"));
                }
                if matches!(location.as_str(), "path" | "query")
                    && !is_string_schema(doc, parameter.get("schema"))
                {
                    typed_input = true;
                }
            }
            for name in in_template.difference(&declared_path) {
                problem(format!(
                    "{at}: `{{{name}}}` is not declared as a path parameter"
                ));
            }

            // Request body: a schema for every media type.
            let body = operation.get("requestBody").and_then(|b| deref(doc, b));
            if let Some(body) = body {
                let content = body["content"].as_object();
                if content.is_none_or(|c| c.is_empty()) {
                    problem(format!("{at}: request body without content"));
                }
                for (media, entry) in content.into_iter().flatten() {
                    if entry.get("schema").is_none() {
                        problem(format!("{at}: request body {media} has no schema"));
                    }
                }
            }

            // Responses: a 2xx; every error with the error schema; JSON with a schema.
            let Some(responses) = operation["responses"].as_object() else {
                problem(format!("{at}: no responses"));
                continue;
            };
            if !responses.keys().any(|code| code.starts_with('2')) {
                problem(format!("{at}: no 2xx response"));
            }
            for (code, response) in responses {
                let Some(resolved) = deref(doc, response) else {
                    continue;
                };
                if resolved["description"].as_str().is_none() {
                    problem(format!("{at}: response {code} has no description"));
                }
                if (code.starts_with('4') || code.starts_with('5'))
                    && !uses_error_schema(doc, response)
                {
                    problem(format!("{at}: error response {code} is not an ErrorBody"));
                }
                for (media, entry) in resolved["content"].as_object().into_iter().flatten() {
                    if media.contains("json") && entry.get("schema").is_none() {
                        problem(format!("{at}: response {code} {media} has no schema"));
                    }
                }
            }

            // What the extractors can answer, by what the operation declares.
            let mut expected: Vec<(&str, &str)> = Vec::new();
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if secured {
                expected.push(("401", "it needs a token"));
                expected.push(("403", "it needs a scope"));
            }
            if body.is_some() {
                for code in ["400", "413", "415", "422"] {
                    expected.push((code, "it reads a JSON body"));
                }
            }
            if typed_input {
                expected.push(("400", "it has typed path or query parameters"));
            }
            if !in_template.is_empty() && secured {
                expected.push(("404", "it names a resource in its path"));
            }
            for (code, why) in expected {
                if !responses.contains_key(code) {
                    problem(format!("{at}: no {code} response although {why}"));
                }
            }
        }
    }
    found
}

#[test]
fn the_served_document_has_no_structural_problems() {
    let doc = served();
    let found = problems(&doc);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn query_parameters_are_in_query_and_optional() {
    let doc = served();
    for (path, method, name) in [
        ("/edits", "get", "status"),
        ("/edits", "get", "limit"),
        ("/edits", "get", "offset"),
        ("/versions", "get", "limit"),
        ("/versions", "get", "offset"),
        ("/generate", "post", "version"),
        ("/versions/{n}/revert", "post", "expected_head"),
    ] {
        let parameters = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let parameter = parameters
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path}: no `{name}`"));
        assert_eq!(parameter["in"], "query", "{method} {path} {name}");
        assert_ne!(parameter["required"], json!(true), "{method} {path} {name}");
    }
}

#[test]
fn operation_ids_name_the_generated_methods() {
    let doc = served();
    for (path, method, id) in [
        ("/edits", "post", "createEdit"),
        ("/edits", "get", "listEdits"),
        ("/edits/{id}", "get", "getEdit"),
        ("/edits/{id}", "delete", "cancelEdit"),
        ("/edits/{id}/events", "get", "streamEditEvents"),
        ("/generate", "post", "generateImage"),
        ("/versions", "get", "listVersions"),
        ("/versions/{n}", "get", "getVersion"),
        ("/versions/{n}/revert", "post", "revertVersion"),
        ("/aliases", "get", "listAliases"),
        ("/aliases/{name}", "get", "getAlias"),
        ("/aliases/{name}", "put", "setAlias"),
        ("/aliases/{name}", "delete", "deleteAlias"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["operationId"], id,
            "{method} {path}"
        );
    }
}

/// The old mistake: `params(Query)` without `parameter_in` made query parameters
/// `in: path, required: true`, which validators and generators reject.
#[test]
fn the_checker_catches_query_parameters_declared_in_path() {
    let mut doc = served();
    let parameters = doc["paths"]["/edits"]["get"]["parameters"]
        .as_array_mut()
        .unwrap();
    for parameter in parameters {
        parameter["in"] = json!("path");
        parameter["required"] = json!(true);
    }
    let found = problems(&doc);
    for name in ["status", "limit", "offset"] {
        assert!(
            found
                .iter()
                .any(|p| p.contains(&format!("`{name}` is `in: path` but not in the template"))),
            "{name} not caught: {found:?}"
        );
    }
}

#[test]
fn the_checker_catches_missing_path_parameters_refs_ids_and_error_bodies() {
    let mut doc = served();
    doc["paths"]["/edits/{id}"]["get"]["parameters"] = json!([]);
    doc["paths"]["/aliases"]["get"]["responses"]["401"] = json!({"description": "no"});
    doc["paths"]["/versions"]["get"]["operationId"] = json!("getEdit");
    doc["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/Nowhere"});
    doc["paths"]["/edits/{id}"]["delete"]["responses"]
        .as_object_mut()
        .unwrap()
        .remove("403");
    doc["paths"]["/healthz"]["get"]["responses"] = json!({"500": {"description": "x"}});
    let found = problems(&doc).join("\n");
    for expected in [
        "GET /edits/{id}: `{id}` is not declared as a path parameter",
        "GET /aliases: error response 401 is not an ErrorBody",
        "GET /versions: operationId `getEdit` also used by",
        "$ref #/components/schemas/Nowhere does not resolve",
        "DELETE /edits/{id}: no 403 response",
        "GET /healthz: no 2xx response",
    ] {
        assert!(found.contains(expected), "{expected} not caught:\n{found}");
    }
}

#[test]
fn generate_documents_both_json_answers() {
    let doc = served();
    let json =
        &doc["paths"]["/generate"]["post"]["responses"]["200"]["content"]["application/json"];
    let reference = json["schema"]["$ref"].as_str().expect("a named schema");
    let text = resolve(&doc, reference).expect("resolves").to_string();
    assert!(
        text.contains("GenerateResponse") && text.contains("GenerateManyResponse"),
        "{json}"
    );
}
