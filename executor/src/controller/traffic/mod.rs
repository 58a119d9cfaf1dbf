//! Traffic during a release: a canary Service selecting the new pods, the
//! stable Service pinned to the stable pods, and the router (NGINX Ingress,
//! Gateway API HTTPRoute, Istio VirtualService) set to the batch's weight
//! and matches.
//!
//! *Guarantees*: [`Traffic::apply`] is idempotent: it reads each object,
//! computes what it should say from the user's original (saved in an
//! annotation the first time), and writes only what differs.
//! [`Traffic::restore`] puts every original back and deletes what it
//! created, also idempotently, so a crash anywhere is repaired by the next
//! reconcile.
//!
//! *Assumptions*: the stable Service and the router objects exist when the
//! release starts; the stable Service has a selector.

pub mod rules;

use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1::Service, networking::v1::Ingress};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch},
};
use serde_json::{Value, json};
use sluice_proto::v1 as pb;

use super::Error;
use crate::{crd::TrafficRouting, keys};
pub use rules::Router;

/// Labels added to a Service's selector to pick one side's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// Picks the stable pods.
    pub stable: BTreeMap<String, String>,
    /// Picks the new pods; `None` until the new revision is known.
    pub canary: Option<BTreeMap<String, String>>,
}

/// The traffic objects of one rollout.
pub struct Traffic {
    client: Client,
    ns: String,
    rollout: String,
    routing: TrafficRouting,
    /// Blue-green without a router: the stable Service itself switches.
    switch_service: bool,
}

/// The stable Service a routing names, as a message names it.
fn named_service(name: &str) -> String {
    format!("Service {name:?} (traffic.stableService)")
}

/// The NGINX Ingress a routing names, as a message names it.
fn named_ingress(name: &str) -> String {
    format!("Ingress {name:?} (traffic.nginx.ingress)")
}

fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

fn selector_with(original: &Value, pin: &BTreeMap<String, String>) -> Value {
    let mut selector = original.clone();
    if !selector.is_object() {
        selector = json!({});
    }
    for (k, v) in pin {
        selector[k] = json!(v);
    }
    selector
}

impl Traffic {
    /// The traffic of `rollout`, if it routes any.
    pub fn new(
        client: &Client,
        ns: &str,
        rollout: &str,
        routing: Option<&TrafficRouting>,
        blue_green: bool,
    ) -> Option<Self> {
        let routing = routing?.clone();
        let switch_service = blue_green && Self::router_of(&routing) == Router::None;
        Some(Self {
            client: client.clone(),
            ns: ns.to_owned(),
            rollout: rollout.to_owned(),
            routing,
            switch_service,
        })
    }

    fn router_of(routing: &TrafficRouting) -> Router {
        if routing.nginx.is_some() {
            Router::Nginx
        } else if routing.http_route.is_some() {
            Router::Gateway
        } else if routing.virtual_service.is_some() {
            Router::Istio
        } else {
            Router::None
        }
    }

    /// The router in use.
    pub fn router(&self) -> Router {
        Self::router_of(&self.routing)
    }

    /// Whether the weight is set exactly (a router, or a blue-green switch)
    /// rather than following the pods.
    pub fn sets_weight(&self) -> bool {
        self.router() != Router::None || self.switch_service
    }

