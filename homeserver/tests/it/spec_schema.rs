//! Responses checked against the Matrix specification's own schemas: the OpenAPI files of the
//! client-server API in a matrix-spec checkout (`data/api/client-server/*.yaml`).
//!
//! - Where the spec is: `LATTICE_MATRIX_SPEC` (the checkout's root), else a `shared/matrix-spec`
//!   found upwards from this crate, else `/work/shared/matrix-spec`. Without it the tests say so
//!   loudly and pass, unless `LATTICE_REQUIRE_SPEC=1`, which makes a missing spec a failure.
//! - `Spec`: the operations of every file (path templates joined to their `servers` base path),
//!   the lookup of a response schema by method, concrete request path and status, and `$ref`
//!   resolution relative to the file holding the reference (files loaded once, resolutions
//!   memoised, a depth limit against recursive schemas). A reference that does not resolve is a
//!   violation, never a pass.
//! - The validator: the JSON-Schema subset the spec uses (`type`, `properties`, `required`,
//!   `additionalProperties`, `patternProperties` with the spec's prefix patterns, `items`,
//!   `allOf`, `anyOf`, `oneOf` as "at least one", `enum`, `const`, `$ref`); `format`, `pattern`,
//!   bounds, examples and `x-*` are ignored. A violation names the JSON pointer and the reason:
//!   `/devices/0/display_name: expected string, got null`.
//! - The tests: the validator on its own (synthetic schemas, then the spec's), every `$ref` of
//!   every response schema resolving, a real server's responses across the client-server API
//!   (all violations are collected and reported together), and the behaviours behind the
//!   conformance issue (tags must be objects, `visibility` defaults to `public`).

use std::{
    collections::{HashMap, HashSet},
    fmt,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

/// Nested schema levels (each `$ref`, combinator or property) before validation gives up.
const MAX_DEPTH: usize = 256;

// ---------------------------------------------------------------------------------------------
// Finding the spec
// ---------------------------------------------------------------------------------------------

fn is_spec_root(dir: &Path) -> bool {
    dir.join("data/api/client-server").is_dir()
}

fn locate_spec() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LATTICE_MATRIX_SPEC") {
        let dir = PathBuf::from(dir);
        assert!(
            is_spec_root(&dir),
            "LATTICE_MATRIX_SPEC={} is not a matrix-spec checkout (no data/api/client-server)",
            dir.display()
        );
        return Some(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/matrix-spec"))
        .chain([PathBuf::from("/work/shared/matrix-spec")])
        .find(|dir| is_spec_root(dir))
}

/// The spec, loaded once per test binary; `None` (after a loud message) when there is none and
/// it is not required.
fn spec() -> Option<Arc<Spec>> {
    static SPEC: OnceLock<Option<Arc<Spec>>> = OnceLock::new();
    SPEC.get_or_init(|| match locate_spec() {
        Some(root) => Some(Arc::new(Spec::load(&root).unwrap_or_else(|e| panic!("spec_schema: {e}")))),
        None => {
            if std::env::var("LATTICE_REQUIRE_SPEC").as_deref() == Ok("1") {
                panic!(
                    "spec_schema: matrix-spec not found (LATTICE_REQUIRE_SPEC=1); set LATTICE_MATRIX_SPEC \
                     to a matrix-spec checkout or put one at ../shared/matrix-spec"
                );
            }
            None
        }
    })
    .clone()
    .or_else(|| {
        eprintln!(
            "spec_schema: matrix-spec not found; set LATTICE_MATRIX_SPEC to a matrix-spec checkout \
             (or put one at ../shared/matrix-spec). SKIPPING the spec conformance checks."
        );
        None
    })
}

// ---------------------------------------------------------------------------------------------
// Loading the OpenAPI files
// ---------------------------------------------------------------------------------------------

/// One operation of the spec: a method on a path template.
#[derive(Debug)]
struct Operation {
    /// The full template, base path included: `/_matrix/client/v3/devices/{deviceId}`.
    template: String,
    method: String,
    file: PathBuf,
    /// JSON pointer to the operation object in `file`.
    pointer: String,
}

impl Operation {
    /// How well a concrete path (no query) matches: the number of literal segments, or `None`.
    fn score(&self, path: &str) -> Option<usize> {
        let template: Vec<&str> = self.template.split('/').collect();
        let concrete: Vec<&str> = path.split('/').collect();
        if template.len() != concrete.len() {
            return None;
        }
        let mut literal = 0;
        for (t, c) in template.iter().zip(&concrete) {
            // A parameter matches any segment, even an empty one (the state key `""`).
            let parameter = t.starts_with('{') && t.ends_with('}');
            if !parameter {
                if t != c {
                    return None;
                }
                literal += 1;
            }
        }
        Some(literal)
    }
}

/// A schema: a node (by JSON pointer) of one file; references inside it are relative to that file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SchemaRef {
    file: PathBuf,
    pointer: String,
}

impl fmt::Display for SchemaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.file.display(), self.pointer)
    }
}

/// One way a value breaks its schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// JSON pointer into the validated value (`""` for the value itself).
    pointer: String,
    reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() { "(root)" } else { &self.pointer };
        write!(f, "{at}: {}", self.reason)
    }
}

pub struct Spec {
    /// `data/api/client-server` of the checkout (empty for a bare validator).
    dir: PathBuf,
    operations: Vec<Operation>,
    /// Parsed files by normalised path.
    files: Mutex<HashMap<PathBuf, Arc<Value>>>,
    /// `(file holding the $ref, $ref text)` → target, or why it does not resolve.
    refs: Mutex<HashMap<(PathBuf, String), Result<SchemaRef, String>>>,
}

/// `path` with `.` and `..` applied lexically, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// YAML to JSON; mapping keys that are not strings (`200:`) become their text.
fn yaml_to_json(value: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                let f = n.as_f64().ok_or_else(|| format!("unrepresentable number {n}"))?;
                serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => yaml_to_json(tagged.value)?,
    })
}

fn read_yaml(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    yaml_to_json(yaml).map_err(|e| format!("{}: {e}", path.display()))
}

/// The path part of an OpenAPI `servers[0].url`, its variables replaced by their defaults.
fn base_path(document: &Value) -> String {
    let server = &document["servers"][0];
    let mut url = server["url"].as_str().unwrap_or("").to_owned();
    if let Some(variables) = server["variables"].as_object() {
        for (name, variable) in variables {
            let default = variable["default"].as_str().unwrap_or("");
            url = url.replace(&format!("{{{name}}}"), default);
        }
    }
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| rest[i..].to_owned()).unwrap_or_default(),
        None => url,
    }
    .trim_end_matches('/')
    .to_owned()
}

impl Spec {
    /// A spec without operations: a validator for schema files anywhere.
    fn bare() -> Spec {
        Spec { dir: PathBuf::new(), operations: Vec::new(), files: Mutex::default(), refs: Mutex::default() }
    }

    /// Reads every `data/api/client-server/*.yaml` under the checkout `root`.
    pub fn load(root: &Path) -> Result<Spec, String> {
        let dir = normalise(&root.join("data/api/client-server"));
        let mut spec = Spec { dir: dir.clone(), ..Spec::bare() };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        entries.sort();
        for file in entries {
            let document = spec.document(&file)?;
            let Some(paths) = document["paths"].as_object() else { continue };
            let base = base_path(&document);
            for (template, item) in paths {
                let Some(item) = item.as_object() else { continue };
                for (method, operation) in item {
                    if !operation.is_object()
                        || !["get", "put", "post", "delete", "patch", "head", "options"]
                            .contains(&method.as_str())
                    {
                        continue;
                    }
                    spec.operations.push(Operation {
                        // Some keys carry a trailing space to repeat a path within a file.
                        template: format!("{base}{}", template.trim()),
                        method: method.clone(),
                        file: file.clone(),
                        pointer: format!("/paths/{}/{method}", escape_pointer(template)),
                    });
                }
            }
        }
        if spec.operations.is_empty() {
            return Err(format!("no operations found in {}", dir.display()));
        }
        Ok(spec)
    }

