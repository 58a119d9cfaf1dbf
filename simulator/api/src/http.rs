//! Routing HTTP requests to the store's verbs.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{
    Options, discovery,
    faults::Faults,
    patch::PatchType,
    protobuf,
    resources::Resource,
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
    store::{DeleteOptions, EventType, Part, Propagation, Store, WatchEvent, get_path, set_path},
    table,
};

/// The API server: a store, faults, and the HTTP face of both.
#[derive(Clone)]
pub struct ApiServer {
    store: Arc<Store>,
    faults: Arc<Faults>,
    admission: Arc<crate::admission::Admission>,
    options: Options,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

type Query = HashMap<String, String>;

fn parse_query(query: Option<&str>) -> Query {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error.to_status())
}

/// Where a resource request points.
#[derive(Debug)]
struct Target {
    resource: Arc<Resource>,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl ApiServer {
    /// A fresh cluster with the built-in resources.
    pub fn new(options: Options) -> Self {
        Self {
            store: Arc::new(Store::with_history(options.clock.clone(), options.history)),
            faults: Arc::new(Faults::new(options.seed)),
            admission: Arc::default(),
            options,
        }
    }

    /// Installs the upstream CRDs the project integrates with (Gateway API,
    /// Istio), as a cluster operator would.
    ///
    /// # Errors
    /// A CRD that does not parse or install.
    pub fn install_upstream_crds(&self) -> Result<(), ApiError> {
        let Some(crds) = self
            .store
            .resource("apiextensions.k8s.io", "customresourcedefinitions")
        else {
            return Err(ApiError::internal("no CustomResourceDefinition resource"));
        };
        for (file, text) in crate::UPSTREAM_CRDS {
            let object: Value = serde_yaml::from_str(text)
                .map_err(|e| ApiError::internal(format!("{file}: {e}")))?;
            self.store.create(&crds, "", object)?;
        }
        Ok(())
    }

    /// The object store, for in-process controllers.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The cluster's clock.
    pub fn clock(&self) -> Arc<dyn Fn() -> std::time::SystemTime + Send + Sync> {
        self.options.clock.clone()
    }

    /// The fault switches.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The API as an axum router (a tower service for any request body).
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    fn target(&self, path: &str) -> Result<Target, ApiError> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::no_route(path)),
        };
        let found = |plural: &str| {
            self.store
                .resource(group, plural)
                .filter(|r| r.serves(version))
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, more @ ..]
                if found(plural).is_some_and(|r| r.namespaced) =>
            {
                (Some((*ns).to_owned()), (*plural, more))
            }
            [plural, more @ ..] => (None, (*plural, more)),
            [] => return Err(ApiError::no_route(path)),
        };
        let (plural, more) = rest;
        let resource = found(plural).ok_or_else(|| ApiError::no_route(path))?;
        if namespace.is_some() && !resource.namespaced {
            return Err(ApiError::no_route(path));
        }
        let (name, sub) = match more {
            [] => (None, None),
            [name] => (Some((*name).to_owned()), None),
            [name, sub] if matches!(*sub, "status" | "scale" | "finalize") => {
                (Some((*name).to_owned()), Some((*sub).to_owned()))
            }
            [name, "token"] if group.is_empty() && plural == "serviceaccounts" => {
                (Some((*name).to_owned()), Some("token".to_owned()))
            }
            _ => return Err(ApiError::no_route(path)),
        };
        if sub.as_deref() == Some("scale") && resource.scale.is_none() {
            return Err(ApiError::no_route(path));
        }
        if sub.as_deref() == Some("status") && !resource.status {
            return Err(ApiError::no_route(path));
        }
        if resource.namespaced && namespace.is_none() && name.is_some() {
            return Err(ApiError::no_route(path));
        }
        Ok(Target {
            resource,
            version: version.to_owned(),
            namespace,
            name,
            sub,
        })
    }
}

fn verb_of(method: &Method, target: &Target, query: &Query) -> &'static str {
    match (method.as_str(), target.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if is_true(query.get("watch")) => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v == "true" || v == "1")
}