    /// The canary Service's name.
    pub fn canary_service(&self) -> String {
        self.routing
            .canary_service
            .clone()
            .unwrap_or_else(|| format!("{}-canary", self.routing.stable_service))
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn merge<K>(&self, api: &Api<K>, name: &str, patch: Value) -> Result<(), Error>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        api.patch(name, &crate::writes::patch(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// The first traffic object the routing names that does not exist, as
    /// `Kind "name" (field)`: a release needing it must not start, since
    /// it would change the workload and then stall.
    pub async fn missing(&self) -> Result<Option<String>, Error> {
        let stable = &self.routing.stable_service;
        if self.services().get_opt(stable).await?.is_none() {
            return Ok(Some(named_service(stable)));
        }
        let (resource, name, field) = match self.router() {
            Router::None => return Ok(None),
            Router::Nginx => {
                let name = self
                    .routing
                    .nginx
                    .as_ref()
                    .map(|n| n.ingress.clone())
                    .unwrap_or_default();
                let ingresses: Api<Ingress> = Api::namespaced(self.client.clone(), &self.ns);
                return Ok(ingresses
                    .get_opt(&name)
                    .await?
                    .is_none()
                    .then(|| named_ingress(&name)));
            }
            Router::Gateway => (
                http_route_resource(),
                self.routing.http_route.as_ref().map(|r| r.name.clone()),
                "traffic.httpRoute.name",
            ),
            Router::Istio => (
                virtual_service_resource(),
                self.routing
                    .virtual_service
                    .as_ref()
                    .map(|v| v.name.clone()),
                "traffic.virtualService.name",
            ),
        };
        let name = name.unwrap_or_default();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &resource);
        Ok(api
            .get_opt(&name)
            .await?
            .is_none()
            .then(|| format!("{} {name:?} ({field})", resource.kind)))
    }

    /// Sets every traffic object for `weight` percent to the new pods and
    /// `matches` always to them.
    pub async fn apply(
        &self,
        pins: &Pins,
        weight: u32,
        matches: &[pb::RequestMatch],
    ) -> Result<(), Error> {
        let services = self.services();
        let stable_name = &self.routing.stable_service;
        let Some(stable) = services.get_opt(stable_name).await? else {
            return Err(Error::Missing(named_service(stable_name)));
        };
        let saved = stable.annotations().get(keys::ORIGINAL_SELECTOR).cloned();
        let original: Value = match &saved {
            Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            None => serde_json::to_value(stable.spec.as_ref().and_then(|s| s.selector.clone()))
                .unwrap_or(Value::Null),
        };
        // Without a router the stable Service keeps selecting every pod, so
        // traffic follows the replicas, unless blue-green switches it.
        let pin = match (&pins.canary, self.switch_service) {
            (Some(canary), true) if weight >= 100 => Some(canary),
            _ if self.sets_weight() => Some(&pins.stable),
            _ => None,
        };
        if let Some(pin) = pin {
            let wanted = selector_with(&original, pin);
            let current =
                serde_json::to_value(stable.spec.as_ref().and_then(|s| s.selector.clone()))
                    .unwrap_or(Value::Null);
            if wanted != current || saved.is_none() {
                let text = serde_json::to_string(&original).unwrap_or_default();
                self.merge(
                    &services,
                    stable_name,
                    json!({"metadata": {"annotations": {keys::ORIGINAL_SELECTOR: text}}, "spec": {"selector": merge_diff(&current, &wanted)}}),
                )
                .await?;
            }
        }
        let Some(canary_pin) = &pins.canary else {
            return Ok(());
        };
        self.ensure_canary_service(&stable, &original, canary_pin)
            .await?;
        match self.router() {
            Router::None => Ok(()),
            Router::Nginx => self.apply_nginx(weight, matches).await,
            Router::Gateway => {
                let name = self.routing.http_route.as_ref().map(|r| r.name.clone());
                self.apply_spec(http_route_resource(), name.unwrap_or_default(), |o| {
                    rules::http_route_spec(o, stable_name, &self.canary_service(), weight, matches)
                })
                .await
            }
            Router::Istio => {
                let vs = self.routing.virtual_service.clone().unwrap_or_default();
                self.apply_spec(virtual_service_resource(), vs.name, |o| {
                    rules::virtual_service_spec(
                        o,
                        stable_name,
                        &self.canary_service(),
                        &vs.routes,
                        weight,
                        matches,
                    )
                })
                .await
            }
        }
    }

    async fn ensure_canary_service(
        &self,
        stable: &Service,
        original: &Value,
        pin: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let services = self.services();
        let name = self.canary_service();
        let selector = selector_with(original, pin);
        match services.get_opt(&name).await? {
            Some(existing) => {
                let current =
                    serde_json::to_value(existing.spec.as_ref().and_then(|s| s.selector.clone()))
                        .unwrap_or(Value::Null);
                if current != selector {
                    let mut patch = json!({"spec": {"selector": merge_diff(&current, &selector)}});
                    if !existing.annotations().contains_key(keys::ROLLOUT)
                        && !existing.annotations().contains_key(keys::ORIGINAL_SELECTOR)
                    {
                        patch["metadata"] = json!({"annotations": {keys::ORIGINAL_SELECTOR: serde_json::to_string(&current).unwrap_or_default()}});
                    }
                    self.merge(&services, &name, patch).await?;
                }
                Ok(())
            }
            None => {
                let ports: Vec<Value> = stable
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
                        if let Some(m) = v.as_object_mut() {
                            m.remove("nodePort");
                        }
                        v
                    })
                    .collect();
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": name, "annotations": {keys::ROLLOUT: self.rollout}},
                    "spec": {"selector": selector, "ports": ports},
                }))
                .map_err(|e| Error::Missing(format!("canary Service: {e}")))?;
                match services.create(&crate::writes::post(), &svc).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    async fn apply_nginx(&self, weight: u32, matches: &[pb::RequestMatch]) -> Result<(), Error> {
        let ingresses: Api<Ingress> = Api::namespaced(self.client.clone(), &self.ns);
        let stable_name = self
            .routing
            .nginx
            .as_ref()
            .map(|n| n.ingress.clone())
            .unwrap_or_default();
        let Some(stable) = ingresses.get_opt(&stable_name).await? else {
            return Err(Error::Missing(named_ingress(&stable_name)));
        };
        let name = format!("{stable_name}-canary");
        let spec = rules::nginx_canary_spec(
            &serde_json::to_value(&stable.spec).unwrap_or(Value::Null),
            &self.routing.stable_service,
            &self.canary_service(),
        );
        let annotations = rules::nginx_annotations(weight, matches);
        match ingresses.get_opt(&name).await? {
            Some(existing) => {
                let mut stale: serde_json::Map<String, Value> = existing
                    .annotations()
                    .keys()
                    .filter(|k| k.starts_with(rules::NGINX) && !annotations.contains_key(*k))
                    .map(|k| (k.clone(), Value::Null))
                    .collect();
                let differs = !stale.is_empty()
                    || annotations.iter().any(|(k, v)| {
                        existing.annotations().get(k).map(|s| json!(s)) != Some(v.clone())
                    })
                    || serde_json::to_value(&existing.spec).unwrap_or(Value::Null) != spec;
                if differs {
                    stale.extend(annotations);
                    let current = serde_json::to_value(&existing.spec).unwrap_or(Value::Null);
                    self.merge(
                        &ingresses,
                        &name,
                        json!({"metadata": {"annotations": stale}, "spec": merge_diff(&current, &spec)}),
                    )
                    .await?;
                }
                Ok(())
            }
            None => {
                let mut all = annotations;
                all.insert(keys::ROLLOUT.into(), json!(self.rollout));
                let ingress: Ingress = serde_json::from_value(json!({
                    "metadata": {"name": name, "annotations": all},
                    "spec": spec,
                }))
                .map_err(|e| Error::Missing(format!("canary Ingress: {e}")))?;
                match ingresses.create(&crate::writes::post(), &ingress).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Sets a route object's spec to `wanted(original)`, saving the
    /// original in an annotation the first time.
    async fn apply_spec(
        &self,
        resource: ApiResource,
        name: String,
        wanted: impl Fn(&Value) -> Value,
    ) -> Result<(), Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &resource);
        let Some(object) = api.get_opt(&name).await? else {
            return Err(Error::Missing(format!("{} {name:?}", resource.kind)));
        };
        let saved = object.annotations().get(keys::ORIGINAL_SPEC).cloned();
        let original = match &saved {
            Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            None => object.data["spec"].clone(),
        };
        let spec = wanted(&original);
        if spec != object.data["spec"] || saved.is_none() {
            let text = serde_json::to_string(&original).unwrap_or_default();
            api.patch(
                &name,
                &crate::writes::patch(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {keys::ORIGINAL_SPEC: text}}, "spec": spec}),
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// What the release still has on the traffic objects: objects it made
    /// that exist (deleting counts: not gone yet), selectors and routes
    /// not restored. Empty once [`Traffic::restore`] has done its work.
    pub async fn leftovers(&self) -> Result<Vec<String>, Error> {
        let mut left = Vec::new();
        let services = self.services();
        for name in [self.routing.stable_service.clone(), self.canary_service()] {
            let Some(svc) = services.get_opt(&name).await? else {
                continue;
            };
            if svc.annotations().get(keys::ROLLOUT) == Some(&self.rollout) {
                left.push(format!("Service {name}"));
            } else if svc.annotations().contains_key(keys::ORIGINAL_SELECTOR) {
                left.push(format!("the selector of Service {name}"));
            }
        }
        if let Some(nginx) = &self.routing.nginx {
            let ingresses: Api<Ingress> = Api::namespaced(self.client.clone(), &self.ns);
            let name = format!("{}-canary", nginx.ingress);
            if ingresses.get_opt(&name).await?.is_some() {
                left.push(format!("Ingress {name}"));
            }
        }
        for (resource, name) in self.routes() {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.ns, &resource);
            if api
                .get_opt(&name)
                .await?
                .is_some_and(|o| o.annotations().contains_key(keys::ORIGINAL_SPEC))
            {
                left.push(format!("{} {name}", resource.kind));
            }
        }
        Ok(left)
    }

    /// The route objects the release manages, with their resources.
    fn routes(&self) -> impl Iterator<Item = (ApiResource, String)> {
        [
            self.routing
                .http_route
                .as_ref()
                .map(|r| (http_route_resource(), r.name.clone())),
            self.routing
                .virtual_service
                .as_ref()
                .map(|v| (virtual_service_resource(), v.name.clone())),
        ]
        .into_iter()
        .flatten()
    }

    /// Puts every original back and deletes what the release created.
    pub async fn restore(&self) -> Result<(), Error> {
        let services = self.services();
        for name in [self.routing.stable_service.clone(), self.canary_service()] {
            let Some(svc) = services.get_opt(&name).await? else {
                continue;
            };
            if svc.annotations().get(keys::ROLLOUT) == Some(&self.rollout) {
                delete(&services, &name).await?;
            } else if let Some(text) = svc.annotations().get(keys::ORIGINAL_SELECTOR) {
                let original: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                let current =
                    serde_json::to_value(svc.spec.as_ref().and_then(|s| s.selector.clone()))
                        .unwrap_or(Value::Null);
                let patch = json!({
                    "metadata": {"annotations": {keys::ORIGINAL_SELECTOR: null}},
                    "spec": {"selector": merge_diff(&current, &original)},
                });
                self.merge(&services, &name, patch).await?;
            }
        }
        if let Some(nginx) = &self.routing.nginx {
            let ingresses: Api<Ingress> = Api::namespaced(self.client.clone(), &self.ns);
            delete(&ingresses, &format!("{}-canary", nginx.ingress)).await?;
        }
        for (resource, name) in self.routes() {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.ns, &resource);
            let Some(object) = api.get_opt(&name).await? else {
                continue;
            };
            if let Some(text) = object.annotations().get(keys::ORIGINAL_SPEC) {
                let original: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                let patch = json!({
                    "metadata": {"annotations": {keys::ORIGINAL_SPEC: null}},
                    "spec": merge_diff(&object.data["spec"], &original),
                });
                api.patch(&name, &crate::writes::patch(), &Patch::Merge(patch))
                    .await?;
            }
        }
        Ok(())
    }
}

/// The JSON merge patch (RFC 7386) that turns `current` into `wanted`:
/// keys gone from `wanted` become `null`, objects recurse, anything else
/// is replaced whole.
fn merge_diff(current: &Value, wanted: &Value) -> Value {
    match (current.as_object(), wanted.as_object()) {
        (Some(c), Some(w)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in w {
                match c.get(k) {
                    Some(old) if old == v => {}
                    Some(old) => {
                        out.insert(k.clone(), merge_diff(old, v));
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in c.keys().filter(|k| !w.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => wanted.clone(),
    }
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_diff_removes_added_keys_and_restores_changed_ones() {
        let current = json!({"app": "web", "pod-template-hash": "abc", "tier": "x"});
        let original = json!({"app": "web", "tier": "front"});
        assert_eq!(
            merge_diff(&current, &original),
            json!({"pod-template-hash": null, "tier": "front"})
        );
        let spec = json!({"hosts": ["a"], "http": [{"route": [1, 2]}]});
        let back = json!({"hosts": ["a"], "http": [{"route": [1]}]});
        assert_eq!(merge_diff(&spec, &back), json!({"http": [{"route": [1]}]}));
    }
}