    /// A parsed file, loaded once.
    fn document(&self, file: &Path) -> Result<Arc<Value>, String> {
        let file = normalise(file);
        if let Some(doc) = self.files.lock().unwrap().get(&file) {
            return Ok(doc.clone());
        }
        let doc = Arc::new(read_yaml(&file)?);
        self.files.lock().unwrap().insert(file, doc.clone());
        Ok(doc)
    }

    /// The node a schema reference designates.
    fn node(&self, schema: &SchemaRef) -> Result<(Arc<Value>, String), String> {
        let doc = self.document(&schema.file)?;
        if doc.pointer(&schema.pointer).is_none() {
            return Err(format!("{schema} does not exist"));
        }
        Ok((doc, schema.pointer.clone()))
    }

    /// Resolves `reference` (a `$ref` value) found in `from`.
    fn resolve(&self, from: &Path, reference: &str) -> Result<SchemaRef, String> {
        let key = (from.to_owned(), reference.to_owned());
        if let Some(done) = self.refs.lock().unwrap().get(&key) {
            return done.clone();
        }
        let (file_part, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let file = if file_part.is_empty() {
            from.to_owned()
        } else {
            normalise(&from.parent().unwrap_or(Path::new("")).join(file_part.trim()))
        };
        let target = SchemaRef { file, pointer: pointer.to_owned() };
        let result = self.node(&target).map(|_| target);
        self.refs.lock().unwrap().insert(key, result.clone());
        result
    }

    /// The operations a concrete request matches, most literal segments first among equals.
    fn operations(&self, method: &Method, path: &str) -> Vec<&Operation> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let method = method.as_str().to_ascii_lowercase();
        let scored: Vec<(usize, &Operation)> = self
            .operations
            .iter()
            .filter(|op| op.method == method)
            .filter_map(|op| op.score(path).map(|s| (s, op)))
            .collect();
        let best = scored.iter().map(|(s, _)| *s).max();
        scored.into_iter().filter(|(s, _)| Some(*s) == best).map(|(_, op)| op).collect()
    }

    /// The JSON schemas the spec gives for a response (one per matching operation; a path may
    /// be defined twice, as `POST …/invite` is).
    pub fn response_schemas(
        &self,
        method: &Method,
        path: &str,
        status: u16,
    ) -> Result<Vec<SchemaRef>, String> {
        let operations = self.operations(method, path);
        if operations.is_empty() {
            return Err(format!("the spec has no operation {method} {path}"));
        }
        let mut schemas = Vec::new();
        let mut reasons = Vec::new();
        for op in operations {
            match self.operation_response_schema(op, status) {
                Ok(schema) => schemas.push(schema),
                Err(reason) => reasons.push(reason),
            }
        }
        if schemas.is_empty() { Err(reasons.join("; ")) } else { Ok(schemas) }
    }

    /// The JSON schema of one operation's response with `status`.
    fn operation_response_schema(&self, op: &Operation, status: u16) -> Result<SchemaRef, String> {
        let response =
            SchemaRef { file: op.file.clone(), pointer: format!("{}/responses/{status}", op.pointer) };
        if self.node(&response).is_err() {
            return Err(format!("{} {} defines no {status} response", op.method.to_uppercase(), op.template));
        }
        let response = self.follow_response_refs(response)?;
        let schema = SchemaRef {
            file: response.file.clone(),
            pointer: format!("{}/content/application~1json/schema", response.pointer),
        };
        match self.node(&schema) {
            Ok(_) => Ok(schema),
            Err(_) => Err(format!(
                "{} {} has no application/json schema for {status}",
                op.method.to_uppercase(),
                op.template
            )),
        }
    }

    /// A response object, its `$ref`s (`#/components/responses/…`) followed.
    fn follow_response_refs(&self, mut response: SchemaRef) -> Result<SchemaRef, String> {
        for _ in 0..8 {
            let (doc, pointer) = self.node(&response)?;
            let Some(reference) = doc.pointer(&pointer).and_then(|r| r["$ref"].as_str()) else {
                return Ok(response);
            };
            response = self
                .resolve(&response.file, reference)
                .map_err(|reason| format!("{response}: $ref {reference:?}: {reason}"))?;
        }
        Err(format!("{response}: response $ref chain longer than 8"))
    }

    /// Validates a response body against the spec's schema for it (any of them, when a path is
    /// defined twice). A missing schema is a violation too.
    pub fn check_response(&self, method: &Method, path: &str, status: u16, body: &Value) -> Vec<Violation> {
        let schemas = match self.response_schemas(method, path, status) {
            Ok(schemas) => schemas,
            Err(reason) => {
                return vec![Violation { pointer: String::new(), reason: format!("no schema: {reason}") }];
            }
        };
        let mut first = None;
        for schema in &schemas {
            let violations = self.validate(schema, body);
            if violations.is_empty() {
                return violations;
            }
            first.get_or_insert(violations);
        }
        first.unwrap_or_default()
    }

    /// The spec's standard error body (`errcode`, `error`).
    fn error_schema(&self) -> SchemaRef {
        SchemaRef { file: self.dir.join("definitions/errors/error.yaml"), pointer: String::new() }
    }

    /// Validates `instance` against the schema at `schema`.
    pub fn validate(&self, schema: &SchemaRef, instance: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        match self.node(schema) {
            Ok((doc, pointer)) => {
                let node = doc.pointer(&pointer).expect("node checked");
                self.check(&schema.file, node, instance, "", 0, &mut out);
            }
            Err(reason) => out.push(Violation { pointer: String::new(), reason }),
        }
        out
    }

    /// Every `$ref` reachable from every response schema of every operation, resolved; the
    /// ones that do not resolve (`file#pointer: reason`).
    fn unresolvable_refs(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut broken = Vec::new();
        for op in &self.operations {
            let responses = SchemaRef { file: op.file.clone(), pointer: format!("{}/responses", op.pointer) };
            let Ok((doc, pointer)) = self.node(&responses) else { continue };
            let Some(statuses) = doc.pointer(&pointer).and_then(Value::as_object) else { continue };
            for status in statuses.keys() {
                let response = SchemaRef {
                    file: op.file.clone(),
                    pointer: format!("{pointer}/{}", escape_pointer(status)),
                };
                let response = match self.follow_response_refs(response) {
                    Ok(response) => response,
                    Err(reason) => {
                        broken.push(reason);
                        continue;
                    }
                };
                let schema = SchemaRef {
                    file: response.file.clone(),
                    pointer: format!("{}/content/application~1json/schema", response.pointer),
                };
                if self.node(&schema).is_ok() {
                    self.walk_refs(&schema, &mut seen, &mut broken, 0);
                }
            }
        }
        broken
    }