async fn handle(
    State(api): State<ApiServer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let query = parse_query(uri.query());
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let registry = || api.store.registry();
    match (method.as_str(), path) {
        ("GET", "/version" | "/version/") => {
            return json_response(StatusCode::OK, &discovery::version());
        }
        ("GET", "/healthz" | "/readyz" | "/livez") => {
            return (StatusCode::OK, "ok").into_response();
        }
        ("GET", "/api" | "/api/") => {
            if discovery::wants_aggregated(&accept) {
                return aggregated(&discovery::aggregated(&registry(), true));
            }
            return json_response(StatusCode::OK, &discovery::core_versions());
        }
        ("GET", "/apis" | "/apis/") => {
            if discovery::wants_aggregated(&accept) {
                return aggregated(&discovery::aggregated(&registry(), false));
            }
            return json_response(StatusCode::OK, &discovery::group_list(&registry()));
        }
        _ => {}
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["openapi", "v2"]) => {
            // An OpenAPI v2 document without definitions: kubectl reads it
            // (as protobuf) to validate a `kind: List` file client-side, and
            // skips what it does not define; the server checks each item.
            if accept.contains("protobuf") {
                // The gnostic Document with field 1, `swagger`, set.
                return (
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                    )],
                    b"\x0a\x032.0".to_vec(),
                )
                    .into_response();
            }
            return json_response(
                StatusCode::OK,
                &json!({"swagger": "2.0",
                    "info": {"title": "Kubernetes", "version": crate::discovery::git_version()},
                    "paths": {}, "definitions": {}}),
            );
        }
        ("GET", ["openapi", "v3"]) => {
            return json_response(StatusCode::OK, &crate::openapi::root(&registry()));
        }
        ("GET", ["openapi", "v3", "api", version])
        | ("GET", ["openapi", "v3", "apis", _, version]) => {
            let group = if parts[2] == "api" { "" } else { parts[3] };
            return crate::openapi::group_version(&registry(), group, version).map_or_else(
                || error_response(&ApiError::no_route(path)),
                |v| json_response(StatusCode::OK, &v),
            );
        }
        ("GET", ["api", version]) => {
            return discovery::resource_list(&registry(), "", version).map_or_else(
                || error_response(&ApiError::no_route(path)),
                |v| json_response(StatusCode::OK, &v),
            );
        }
        ("GET", ["apis", group]) => {
            return discovery::group(&registry(), group).map_or_else(
                || error_response(&ApiError::no_route(path)),
                |v| json_response(StatusCode::OK, &v),
            );
        }
        ("GET", ["apis", group, version]) => {
            return discovery::resource_list(&registry(), group, version).map_or_else(
                || error_response(&ApiError::no_route(path)),
                |v| json_response(StatusCode::OK, &v),
            );
        }
        ("POST", ["apis", "authorization.k8s.io", "v1", review]) => {
            return access_review(review, &body);
        }
        ("POST", ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"]) => {
            return self_review();
        }
        _ => {}
    }
    let target = match api.target(path) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let verb = verb_of(&method, &target, &query);
    let (delay, fault) = api.faults.judge(verb, &target.resource.plural);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = fault {
        return error_response(&ApiError::injected(code));
    }
    tracing::debug!(%method, %path, verb, "request");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    // A protobuf body (client-go's choice for built-in kinds, kubectl's for
    // `kubectl create namespace|configmap|secret|deployment`) is read into
    // the JSON object it carries; the request goes on as JSON.
    // (A patch is never protobuf: its content type names its kind, and a
    // protobuf one is refused as such below.)
    let (content_type, body) =
        if protobuf::is_protobuf(content_type) && !body.is_empty() && verb != "patch" {
            match protobuf::decode(&body) {
                Ok(object) => (
                    "application/json",
                    Bytes::from(serde_json::to_vec(&object).unwrap_or_default()),
                ),
                Err(e) => {
                    return error_response(&ApiError::bad_request(format!(
                        "the body of the request could not be decoded as protobuf: {e}"
                    )));
                }
            }
        } else {
            (content_type, body)
        };
    // An `events.k8s.io/v1` Event is a core one seen another way: the
    // request goes on as core's, and its answer comes back as it asked.
    let events_v1 = target.resource.group == "events.k8s.io" && target.resource.plural == "events";
    let core_events = (target.resource.group.is_empty() && target.resource.plural == "events")
        .then_some(false)
        .or(events_v1.then_some(true));
    let (target, verb, content_type, body) = match core_events {
        Some(through_v1) => match api.as_core_event(target, verb, through_v1, content_type, body) {
            Ok(request) => request,
            Err(e) => return error_response(&e),
        },
        None => (target, verb, content_type, body),
    };
    if matches!(verb, "create" | "update") && !readable_media_type(content_type) {
        return error_response(&ApiError::new_unsupported_body());
    }
    let body = if matches!(verb, "create" | "update") && target.sub.is_none() {
        with_kind(&target, body)
    } else {
        body
    };
    if matches!(verb, "create" | "update")
        && target.sub.is_none()
        && let Err(e) = typed(&target, &body)
    {
        return error_response(&e);
    }
    let unknown = match unknown_fields(&target, verb, content_type, &query, &body) {
        Ok(unknown) => unknown,
        Err(e) => return error_response(&e),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let request = Request {
        content_type,
        query: &query,
        user_agent,
        body: &body,
    };
    let mut response = api.dispatch(&method, verb, target, &accept, &request).await;
    if events_v1 {
        response = as_events_v1(response, verb == "watch").await;
    }
    // Warn (the default): the write is made without them, and said so.
    for field in unknown {
        if let Ok(value) =
            header::HeaderValue::from_str(&format!("299 - \"unknown field \\\"{field}\\\"\""))
        {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

impl ApiServer {
    /// A request for Events (`through_v1`: through `events.k8s.io/v1`) as
    /// the core request kube-apiserver makes of it: the target is core's,
    /// a written Event is checked and, from `events.k8s.io/v1`, converted,
    /// and a patch through `events.k8s.io/v1` becomes the replace of the
    /// Event it patches (made on the version read).
    ///
    /// # Errors
    /// 422 for an Event kube-apiserver refuses; a patch's errors.
    fn as_core_event<'a>(
        &self,
        mut target: Target,
        verb: &'static str,
        through_v1: bool,
        content_type: &'a str,
        body: Bytes,
    ) -> Result<(Target, &'static str, &'a str, Bytes), ApiError> {
        if through_v1 {
            target.resource = self
                .store
                .resource("", "events")
                .ok_or_else(|| ApiError::internal("no events resource"))?;
            target.version = "v1".to_owned();
        }
        let written = match verb {
            "create" | "update" if target.sub.is_none() => {
                let event = parse_body(&body)?;
                if through_v1 {
                    crate::events::to_core(event)
                } else {
                    event
                }
            }
            "patch" if through_v1 && target.sub.is_none() => {
                let name = target.name.clone().unwrap_or_default();
                let namespace = self.ns(&target).to_owned();
                let current = self
                    .store
                    .get_value(&target.resource, &namespace, &name)
                    .map_err(|_| ApiError::not_found("events.k8s.io", "events", &name))?;
                let version = current["metadata"]["resourceVersion"].clone();
                let mut shown = crate::events::to_v1(current);
                crate::patch::apply(
                    PatchType::from_content_type(content_type)?,
                    &mut shown,
                    &body,
                    true,
                )?;
                let mut event = crate::events::to_core(shown);
                event["metadata"]["resourceVersion"] = version;
                let bytes = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
                return Ok((target, "update", "application/json", bytes));
            }
            _ => return Ok((target, verb, content_type, body)),
        };
        let name = written["metadata"]["name"].as_str().unwrap_or_default();
        let problems = if verb == "create" {
            crate::events::problems(&written, through_v1)
        } else {
            Vec::new()
        };
        if !problems.is_empty() {
            return Err(ApiError::invalid("", "Event", name, &problems));
        }
        let bytes = Bytes::from(serde_json::to_vec(&written).unwrap_or_default());
        Ok((target, verb, "application/json", bytes))
    }
}

/// A core answer about Events as `events.k8s.io/v1` gives it: each Event
/// (alone, in a list, or in a watch's events) in that API's form.
async fn as_events_v1(response: Response, watch: bool) -> Response {
    fn convert(mut value: Value) -> Value {
        match value["kind"].as_str() {
            Some("Event") => crate::events::to_v1(value),
            Some("EventList") => {
                if let Some(items) = value["items"].as_array_mut() {
                    for item in items.iter_mut() {
                        *item = crate::events::to_v1(item.take());
                    }
                }
                value["apiVersion"] = json!("events.k8s.io/v1");
                value
            }
            Some("Status") if value["details"]["kind"] == "events" => {
                value["details"]["group"] = json!("events.k8s.io");
                if let Some(message) = value["message"].as_str() {
                    value["message"] =
                        json!(message.replacen("events \"", "events.events.k8s.io \"", 1));
                }
                value
            }
            _ => value,
        }
    }
    let (parts, body) = response.into_parts();
    if watch {
        let lines = body.into_data_stream().map(|chunk| {
            chunk.map(|line| {
                let Ok(mut event) = serde_json::from_slice::<Value>(&line) else {
                    return line;
                };
                let object = event["object"].take();
                event["object"] = convert(object);
                let mut out = serde_json::to_vec(&event).unwrap_or_default();
                out.push(b'\n');
                Bytes::from(out)
            })
        });
        return Response::from_parts(parts, Body::from_stream(lines));
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let converted = serde_json::from_slice::<Value>(&bytes)
        .map(convert)
        .map_or(bytes, |v| {
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        });
    let mut response = Response::from_parts(parts, Body::from(converted));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// Whether a create's or replace's body is in a media type kube-apiserver
/// reads (JSON, YAML, protobuf; no type said is taken as JSON).
fn readable_media_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media.is_empty()
        || matches!(
            media,
            "application/json" | "application/yaml" | "application/vnd.kubernetes.protobuf" | "*/*"
        )
}

/// A replacement's name and namespace against the path's: kube-apiserver
/// refuses a body that names no object, or another one.
fn check_identity(
    res: &Resource,
    namespace: &str,
    name: &str,
    object: &Value,
) -> Result<(), ApiError> {
    let body_ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
    if res.namespaced && !body_ns.is_empty() && body_ns != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name} based on URL) was undeterminable: name must be provided"
        )));
    }
    crate::store::check_name(name, object)
}

