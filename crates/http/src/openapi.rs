//! OpenAPI 3.1 operations assembled in code, with body schemas derived from the Rust types the
//! handlers read and answer (utoipa's `ToSchema`).
//!
//! Why it exists: the lab API, the emulator's routes and the proof verifier each describe
//! their routes. Paths are assembled in code rather than derived per handler, because many
//! handlers take raw bodies (JSON or YAML, zip) and free-form query maps (their parameters are
//! listed by hand); but a body named by its type ([`Op::json`], [`Op::json_body`]) gets the
//! type's own schema, so a field added to a request or response type shows up in the document
//! with nothing written by hand.

use serde_json::{json, Map, Value};
use utoipa::ToSchema;

/// The paths and component schemas of a document under construction.
#[derive(Default)]
pub struct Doc {
    pub paths: Map<String, Value>,
    pub schemas: Map<String, Value>,
}

impl Doc {
    /// Add `op` at `route` (`"GET /path"`), and the schemas it names.
    pub fn put(&mut self, route: &str, op: Op) {
        let (method, path) = route.split_once(' ').expect("METHOD /path");
        let item = self.paths.entry(path).or_insert_with(|| json!({}));
        item[method.to_ascii_lowercase()] = op.op;
        self.schemas.extend(op.schemas);
    }

    /// `{"openapi": "3.1.0", info, paths, components: {schemas}}`.
    pub fn into_document(self, info: Value) -> Value {
        json!({"openapi": "3.1.0", "info": info, "paths": self.paths,
            "components": {"schemas": self.schemas}})
    }
}

/// A `$ref` to `T`'s schema, adding it (and the schemas it refers to) to `schemas`.
pub fn schema<T: ToSchema>(schemas: &mut Map<String, Value>) -> Value {
    let mut deps = Vec::new();
    T::schemas(&mut deps);
    deps.push((T::name().into_owned(), T::schema()));
    for (name, s) in deps {
        schemas.insert(name, serde_json::to_value(s).expect("a schema serialises"));
    }
    json!({"$ref": format!("#/components/schemas/{}", T::name())})
}

/// One operation under construction.
pub struct Op {
    op: Value,
    schemas: Map<String, Value>,
}

impl Op {
    pub fn new(tag: &str, summary: &str) -> Op {
        Op {
            op: json!({"tags": [tag], "summary": summary, "parameters": [], "responses": {}}),
            schemas: Map::new(),
        }
    }

    pub fn describe(mut self, d: &str) -> Op {
        self.op["description"] = json!(d);
        self
    }

    /// A `$ref` to `T`'s schema, which the operation brings into the document.
    fn schema<T: ToSchema>(&mut self) -> Value {
        schema::<T>(&mut self.schemas)
    }

    /// A parameter `in` path (required) or query.
    pub fn param(mut self, name: &str, at: &str, schema: Value, d: &str) -> Op {
        let p = json!({"name": name, "in": at, "required": at == "path", "schema": schema, "description": d});
        self.op["parameters"]
            .as_array_mut()
            .expect("parameters")
            .push(p);
        self
    }

    pub fn query(self, name: &str, schema: Value, d: &str) -> Op {
        self.param(name, "query", schema, d)
    }

    pub fn path(self, name: &str, d: &str) -> Op {
        self.param(name, "path", json!({"type": "string"}), d)
    }

    /// A body of type `T` in each of `media` (e.g. JSON and YAML, both parsed into `T`).
    pub fn body_of<T: ToSchema>(mut self, media: &[&str]) -> Op {
        let s = self.schema::<T>();
        let content: Map<String, Value> = media
            .iter()
            .map(|m| (m.to_string(), json!({"schema": s})))
            .collect();
        self.op["requestBody"] = json!({"required": true, "content": content});
        self
    }

    pub fn json_body<T: ToSchema>(self) -> Op {
        self.body_of::<T>(&["application/json"])
    }

    pub fn resp(mut self, code: &str, d: &str, content: Option<Value>) -> Op {
        let mut r = json!({"description": d});
        if let Some(c) = content {
            r["content"] = c;
        }
        self.op["responses"][code] = r;
        self
    }

    /// A JSON answer of type `T`.
    pub fn json<T: ToSchema>(mut self, code: &str, d: &str) -> Op {
        let s = self.schema::<T>();
        self.resp(code, d, Some(json!({"application/json": {"schema": s}})))
    }

    /// A JSON answer whose shape is not fixed (statistics, documents).
    pub fn json_object(self, code: &str, d: &str) -> Op {
        self.resp(
            code,
            d,
            Some(json!({"application/json": {"schema": {"type": "object"}}})),
        )
    }

    pub fn problem(mut self, code: &str, d: &str) -> Op {
        let s = self.schema::<crate::Problem>();
        self.resp(
            code,
            d,
            Some(json!({"application/problem+json": {"schema": s}})),
        )
    }
}