    fn walk_refs(
        &self,
        at: &SchemaRef,
        seen: &mut HashSet<SchemaRef>,
        broken: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH || !seen.insert(at.clone()) {
            return;
        }
        let Ok((doc, pointer)) = self.node(at) else {
            broken.push(format!("{at}: does not exist"));
            return;
        };
        let Some(schema) = doc.pointer(&pointer).and_then(Value::as_object) else { return };
        let child =
            |suffix: String| SchemaRef { file: at.file.clone(), pointer: format!("{}{suffix}", at.pointer) };
        let mut children = Vec::new();
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match self.resolve(&at.file, reference) {
                Ok(target) => children.push(target),
                Err(reason) => broken.push(format!("{at}: $ref {reference:?}: {reason}")),
            }
        }
        for keyword in ["properties", "patternProperties"] {
            for key in schema.get(keyword).and_then(Value::as_object).into_iter().flat_map(|m| m.keys()) {
                children.push(child(format!("/{keyword}/{}", escape_pointer(key))));
            }
        }
        for keyword in ["allOf", "anyOf", "oneOf", "items"] {
            match schema.get(keyword) {
                Some(Value::Array(items)) => {
                    children.extend((0..items.len()).map(|i| child(format!("/{keyword}/{i}"))))
                }
                Some(Value::Object(_)) => children.push(child(format!("/{keyword}"))),
                _ => {}
            }
        }
        for keyword in ["additionalProperties", "not"] {
            if schema.get(keyword).is_some_and(Value::is_object) {
                children.push(child(format!("/{keyword}")));
            }
        }
        for c in children {
            self.walk_refs(&c, seen, broken, depth + 1);
        }
    }

    /// The validator proper. `file` is the file `schema` belongs to.
    fn check(
        &self,
        file: &Path,
        schema: &Value,
        instance: &Value,
        at: &str,
        depth: usize,
        out: &mut Vec<Violation>,
    ) {
        let violation = |reason: String| Violation { pointer: at.to_owned(), reason };
        if depth > MAX_DEPTH {
            out.push(violation(format!("schema nesting deeper than {MAX_DEPTH} levels (a recursive $ref?)")));
            return;
        }
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                return out.push(violation("no value is allowed here (schema `false`)".into()));
            }
            Value::Object(schema) => schema,
            other => return out.push(violation(format!("the spec's schema here is not an object: {other}"))),
        };

        if let Some(reference) = schema.get("$ref") {
            let Some(reference) = reference.as_str() else {
                return out.push(violation(format!("$ref is not a string: {reference}")));
            };
            match self.resolve(file, reference) {
                Ok(target) => {
                    let doc = self.document(&target.file).expect("resolved file loads");
                    let node = doc.pointer(&target.pointer).expect("resolved node exists");
                    self.check(&target.file, node, instance, at, depth + 1, out);
                }
                Err(reason) => {
                    let reason = format!("unresolvable $ref {reference:?} in {}: {reason}", file.display());
                    return out.push(violation(reason));
                }
            }
        }

        if let Some(ty) = schema.get("type") {
            let allowed: Vec<&str> = match ty {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                other => {
                    out.push(Violation {
                        pointer: at.to_owned(),
                        reason: format!("the spec's `type` is neither a string nor a list: {other}"),
                    });
                    return;
                }
            };
            if !allowed.iter().any(|t| type_matches(t, instance)) {
                let expected =
                    if allowed.len() == 1 { allowed[0].to_owned() } else { format!("one of {allowed:?}") };
                out.push(Violation {
                    pointer: at.to_owned(),
                    reason: format!("expected {expected}, got {}", type_name(instance)),
                });
                return; // the other keywords would only repeat the point
            }
        }

        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.iter().any(|o| json_equal(o, instance))
        {
            out.push(Violation {
                pointer: at.to_owned(),
                reason: format!("{} is not one of {}", short(instance), Value::Array(options.clone())),
            });
        }
        if let Some(constant) = schema.get("const")
            && !json_equal(constant, instance)
        {
            out.push(Violation {
                pointer: at.to_owned(),
                reason: format!("expected the constant {constant}, got {}", short(instance)),
            });
        }

        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(file, sub, instance, at, depth + 1, out);
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            let Some(alternatives) = schema.get(keyword).and_then(Value::as_array) else { continue };
            let mut reasons = Vec::new();
            let mut matched = false;
            for (i, sub) in alternatives.iter().enumerate() {
                let mut errors = Vec::new();
                self.check(file, sub, instance, at, depth + 1, &mut errors);
                if errors.is_empty() {
                    matched = true;
                    break;
                }
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                reasons.push(format!("[{i}] {}", errors.join(", ")));
            }
            if !matched {
                out.push(Violation {
                    pointer: at.to_owned(),
                    reason: format!(
                        "matches none of the {} {keyword} alternatives: {}",
                        alternatives.len(),
                        reasons.join("; ")
                    ),
                });
            }
        }

        if let Some(object) = instance.as_object() {
            for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = name.as_str()
                    && !object.contains_key(name)
                {
                    out.push(Violation {
                        pointer: at.to_owned(),
                        reason: format!("missing required property {name:?}"),
                    });
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let patterns = schema.get("patternProperties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, value) in object {
                let child = format!("{at}/{}", escape_pointer(key));
                if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    self.check(file, sub, value, &child, depth + 1, out);
                    continue;
                }
                let mut by_pattern = false;
                for (pattern, sub) in patterns.into_iter().flatten() {
                    if pattern_matches(pattern, key) {
                        by_pattern = true;
                        self.check(file, sub, value, &child, depth + 1, out);
                    }
                }
                if by_pattern {
                    continue;
                }
                match additional {
                    Some(Value::Bool(false)) => out.push(Violation {
                        pointer: at.to_owned(),
                        reason: format!("unexpected property {key:?} (additionalProperties is false)"),
                    }),
                    Some(sub @ Value::Object(_)) => self.check(file, sub, value, &child, depth + 1, out),
                    _ => {}
                }
            }
        }

        if let Some(array) = instance.as_array() {
            match schema.get("items") {
                Some(Value::Array(positional)) => {
                    for (i, (sub, item)) in positional.iter().zip(array).enumerate() {
                        self.check(file, sub, item, &format!("{at}/{i}"), depth + 1, out);
                    }
                }
                Some(sub) => {
                    for (i, item) in array.iter().enumerate() {
                        self.check(file, sub, item, &format!("{at}/{i}"), depth + 1, out);
                    }
                }
                None => {}
            }
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "number" => value.is_number(),
        other => type_name(value) == other,
    }
}

/// JSON equality with `1` equal to `1.0`.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The spec's property patterns are anchored literal prefixes (`^@`, `^!`, `^\$`) or empty.
/// Anything richer is treated as matching every key.
fn pattern_matches(pattern: &str, key: &str) -> bool {
    let Some(rest) = pattern.strip_prefix('^') else { return true };
    let mut literal = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) if !escaped.is_alphanumeric() => literal.push(escaped),
                _ => return true,
            },
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '$' | '^' => return true,
            c => literal.push(c),
        }
    }
    key.starts_with(&literal)
}

/// A value for a message, shortened.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 300 {
        format!("{}…", text.chars().take(300).collect::<String>())
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------------------
// Calling a server and checking what it answers
// ---------------------------------------------------------------------------------------------

/// Requests against a server whose responses are all validated; violations are collected and
/// reported together by `finish`.
struct Conformance<'a> {
    spec: &'a Spec,
    server: &'a TestServer,
    failures: Vec<String>,
    checked: Vec<String>,
    unserved: Vec<String>,
}

impl<'a> Conformance<'a> {
    fn new(spec: &'a Spec, server: &'a TestServer) -> Self {
        Conformance { spec, server, failures: Vec::new(), checked: Vec::new(), unserved: Vec::new() }
    }

    /// A request that must answer 200, with its body validated.
    async fn call(&mut self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
        self.call_expecting(200, method, path, token, body).await
    }

    async fn get(&mut self, path: &str, user: &User) -> Value {
        self.call(Method::GET, path, Some(&user.token), None).await
    }

    async fn post(&mut self, path: &str, user: &User, body: Value) -> Value {
        self.call(Method::POST, path, Some(&user.token), Some(body)).await
    }

    async fn put(&mut self, path: &str, user: &User, body: Value) -> Value {
        self.call(Method::PUT, path, Some(&user.token), Some(body)).await
    }

    /// A GET of an endpoint Lattice may not serve: 404 `M_UNRECOGNIZED` is noted, not failed.
    async fn get_if_served(&mut self, path: &str, user: &User) -> Option<Value> {
        let (status, response) = self.server.get(path, Some(&user.token)).await;
        if status == 404 && response["errcode"] == "M_UNRECOGNIZED" {
            eprintln!("spec_schema: GET {path} is not served; not checked");
            self.unserved.push(format!("GET {path}"));
            return None;
        }
        assert_eq!(status, 200, "GET {path}: {response}");
        self.check_as(&Method::GET, path, path, status, &response);
        Some(response)
    }