/// A create's or replace's body with the kind and apiVersion of its path
/// when it names none (kube-apiserver reads a body by its path's kind).
fn with_kind(target: &Target, body: Bytes) -> Bytes {
    let finder = |needle: &str| memchr::memmem::find(&body, needle.as_bytes()).is_some();
    if finder("\"kind\"") && finder("\"apiVersion\"") {
        return body;
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let res = &target.resource;
    object.entry("kind").or_insert_with(|| json!(res.kind));
    object
        .entry("apiVersion")
        .or_insert_with(|| json!(res.api_version(&target.version)));
    Bytes::from(serde_json::to_vec(&object).unwrap_or_default())
}

/// A built-in object's body read as its Go type would read it: a value of
/// the wrong type (a boolean in a list of strings, a number past int32) is
/// refused with 400 as kube-apiserver refuses it, before anything else.
fn typed(target: &Target, body: &[u8]) -> Result<(), ApiError> {
    let Ok(object) = parse_body(body) else {
        return Ok(());
    };
    typed_value(target, object).map_err(|(kind, why)| {
        ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {why}",
            target.version
        ))
    })
}

/// What [`typed`] checks, of an object (a patch's result, say): the kind
/// and why it cannot be read as its Go type.
fn typed_value(target: &Target, object: Value) -> Result<(), (String, String)> {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, core::v1 as core, networking::v1 as networking,
        policy::v1 as policy,
    };
    fn read<T: serde::de::DeserializeOwned>(object: Value) -> Result<(), String> {
        serde_json::from_value::<T>(object)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    let res = &target.resource;
    if res.schema.is_some() {
        return Ok(());
    }
    // Naming another kind, or none, is the store's to answer.
    let api_version = res.api_version(&target.version);
    if object["kind"] != res.kind.as_str() || object["apiVersion"] != api_version.as_str() {
        return Ok(());
    }
    let checked = match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => read::<core::Pod>(object),
        ("", "services") => read::<core::Service>(object),
        ("", "configmaps") => read::<core::ConfigMap>(object),
        ("", "secrets") => read::<core::Secret>(object),
        ("", "namespaces") => read::<core::Namespace>(object),
        ("", "serviceaccounts") => read::<core::ServiceAccount>(object),
        ("apps", "deployments") => read::<apps::Deployment>(object),
        ("apps", "replicasets") => read::<apps::ReplicaSet>(object),
        ("apps", "statefulsets") => read::<apps::StatefulSet>(object),
        ("apps", "daemonsets") => read::<apps::DaemonSet>(object),
        ("batch", "jobs") => read::<batch::Job>(object),
        ("batch", "cronjobs") => read::<batch::CronJob>(object),
        ("networking.k8s.io", "ingresses") => read::<networking::Ingress>(object),
        ("policy", "poddisruptionbudgets") => read::<policy::PodDisruptionBudget>(object),
        _ => Ok(()),
    };
    checked.map_err(|why| (res.kind.clone(), why))
}

/// The fields an object's schema does not know (a custom resource's CRD
/// schema, a built-in kind's Go type), in a create, update or patch of
/// the object: refused under `fieldValidation=Strict` (kubectl's default)
/// as kube-apiserver refuses them, dropped silently under `Ignore`, and
/// otherwise (`Warn`, the default) given back to be warned of. The store
/// prunes them in every case.
fn unknown_fields(
    target: &Target,
    verb: &str,
    content_type: &str,
    query: &Query,
    body: &[u8],
) -> Result<Vec<String>, ApiError> {
    let directive = query.get("fieldValidation").map_or("Warn", String::as_str);
    if !matches!(directive, "" | "Ignore" | "Warn" | "Strict") {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            options_kind(verb),
            "",
            &[(
                "fieldValidation".to_owned(),
                format!(
                    "Unsupported value: {directive:?}: supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
                ),
            )],
        ));
    }
    let directive = if directive.is_empty() {
        "Warn"
    } else {
        directive
    };
    let builtin;
    let schema = match &target.resource.schema {
        Some(schema) => schema,
        None => {
            builtin = crate::openapi::structural(
                &target.resource.group,
                &target.version,
                &target.resource.kind,
            );
            match &builtin {
                Some(schema) => schema,
                None => return Ok(Vec::new()),
            }
        }
    };
    if directive == "Ignore"
        || target.sub.is_some()
        || !matches!(verb, "create" | "update" | "patch")
        || content_type.starts_with("application/json-patch")
    {
        return Ok(Vec::new());
    }
    let Ok(mut object) = parse_body(body) else {
        // The write itself says what is wrong with the body.
        return Ok(Vec::new());
    };
    if verb == "patch" {
        // A merge patch's null takes a field away: nothing is set there.
        drop_members(&mut object, &|_, v| v.is_null());
    }
    if content_type.starts_with("application/strategic-merge-patch") {
        // Its directives (`$patch`, `$setElementOrder/...`) are no fields.
        drop_members(&mut object, &|k, _| k.starts_with('$'));
    }
    let unknown = crate::schema::prune(&mut object, schema);
    if directive == "Strict" && !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        if verb == "patch" {
            // A patch's unknown fields are the patch's fault: 422, naming
            // it, as kube-apiserver answers.
            let message = format!(
                "Invalid value: \"the patch\": strict decoding error: {}",
                list.join(", ")
            );
            let mut error = ApiError::invalid("", "", "", &[("patch".to_owned(), message.clone())]);
            error.message = format!(" \"\" is invalid: patch: {message}");
            return Err(error);
        }
        let kind = &target.resource.kind;
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
            target.version,
            list.join(", ")
        )));
    }
    Ok(unknown)
}

