//! Field ownership, as kube-apiserver keeps it in `metadata.managedFields`.
//!
//! Every write names a manager: the `fieldManager` parameter, else the
//! client's user agent up to its first `/`. An update, a patch or a create
//! (operation `Update`) gives the manager the fields it changed and takes
//! them from every other manager. A server-side apply (operation `Apply`)
//! makes the manager own exactly the fields of its configuration: a field
//! another manager owns with a different value is a conflict (409, each
//! field named) unless the apply forces it, and a field the manager applied
//! before and now leaves out is removed, unless another manager owns it.
//!
//! Sets are kept in kube-apiserver's `FieldsV1` form: `f:<field>`,
//! `k:<key>` for an item of a list keyed by its fields (containers by
//! `name`, container ports by `containerPort` and `protocol`, ...), `v:<value>`
//! for an item of a set (`finalizers`), and `.` for a map or an item itself.
//! Other lists are atomic: owned whole. Ownership is computed before the
//! admission webhooks run, so what they change is nobody's, as on a real
//! server. Fields the server sets (`metadata.uid`, `resourceVersion`, ...)
//! and, on a resource with a status subresource, the status of a write to
//! the resource (or anything but the status of a write to `/status`) are
//! not tracked.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// A set of fields: a tree whose leaves (and `.` entries) are its members.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Set(BTreeMap<String, Set>);

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: Set,
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub(crate) struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// For an apply: the configuration applied and whether it forces.
    pub apply: Option<(&'a Value, bool)>,
    /// `Some("status")` for a write to the status subresource.
    pub subresource: Option<&'a str>,
    /// The `apiVersion` written.
    pub api_version: String,
    /// Whether the resource has a status subresource.
    pub has_status: bool,
    /// Now, as RFC 3339.
    pub now: String,
}

/// The manager of a write: `fieldManager`, else the user agent's first
/// part. An apply must name one.
///
/// # Errors
/// 400 for an apply without `fieldManager`, or a name over 128 characters.
pub(crate) fn manager_of<'a>(
    field_manager: Option<&'a str>,
    user_agent: Option<&'a str>,
    apply: bool,
) -> Result<&'a str, ApiError> {
    match field_manager.filter(|m| !m.is_empty()) {
        Some(m) if m.chars().count() > 128 => Err(ApiError::bad_request(format!(
            "fieldManager: Invalid value: \"{m}\": must be no more than 128 characters"
        ))),
        Some(m) => Ok(m),
        None if apply => Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            &[(
                "fieldManager".to_owned(),
                "Required value: is required for apply patch".to_owned(),
            )],
        )),
        None => Ok(user_agent
            .and_then(|ua| ua.split('/').next())
            .filter(|ua| !ua.is_empty())
            .unwrap_or("unknown")),
    }
}