    /// A behavioural expectation; a failure is reported with the schema violations.
    fn expect(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    async fn call_expecting(
        &mut self,
        status: u16,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let (got, response) = self.server.request(method.clone(), path, token, body).await;
        assert_eq!(
            got,
            status,
            "{method} {path}: {response}\n(schema violations so far:\n{})",
            self.failures.join("\n\n")
        );
        self.check_as(&method, path, path, status, &response);
        response
    }

    /// Validates `body`, the answer to `path`, against the spec's schema for `spec_path`.
    fn check_as(&mut self, method: &Method, path: &str, spec_path: &str, status: u16, body: &Value) {
        let violations = self.spec.check_response(method, spec_path, status, body);
        self.record(method, path, spec_path, status, body, violations);
    }

    /// Validates an error answer: against the operation's schema for that status where the spec
    /// gives one, else against the spec's standard error body.
    fn check_error(&mut self, method: &Method, path: &str, status: u16, body: &Value) {
        let violations = match self.spec.response_schemas(method, path, status) {
            Ok(_) => self.spec.check_response(method, path, status, body),
            Err(_) => self.spec.validate(&self.spec.error_schema(), body),
        };
        self.record(method, path, path, status, body, violations);
    }

    fn record(
        &mut self,
        method: &Method,
        path: &str,
        spec_path: &str,
        status: u16,
        body: &Value,
        violations: Vec<Violation>,
    ) {
        let shown = path.split('?').next().unwrap_or(path);
        self.checked.push(format!("{method} {shown} {status}"));
        if violations.is_empty() {
            return;
        }
        let mut report = format!("{method} {path} → {status}");
        if spec_path != path {
            report.push_str(&format!(" (checked as {spec_path})"));
        }
        for v in &violations {
            report.push_str(&format!("\n    {v}\n      in: {}", short(offending(body, &v.pointer))));
        }
        self.failures.push(report);
    }

    fn finish(self) {
        eprintln!("spec_schema: {} responses validated: {}", self.checked.len(), self.checked.join(", "));
        if !self.unserved.is_empty() {
            eprintln!("spec_schema: not served, so not checked: {}", self.unserved.join(", "));
        }
        assert!(
            self.failures.is_empty(),
            "{} failures over {} responses checked against the spec's schemas:\n\n{}",
            self.failures.len(),
            self.checked.len(),
            self.failures.join("\n\n")
        );
    }
}

/// The object holding the value a violation points at (the value itself at the root).
fn offending<'v>(body: &'v Value, pointer: &str) -> &'v Value {
    let parent = pointer.rsplit_once('/').map(|(parent, _)| parent).unwrap_or("");
    match body.pointer(pointer) {
        Some(v) if v.is_object() || v.is_array() => v,
        _ => body.pointer(parent).unwrap_or(body),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

const V3: &str = "/_matrix/client/v3";
const V1: &str = "/_matrix/client/v1";

fn room_path(room: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}{rest}", enc(room))
}

