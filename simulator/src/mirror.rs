//! A read-only copy of another cluster's objects in a local [`Store`], so
//! the simulator's traffic and metrics engine (which reads a store) can
//! serve a real cluster's pods as it serves its own.
//!
//! *Guarantees*: each mirrored resource is watched; every object the watch
//! reports is written to the local store with the remote's spec, status,
//! labels and annotations (the local store keeps its own resourceVersions
//! and uids); deletions are copied, and after each (re)list every local
//! object the list no longer holds is removed. A resource the remote
//! cluster does not serve (a CRD not installed there) is skipped.
//!
//! *Assumptions*: nothing else writes the mirrored resources of the local
//! store.

use std::{collections::HashSet, sync::Arc};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{
    resources::Resource,
    store::{Part, Store},
};

/// What is copied: what routing and metrics read.
/// (group, version, kind, plural)
pub const MIRRORED: [(&str, &str, &str, &str); 6] = [
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "Pod", "pods"),
    ("", "v1", "Service", "services"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
];

/// Istio's VirtualService, mirrored when the remote cluster serves it.
const VIRTUAL_SERVICES: (&str, &str, &str, &str) = (
    "networking.istio.io",
    "v1",
    "VirtualService",
    "virtualservices",
);

/// Copies the remote cluster's routing-relevant objects into `store` until
/// `stop` is cancelled. Returns once every watch has started.
pub async fn start(client: Client, store: Arc<Store>, stop: CancellationToken) {
    for (group, version, kind, plural) in MIRRORED.into_iter().chain([VIRTUAL_SERVICES]) {
        let Some(local) = store.resource(group, plural) else {
            tracing::warn!(group, plural, "the local store does not know this resource");
            continue;
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let api: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        );
        if let Err(error) = api.list(&ListParams::default().limit(1)).await {
            tracing::info!(group, plural, %error, "not mirrored: the cluster does not serve it");
            continue;
        }
        let (store, stop) = (Arc::clone(&store), stop.clone());
        let task = async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut listed: Option<HashSet<(String, String)>> = None;
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return,
                    event = events.next() => event,
                };
                let Some(event) = event else { return };
                match event {
                    Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(object)) => {
                        if let Some(key) = copy(&store, &local, object)
                            && let Some(seen) = listed.as_mut()
                        {
                            seen.insert(key);
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(seen) = listed.take() {
                            remove_unlisted(&store, &local, &seen);
                        }
                    }
                    Ok(watcher::Event::Apply(object)) => {
                        copy(&store, &local, object);
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        let ns = object.metadata.namespace.clone().unwrap_or_default();
                        let name = object.metadata.name.clone().unwrap_or_default();
                        let _ = store.delete(&local, &ns, &name, &Default::default());
                    }
                    Err(error) => tracing::debug!(%error, "mirror watch failed; it retries"),
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(
            task,
            tracing::info_span!("mirror", resource = plural),
        ));
    }
}

/// The local form of a remote object: the remote's own bookkeeping
/// (resourceVersion, uid, managed fields) left out.
fn local_form(object: DynamicObject) -> Option<(String, String, Value)> {
    let ns = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone()?;
    let mut value = serde_json::to_value(object).ok()?;
    if let Some(meta) = value["metadata"].as_object_mut() {
        for key in [
            "resourceVersion",
            "uid",
            "managedFields",
            "generation",
            "ownerReferences",
        ] {
            meta.remove(key);
        }
    }
    Some((ns, name, value))
}

/// Writes one remote object into the local store; its (namespace, name).
fn copy(store: &Store, res: &Resource, object: DynamicObject) -> Option<(String, String)> {
    // Owner references name remote uids; the metrics engine reads only the
    // owner's kind and name, so those are kept with the uid dropped.
    let owners: Vec<Value> = object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| json!({"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": ""}))
        .collect();
    let (ns, name, mut value) = local_form(object)?;
    if !owners.is_empty() {
        value["metadata"]["ownerReferences"] = json!(owners);
    }
    if !ns.is_empty() && !namespace_exists(store, &ns) {
        create_namespace(store, &ns);
    }
    let status = value.get("status").cloned();
    let written = match store.update(res, &ns, &name, value.clone(), Part::Main) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => store.create(res, &ns, value).map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(error) = written {
        tracing::debug!(%ns, %name, error = %error.message, "not mirrored");
        return None;
    }
    if let Some(status) = status.filter(|_| res.status) {
        let body = json!({"metadata": {"name": name, "namespace": ns}, "status": status});
        let _ = store.update(res, &ns, &name, body, Part::Status);
    }
    Some((ns, name))
}

fn namespace_exists(store: &Store, ns: &str) -> bool {
    store
        .resource("", "namespaces")
        .is_some_and(|res| store.get(&res, "", ns).is_ok())
}

fn create_namespace(store: &Store, ns: &str) {
    if let Some(res) = store.resource("", "namespaces") {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let _ = store.create(&res, "", object);
    }
}

/// Removes local objects of `res` that the last list did not hold.
fn remove_unlisted(store: &Store, res: &Resource, seen: &HashSet<(String, String)>) {
    let Ok(page) = store.list(
        res,
        None,
        &Default::default(),
        &Default::default(),
        None,
        None,
    ) else {
        return;
    };
    for bytes in page.items {
        let Ok(object) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if !seen.contains(&(ns.to_owned(), name.to_owned())) {
            let _ = store.delete(res, ns, name, &Default::default());
        }
    }
}