/// Takes away, at every depth, the members `gone` names.
fn drop_members(value: &mut Value, gone: &dyn Fn(&str, &Value) -> bool) {
    match value {
        Value::Object(map) => {
            map.retain(|k, v| !gone(k, v));
            map.values_mut().for_each(|v| drop_members(v, gone));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| drop_members(v, gone)),
        _ => {}
    }
}

impl ApiServer {
    /// The request, once routed and checked.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        method: &Method,
        verb: &'static str,
        target: Target,
        accept: &str,
        request: &Request<'_>,
    ) -> Response {
        let api = self;
        let Request {
            content_type,
            query,
            body,
            ..
        } = *request;
        if target.sub.as_deref() == Some("token") {
            return api
                .token(verb, &target, request)
                .unwrap_or_else(|e| error_response(&e));
        }
        // Writes of an object or its status: owned fields tracked, and
        // the object's through admission.
        if matches!(verb, "create" | "update" | "patch")
            && matches!(target.sub.as_deref(), None | Some("status"))
        {
            if target.sub.is_none() {
                api.admission.wrote(&target.resource);
            }
            return api
                .admitted_write(verb, &target, request)
                .await
                .unwrap_or_else(|e| error_response(&e));
        }
        let dry = match dry_run(query, verb) {
            // A delete says it in its DeleteOptions too.
            Ok(dry) => {
                dry || (verb == "delete"
                    && serde_json::from_slice::<Value>(body).is_ok_and(|o| {
                        o["dryRun"]
                            .as_array()
                            .is_some_and(|d| d.iter().any(|v| v == "All"))
                    }))
            }
            Err(e) => return error_response(&e),
        };
        if dry && matches!(verb, "create" | "update" | "patch" | "delete") {
            return api
                .dry_write(verb, &target, content_type, body)
                .unwrap_or_else(|e| error_response(&e));
        }
        let result = match verb {
            "get" => api.get(&target, accept),
            "list" => api.list(&target, query, accept),
            "watch" => return api.watch(target, query, accept),
            "create" => api.create(&target, body),
            "update" => api.update(&target, request),
            "patch" => api.patch(&target, request),
            "delete" => api.delete(&target, query, body),
            "deletecollection" => api.delete_collection(&target, query),
            _ => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource: {method}"
            ))),
        };
        match result {
            Ok(response) => response,
            Err(e) => error_response(&e),
        }
    }
}

/// `kubectl auth can-i` and its kin: the simulator authorizes every
/// request, and says so (the reviews are answered, never stored).
fn access_review(review: &str, body: &[u8]) -> Response {
    let (kind, status) = match review {
        "selfsubjectaccessreviews" | "subjectaccessreviews" | "localsubjectaccessreviews" => (
            "SubjectAccessReview",
            json!({"allowed": true, "reason": "the simulator authorizes every request"}),
        ),
        "selfsubjectrulesreviews" => (
            "SelfSubjectRulesReview",
            json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            }),
        ),
        other => {
            return error_response(&ApiError::no_route(&format!(
                "/apis/authorization.k8s.io/v1/{other}"
            )));
        }
    };
    // kubectl sends these as protobuf; the answer is the same whatever was
    // asked, so a body that cannot be read is answered with an empty spec.
    let decoded = protobuf::decode(body)
        .ok()
        .map(|o| serde_json::to_vec(&o).unwrap_or_default());
    let mut object = parse_body(decoded.as_deref().unwrap_or(body))
        .ok()
        .filter(|o| o["spec"].is_object())
        .unwrap_or_else(|| json!({"spec": {}}));
    object["apiVersion"] = json!("authorization.k8s.io/v1");
    object["kind"] = json!(match review {
        "selfsubjectaccessreviews" => "SelfSubjectAccessReview",
        "localsubjectaccessreviews" => "LocalSubjectAccessReview",
        "selfsubjectrulesreviews" => "SelfSubjectRulesReview",
        _ => kind,
    });
    object["status"] = status;
    json_response(StatusCode::CREATED, &object)
}

/// `kubectl auth whoami` (a SelfSubjectReview): who the simulator takes
/// every client for, the identity admission webhooks are told of too.
fn self_review() -> Response {
    json_response(
        StatusCode::CREATED,
        &json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {
                "username": crate::admission::USER,
                "groups": crate::admission::GROUPS,
            }},
        }),
    )
}

fn aggregated(value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, discovery::AGGREGATED)],
        body,
    )
        .into_response()
}

/// Whether the request asks for a dry run (`dryRun=All`, the one value
/// kube-apiserver takes).
/// Any other value is refused as kube-apiserver refuses it: 422, naming
/// the options of the verb (`CreateOptions`, ...) and the field `dryRun`.
fn dry_run(query: &Query, verb: &str) -> Result<bool, ApiError> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::invalid(
            "meta.k8s.io",
            options_kind(verb),
            "",
            &[(
                "dryRun".to_owned(),
                format!("Unsupported value: [{other:?}]: supported values: \"All\""),
            )],
        )),
    }
}

/// The options kind of a verb's request.
fn options_kind(verb: &str) -> &'static str {
    match verb {
        "update" => "UpdateOptions",
        "patch" => "PatchOptions",
        "delete" | "deletecollection" => "DeleteOptions",
        _ => "CreateOptions",
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        // Nested past serde_json's limit: refused at once, as
        // kube-apiserver refuses it ("exceeded max depth"), rather than
        // read again as YAML, whose parser takes quadratic time on it.
        Err(e) if e.to_string().contains("recursion limit") => {
            return Err(ApiError::bad_request(format!(
                "the body of the request could not be decoded: exceeded max depth: {e}"
            )));
        }
        Err(_) => serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })?,
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    Ok(value)
}