/// Registers through the spec's two steps (401 with the flows, then 200), both validated. No
/// device display name is given, so the device has none.
async fn register(c: &mut Conformance<'_>, name: &str) -> User {
    let password = format!("pw-{name}-secret");
    let path = format!("{V3}/register");
    let flows = c
        .call_expecting(
            401,
            Method::POST,
            &path,
            None,
            Some(json!({ "username": name, "password": password })),
        )
        .await;
    let session = flows["session"].as_str().expect("UIA session").to_owned();
    let body = json!({
        "username": name,
        "password": password,
        "auth": { "type": "m.login.dummy", "session": session },
    });
    let res = c.call(Method::POST, &path, None, Some(body)).await;
    User {
        user_id: res["user_id"].as_str().unwrap().to_owned(),
        token: res["access_token"].as_str().unwrap().to_owned(),
        password,
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// A temporary directory of YAML schema files.
fn schema_files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn reasons(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(ToString::to_string).collect()
}

#[test]
fn validator_checks_the_keywords_the_spec_uses() {
    let dir = schema_files(&[
        (
            "root.yaml",
            r##"
type: object
required: [id, kind]
additionalProperties: false
properties:
  id: { type: string }
  kind: { enum: [a, b] }
  version: { const: 1 }
  count: { type: integer }
  ratio: { type: number }
  maybe: { type: [string, "null"] }
  device: { $ref: defs/device.yaml }
  devices: { type: array, items: { $ref: "defs/device.yaml" } }
  either:
    oneOf:
      - { type: string }
      - { type: object, required: [x] }
  some: { anyOf: [{ type: boolean }, { type: integer }] }
  both: { allOf: [{ $ref: "#/components/named" }, { required: [extra] }] }
  rooms:
    type: object
    patternProperties:
      "^!": { type: object, required: [state] }
    additionalProperties: { type: integer }
components:
  named: { type: object, required: [name], properties: { name: { type: string } } }
"##,
        ),
        (
            "defs/device.yaml",
            "type: object\nrequired: [device_id]\nproperties:\n  device_id: { type: string }\n  \
             display_name: { type: string }\n  owner: { $ref: ../defs/owner.yaml#/owner }\n",
        ),
        ("defs/owner.yaml", "owner:\n  type: string\n"),
    ]);
    let spec = Spec::bare();
    let root = SchemaRef { file: dir.path().join("root.yaml"), pointer: String::new() };
    let valid = json!({
        "id": "x", "kind": "a", "version": 1.0, "count": 3, "ratio": 0.5, "maybe": null,
        "device": { "device_id": "D", "owner": "@a:b" },
        "devices": [{ "device_id": "E", "display_name": "phone" }],
        "either": { "x": 1 }, "some": 4, "both": { "name": "n", "extra": true },
        "rooms": { "!r:x": { "state": [] }, "count": 2 },
    });
    assert_eq!(reasons(&spec.validate(&root, &valid)), Vec::<String>::new());

    let invalid = json!({
        "kind": "c", "version": 2, "count": 1.5, "ratio": "1", "maybe": 3,
        "device": { "display_name": null, "owner": 7 },
        "devices": [{ "device_id": "E" }, { "device_id": "F", "display_name": null }],
        "either": { "y": 1 }, "some": "no", "both": { "name": 1 },
        "rooms": { "!r:x": {}, "count": "2" }, "surprise": true,
    });
    let got = reasons(&spec.validate(&root, &invalid));
    for expected in [
        "(root): missing required property \"id\"",
        "/kind: \"c\" is not one of [\"a\",\"b\"]",
        "/version: expected the constant 1, got 2",
        "/count: expected integer, got number",
        "/ratio: expected number, got string",
        "/maybe: expected one of [\"string\", \"null\"], got integer",
        "/device: missing required property \"device_id\"",
        "/device/display_name: expected string, got null",
        "/device/owner: expected string, got integer",
        "/devices/1/display_name: expected string, got null",
        "/some: matches none of the 2 anyOf alternatives",
        "/both: missing required property \"extra\"",
        "/both/name: expected string, got integer",
        "/rooms/!r:x: missing required property \"state\"",
        "/rooms/count: expected integer, got string",
        "(root): unexpected property \"surprise\" (additionalProperties is false)",
    ] {
        assert!(got.iter().any(|g| g.starts_with(expected)), "missing {expected:?} in {got:#?}");
    }
    assert!(
        got.iter().any(|g| g.starts_with("/either: matches none of the 2 oneOf alternatives")
            && g.contains("[1] /either: missing required property \"x\"")),
        "{got:#?}"
    );
    assert_eq!(got.len(), 17, "{got:#?}");
}

#[test]
fn unresolvable_and_recursive_references_are_violations_not_passes() {
    let dir = schema_files(&[
        ("missing_file.yaml", "type: object\nproperties:\n  a: { $ref: nowhere.yaml }\n"),
        ("missing_node.yaml", "$ref: 'other.yaml#/no/such/node'\n"),
        ("other.yaml", "present: { type: object }\n"),
        ("loop.yaml", "allOf:\n  - $ref: '#'\n"),
        ("ping.yaml", "$ref: pong.yaml\n"),
        ("pong.yaml", "$ref: ping.yaml\n"),
    ]);
    let spec = Spec::bare();
    let at = |file: &str| SchemaRef { file: dir.path().join(file), pointer: String::new() };
    let got = reasons(&spec.validate(&at("missing_file.yaml"), &json!({ "a": 1 })));
    assert!(got.len() == 1 && got[0].starts_with("/a: unresolvable $ref \"nowhere.yaml\""), "{got:?}");
    // Not reached, not checked: the value has no `a`.
    assert!(spec.validate(&at("missing_file.yaml"), &json!({})).is_empty());
    let got = reasons(&spec.validate(&at("missing_node.yaml"), &json!({})));
    assert!(got.len() == 1 && got[0].contains("does not exist"), "{got:?}");
    for file in ["loop.yaml", "ping.yaml"] {
        let got = reasons(&spec.validate(&at(file), &json!({})));
        assert!(got.len() == 1 && got[0].contains("deeper than"), "{file}: {got:?}");
    }
    let got = reasons(&spec.validate(&at("absent.yaml"), &json!({})));
    assert!(got.len() == 1 && got[0].contains("cannot read"), "{got:?}");
}

#[test]
fn spec_paths_resolve_to_response_schemas() {
    let Some(spec) = spec() else { return };
    let file_of = |method: Method, path: &str, status: u16| {
        let schemas = spec.response_schemas(&method, path, status).unwrap_or_else(|e| panic!("{path}: {e}"));
        schemas.iter().map(|s| s.file.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>()
    };
    assert_eq!(file_of(Method::GET, "/_matrix/client/v3/devices", 200), ["device_management.yaml"]);
    assert_eq!(file_of(Method::GET, "/_matrix/client/v3/devices/ABC?x=1", 200), ["device_management.yaml"]);
    let schema = &spec.response_schemas(&Method::GET, "/_matrix/client/v3/devices/ABC", 200).unwrap()[0];
    let (doc, pointer) = spec.node(schema).unwrap();
    assert_eq!(doc.pointer(&pointer).unwrap()["$ref"], "definitions/client_device.yaml");
    assert_eq!(file_of(Method::GET, "/_matrix/client/versions", 200), ["versions.yaml"]);
    assert_eq!(file_of(Method::GET, "/_matrix/client/v3/admin/whois/%40a%3Ab", 200), ["admin.yaml"]);
    assert_eq!(file_of(Method::GET, "/_matrix/client/v1/rooms/!r/relations/$e", 200), ["relations.yaml"]);
    // The trailing slash is part of the template.
    assert_eq!(file_of(Method::GET, "/_matrix/client/v3/pushrules/", 200), ["pushrules.yaml"]);
    // Defined twice (the `invite ` key with a trailing space): both are candidates.
    assert_eq!(file_of(Method::POST, "/_matrix/client/v3/rooms/!r/invite", 200).len(), 2);
    // Error responses through `#/components/…` and shared files.
    assert_eq!(file_of(Method::POST, "/_matrix/client/v3/register", 401), ["registration.yaml"]);
    let media = spec.response_schemas(&Method::GET, "/_matrix/client/v1/media/config", 429).unwrap();
    assert_eq!(media[0].pointer, "/components/responses/rateLimited/content/application~1json/schema");
    assert!(spec.response_schemas(&Method::GET, "/_matrix/client/v3/nonsense", 200).is_err());
    assert!(spec.response_schemas(&Method::DELETE, "/_matrix/client/v3/joined_rooms", 200).is_err());
    assert!(spec.response_schemas(&Method::GET, "/_matrix/client/v3/joined_rooms", 418).is_err());
}

#[test]
fn spec_schemas_catch_the_known_bugs() {
    let Some(spec) = spec() else { return };
    let check =
        |method: Method, path: &str, body: Value| reasons(&spec.check_response(&method, path, 200, &body));
    let devices = "/_matrix/client/v3/devices";
    assert_eq!(
        check(Method::GET, devices, json!({ "devices": [{ "device_id": "A", "display_name": null }] })),
        ["/devices/0/display_name: expected string, got null"]
    );
    assert_eq!(
        check(Method::GET, devices, json!({ "devices": [{ "device_id": "A", "last_seen_ip": null }] })),
        ["/devices/0/last_seen_ip: expected string, got null"]
    );
    assert_eq!(
        check(Method::GET, devices, json!({ "devices": [{ "display_name": "x" }] })),
        ["/devices/0: missing required property \"device_id\""]
    );
    let fine = json!({ "devices": [{ "device_id": "A", "last_seen_ts": 5 }, { "device_id": "B" }] });
    assert_eq!(check(Method::GET, devices, fine), Vec::<String>::new());
    assert!(!check(Method::GET, "/_matrix/client/v3/devices/A", json!({ "device_id": 1 })).is_empty());

    let got = check(
        Method::POST,
        "/_matrix/client/v3/user_directory/search",
        json!({ "limited": false, "results": [{ "user_id": "@a:b", "avatar_url": null }] }),
    );
    assert_eq!(got, ["/results/0/avatar_url: expected string, got null"]);
    let got = check(
        Method::GET,
        "/_matrix/client/v3/rooms/!r:x/joined_members",
        json!({ "joined": { "@a:b": { "display_name": "A", "avatar_url": null } } }),
    );
    assert_eq!(got, ["/joined/@a:b/avatar_url: expected string, got null"]);
    let whois = json!({ "user_id": "@a:b", "devices": { "D": { "sessions": [{ "connections": [
        { "ip": null, "last_seen": 1, "user_agent": null }
    ] }] } } });
    let got = check(Method::GET, "/_matrix/client/v3/admin/whois/@a:b", whois);
    assert_eq!(
        got,
        [
            "/devices/D/sessions/0/connections/0/ip: expected string, got null",
            "/devices/D/sessions/0/connections/0/user_agent: expected string, got null",
        ]
    );
    let tags = "/_matrix/client/v3/user/@a:b/rooms/!r:x/tags";
    assert_eq!(
        check(Method::GET, tags, json!({ "tags": { "m.favourite": ["x"] } })),
        ["/tags/m.favourite: expected object, got array"]
    );
    assert_eq!(
        check(Method::GET, tags, json!({ "tags": { "u.x": { "order": 0.5 } } })),
        Vec::<String>::new()
    );
    let visibility = "/_matrix/client/v3/directory/list/room/!r:x";
    assert_eq!(
        check(Method::GET, visibility, json!({ "visibility": "open" })),
        ["/visibility: \"open\" is not one of [\"private\",\"public\"]"]
    );
}

#[test]
fn every_response_schema_reference_resolves() {
    let Some(spec) = spec() else { return };
    let broken = spec.unresolvable_refs();
    assert!(broken.is_empty(), "unresolvable $refs in the spec's response schemas:\n{}", broken.join("\n"));
    // And the walk did reach the shared definitions and the event schemas.
    let files = spec.files.lock().unwrap();
    for expected in ["client_device.yaml", "core-event-schema/sync_room_event.yaml", "unsigned_prop.yaml"] {
        assert!(files.keys().any(|f| f.ends_with(expected)), "{expected} never loaded");
    }
}

#[tokio::test]
async fn account_responses_match_the_spec() {
    let Some(spec) = spec() else { return };
    let server = TestServer::start_with(|c| c.registration.shared_secret = "reg_secret".into()).await;
    let mut c = Conformance::new(&spec, &server);

    c.call(Method::GET, "/_matrix/client/versions", None, None).await;
    c.call(Method::GET, &format!("{V3}/login"), None, None).await;
    let alice = register(&mut c, "alice").await;
    let bob = register(&mut c, "bob").await;
    let t = Some(alice.token.as_str());
    c.get(&format!("{V3}/account/whoami"), &alice).await;
    c.get_if_served(&format!("{V3}/capabilities"), &alice).await;

    // A second device, logged in without a display name either.
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": alice.password,
    });
    let second = c.call(Method::POST, &format!("{V3}/login"), None, Some(login)).await;
    let second_device = second["device_id"].as_str().unwrap().to_owned();
    let devices = c.get(&format!("{V3}/devices"), &alice).await;
    let list = devices["devices"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{devices}");
    // No name was ever given: the field is absent, not null (the spec: "Absent if no name has
    // been set"). The same goes for `last_seen_ip` while no address is recorded.
    c.expect(list.iter().all(|d| d.get("display_name").is_none()), || {
        format!("GET /devices: a device without a name must have no `display_name`: {devices}")
    });
    // The check bites on this very response once a field is null.
    let mut broken = devices.clone();
    broken["devices"][1]["display_name"] = Value::Null;
    let got = reasons(&spec.check_response(&Method::GET, &format!("{V3}/devices"), 200, &broken));
    assert!(got.contains(&"/devices/1/display_name: expected string, got null".to_owned()), "{got:?}");
    let device = c.get(&format!("{V3}/devices/{}", enc(&second_device)), &alice).await;
    assert_eq!(device["device_id"], second_device.as_str());
    // Named, then still valid.
    c.put(&format!("{V3}/devices/{}", enc(&second_device)), &alice, json!({ "display_name": "phone" })).await;
    c.get(&format!("{V3}/devices/{}", enc(&second_device)), &alice).await;

    // Profiles: bob has nothing set, alice only a display name.
    c.get(&format!("{V3}/profile/{}", enc(&bob.user_id)), &alice).await;
    let displayname = format!("{V3}/profile/{}/displayname", enc(&alice.user_id));
    c.put(&displayname, &alice, json!({ "displayname": "Alice" })).await;
    c.get(&format!("{V3}/profile/{}", enc(&alice.user_id)), &bob).await;
    c.get(&displayname, &bob).await;

    // Account data and filters.
    let data = format!("{V3}/user/{}/account_data/org.example.settings", enc(&alice.user_id));
    c.put(&data, &alice, json!({ "theme": "dark" })).await;
    c.get(&data, &alice).await;
    let filter = c
        .post(
            &format!("{V3}/user/{}/filter", enc(&alice.user_id)),
            &alice,
            json!({ "room": { "timeline": { "limit": 10 } }, "presence": { "not_types": ["*"] } }),
        )
        .await;
    let filter_id = filter["filter_id"].as_str().expect("filter_id");
    c.get(&format!("{V3}/user/{}/filter/{}", enc(&alice.user_id), enc(filter_id)), &alice).await;

    // Push rules.
    c.get(&format!("{V3}/pushrules/"), &alice).await;
    c.get(&format!("{V3}/pushrules/global/"), &alice).await;
    c.get(&format!("{V3}/pushrules/global/override/.m.rule.master"), &alice).await;
    c.get(&format!("{V3}/pushrules/global/override/.m.rule.master/enabled"), &alice).await;
    c.get(&format!("{V3}/pushrules/global/underride/.m.rule.message/actions"), &alice).await;
    let pusher = json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": "key", "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en", "profile_tag": "tag",
        "data": { "url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only" },
    });
    c.post(&format!("{V3}/pushers/set"), &alice, pusher).await;
    let pushers = c.get(&format!("{V3}/pushers"), &alice).await;
    assert_eq!(pushers["pushers"][0]["pushkey"], "key", "{pushers}");

    // Presence: before anything was set, then after.
    let presence = format!("{V3}/presence/{}/status", enc(&alice.user_id));
    c.get(&presence, &alice).await;
    c.put(&presence, &alice, json!({ "presence": "online", "status_msg": "here" })).await;
    c.get(&presence, &alice).await;

    // whois: the spec's path, asked by the user herself and by an admin, and Synapse's path
    // (the same shape, checked against the spec's schema).
    let whois = format!("{V3}/admin/whois/{}", enc(&alice.user_id));
    c.call(Method::GET, &whois, t, None).await;
    let admin = server.register_admin("root").await;
    c.get(&whois, &admin).await;
    let synapse = format!("/_synapse/admin/v1/whois/{}", enc(&alice.user_id));
    let (status, body) = server.get(&synapse, Some(&admin.token)).await;
    assert_eq!(status, 200, "{body}");
    c.check_as(&Method::GET, &synapse, &whois, 200, &body);
    assert_eq!(body["devices"].as_object().map(|d| d.len()), Some(2), "{body}");

    c.finish();
}