/// Sets `new`'s `managedFields` for a write of `new` over `old` (`None`:
/// a create) by `writer`. For an apply, `new` is the live object with the
/// configuration merged in; the fields the manager no longer applies are
/// removed from it here.
///
/// # Errors
/// 409 naming each conflicting field and its manager, for an apply that
/// does not force.
pub(crate) fn track(old: Option<&Value>, new: &mut Value, writer: &Writer) -> Result<(), ApiError> {
    let given = &new["metadata"]["managedFields"];
    let before = old.map_or(&Value::Null, |o| &o["metadata"]["managedFields"]);
    // A client that sends managedFields of its own sets them (`[{}]`
    // clears them); one that sends none or what it read changes nothing.
    let mut entries = if given.as_array().is_some_and(|a| !a.is_empty()) && given != before {
        if given
            .as_array()
            .is_some_and(|a| a.iter().all(is_empty_entry))
        {
            new["metadata"]
                .as_object_mut()
                .map(|m| m.remove("managedFields"));
            return Ok(());
        }
        parse(given)
    } else {
        parse(before)
    };
    let scope = Scope {
        has_status: writer.has_status,
        status: writer.subresource == Some("status"),
    };
    let empty = json!({});
    let live = old.unwrap_or(&empty);
    let current = |e: &Entry, op: &str| {
        e.manager == writer.manager
            && e.operation == op
            && e.subresource.as_deref() == writer.subresource
    };
    match writer.apply {
        Some((config, force)) => {
            if entries.is_empty() && old.is_some() {
                // An object nobody has claimed yet (made before fields
                // were tracked): what it holds belongs to a placeholder.
                entries.push(Entry {
                    manager: "before-first-apply".into(),
                    operation: "Update".into(),
                    api_version: writer.api_version.clone(),
                    time: Some(writer.now.clone()),
                    subresource: writer.subresource.map(str::to_owned),
                    fields: of(live, scope, false),
                });
            }
            let applied = of(config, scope, false);
            let mut conflicts = Vec::new();
            for path in applied.members() {
                if path.last().map(String::as_str) == Some(".") {
                    continue;
                }
                for (i, e) in entries.iter().enumerate() {
                    if current(e, "Apply") || !e.fields.contains(&path) {
                        continue;
                    }
                    if value_at(live, &path) != value_at(config, &path) {
                        conflicts.push((i, path.clone()));
                    }
                }
            }
            // kubectl moving from client-side to server-side apply: what
            // its last-applied annotation still says of the live object is
            // its own (kube-apiserver's upgrade path), not a conflict.
            if writer.manager == "kubectl" && !conflicts.is_empty() {
                let allowed = last_applied(live);
                let left: Vec<_> = conflicts
                    .iter()
                    .filter(|(_, path)| !allowed.contains(path))
                    .cloned()
                    .collect();
                if !left.is_empty() && !force {
                    return Err(conflict_error(&entries, &left));
                }
            } else if !conflicts.is_empty() && !force {
                return Err(conflict_error(&entries, &conflicts));
            }
            for (i, path) in &conflicts {
                entries[*i].fields.remove(path);
            }
            let previous = entries
                .iter()
                .find(|e| current(e, "Apply"))
                .map(|e| e.fields.clone())
                .unwrap_or_default();
            for path in previous.members() {
                // A `.` member is the map or item itself: it goes only
                // when nothing of it is applied or owned any more.
                let node = match path.split_last() {
                    Some((last, parent)) if last == "." => parent,
                    _ => &path[..],
                };
                if applied.touches(node) {
                    continue;
                }
                let owned_elsewhere = entries
                    .iter()
                    .any(|e| !current(e, "Apply") && e.fields.touches(node));
                if !owned_elsewhere {
                    remove_at(new, node);
                }
            }
            set_entry(&mut entries, writer, "Apply", applied);
        }
        None => {
            let mut changed = Set::default();
            let mut removed = Set::default();
            diff(
                live,
                new,
                &mut Vec::new(),
                &mut Names::default(),
                scope,
                &mut changed,
                &mut removed,
            );
            for path in changed.members().into_iter().chain(removed.members()) {
                for e in entries.iter_mut().filter(|e| !current(e, "Update")) {
                    e.fields.remove_under(&path);
                }
            }
            let mut mine = entries
                .iter()
                .find(|e| current(e, "Update"))
                .map(|e| e.fields.clone())
                .unwrap_or_default();
            for path in removed.members() {
                mine.remove_under(&path);
            }
            let grew = !changed.is_empty();
            for path in changed.members() {
                mine.insert(&path);
            }
            if grew || entries.iter().any(|e| current(e, "Update")) {
                set_entry(&mut entries, writer, "Update", mine);
            }
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    let list: Vec<Value> = entries.iter().map(to_json).collect();
    if let Some(meta) = new["metadata"].as_object_mut() {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
    Ok(())
}

/// The fields of `live`'s `kubectl.kubernetes.io/last-applied-configuration`
/// that still hold the values it gives.
fn last_applied(live: &Value) -> Set {
    let Some(text) = live["metadata"]["annotations"]
        .get("kubectl.kubernetes.io/last-applied-configuration")
        .and_then(Value::as_str)
    else {
        return Set::default();
    };
    let Ok(applied) = serde_json::from_str::<Value>(text) else {
        return Set::default();
    };
    let scope = Scope {
        has_status: true,
        status: false,
    };
    let mut held = Set::default();
    for path in of(&applied, scope, false).members() {
        if value_at(live, &path) == value_at(&applied, &path) {
            held.insert(&path);
        }
    }
    held
}

fn is_empty_entry(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty)
}

fn set_entry(entries: &mut Vec<Entry>, writer: &Writer, operation: &str, fields: Set) {
    let entry = Entry {
        manager: writer.manager.to_owned(),
        operation: operation.to_owned(),
        api_version: writer.api_version.clone(),
        time: Some(writer.now.clone()),
        subresource: writer.subresource.map(str::to_owned),
        fields,
    };
    match entries.iter_mut().find(|e| {
        e.manager == entry.manager
            && e.operation == entry.operation
            && e.subresource == entry.subresource
    }) {
        Some(e) => *e = entry,
        None => entries.push(entry),
    }
}

fn parse(value: &Value) -> Vec<Entry> {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|e| {
                    Some(Entry {
                        manager: e["manager"].as_str()?.to_owned(),
                        operation: e["operation"].as_str()?.to_owned(),
                        api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                        time: e["time"].as_str().map(str::to_owned),
                        subresource: e["subresource"].as_str().map(str::to_owned),
                        fields: Set::from_json(&e["fieldsV1"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn to_json(e: &Entry) -> Value {
    let mut out = json!({
        "manager": e.manager,
        "operation": e.operation,
        "apiVersion": e.api_version,
        "fieldsType": "FieldsV1",
        "fieldsV1": e.fields.to_json(),
    });
    if let Some(t) = &e.time {
        out["time"] = json!(t);
    }
    if let Some(s) = &e.subresource {
        out["subresource"] = json!(s);
    }
    out
}

/// kube-apiserver's 409 for an apply's conflicts.
fn conflict_error(entries: &[Entry], conflicts: &[(usize, Vec<String>)]) -> ApiError {
    let who = |e: &Entry| {
        let mut s = format!("{:?}", e.manager);
        if let Some(sub) = &e.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        // An update's manager is named with its version, not its time.
        if e.operation == "Update" {
            s.push_str(&format!(" using {}", e.api_version));
        }
        s
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, path)| {
            json!({"reason": "FieldManagerConflict",
                "message": format!("conflict with {}", who(&entries[*i])),
                "field": path_string(path)})
        })
        .collect();
    let message = if let [(i, path)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            who(&entries[*i]),
            path_string(path)
        )
    } else {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, path) in conflicts {
            by.entry(entries[*i].manager.clone())
                .or_default()
                .push(path_string(path));
        }
        let mut lines = Vec::new();
        for (manager, paths) in &by {
            let entry = conflicts
                .iter()
                .map(|(i, _)| &entries[*i])
                .find(|e| &e.manager == manager)
                .map(who)
                .unwrap_or_default();
            lines.push(format!("conflicts with {entry}:"));
            lines.extend(paths.iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::conflict("", "", "", "");
    e.message = message;
    e.details = Some(json!({"causes": causes}));
    e
}

/// A path as kube-apiserver prints it: `.spec.containers[name="web"].image`.
fn path_string(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// Which part of an object a write's fields are counted in.
#[derive(Debug, Clone, Copy)]
struct Scope {
    has_status: bool,
    status: bool,
}

impl Scope {
    /// Whether the top-level field `name` (or `metadata.<meta>`) counts.
    fn counts(self, path: &[String], name: &str) -> bool {
        match path {
            [] => {
                if self.status {
                    name == "status"
                } else {
                    !(matches!(name, "apiVersion" | "kind")
                        || (self.has_status && name == "status"))
                }
            }
            [top] if top == "f:metadata" => !matches!(
                name,
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
                    | "managedFields"
                    | "selfLink"
            ),
            _ => true,
        }
    }
}

/// The field names on the way to a value (list items skipped), for the
/// list keys that depend on where a list is.
#[derive(Debug, Default)]
struct Names(Vec<String>);

/// How a list at `field` (under `parent`) is merged.
enum ListType {
    Map(&'static [&'static str]),
    Set,
    Atomic,
}

fn list_type(field: &str, parent: Option<&str>) -> ListType {
    ListType::Map(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "ports"
            if matches!(
                parent,
                Some("containers" | "initContainers" | "ephemeralContainers")
            ) =>
        {
            &["containerPort", "protocol"]
        }
        "ports" if parent == Some("spec") => &["port", "protocol"],
        "ownerReferences" => &["uid"],
        "conditions" => &["type"],
        "hostAliases" => &["ip"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        "finalizers" => return ListType::Set,
        _ => return ListType::Atomic,
    })
}

/// Maps owned whole (label selectors).
fn atomic_map(field: &str) -> bool {
    field == "selector"
}

/// Fields that are maps of any keys (not objects of known fields): an
/// update that makes one owns the map itself too (`.`).
fn map_typed(field: &str) -> bool {
    matches!(
        field,
        "labels"
            | "annotations"
            | "data"
            | "stringData"
            | "binaryData"
            | "nodeSelector"
            | "matchLabels"
            | "limits"
            | "requests"
            | "capacity"
            | "allocatable"
            | "parameters"
    )
}

/// The `k:` element of `item` in a list keyed by `keys`.
fn key_of(item: &Value, keys: &[&str]) -> Option<String> {
    let mut key = Map::new();
    for k in keys {
        let v = match item.get(*k) {
            Some(v) if !v.is_null() => v.clone(),
            _ if *k == "protocol" => json!("TCP"),
            _ => return None,
        };
        key.insert((*k).to_owned(), v);
    }
    Some(format!("k:{}", Value::Object(key)))
}

/// The fields `value` sets (for an apply's configuration or a new object);
/// `marks` adds `.` for each map, as an update records it.
fn of(value: &Value, scope: Scope, marks: bool) -> Set {
    let mut set = Set::default();
    collect(
        value,
        &mut Vec::new(),
        &mut Names::default(),
        scope,
        marks,
        &mut set,
    );
    set
}

fn collect(
    value: &Value,
    path: &mut Vec<String>,
    names: &mut Names,
    scope: Scope,
    marks: bool,
    out: &mut Set,
) {
    match value {
        Value::Object(map) if !map.is_empty() && !names.0.last().is_some_and(|f| atomic_map(f)) => {
            if marks && names.0.last().is_some_and(|f| map_typed(f)) {
                path.push(".".into());
                out.insert(path);
                path.pop();
            }
            for (k, v) in map {
                if !scope.counts(path, k) {
                    continue;
                }
                path.push(format!("f:{k}"));
                names.0.push(k.clone());
                collect(v, path, names, scope, marks, out);
                names.0.pop();
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let field = names.0.last().map(String::as_str).unwrap_or_default();
            let parent = names.0.iter().rev().nth(1).map(String::as_str);
            let kind = list_type(field, parent);
            // An update that makes a keyed list or a set owns the list too.
            if marks && !matches!(kind, ListType::Atomic) {
                path.push(".".into());
                out.insert(path);
                path.pop();
            }
            match kind {
                ListType::Map(keys) => {
                    let Some(elements) = items
                        .iter()
                        .map(|i| key_of(i, keys))
                        .collect::<Option<Vec<_>>>()
                    else {
                        out.insert(path);
                        return;
                    };
                    for (item, element) in items.iter().zip(elements) {
                        path.push(element);
                        collect_item(item, path, names, scope, marks, out);
                        path.pop();
                    }
                }
                ListType::Set => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path);
                        path.pop();
                    }
                }
                ListType::Atomic => out.insert(path),
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path);
            }
        }
    }
}

/// An item of a keyed list at `path` (its `k:` element last): the item
/// itself (`.`) and its fields.
fn collect_item(
    item: &Value,
    path: &mut Vec<String>,
    names: &mut Names,
    scope: Scope,
    marks: bool,
    out: &mut Set,
) {
    path.push(".".into());
    out.insert(path);
    path.pop();
    if let Value::Object(fields) = item {
        for (k, v) in fields {
            path.push(format!("f:{k}"));
            names.0.push(k.clone());
            collect(v, path, names, scope, marks, out);
            names.0.pop();
            path.pop();
        }
    }
}

/// What an update changed from `old` to `new`: fields added or given a
/// new value, and fields taken away.
fn diff(
    old: &Value,
    new: &Value,
    path: &mut Vec<String>,
    names: &mut Names,
    scope: Scope,
    changed: &mut Set,
    removed: &mut Set,
) {
    let atomic = names.0.last().is_some_and(|f| atomic_map(f));
    match (old, new) {
        (Value::Object(a), Value::Object(b)) if !atomic => {
            for (k, v) in b {
                if !scope.counts(path, k) {
                    continue;
                }
                path.push(format!("f:{k}"));
                names.0.push(k.clone());
                match a.get(k) {
                    Some(before) => diff(before, v, path, names, scope, changed, removed),
                    None => collect(v, path, names, scope, true, changed),
                }
                names.0.pop();
                path.pop();
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                if scope.counts(path, k) {
                    path.push(format!("f:{k}"));
                    removed.insert(path);
                    path.pop();
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a != b => {
            let field = names.0.last().map(String::as_str).unwrap_or_default();
            let parent = names.0.iter().rev().nth(1).map(String::as_str);
            let keyed = |items: &Vec<Value>, keys: &[&str]| -> Option<Vec<(String, Value)>> {
                items
                    .iter()
                    .map(|i| Some((key_of(i, keys)?, i.clone())))
                    .collect()
            };
            match list_type(field, parent) {
                ListType::Map(keys) => match (keyed(a, keys), keyed(b, keys)) {
                    (Some(before), Some(after)) => {
                        for (element, item) in &after {
                            path.push(element.clone());
                            match before.iter().find(|(e, _)| e == element) {
                                Some((_, was)) => {
                                    diff(was, item, path, names, scope, changed, removed);
                                }
                                None => collect_item(item, path, names, scope, true, changed),
                            }
                            path.pop();
                        }
                        for (element, _) in &before {
                            if !after.iter().any(|(e, _)| e == element) {
                                path.push(element.clone());
                                removed.insert(path);
                                path.pop();
                            }
                        }
                    }
                    _ => changed.insert(path),
                },
                ListType::Set => {
                    for item in b.iter().filter(|i| !a.contains(i)) {
                        path.push(format!("v:{item}"));
                        changed.insert(path);
                        path.pop();
                    }
                    for item in a.iter().filter(|i| !b.contains(i)) {
                        path.push(format!("v:{item}"));
                        removed.insert(path);
                        path.pop();
                    }
                }
                ListType::Atomic => changed.insert(path),
            }
        }
        (a, b) if a != b && !path.is_empty() => {
            if b.is_object() && !atomic && b.as_object().is_some_and(|m| !m.is_empty()) {
                collect(b, path, names, scope, true, changed);
            } else {
                changed.insert(path);
            }
        }
        _ => {}
    }
}

/// The value at `path` in `object` (`None` where there is none).
fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = object;
    for element in path {
        at = step(at, element)?;
    }
    Some(at)
}

fn step<'a>(at: &'a Value, element: &str) -> Option<&'a Value> {
    if element == "." {
        return Some(at);
    }
    if let Some(field) = element.strip_prefix("f:") {
        return at.get(field);
    }
    let items = at.as_array()?;
    if let Some(key) = element.strip_prefix("k:") {
        let fields: Map<String, Value> = serde_json::from_str(key).ok()?;
        return items.iter().find(|i| {
            fields.iter().all(|(k, v)| match i.get(k) {
                Some(found) if !found.is_null() => found == v,
                _ => k == "protocol" && v == "TCP",
            })
        });
    }
    let value: Value = serde_json::from_str(element.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == value)
}

/// Removes the field or item at `path` from `object`; a map or list left
/// empty by it goes too.
fn remove_at(object: &mut Value, path: &[String]) {
    let path: Vec<&String> = path.iter().filter(|e| e.as_str() != ".").collect();
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = &mut *object;
    for element in parents {
        let Some(next) = step_mut(at, element) else {
            return;
        };
        at = next;
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = at.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(items) = at.as_array_mut() {
        let probe = Value::Array(items.clone());
        if let Some(found) = step(&probe, last) {
            let found = found.clone();
            items.retain(|i| *i != found);
        }
    }
    let emptied =
        at.as_object().is_some_and(Map::is_empty) || at.as_array().is_some_and(Vec::is_empty);
    if emptied && parents.len() > 1 {
        let parents: Vec<String> = parents.iter().map(|e| (*e).clone()).collect();
        remove_at(object, &parents);
    }
}

fn step_mut<'a>(at: &'a mut Value, element: &str) -> Option<&'a mut Value> {
    if let Some(field) = element.strip_prefix("f:") {
        return at.get_mut(field);
    }
    let index = {
        let items = at.as_array()?;
        let probe = Value::Array(items.clone());
        let found = step(&probe, element)?;
        items.iter().position(|i| i == found)?
    };
    at.as_array_mut()?.get_mut(index)
}

impl Set {
    /// Whether nothing is in it.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn insert(&mut self, path: &[String]) {
        let mut at = self;
        for element in path {
            at = at.0.entry(element.clone()).or_default();
        }
        // A member is a leaf: whatever was below it is its own now.
        at.0.clear();
    }

    /// Whether `path` is a member.
    fn contains(&self, path: &[String]) -> bool {
        let mut at = self;
        for element in path {
            match at.0.get(element) {
                Some(next) => at = next,
                None => return false,
            }
        }
        at.0.is_empty()
    }

    /// Whether `path` or anything below it is a member.
    fn touches(&self, path: &[String]) -> bool {
        let path: Vec<&String> = path.iter().filter(|e| e.as_str() != ".").collect();
        let mut at = self;
        for element in path {
            match at.0.get(element.as_str()) {
                Some(next) => at = next,
                None => return false,
            }
        }
        true
    }

    /// Removes member `path`; parents left empty go too.
    fn remove(&mut self, path: &[String]) {
        if self.contains(path) {
            self.remove_under(path);
        }
    }

    /// Removes `path` and everything below it (the `.` of `path`'s node
    /// included).
    fn remove_under(&mut self, path: &[String]) {
        let path: Vec<&String> = path.iter().filter(|e| e.as_str() != ".").collect();
        fn go(at: &mut Set, path: &[&String]) {
            let Some((first, rest)) = path.split_first() else {
                return;
            };
            if rest.is_empty() {
                at.0.remove(first.as_str());
                return;
            }
            if let Some(next) = at.0.get_mut(first.as_str()) {
                go(next, rest);
                if next.0.is_empty() {
                    at.0.remove(first.as_str());
                }
            }
        }
        go(self, &path);
    }

    /// Every member, as a path.
    fn members(&self) -> Vec<Vec<String>> {
        fn go(at: &Set, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            for (k, next) in &at.0 {
                path.push(k.clone());
                if next.0.is_empty() {
                    out.push(path.clone());
                } else {
                    go(next, path, out);
                }
                path.pop();
            }
        }
        let mut out = Vec::new();
        go(self, &mut Vec::new(), &mut out);
        out
    }

    fn from_json(value: &Value) -> Self {
        Self(
            value
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), Self::from_json(v)))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer<'a>(manager: &'a str, apply: Option<(&'a Value, bool)>) -> Writer<'a> {
        Writer {
            manager,
            apply,
            subresource: None,
            api_version: "apps/v1".into(),
            has_status: true,
            now: "2026-12-06T05:00:00Z".into(),
        }
    }

    fn deployment(image: &str, replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image,
                        "ports": [{"containerPort": 8080}]}]}}}})
    }

    /// Applies `config` as `manager` over `live` the way the server does:
    /// merged (strategic), then tracked.
    fn apply(
        live: Option<&Value>,
        config: &Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        let mut merged = live.cloned().unwrap_or_else(|| json!({}));
        crate::patch::apply(
            crate::patch::PatchType::Apply,
            &mut merged,
            &serde_json::to_vec(config).unwrap(),
            true,
        )
        .unwrap();
        track(live, &mut merged, &writer(manager, Some((config, force))))?;
        Ok(merged)
    }

    fn managers(object: &Value) -> Vec<(String, String)> {
        object["metadata"]["managedFields"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|e| {
                        (
                            e["manager"].as_str().unwrap().to_owned(),
                            e["operation"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn an_apply_owns_its_configuration_in_kube_apiservers_form() {
        let applied = apply(None, &deployment("web:1", 2), "flux", false).unwrap();
        let entry = &applied["metadata"]["managedFields"][0];
        assert_eq!(entry["manager"], "flux");
        assert_eq!(entry["operation"], "Apply");
        assert_eq!(entry["fieldsType"], "FieldsV1");
        let fields = &entry["fieldsV1"];
        assert_eq!(
            fields["f:spec"]["f:selector"],
            json!({}),
            "a selector is atomic"
        );
        let web = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(web["."], json!({}));
        assert_eq!(web["f:image"], json!({}));
        assert_eq!(
            web["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"]["f:containerPort"],
            json!({})
        );
        assert!(fields["f:metadata"].get("f:name").is_none(), "{fields}");
        assert!(fields.get("f:apiVersion").is_none(), "{fields}");
    }

    #[test]
    fn a_field_another_manager_changed_is_a_conflict_unless_forced() {
        let applied = apply(None, &deployment("web:1", 2), "flux", false).unwrap();
        // kubectl set image: an update by another manager.
        let mut set = applied.clone();
        set["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        track(Some(&applied), &mut set, &writer("kubectl-set", None)).unwrap();
        assert_eq!(
            managers(&set),
            [
                ("flux".into(), "Apply".into()),
                ("kubectl-set".into(), "Update".into())
            ]
        );
        // Applying the old image again conflicts, naming field and manager.
        let refused = apply(Some(&set), &deployment("web:1", 2), "flux", false).unwrap_err();
        assert_eq!(refused.code, 409);
        assert_eq!(
            refused.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-set\" using apps/v1: \
             .spec.template.spec.containers[name=\"web\"].image"
        );
        assert_eq!(
            refused.details.as_ref().unwrap()["causes"][0]["reason"],
            "FieldManagerConflict"
        );
        // The same value is shared, not a conflict.
        apply(Some(&set), &deployment("web:2", 2), "flux", false).unwrap();
        // Forced: flux takes the field; kubectl-set has nothing left.
        let forced = apply(Some(&set), &deployment("web:1", 2), "flux", true).unwrap();
        assert_eq!(
            forced["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:1"
        );
        assert_eq!(managers(&forced), [("flux".into(), "Apply".into())]);
    }

    #[test]
    fn a_field_left_out_of_the_next_apply_is_removed_unless_another_manager_owns_it() {
        let mut first = deployment("web:1", 2);
        first["metadata"]["labels"]["tier"] = json!("front");
        first["metadata"]["annotations"] = json!({"note": "x"});
        let applied = apply(None, &first, "flux", false).unwrap();
        // Another manager also sets the annotation.
        let mut annotated = applied.clone();
        annotated["metadata"]["annotations"]["note"] = json!("y");
        track(
            Some(&applied),
            &mut annotated,
            &writer("kubectl-annotate", None),
        )
        .unwrap();
        let again = apply(Some(&annotated), &deployment("web:1", 2), "flux", false).unwrap();
        assert_eq!(
            again["metadata"]["labels"],
            json!({"app": "web"}),
            "tier removed"
        );
        assert_eq!(
            again["metadata"]["annotations"],
            json!({"note": "y"}),
            "kept: not flux's"
        );
    }

    #[test]
    fn an_update_takes_what_it_changed_and_a_removed_field_is_nobodys() {
        let applied = apply(None, &deployment("web:1", 2), "flux", false).unwrap();
        let mut scaled = applied.clone();
        scaled["spec"]["replicas"] = json!(5);
        scaled["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("app");
        track(Some(&applied), &mut scaled, &writer("kubectl-scale", None)).unwrap();
        let entries = scaled["metadata"]["managedFields"].as_array().unwrap();
        assert!(entries[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        assert_eq!(
            entries[1]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert!(
            entries[0]["fieldsV1"]["f:metadata"]
                .get("f:labels")
                .is_none(),
            "{entries:?}"
        );
        // A status write by a controller is its own entry, status only.
        let mut status = scaled.clone();
        status["status"] = json!({"replicas": 5});
        let mut w = writer("kube-controller-manager", None);
        w.subresource = Some("status");
        track(Some(&scaled), &mut status, &w).unwrap();
        let last = status["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["subresource"], "status");
        // The status is an object of known fields: no `.` of its own.
        assert_eq!(last["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
    }

    #[test]
    fn managed_fields_a_client_sets_are_kept_and_an_empty_entry_clears_them() {
        let applied = apply(None, &deployment("web:1", 2), "flux", false).unwrap();
        let mut cleared = applied.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        track(Some(&applied), &mut cleared, &writer("kubectl-patch", None)).unwrap();
        assert!(cleared["metadata"].get("managedFields").is_none());
        // An object with none, applied: what it held was nobody's, so a
        // placeholder owns it and a different value conflicts.
        let mut bare = deployment("web:1", 2);
        bare["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        let refused = apply(Some(&bare), &deployment("web:2", 2), "flux", false).unwrap_err();
        assert!(
            refused.message.contains("before-first-apply"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn the_manager_is_the_field_manager_or_the_user_agent() {
        assert_eq!(
            manager_of(Some("flux"), Some("kubectl/v1.34"), false).unwrap(),
            "flux"
        );
        assert_eq!(
            manager_of(None, Some("kubectl/v1.34 (linux)"), false).unwrap(),
            "kubectl"
        );
        assert_eq!(manager_of(None, None, true).unwrap_err().code, 422);
    }

    #[test]
    fn a_map_marked_in_the_previous_apply_stays_when_its_fields_are_applied_again() {
        // kubectl's client-side-to-server-side migration leaves `.` marks
        // in the Apply entry; the same configuration applied again keeps
        // the maps.
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"l": "1"}}, "data": {"a": "1"}});
        let mut live = config.clone();
        live["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply",
            "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {
                "f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:l": {}}}}}]);
        let mut w = writer("kubectl", Some((&config, false)));
        w.has_status = false;
        let mut again = live.clone();
        track(Some(&live), &mut again, &w).unwrap();
        assert_eq!(again["data"], json!({"a": "1"}));
        assert_eq!(again["metadata"]["labels"], json!({"l": "1"}));
        // Left out entirely, the map goes.
        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let mut dropped = live.clone();
        dropped["data"] = json!({"a": "1"});
        track(
            Some(&live),
            &mut dropped,
            &writer("kubectl", Some((&bare, false))),
        )
        .unwrap();
        assert!(dropped.get("data").is_none(), "{dropped}");
    }
}