/// A list's or watch's options as kube-apiserver checks them: a version
/// match only with a version (a list) or with initial events (a watch),
/// and initial events only for a watch, matching `NotOlderThan`.
fn check_list_options(query: &Query, watch: bool) -> Result<(), ApiError> {
    let get = |key: &str| query.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let (matching, initial) = (get("resourceVersionMatch"), get("sendInitialEvents"));
    let forbidden = |why: &str| {
        (
            "resourceVersionMatch".to_owned(),
            format!("Forbidden: {why}"),
        )
    };
    let mut problems = Vec::new();
    if watch {
        if initial.is_some() && matching != Some("NotOlderThan") {
            problems.push(forbidden(
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if let Some(matching) = matching {
            if initial.is_none() {
                problems.push(forbidden(
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if matching != "NotOlderThan" {
                problems.push((
                    "resourceVersionMatch".to_owned(),
                    format!("Unsupported value: {matching:?}: supported values: \"NotOlderThan\""),
                ));
            }
        }
    } else {
        if let Some(matching) = matching {
            if get("resourceVersion").is_none() {
                problems.push(forbidden(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if matching != "Exact" && matching != "NotOlderThan" {
                problems.push((
                    "resourceVersionMatch".to_owned(),
                    format!("Unsupported value: {matching:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""),
                ));
            }
        }
        if initial.is_some() {
            problems.push((
                "sendInitialEvents".to_owned(),
                "Forbidden: sendInitialEvents is forbidden for list".to_owned(),
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            &problems,
        ))
    }
}

fn selectors(query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?;
    Ok((labels, fields))
}

fn raw(code: StatusCode, bytes: Vec<u8>) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

impl ApiServer {
    fn ns<'a>(&self, target: &'a Target) -> &'a str {
        target.namespace.as_deref().unwrap_or_default()
    }

    fn get(&self, target: &Target, accept: &str) -> Result<Response, ApiError> {
        let res = &target.resource;
        let name = target.name.as_deref().unwrap_or_default();
        if target.sub.as_deref() == Some("scale") {
            let object = self.store.get_value(res, self.ns(target), name)?;
            return Ok(json_response(StatusCode::OK, &scale_of(res, &object)));
        }
        let bytes = self.store.get(res, self.ns(target), name)?;
        if table::wants_table(accept) {
            let object: Value =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
            let rv = self.store.resource_version();
            return Ok(json_response(
                StatusCode::OK,
                &table::table(res, &[object], rv, None, (self.options.clock)()),
            ));
        }
        Ok(raw(StatusCode::OK, bytes.to_vec()))
    }

    fn list(&self, target: &Target, query: &Query, accept: &str) -> Result<Response, ApiError> {
        check_list_options(query, false)?;
        let res = &target.resource;
        let (labels, fields) = selectors(query)?;
        let limit = match query.get("limit") {
            None => None,
            // As kube-apiserver: zero or less is no limit.
            Some(l) => Some(
                l.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("limit: not a number: {l:?}")))?,
            )
            .filter(|l| *l > 0)
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        };
        let page = self.store.list(
            res,
            target.namespace.as_deref(),
            &labels,
            &fields,
            limit,
            query.get("continue").map(String::as_str),
        )?;
        if table::wants_table(accept) {
            let objects: Vec<Value> = page
                .items
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect();
            let t = table::table(
                res,
                &objects,
                page.resource_version,
                page.continue_token.as_deref(),
                (self.options.clock)(),
            );
            return Ok(json_response(StatusCode::OK, &t));
        }
        let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
        if let Some(token) = &page.continue_token {
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(page.remaining);
        }
        let head = json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(&target.version), "metadata": metadata});
        let mut out = serde_json::to_vec(&head).map_err(|e| ApiError::internal(e.to_string()))?;
        out.pop(); // the closing brace
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in page.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b"]}");
        Ok(raw(StatusCode::OK, out))
    }

    /// A write with `dryRun=All` and no admission webhook to call: what it
    /// would store, answered as the write would be, stored nowhere.
    fn dry_write(
        &self,
        verb: &str,
        target: &Target,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let res = &target.resource;
        let ns = self.ns(target);
        let part = match target.sub.as_deref() {
            None => Part::Main,
            Some("status") => Part::Status,
            Some("scale") => return self.dry_scale(verb, target, content_type, body),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "a dry run of the {other} subresource is not served by the simulator"
                )));
            }
        };
        let name = target.name.as_deref();
        let (code, value) = match (verb, name) {
            ("create", None) => (
                StatusCode::CREATED,
                self.store.create_dry(res, ns, parse_body(body)?)?,
            ),
            ("update", Some(name)) => (
                StatusCode::OK,
                self.store
                    .update_dry(res, ns, name, parse_body(body)?, part)?,
            ),
            ("patch", Some(name)) => {
                let kind = crate::patch::PatchType::from_content_type(content_type)?;
                (
                    StatusCode::OK,
                    self.store.patch_dry(res, ns, name, kind, body, part)?,
                )
            }
            // The object as it is: a dry-run delete deletes nothing.
            ("delete", Some(name)) => {
                let value = self.store.get_value(res, ns, name)?;
                crate::store::deletable(res, name)?;
                (StatusCode::OK, value)
            }
            _ => {
                return Err(ApiError::method_not_allowed(format!(
                    "{verb} is not allowed here"
                )));
            }
        };
        Ok(json_response(code, &value))
    }

    /// A TokenRequest (`kubectl create token`), the one verb of a
    /// ServiceAccount's `token` subresource.
    fn token(
        &self,
        verb: &str,
        target: &Target,
        request: &Request<'_>,
    ) -> Result<Response, ApiError> {
        if verb != "create" {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource: {verb}"
            )));
        }
        let name = target.name.as_deref().unwrap_or_default();
        let body = if request.body.is_empty() {
            json!({})
        } else {
            let decoded = protobuf::decode(request.body)
                .ok()
                .map(|o| serde_json::to_vec(&o).unwrap_or_default());
            parse_body(decoded.as_deref().unwrap_or(request.body))?
        };
        let issued = crate::serviceaccounts::token(
            &self.store,
            self.ns(target),
            name,
            body,
            (self.options.clock)(),
        )?;
        Ok(json_response(StatusCode::CREATED, &issued))
    }

    fn create(&self, target: &Target, body: &[u8]) -> Result<Response, ApiError> {
        if target.name.is_some() {
            return Err(ApiError::method_not_allowed(
                "POST is not allowed on a named object",
            ));
        }
        let object = parse_body(body)?;
        let created = self
            .store
            .create(&target.resource, self.ns(target), object)?;
        Ok(json_response(StatusCode::CREATED, &created))
    }

    /// A create, update or patch of an object (under admission) or of its
    /// status: the object as it would be stored (defaulted), its owned
    /// fields tracked (`managedFields`; an apply's conflicts refused), goes
    /// through the registered webhooks, and what they leave is written,
    /// conditionally on the version read (a patch whose object changed
    /// meanwhile is made again).
    async fn admitted_write(
        &self,
        verb: &str,
        target: &Target,
        request: &Request<'_>,
    ) -> Result<Response, ApiError> {
        use crate::{
            admission::Attempt,
            managed,
            patch::{PatchType, apply},
        };
        let Request {
            content_type,
            query,
            body,
            user_agent,
        } = *request;
        let res = &target.resource;
        let ns = self.ns(target);
        let builtin = res.builtin();
        let part = if target.sub.is_some() {
            Part::Status
        } else {
            Part::Main
        };
        let kind = match verb {
            "patch" => Some(PatchType::from_content_type(content_type)?),
            _ => None,
        };
        let applying = kind == Some(PatchType::Apply);
        let force = match query.get("force").map(String::as_str) {
            None => false,
            Some("true") if applying => true,
            Some("false") => false,
            Some(_) if !applying => {
                return Err(ApiError::bad_request(
                    "force: Invalid value: true: may not be specified for non-apply patch",
                ));
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "force: Invalid value: {other:?}: must be true or false"
                )));
            }
        };
        let manager = managed::manager_of(
            query.get("fieldManager").map(String::as_str),
            user_agent,
            applying,
        )?;
        let config: Option<Value> = if applying {
            let config: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if !config.is_object() {
                return Err(ApiError::bad_request(format!(
                    "error decoding YAML: cannot unmarshal {} into an object",
                    kind_of(&config)
                )));
            }
            let (api_version, kind) = (
                config["apiVersion"].as_str().unwrap_or_default(),
                config["kind"].as_str().unwrap_or_default(),
            );
            if api_version.is_empty() || kind.is_empty() {
                let group_version = if api_version.contains('/') {
                    api_version.to_owned()
                } else {
                    format!("/{api_version}")
                };
                return Err(ApiError::bad_request(format!(
                    "invalid object type: {group_version}, Kind={kind}"
                )));
            }
            if !config["metadata"]["managedFields"].is_null() {
                return Err(ApiError::bad_request("metadata.managedFields must be nil"));
            }
            Some(config)
        } else {
            None
        };
        let writer = managed::Writer {
            manager,
            apply: config.as_ref().map(|c| (c, force)),
            subresource: target.sub.as_deref(),
            api_version: res.api_version(&target.version),
            has_status: res.status,
            now: crate::time::rfc3339((self.options.clock)()),
        };
        for _ in 0..5 {
            let name = target.name.clone().unwrap_or_default();
            let (operation, old, mut object) = match (verb, kind) {
                ("create", _) => {
                    if target.name.is_some() {
                        return Err(ApiError::method_not_allowed(
                            "POST is not allowed on a named object",
                        ));
                    }
                    ("CREATE", None, parse_body(body)?)
                }
                ("update", _) => {
                    // The body is checked against the path before the
                    // object is looked up, as kube-apiserver checks it.
                    let object = parse_body(body)?;
                    crate::store::check_kind(res, &object)?;
                    check_identity(res, ns, &name, &object)?;
                    let current = self.store.get_value(res, ns, &name)?;
                    // A uid in the body is a precondition.
                    let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
                    let stored = current["metadata"]["uid"].as_str().unwrap_or_default();
                    if !uid.is_empty() && uid != stored {
                        return Err(ApiError::conflict(
                            &res.group,
                            &res.plural,
                            &name,
                            &format!(
                                "StorageError: invalid object, Code: 4, Key: /registry/{}/{ns}/{name}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}",
                                res.plural
                            ),
                        ));
                    }
                    ("UPDATE", Some(current), object)
                }
                (_, kind) => {
                    let kind = kind.unwrap_or(PatchType::Merge);
                    match self.store.get_value(res, ns, &name) {
                        Ok(current) => {
                            let mut patched = current.clone();
                            apply(kind, &mut patched, body, builtin)?;
                            ("UPDATE", Some(current), patched)
                        }
                        Err(e) if e.code == 404 && applying && part == Part::Main => {
                            let mut fresh = json!({});
                            apply(kind, &mut fresh, body, builtin)?;
                            if fresh["metadata"]["name"].is_null() {
                                fresh["metadata"]["name"] = json!(name);
                            }
                            ("CREATE", None, fresh)
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            // What a patch or a body made must still be an object with
            // object metadata before anything is read or set in it.
            if !object.is_object() {
                return Err(ApiError::bad_request(format!(
                    "the object is not a JSON object but {}",
                    kind_of(&object)
                )));
            }
            if !(object["metadata"].is_object() || object["metadata"].is_null()) {
                return Err(ApiError::invalid(
                    &res.group,
                    &res.kind,
                    &name,
                    &[(
                        "metadata".into(),
                        format!(
                            "Invalid value: {}: must be an object",
                            kind_of(&object["metadata"])
                        ),
                    )],
                ));
            }
            // A patch's result must read as its type, as a whole body does.
            if verb == "patch"
                && let Err((kind, why)) = typed_value(target, object.clone())
            {
                return Err(ApiError::invalid(
                    &res.group,
                    &kind,
                    &name,
                    &[(
                        "patch".into(),
                        format!(
                            "Invalid value: the patched object: cannot be read as a {kind}: {why}"
                        ),
                    )],
                ));
            }
            if res.namespaced && object["metadata"]["namespace"].is_null() {
                object["metadata"]["namespace"] = json!(ns);
            }
            // What the manager applies is its own before defaults fill
            // anything in; what it writes otherwise, defaults included.
            if applying {
                managed::track(old.as_ref(), &mut object, &writer)?;
                self.store.defaults(res, &mut object);
            } else {
                self.store.defaults(res, &mut object);
                managed::track(old.as_ref(), &mut object, &writer)?;
            }
            let object_name = object["metadata"]["name"]
                .as_str()
                .unwrap_or(&name)
                .to_owned();
            // The version a patch is made on: the one read, or the one
            // the patch itself names (a precondition the client set).
            let read_version = old
                .as_ref()
                .map(|_| object["metadata"]["resourceVersion"].clone());
            let mut admitted = if part == Part::Main && self.admission.active(res) {
                self.admission
                    .admit(
                        &self.store,
                        Attempt {
                            resource: res,
                            version: &target.version,
                            operation,
                            namespace: ns,
                            name: &object_name,
                            object,
                            old,
                            field_manager: query.get("fieldManager").map(String::as_str),
                            dry_run: query.contains_key("dryRun"),
                        },
                    )
                    .await?
            } else {
                object
            };
            let dry = dry_run(query, verb)?;
            let written = if operation == "CREATE" {
                if dry {
                    self.store.create_dry(res, ns, admitted)
                } else {
                    self.store.create(res, ns, admitted)
                }
                .map(|v| (StatusCode::CREATED, v))
            } else {
                if verb == "patch"
                    && let Some(version) = read_version
                {
                    admitted["metadata"]["resourceVersion"] = version;
                }
                if dry {
                    self.store.update_dry(res, ns, &name, admitted, part)
                } else {
                    self.store.update(res, ns, &name, admitted, part)
                }
                .map(|v| (StatusCode::OK, v))
            };
            match written {
                Err(e) if e.code == 409 && verb == "patch" => {}
                other => return other.map(|(code, v)| json_response(code, &v)),
            }
        }
        Err(ApiError::conflict(
            &res.group,
            &res.plural,
            target.name.as_deref().unwrap_or_default(),
            "the object kept changing while admission webhooks looked at it",
        ))
    }

    fn update(&self, target: &Target, request: &Request<'_>) -> Result<Response, ApiError> {
        let body = request.body;
        let res = &target.resource;
        let name = target
            .name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed("PUT needs a name"))?;
        let object = parse_body(body)?;
        let updated = match target.sub.as_deref() {
            Some("scale") => {
                let replicas = object["spec"]["replicas"].clone();
                let scaled = self.scale(
                    target,
                    name,
                    replicas,
                    object["metadata"]["resourceVersion"].as_str(),
                    request,
                )?;
                return Ok(json_response(StatusCode::OK, &scale_of(res, &scaled)));
            }
            Some("status") => {
                self.store
                    .update(res, self.ns(target), name, object, Part::Status)?
            }
            _ => self
                .store
                .update(res, self.ns(target), name, object, Part::Main)?,
        };
        Ok(json_response(StatusCode::OK, &updated))
    }

    /// A dry run of a write of the scale subresource: the Scale it would
    /// give, nothing stored.
    fn dry_scale(
        &self,
        verb: &str,
        target: &Target,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let res = &target.resource;
        let name = target
            .name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed("the scale subresource needs a name"))?;
        let paths = res
            .scale
            .clone()
            .ok_or_else(|| ApiError::no_route("scale"))?;
        let current = self.store.get_value(res, self.ns(target), name)?;
        let mut scale = scale_of(res, &current);
        match verb {
            "update" => scale = parse_body(body)?,
            "patch" => {
                let kind = PatchType::from_content_type(content_type)?;
                crate::patch::apply(kind, &mut scale, body, true)?;
            }
            _ => {
                return Err(ApiError::method_not_allowed(format!(
                    "the scale subresource does not allow {verb}"
                )));
            }
        }
        let replicas = scale["spec"]["replicas"].clone();
        check_scale(name, &replicas)?;
        let mut after = current;
        set_path(&mut after, &paths.spec_replicas, replicas);
        Ok(json_response(StatusCode::OK, &scale_of(res, &after)))
    }

    /// A write of the scale subresource: the replicas set, and owned by
    /// the writer as a write to `scale` (an apply there is recorded as an
    /// update of the replicas).
    fn scale(
        &self,
        target: &Target,
        name: &str,
        replicas: Value,
        rv: Option<&str>,
        request: &Request<'_>,
    ) -> Result<Value, ApiError> {
        let res = &target.resource;
        let paths = res
            .scale
            .clone()
            .ok_or_else(|| ApiError::no_route("scale"))?;
        check_scale(name, &replicas)?;
        let mut current = self.store.get_value(res, self.ns(target), name)?;
        let before = current.clone();
        if let Some(rv) = rv.filter(|rv| !rv.is_empty()) {
            current["metadata"]["resourceVersion"] = json!(rv);
        }
        set_path(&mut current, &paths.spec_replicas, replicas);
        let writer = crate::managed::Writer {
            manager: crate::managed::manager_of(
                request.query.get("fieldManager").map(String::as_str),
                request.user_agent,
                false,
            )?,
            apply: None,
            subresource: Some("scale"),
            api_version: res.api_version(&target.version),
            has_status: res.status,
            now: crate::time::rfc3339((self.options.clock)()),
        };
        crate::managed::track(Some(&before), &mut current, &writer)?;
        self.store
            .update(res, self.ns(target), name, current, Part::Main)
    }

    fn patch(&self, target: &Target, request: &Request<'_>) -> Result<Response, ApiError> {
        let (content_type, body) = (request.content_type, request.body);
        let res = &target.resource;
        let name = target
            .name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed("PATCH needs a name"))?;
        let kind = PatchType::from_content_type(content_type)?;
        let patched = match target.sub.as_deref() {
            Some("scale") => {
                let current = self.store.get_value(res, self.ns(target), name)?;
                let mut scale = scale_of(res, &current);
                crate::patch::apply(kind, &mut scale, body, true)?;
                let scaled = self.scale(
                    target,
                    name,
                    scale["spec"]["replicas"].clone(),
                    None,
                    request,
                )?;
                return Ok(json_response(StatusCode::OK, &scale_of(res, &scaled)));
            }
            Some("status") => {
                self.store
                    .patch(res, self.ns(target), name, kind, body, Part::Status)?
            }
            _ => self
                .store
                .patch(res, self.ns(target), name, kind, body, Part::Main)?,
        };
        Ok(json_response(StatusCode::OK, &patched))
    }

    fn delete(&self, target: &Target, query: &Query, body: &[u8]) -> Result<Response, ApiError> {
        let name = target
            .name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed("DELETE needs a name"))?;
        let options = delete_options(query, body)?;
        let deleted = self
            .store
            .delete(&target.resource, self.ns(target), name, &options)?;
        Ok(json_response(StatusCode::OK, &deleted))
    }

    fn delete_collection(&self, target: &Target, query: &Query) -> Result<Response, ApiError> {
        let res = &target.resource;
        let (labels, fields) = selectors(query)?;
        let page = self.store.list(
            res,
            target.namespace.as_deref(),
            &labels,
            &fields,
            None,
            None,
        )?;
        let options = delete_options(query, b"")?;
        let mut deleted = Vec::new();
        for bytes in page.items {
            let object: Value =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match self.store.delete(res, &ns, &name, &options) {
                Ok(d) => deleted.push(d),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(&target.version), "metadata": {"resourceVersion": self.store.resource_version().to_string()}, "items": deleted});
        Ok(json_response(StatusCode::OK, &list))
    }

    fn watch(&self, target: Target, query: &Query, accept: &str) -> Response {
        if let Err(e) = check_list_options(query, true) {
            return error_response(&e);
        }
        let res = target.resource.clone();
        let (labels, fields) = match selectors(query) {
            Ok(s) => s,
            Err(e) => return error_response(&e),
        };
        let since = match query.get("resourceVersion").map(String::as_str) {
            None | Some("" | "0") => None,
            Some(rv) => match rv.parse::<u64>() {
                Ok(rv) => Some(rv),
                Err(_) => {
                    return error_response(&ApiError::bad_request(format!(
                        "resourceVersion: not a number: {rv:?}"
                    )));
                }
            },
        };
        let initial_events = is_true(query.get("sendInitialEvents"));
        let since = if initial_events { None } else { since };
        // Asked not to: no synthetic ADDED events, from now on only.
        let since = match (query.get("sendInitialEvents").map(String::as_str), since) {
            (Some("false"), None) => Some(self.store.resource_version()),
            (_, since) => since,
        };
        let bookmarks = is_true(query.get("allowWatchBookmarks"));
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        let as_table = table::wants_table(accept);
        let namespace = target.namespace.clone();
        let start = match self.store.watch(&res, namespace.as_deref(), since) {
            Ok(start) => start,
            Err(e) => {
                // The client will list everything again: worth knowing.
                tracing::info!(resource = %res.plural, since = ?since, error = %e.message, "watch refused");
                // A real API server reports an expired version as an ERROR event.
                let line = format!("{}\n", json!({"type": "ERROR", "object": e.to_status()}));
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    line,
                )
                    .into_response();
            }
        };
        let api = self.clone();
        let faults = Arc::clone(&self.faults);
        let version = target.version.clone();
        let mut drops = self.faults.drop_signals();
        let plural = res.plural.clone();
        let encode = move |event: &WatchEvent| -> Option<Bytes> {
            let kind = event.seen_as(namespace.as_deref(), &labels, &fields)?;
            let mut line = Vec::with_capacity(event.object.len() + 32);
            line.extend_from_slice(
                format!("{{\"type\":\"{}\",\"object\":", kind.as_str()).as_bytes(),
            );
            let left = (kind == EventType::Deleted && event.kind == EventType::Modified)
                .then(|| event.left())
                .flatten();
            let object = left.as_deref().unwrap_or(&event.object);
            if as_table {
                let object: Value = serde_json::from_slice(object).ok()?;
                let t = table::table(&res, &[object], event.rv, None, (api.options.clock)());
                line.extend_from_slice(&serde_json::to_vec(&t).ok()?);
            } else {
                line.extend_from_slice(object);
            }
            line.extend_from_slice(b"}\n");
            Some(Bytes::from(line))
        };
        let bookmark = move |rv: u64, initial_end: bool| -> Bytes {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let kind = &target.resource.kind;
            let api_version = target.resource.api_version(&version);
            Bytes::from(format!(
                "{}\n",
                json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}})
            ))
        };
        let interval = self.options.bookmark_interval;
        let stream = async_stream(move |tx: tokio::sync::mpsc::Sender<Bytes>| async move {
            let mut last_rv = start.resource_version;
            for event in &start.initial {
                last_rv = last_rv.max(event.rv);
                if let Some(line) = encode(event)
                    && tx.send(line).await.is_err()
                {
                    return;
                }
            }
            if initial_events && bookmarks {
                let _ = tx.send(bookmark(last_rv, true)).await;
            }
            // The newest version the initial events already showed: a live
            // Added event at or below it is one of them again.
            let initial_max = start.initial.iter().map(|e| e.rv).max();
            let mut live = start.live;
            // Events held back by a watch-lag fault, each with when it is due.
            let mut late: std::collections::VecDeque<(tokio::time::Instant, Arc<WatchEvent>)> =
                std::collections::VecDeque::new();
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                let expired = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = expired => return,
                    () = tx.closed() => return,
                    signal = drops.recv() => {
                        if signal.is_ok_and(|r| r.is_empty() || r == plural) {
                            return;
                        }
                    }
                    () = async {
                        match late.front() {
                            Some((due, _)) => tokio::time::sleep_until(*due).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        if let Some((_, event)) = late.pop_front() {
                            // Bookmarks never pass an event not sent yet.
                            last_rv = event.rv;
                            if let Some(line) = encode(&event)
                                && tx.send(line).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    _ = ticker.tick(), if bookmarks => {
                        if tx.send(bookmark(last_rv, false)).await.is_err() {
                            return;
                        }
                    }
                    event = live.recv() => match event {
                        Ok(event) => {
                            if event.kind == EventType::Added && initial_max.is_some_and(|max| max >= event.rv) {
                                continue;
                            }
                            let lag = faults.watch_lag(&plural);
                            if !lag.is_zero() || !late.is_empty() {
                                late.push_back((tokio::time::Instant::now() + lag, event));
                                continue;
                            }
                            last_rv = event.rv;
                            if let Some(line) = encode(&event)
                                && tx.send(line).await.is_err() {
                                    return;
                                }
                        }
                        // Too slow or the resource went away: end; the client
                        // re-watches from the last version it saw, as the API
                        // server closes a watcher that cannot keep up.
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(resource = %plural, missed, last_rv, "watch closed: the client fell too far behind");
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(stream.map(Ok::<Bytes, std::io::Error>)),
        )
            .into_response()
    }
}

/// A Scale's replicas are never negative.
fn check_scale(name: &str, replicas: &Value) -> Result<(), ApiError> {
    match replicas.as_i64() {
        Some(n) if n < 0 => Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            &[(
                "spec.replicas".to_owned(),
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            )],
        )),
        _ => Ok(()),
    }
}

/// Runs `producer` on its own task and streams what it sends.
fn async_stream<F, Fut>(producer: F) -> tokio_stream::wrappers::ReceiverStream<Bytes>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(producer(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn delete_options(query: &Query, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        parse_body(body)?
    };
    let policy = query
        .get("propagationPolicy")
        .map(String::as_str)
        .or(body["propagationPolicy"].as_str());
    let propagation = match policy {
        None => None,
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                &[(
                    "propagationPolicy".to_owned(),
                    format!(
                        "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            ));
        }
    };
    let propagation = propagation.or(if body["orphanDependents"] == json!(true) {
        Some(Propagation::Orphan)
    } else {
        None
    });
    let grace = match query.get("gracePeriodSeconds") {
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!(
                "gracePeriodSeconds: invalid value {text:?}: must be a whole number of seconds"
            ))
        })?),
        None => body["gracePeriodSeconds"].as_i64(),
    };
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds: grace,
        uid: body["preconditions"]["uid"].as_str().map(str::to_owned),
        resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned),
    })
}

/// The `autoscaling/v1` Scale view of an object.
fn scale_of(res: &Resource, object: &Value) -> Value {
    let Some(paths) = &res.scale else {
        return Value::Null;
    };
    let selector = paths
        .label_selector
        .as_deref()
        .map(|p| get_path(object, p))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| table::labels_text(&object["spec"]["selector"]["matchLabels"]));
    let meta = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": get_path(object, &paths.spec_replicas).as_i64().unwrap_or(0)},
        "status": {"replicas": get_path(object, &paths.status_replicas).as_i64().unwrap_or(0), "selector": selector},
    })
}

/// What a request carries besides its target.
#[derive(Debug, Clone, Copy)]
struct Request<'a> {
    content_type: &'a str,
    query: &'a Query,
    user_agent: Option<&'a str>,
    body: &'a [u8],
}

/// What kind of JSON value `v` is, for error messages.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