#[tokio::test]
async fn room_responses_match_the_spec() {
    let Some(spec) = spec() else { return };
    let server = TestServer::start().await;
    let mut c = Conformance::new(&spec, &server);
    let alice = register(&mut c, "alice").await;
    let bob = register(&mut c, "bob").await;
    let sync_path = |since: Option<&str>| match since {
        Some(since) => format!("{V3}/sync?timeout=0&since={}", enc(since)),
        None => format!("{V3}/sync?timeout=0"),
    };
    let initial = c.get(&sync_path(None), &alice).await;
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    let created = c
        .post(
            &format!("{V3}/createRoom"),
            &alice,
            json!({ "preset": "public_chat", "visibility": "public", "name": "Lobby", "topic": "all",
                    "room_alias_name": "lobby" }),
        )
        .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    c.post(&format!("{V3}/join/{}", enc("#lobby:localhost")), &bob, json!({})).await;
    c.get(&format!("{V3}/directory/room/{}", enc("#lobby:localhost")), &bob).await;
    c.get(&room_path(&room, "/aliases"), &alice).await;
    c.get(&format!("{V3}/directory/list/room/{}", enc(&room)), &bob).await;
    c.call(Method::GET, &format!("{V3}/publicRooms?limit=10"), None, None).await;
    c.post(
        &format!("{V3}/publicRooms"),
        &alice,
        json!({ "limit": 10, "filter": { "generic_search_term": "lob" } }),
    )
    .await;
    c.get(&format!("{V3}/joined_rooms"), &alice).await;

    // Messages, a thread, a reaction; bob's messages notify alice (a room of two).
    let send = |txn: &str| room_path(&room, &format!("/send/m.room.message/{txn}"));
    let first =
        c.put(&send("t1"), &bob, json!({ "msgtype": "m.text", "body": "hello searchable world" })).await;
    let root = first["event_id"].as_str().unwrap().to_owned();
    c.put(
        &send("t2"),
        &alice,
        json!({ "msgtype": "m.text", "body": "a reply in thread",
                "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
    )
    .await;
    c.put(
        &room_path(&room, "/send/m.reaction/t3"),
        &alice,
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "👍" } }),
    )
    .await;
    c.put(&send("t4"), &bob, json!({ "msgtype": "m.text", "body": "mentioning Alice" })).await;
    let topic = c.put(&room_path(&room, "/state/m.room.topic/"), &alice, json!({ "topic": "changed" })).await;
    let topic_id = topic["event_id"].as_str().unwrap().to_owned();
    c.put(
        &room_path(&room, &format!("/typing/{}", enc(&alice.user_id))),
        &alice,
        json!({ "typing": true, "timeout": 5000 }),
    )
    .await;
    c.post(&room_path(&room, &format!("/receipt/m.read/{}", enc(&root))), &alice, json!({})).await;
    c.post(&room_path(&room, "/read_markers"), &alice, json!({ "m.fully_read": root })).await;

    // Reading the room.
    let members = c.get(&room_path(&room, "/joined_members"), &alice).await;
    let joined = members["joined"].as_object().unwrap();
    assert_eq!(joined.len(), 2, "{members}");
    c.expect(joined.values().all(|m| m.get("avatar_url").is_none()), || {
        format!("GET …/joined_members: members without an avatar must have no `avatar_url`: {members}")
    });
    c.get(&room_path(&room, "/members"), &alice).await;
    c.get(&room_path(&room, "/state"), &alice).await;
    c.get(&room_path(&room, "/state/m.room.name/"), &alice).await;
    c.get(&room_path(&room, "/messages?dir=b&limit=20"), &alice).await;
    c.get(&room_path(&room, "/messages?dir=f&limit=5"), &bob).await;
    c.get(&room_path(&room, &format!("/context/{}?limit=4", enc(&root))), &alice).await;
    c.get(&room_path(&room, &format!("/event/{}", enc(&root))), &alice).await;
    c.get(&room_path(&room, &format!("/event/{}", enc(&topic_id))), &alice).await;
    c.get(&format!("{V1}/rooms/{}/relations/{}", enc(&room), enc(&root)), &alice).await;
    c.get(&format!("{V1}/rooms/{}/relations/{}/m.thread", enc(&room), enc(&root)), &alice).await;
    c.get(&format!("{V1}/rooms/{}/threads", enc(&room)), &alice).await;
    c.get_if_served(&format!("{V1}/rooms/{}/hierarchy", enc(&room)), &alice).await;
    let ts = format!("{V1}/rooms/{}/timestamp_to_event?dir=b&ts={}", enc(&room), now_ms() + 60_000);
    c.get(&ts, &alice).await;

    // Search, notifications, the user directory (bob has no avatar).
    c.post(
        &format!("{V3}/search"),
        &alice,
        json!({ "search_categories": { "room_events": { "search_term": "searchable",
                "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
                "groupings": { "group_by": [{ "key": "room_id" }] } } } }),
    )
    .await;
    let notifications = c.get(&format!("{V3}/notifications"), &alice).await;
    assert!(!notifications["notifications"].as_array().unwrap().is_empty(), "{notifications}");
    let found = c.post(&format!("{V3}/user_directory/search"), &alice, json!({ "search_term": "bob" })).await;
    assert_eq!(found["results"].as_array().map(Vec::len), Some(1), "{found}");
    c.expect(found["results"][0].get("avatar_url").is_none(), || {
        format!("POST /user_directory/search: a user without an avatar must have no `avatar_url`: {found}")
    });

    // Tags and room account data.
    let tags = format!("{V3}/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    c.put(&format!("{tags}/m.favourite"), &alice, json!({ "order": 0.5 })).await;
    c.put(&format!("{tags}/u.work"), &alice, json!({})).await;
    c.get(&tags, &alice).await;
    let room_data =
        format!("{V3}/user/{}/rooms/{}/account_data/org.example.x", enc(&alice.user_id), enc(&room));
    c.put(&room_data, &alice, json!({ "k": 1 })).await;
    c.get(&room_data, &alice).await;

    // Sync: incremental for alice (everything above), initial for bob, and a room invite.
    let incremental = c.get(&sync_path(Some(&since)), &alice).await;
    // The checks reach deep into real responses: break one timeline event and sync fails.
    let mut broken = incremental.clone();
    broken["rooms"]["join"][&room]["timeline"]["events"][0]["origin_server_ts"] = json!("yesterday");
    assert_eq!(
        reasons(&spec.check_response(&Method::GET, &sync_path(None), 200, &broken)),
        [format!("/rooms/join/{room}/timeline/events/0/origin_server_ts: expected integer, got string")]
    );
    c.get(&sync_path(None), &bob).await;
    let private = c.post(&format!("{V3}/createRoom"), &alice, json!({ "preset": "private_chat" })).await;
    let private = private["room_id"].as_str().unwrap().to_owned();
    c.post(&room_path(&private, "/invite"), &alice, json!({ "user_id": bob.user_id })).await;
    let bob_sync = c.get(&sync_path(None), &bob).await;
    assert!(bob_sync["rooms"]["invite"].get(&private).is_some(), "{bob_sync}");
    c.post(&room_path(&private, "/leave"), &bob, json!({})).await;
    let next = bob_sync["next_batch"].as_str().unwrap().to_owned();
    c.get(&sync_path(Some(&next)), &bob).await;

    c.finish();
}

