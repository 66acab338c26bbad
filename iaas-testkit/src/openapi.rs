//! Checks of a hand-written OpenAPI 3.1 document against the code that serves it: the
//! document parses, every `$ref` resolves inside it, and every route the code serves has its
//! path and method documented with at least one response.

use serde_json::Value;

/// Why a document failed a check: each message names the path, method or `$ref` at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the OpenAPI document is not consistent:\n{}", .problems.join("\n"))]
pub struct OpenApiProblems {
    /// One line a problem.
    pub problems: Vec<String>,
}

/// Parses `text` as an OpenAPI 3.1 document whose `$ref`s all resolve, and checks that each
/// `(path, method)` of `routes` (method in lowercase, path as the document writes it, e.g.
/// `/v1/instances/{id}`) is an operation with at least one response.
///
/// # Errors
/// [`OpenApiProblems`] listing every problem found: not JSON, not `openapi: 3.1.0`, no `$ref`
/// at all, an external or dangling `$ref`, an undocumented route or one without responses.
pub fn check_document(text: &str, routes: &[(&str, &str)]) -> Result<Value, OpenApiProblems> {
    let doc: Value = serde_json::from_str(text).map_err(|err| OpenApiProblems {
        problems: vec![format!("the document is not JSON: {err}")],
    })?;
    let mut problems = Vec::new();
    if doc["openapi"] != "3.1.0" {
        problems.push(format!("`openapi` is {}, not \"3.1.0\"", doc["openapi"]));
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    if found.is_empty() {
        problems.push("no `$ref` at all: the schemas are not shared".to_owned());
    }
    for target in found {
        match target.strip_prefix('#') {
            None => problems.push(format!("external $ref {target}")),
            Some(pointer) if doc.pointer(pointer).is_none() => {
                problems.push(format!("$ref {target} points nowhere"));
            }
            Some(_) => {}
        }
    }
    for (path, method) in routes {
        let operation = &doc["paths"][*path][*method];
        if !operation.is_object() {
            problems.push(format!("{method} {path} is not in the document"));
        } else if operation["responses"].as_object().is_none_or(serde_json::Map::is_empty) {
            problems.push(format!("{method} {path} documents no response"));
        }
    }
    if problems.is_empty() { Ok(doc) } else { Err(OpenApiProblems { problems }) }
}

/// Every `$ref` string anywhere under `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r##"{"openapi": "3.1.0",
        "paths": {"/a/{id}": {"get": {"responses": {"200": {"$ref": "#/components/responses/A"}}}}},
        "components": {"responses": {"A": {"description": "an A"}}}}"##;

    #[test]
    fn a_consistent_document_passes_and_is_returned() {
        let doc = check_document(GOOD, &[("/a/{id}", "get")]).expect("consistent");
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn every_problem_is_named() {
        let bad = GOOD
            .replace("3.1.0", "3.0.3")
            .replace("#/components/responses/A", "#/components/responses/B");
        let err = check_document(&bad, &[("/a/{id}", "get"), ("/a/{id}", "delete"), ("/b", "get")])
            .expect_err("inconsistent");
        assert_eq!(
            err.problems,
            [
                "`openapi` is \"3.0.3\", not \"3.1.0\"",
                "$ref #/components/responses/B points nowhere",
                "delete /a/{id} is not in the document",
                "get /b is not in the document",
            ]
        );
    }

    #[test]
    fn external_refs_empty_responses_and_non_json_are_problems() {
        let external = GOOD.replace("#/components/responses/A", "other.json#/A");
        let err = check_document(&external, &[]).expect_err("external");
        assert_eq!(err.problems, ["external $ref other.json#/A"]);
        let empty = r#"{"openapi": "3.1.0", "paths": {"/a": {"get": {"responses": {}}}}}"#;
        let err = check_document(empty, &[("/a", "get")]).expect_err("no responses, no refs");
        assert_eq!(
            err.problems,
            ["no `$ref` at all: the schemas are not shared", "get /a documents no response"]
        );
        assert!(check_document("{", &[]).is_err());
    }
}