#[tokio::test]
async fn tag_content_must_be_an_object() {
    let Some(spec) = spec() else { return };
    let server = TestServer::start().await;
    let mut c = Conformance::new(&spec, &server);
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let tags = format!("{V3}/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    let tag = format!("{tags}/m.favourite");
    // The spec's request body is a `Tag` object; serde would read a struct from a sequence, so
    // arrays are the case to watch.
    for body in [
        json!([]),
        json!([0.5]),
        json!([{ "order": 0.5 }]),
        json!(["m.favourite"]),
        json!("x"),
        json!(0.5),
        json!(null),
        json!(true),
    ] {
        let (status, res) = server.put(&tag, Some(&alice.token), body.clone()).await;
        c.expect(status == 400 && res["errcode"] == "M_BAD_JSON", || {
            format!("PUT {tag} with {body}: expected 400 M_BAD_JSON, got {status} {res}")
        });
        if status == 200 {
            c.check_as(&Method::PUT, &tag, &tag, 200, &res);
        } else {
            c.check_error(&Method::PUT, &tag, status, &res);
        }
        // Whatever was answered, the tags still read back as the spec says.
        c.get(&tags, &alice).await;
    }
    let listed = c.get(&tags, &alice).await;
    c.expect(listed == json!({ "tags": {} }), || format!("GET {tags} after refused PUTs: {listed}"));
    c.put(&tag, &alice, json!({ "order": 0.25 })).await;
    let listed = c.get(&tags, &alice).await;
    assert_eq!(listed, json!({ "tags": { "m.favourite": { "order": 0.25 } } }));
    c.finish();
}

#[tokio::test]
async fn room_visibility_defaults_to_public() {
    let Some(spec) = spec() else { return };
    let server = TestServer::start().await;
    let mut c = Conformance::new(&spec, &server);
    let alice = server.register("alice").await;
    let visibility = |room: &str| format!("{V3}/directory/list/room/{}", enc(room));
    for body in [Some(json!({})), None] {
        let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
        assert_eq!(c.get(&visibility(&room), &alice).await, json!({ "visibility": "private" }));
        let path = visibility(&room);
        let (status, res) = server.request(Method::PUT, &path, Some(&alice.token), body.clone()).await;
        c.expect(status == 200, || {
            format!("PUT {path} with body {body:?}: expected 200, got {status} {res}")
        });
        if status == 200 {
            c.check_as(&Method::PUT, &path, &path, 200, &res);
        }
        let now = c.get(&path, &alice).await;
        c.expect(now == json!({ "visibility": "public" }), || {
            format!("GET {path} after PUT with body {body:?}: expected public, got {now}")
        });
        let listed = c.call(Method::GET, &format!("{V3}/publicRooms"), None, None).await;
        let found = listed["chunk"].as_array().unwrap().iter().any(|r| r["room_id"] == room.as_str());
        c.expect(found, || {
            format!("GET /publicRooms after PUT with body {body:?}: {room} not listed: {listed}")
        });
        c.put(&path, &alice, json!({ "visibility": "private" })).await;
        assert_eq!(c.get(&path, &alice).await, json!({ "visibility": "private" }));
    }
    c.finish();
}

/// The UIA password stage for `user`, in session `session`.
fn password_auth(user: &User, session: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.user_id },
        "password": user.password,
        "session": session,
    })
}

/// A request behind user-interactive auth: the 401 with the flows, then 200 with the password.
async fn with_password(
    c: &mut Conformance<'_>,
    method: Method,
    path: &str,
    user: &User,
    body: Value,
) -> Value {
    let token = Some(user.token.as_str());
    let flows = c.call_expecting(401, method.clone(), path, token, Some(body.clone())).await;
    let session = flows["session"].as_str().expect("UIA session").to_owned();
    let mut body = body;
    body["auth"] = password_auth(user, &session);
    c.call(method, path, token, Some(body)).await
}

#[tokio::test]
async fn moderation_and_lifecycle_responses_match_the_spec() {
    let Some(spec) = spec() else { return };
    let server = TestServer::start_with(|c| {
        c.well_known.client_base_url = "https://matrix.example".into();
        c.registration.tokens = vec!["letmein".into()];
    })
    .await;
    let mut c = Conformance::new(&spec, &server);
    c.call(Method::GET, "/.well-known/matrix/client", None, None).await;
    c.call(Method::GET, &format!("{V3}/register/available?username=newcomer"), None, None).await;
    let validity = format!("{V1}/register/m.login.registration_token/validity?token=nope");
    c.call(Method::GET, &validity, None, None).await;

    let alice = register_with_token(&mut c, "alice").await;
    let bob = register_with_token(&mut c, "bob").await;
    let carol = register_with_token(&mut c, "carol").await;

    // Avatars: now profiles, members and the directory carry one.
    let avatar = format!("{V3}/profile/{}/avatar_url", enc(&bob.user_id));
    c.put(&avatar, &bob, json!({ "avatar_url": "mxc://localhost/bobface" })).await;
    c.get(&avatar, &alice).await;
    c.get(&format!("{V3}/profile/{}", enc(&bob.user_id)), &alice).await;

    let room = c
        .post(&format!("{V3}/createRoom"), &alice, json!({ "preset": "public_chat", "name": "Moderated" }))
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.post(&room_path(&room, "/join"), &bob, json!({})).await;
    c.get(&room_path(&room, "/joined_members"), &alice).await;
    c.post(&format!("{V3}/user_directory/search"), &alice, json!({ "search_term": "bob" })).await;
    let secret = c.post(&format!("{V3}/createRoom"), &bob, json!({ "preset": "private_chat" })).await;
    let secret = secret["room_id"].as_str().unwrap().to_owned();

    // Aliases.
    let alias = format!("{V3}/directory/room/{}", enc("#mod:localhost"));
    c.put(&alias, &alice, json!({ "room_id": room })).await;
    c.call(Method::DELETE, &alias, Some(&alice.token), None).await;

    // A redaction, then the redacted event as readers see it.
    let spam = c
        .put(
            &room_path(&room, "/send/m.room.message/s1"),
            &bob,
            json!({ "msgtype": "m.text", "body": "spam" }),
        )
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.put(&room_path(&room, &format!("/redact/{}/r1", enc(&spam))), &alice, json!({ "reason": "spam" }))
        .await;
    c.get(&room_path(&room, &format!("/event/{}", enc(&spam))), &bob).await;
    c.get(&room_path(&room, "/messages?dir=b&limit=3"), &bob).await;

    // Reports.
    c.post(
        &room_path(&room, &format!("/report/{}", enc(&spam))),
        &bob,
        json!({ "reason": "rude", "score": -50 }),
    )
    .await;
    c.post(&room_path(&room, "/report"), &bob, json!({ "reason": "bad room" })).await;
    c.post(&format!("{V3}/users/{}/report", enc(&alice.user_id)), &bob, json!({ "reason": "bad user" }))
        .await;

    // Edits and the relation endpoints narrowed by type and event type.
    let original = c
        .put(
            &room_path(&room, "/send/m.room.message/e1"),
            &alice,
            json!({ "msgtype": "m.text", "body": "tpyo" }),
        )
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.put(
        &room_path(&room, "/send/m.room.message/e2"),
        &alice,
        json!({ "msgtype": "m.text", "body": "* typo", "m.new_content": { "msgtype": "m.text", "body": "typo" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": original } }),
    )
    .await;
    let relations = format!("{V1}/rooms/{}/relations/{}", enc(&room), enc(&original));
    c.get(&format!("{relations}/m.replace/m.room.message"), &bob).await;
    c.get(&room_path(&room, &format!("/event/{}", enc(&original))), &bob).await;

    // Knocking, kicking, banning.
    let knockable = c
        .post(
            &format!("{V3}/createRoom"),
            &alice,
            json!({ "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                                        "content": { "join_rule": "knock" } }] }),
        )
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let carol_since =
        c.get(&format!("{V3}/sync?timeout=0"), &carol).await["next_batch"].as_str().unwrap().to_owned();
    c.post(&format!("{V3}/knock/{}", enc(&knockable)), &carol, json!({ "reason": "let me in" })).await;
    let knocked = c.get(&format!("{V3}/sync?timeout=0"), &carol).await;
    assert!(knocked["rooms"]["knock"].get(&knockable).is_some(), "{knocked}");
    c.post(&room_path(&room, "/join"), &carol, json!({})).await;
    c.post(&room_path(&room, "/kick"), &alice, json!({ "user_id": carol.user_id, "reason": "out" })).await;
    c.post(&room_path(&room, "/ban"), &alice, json!({ "user_id": carol.user_id, "reason": "and stay out" }))
        .await;
    c.get(&format!("{V3}/sync?timeout=0&since={}", enc(&carol_since)), &carol).await;
    c.post(&room_path(&room, "/unban"), &alice, json!({ "user_id": carol.user_id })).await;
    c.post(&room_path(&room, "/forget"), &carol, json!({})).await;

    // Lazy-loaded members and a heroes summary.
    let lazy = enc(r#"{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":3}}}"#);
    c.get(&format!("{V3}/sync?timeout=0&filter={lazy}"), &bob).await;
    c.get(&room_path(&room, &format!("/messages?dir=b&limit=2&filter={lazy}")), &bob).await;

    // Push rules written and read back.
    let rule = format!("{V3}/pushrules/global/content/cake");
    c.put(&rule, &alice, json!({ "actions": ["notify"], "pattern": "cake" })).await;
    c.get(&rule, &alice).await;
    c.put(&format!("{rule}/enabled"), &alice, json!({ "enabled": false })).await;
    c.put(&format!("{rule}/actions"), &alice, json!({ "actions": [] })).await;
    c.get(&format!("{V3}/pushrules/global/"), &alice).await;
    c.call(Method::DELETE, &rule, Some(&alice.token), None).await;

    // An upgrade.
    c.post(&room_path(&room, "/upgrade"), &alice, json!({ "new_version": "11" })).await;

    // Devices, passwords, logging out and deactivating, each behind UIA where the spec says so.
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" },
                        "password": bob.password, "initial_device_display_name": "laptop" });
    let extra = c.call(Method::POST, &format!("{V3}/login"), None, Some(login.clone())).await;
    let extra = extra["device_id"].as_str().unwrap().to_owned();
    with_password(&mut c, Method::DELETE, &format!("{V3}/devices/{}", enc(&extra)), &bob, json!({})).await;
    let extra = c.call(Method::POST, &format!("{V3}/login"), None, Some(login.clone())).await;
    let extra_device = extra["device_id"].as_str().unwrap().to_owned();
    with_password(
        &mut c,
        Method::POST,
        &format!("{V3}/delete_devices"),
        &bob,
        json!({ "devices": [extra_device] }),
    )
    .await;
    let extra = c.call(Method::POST, &format!("{V3}/login"), None, Some(login.clone())).await;
    let extra_token = extra["access_token"].as_str().unwrap().to_owned();
    c.call(Method::POST, &format!("{V3}/logout"), Some(&extra_token), Some(json!({}))).await;
    let extra = c.call(Method::POST, &format!("{V3}/login"), None, Some(login)).await;
    let extra_token = extra["access_token"].as_str().unwrap().to_owned();
    with_password(
        &mut c,
        Method::POST,
        &format!("{V3}/account/password"),
        &carol,
        json!({ "new_password": "a-new-secret", "logout_devices": false }),
    )
    .await;
    c.call(Method::POST, &format!("{V3}/logout/all"), Some(&extra_token), Some(json!({}))).await;
    with_password(&mut c, Method::POST, &format!("{V3}/account/deactivate"), &alice, json!({})).await;

    // Error bodies: the operation's schema for that status where the spec has one, else the
    // standard error.
    for (method, path, token, body, status) in [
        (Method::GET, format!("{V3}/account/whoami"), None, None, 401),
        (Method::GET, format!("{V3}/account/whoami"), Some("not-a-token"), None, 401),
        (Method::GET, format!("{V3}/devices/NOSUCHDEVICE"), Some(carol.token.as_str()), None, 404),
        (Method::GET, room_path(&secret, "/state"), Some(carol.token.as_str()), None, 403),
        (
            Method::GET,
            format!("{V3}/directory/room/{}", enc("#nope:localhost")),
            Some(carol.token.as_str()),
            None,
            404,
        ),
        (Method::POST, format!("{V3}/createRoom"), Some(carol.token.as_str()), Some(json!([1])), 400),
        (
            Method::GET,
            format!("{V3}/profile/{}", enc("@nobody:localhost")),
            Some(carol.token.as_str()),
            None,
            404,
        ),
    ] {
        let (got, res) = server.request(method.clone(), &path, token, body).await;
        assert_eq!(got, status, "{method} {path}: {res}");
        c.check_error(&method, &path, status, &res);
    }
    c.finish();
}

/// Registration with a registration token (the server requires one): 401, then the token
/// stage, then 200 — every step validated.
async fn register_with_token(c: &mut Conformance<'_>, name: &str) -> User {
    let password = format!("pw-{name}-secret");
    let path = format!("{V3}/register");
    let body = json!({ "username": name, "password": password });
    let flows = c.call_expecting(401, Method::POST, &path, None, Some(body.clone())).await;
    let session = flows["session"].as_str().expect("UIA session").to_owned();
    let mut body = body;
    body["auth"] = json!({ "type": "m.login.registration_token", "token": "letmein", "session": session });
    let (status, res) = c.server.post(&path, None, body.clone()).await;
    let res = if status == 401 {
        // A further stage (dummy) may follow the token.
        c.check_as(&Method::POST, &path, &path, 401, &res);
        body["auth"] = json!({ "type": "m.login.dummy", "session": session });
        c.call(Method::POST, &path, None, Some(body)).await
    } else {
        assert_eq!(status, 200, "register {name}: {res}");
        c.check_as(&Method::POST, &path, &path, 200, &res);
        res
    };
    User {
        user_id: res["user_id"].as_str().unwrap().to_owned(),
        token: res["access_token"].as_str().unwrap().to_owned(),
        password,
    }
}
