//! The manifest half of the simulator's differential harness: the same
//! requests (creates of valid and invalid objects of the kinds Sluice,
//! kubectl and charts touch, and of custom resources under the upstream
//! CRDs in `../shared/crds/`; reads, lists, replaces and deletes with a
//! client's mistakes) sent to the simulator and to kube-apiserver. For each
//! the answers are compared: the status code, the reason, the fields named
//! in `details.causes`, and for an accepted object all it stores but its
//! metadata and status, with the server's defaults (cluster addresses left
//! out; a node port only said to be allocated). A difference fails the test unless it is named in
//! [`KNOWN`] with its reason; the match rate is printed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sluice_integration_tests::controlplane::{ControlPlane, TOKEN};

/// Differences accepted, by case name, with the reason.
const KNOWN: &[(&str, &str)] = &[];

/// One API server, spoken to over HTTP.
struct Server {
    base: String,
    token: Option<&'static str>,
    http: reqwest::Client,
}

impl Server {
    /// The list at `path` as the Table `kubectl get` asks for.
    async fn table(&self, path: &str) -> Value {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io");
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// The cells of each row `kubectl get` would print for a list at
    /// `path`, without the age (which differs by when each was made).
    async fn cells(&self, path: &str) -> Vec<Vec<Value>> {
        let table = self.table(path).await;
        let age = table["columnDefinitions"]
            .as_array()
            .and_then(|c| c.iter().position(|c| c["name"] == "Age"));
        table["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let mut cells = row["cells"].as_array().cloned().unwrap_or_default();
                if let Some(i) = age.filter(|i| *i < cells.len()) {
                    cells.remove(i);
                }
                cells
            })
            .collect()
    }

    /// The columns `kubectl get` would print for a list at `path`: each
    /// column's name and priority (1: `-o wide` only).
    async fn columns(&self, path: &str) -> Vec<(String, i64)> {
        let table = self.table(path).await;
        table["columnDefinitions"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: not a table: {table}"))
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_owned(),
                    c["priority"].as_i64().unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        self.send_as(method, path, "application/json", body).await
    }

    async fn send_as(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            request = request
                .header("content-type", content_type)
                .body(body.to_string());
        }
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let code = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// A request of the corpus.
struct Case {
    name: &'static str,
    method: &'static str,
    content_type: &'static str,
    path: String,
    body: Value,
}

/// A create.
fn case(name: &'static str, path: &str, body: Value) -> Case {
    request(name, "POST", path, body)
}

fn request(name: &'static str, method: &'static str, path: &str, body: Value) -> Case {
    Case {
        name,
        method,
        content_type: "application/json",
        path: path.to_owned(),
        body,
    }
}

fn patch(name: &'static str, content_type: &'static str, path: &str, body: Value) -> Case {
    Case {
        content_type,
        ..request(name, "PATCH", path, body)
    }
}

/// A CronJob running on `schedule`.
fn cron_job(schedule: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "job", "image": "registry.example/job:1.0"}]}}}}}})
}

const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

/// Patches and subresources, right and wrong.
fn patches() -> Vec<Case> {
    let web = "/apis/apps/v1/namespaces/default/deployments/web";
    let route = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/web";
    let frozen = "/api/v1/namespaces/default/configmaps/frozen";
    let sealed = "/api/v1/namespaces/default/secrets/sealed";
    let db = "/apis/apps/v1/namespaces/default/statefulsets/kept";
    vec![
        case(
            "create of a CronJob with a four-field schedule",
            "/apis/batch/v1/namespaces/default/cronjobs?dryRun=All",
            cron_job("*/5 * * *"),
        ),
        case(
            "create of a CronJob with an hour of 24",
            "/apis/batch/v1/namespaces/default/cronjobs?dryRun=All",
            cron_job("0 24 * * *"),
        ),
        case(
            "create of a CronJob with a time zone in its schedule",
            "/apis/batch/v1/namespaces/default/cronjobs?dryRun=All",
            cron_job("CRON_TZ=UTC 0 3 * * *"),
        ),
        case(
            "create of a CronJob with names, ranges, steps and a descriptor",
            "/apis/batch/v1/namespaces/default/cronjobs?dryRun=All",
            cron_job("0 1-5/2 * JAN-MAR mon,wed"),
        ),
        case(
            "create of a CronJob every 90 minutes",
            "/apis/batch/v1/namespaces/default/cronjobs?dryRun=All",
            cron_job("@every 1h30m"),
        ),
        case(
            "create of an immutable ConfigMap",
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": true}),
        ),
        patch(
            "merge patch of an immutable ConfigMap's data",
            MERGE,
            &format!("{frozen}?dryRun=All"),
            json!({"data": {"a": "2"}}),
        ),
        patch(
            "merge patch making an immutable ConfigMap mutable",
            MERGE,
            &format!("{frozen}?dryRun=All"),
            json!({"immutable": false}),
        ),
        patch(
            "merge patch of an immutable ConfigMap's labels",
            MERGE,
            &format!("{frozen}?dryRun=All"),
            json!({"metadata": {"labels": {"team": "a"}}}),
        ),
        case(
            "create of a Secret",
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sealed"}, "type": "Opaque", "data": {"a": "MQ=="}}),
        ),
        case(
            "create of a binding to change",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "bound"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}),
        ),
        patch(
            "merge patch of a binding's role",
            MERGE,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/bound?dryRun=All",
            json!({"roleRef": {"name": "edit"}}),
        ),
        case(
            "create of a Service to change",
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "moving"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        ),
        patch(
            "merge patch of a Service's cluster IP",
            MERGE,
            "/api/v1/namespaces/default/services/moving?dryRun=All",
            json!({"spec": {"clusterIP": "10.0.0.251", "clusterIPs": ["10.0.0.251"]}}),
        ),
        case(
            "create of a Job to change",
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
                "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "migrate", "image": "registry.example/migrate:1.0"}]}}}}),
        ),
        patch(
            "merge patch of a Job's template",
            MERGE,
            "/apis/batch/v1/namespaces/default/jobs/migrate?dryRun=All",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "migrate", "image": "registry.example/migrate:2.0"}]}}}}),
        ),
        case(
            "configmap of more than a mebibyte",
            "/api/v1/namespaces/default/configmaps?dryRun=All",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                "data": {"dashboard.json": "x".repeat(1_100_000)}}),
        ),
        case(
            "configmap with annotations past 256 KiB",
            "/api/v1/namespaces/default/configmaps?dryRun=All",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "noted",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(300_000)}}}),
        ),
        patch(
            "merge patch of a Secret's type",
            MERGE,
            &format!("{sealed}?dryRun=All"),
            json!({"type": "example.com/other"}),
        ),
        case(
            "create of a StatefulSet updated RollingUpdate, written so",
            "/apis/apps/v1/namespaces/default/statefulsets?dryRun=All",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "typed"},
                "spec": {"replicas": 1, "serviceName": "typed", "selector": {"matchLabels": {"app": "typed"}},
                    "updateStrategy": {"type": "RollingUpdate"},
                    "template": {"metadata": {"labels": {"app": "typed"}}, "spec": {"containers": [{"name": "db", "image": "registry.example/db:1.0"}]}}}}),
        ),
        case(
            "create of a StatefulSet to change",
            "/apis/apps/v1/namespaces/default/statefulsets",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "kept"},
                "spec": {"replicas": 0, "serviceName": "kept", "selector": {"matchLabels": {"app": "kept"}},
                    "template": {"metadata": {"labels": {"app": "kept"}}, "spec": {"containers": [{"name": "db", "image": "registry.example/db:1.0"}]}}}}),
        ),
        patch(
            "merge patch of a StatefulSet's serviceName",
            MERGE,
            &format!("{db}?dryRun=All"),
            json!({"spec": {"serviceName": "other"}}),
        ),
        patch(
            "merge patch of a StatefulSet to OnDelete keeping its partition",
            MERGE,
            &format!("{db}?dryRun=All"),
            json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 0}}}}),
        ),
        patch(
            "merge patch of a StatefulSet's replicas, strategy and image",
            MERGE,
            &format!("{db}?dryRun=All"),
            json!({"spec": {"replicas": 2, "updateStrategy": {"rollingUpdate": {"partition": 1}},
                "template": {"spec": {"containers": [{"name": "db", "image": "registry.example/db:2.0"}]}}}}),
        ),
        case(
            "create of a Pod to change",
            "/api/v1/namespaces/default/pods",
            // Placed on no node (the real control plane here has none).
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "still"},
                "spec": {"nodeSelector": {"example.com/nowhere": "true"},
                    "containers": [{"name": "app", "image": "registry.example/app:1.0"}]}}),
        ),
        patch(
            "strategic patch of a Pod's image and tolerations",
            STRATEGIC,
            "/api/v1/namespaces/default/pods/still?dryRun=All",
            json!({"spec": {"containers": [{"name": "app", "image": "registry.example/app:2.0"}],
                "tolerations": [{"key": "example.com/extra", "operator": "Exists"}]}}),
        ),
        patch(
            "strategic patch of a Pod's environment",
            STRATEGIC,
            "/api/v1/namespaces/default/pods/still?dryRun=All",
            json!({"spec": {"containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}]}}),
        ),
        patch(
            "merge patch of a Pod's restart policy",
            MERGE,
            "/api/v1/namespaces/default/pods/still?dryRun=All",
            json!({"spec": {"restartPolicy": "Never"}}),
        ),
        patch(
            "merge patch of a Deployment's selector",
            MERGE,
            &format!("{web}?dryRun=All"),
            json!({"spec": {"selector": {"matchLabels": {"app": "moved"}}, "template": {"metadata": {"labels": {"app": "moved"}}}}}),
        ),
        patch(
            "merge patch of the replicas",
            MERGE,
            &format!("{web}?dryRun=All"),
            json!({"spec": {"replicas": 4}}),
        ),
        patch(
            "merge patch with replicas as text",
            MERGE,
            &format!("{web}?dryRun=All"),
            json!({"spec": {"replicas": "four"}}),
        ),
        patch(
            "merge patch to negative replicas",
            MERGE,
            &format!("{web}?dryRun=All"),
            json!({"spec": {"replicas": -4}}),
        ),
        patch(
            "strategic patch of a container's image",
            STRATEGIC,
            &format!("{web}?dryRun=All"),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "registry.example/web:2.0"}]}}}}),
        ),
        patch(
            "strategic patch with an unknown field, strict",
            STRATEGIC,
            &format!("{web}?dryRun=All&fieldValidation=Strict"),
            json!({"spec": {"colour": "red"}}),
        ),
        patch(
            "json patch whose test fails",
            JSON_PATCH,
            &format!("{web}?dryRun=All"),
            json!([{"op": "test", "path": "/spec/replicas", "value": 99}, {"op": "replace", "path": "/spec/replicas", "value": 1}]),
        ),
        patch(
            "json patch removing a missing field",
            JSON_PATCH,
            &format!("{web}?dryRun=All"),
            json!([{"op": "remove", "path": "/spec/colour"}]),
        ),
        patch(
            "json patch that is not a list",
            JSON_PATCH,
            &format!("{web}?dryRun=All"),
            json!({"op": "remove"}),
        ),
        patch(
            "patch in an unknown format",
            "text/plain",
            &format!("{web}?dryRun=All"),
            json!({}),
        ),
        patch(
            "strategic patch of a custom resource",
            STRATEGIC,
            &format!("{route}?dryRun=All"),
            json!({"spec": {"hostnames": ["web.example"]}}),
        ),
        patch(
            "merge patch of a custom resource",
            MERGE,
            &format!("{route}?dryRun=All"),
            json!({"spec": {"hostnames": ["web.example"]}}),
        ),
        patch(
            "merge patch of a missing object",
            MERGE,
            "/apis/apps/v1/namespaces/default/deployments/nothing",
            json!({"spec": {"replicas": 1}}),
        ),
        request(
            "read of the scale",
            "GET",
            &format!("{web}/scale"),
            Value::Null,
        ),
        request(
            "scale to negative replicas",
            "PUT",
            &format!("{web}/scale?dryRun=All"),
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": -1}}),
        ),
        patch(
            "merge patch of the status",
            MERGE,
            &format!("{web}/status?dryRun=All"),
            json!({"status": {"observedGeneration": 9}}),
        ),
    ]
}

/// Requests other than creates: reads, lists, replaces, deletes, each
/// with a mistake a client makes.
fn mistakes() -> Vec<Case> {
    let web = "/apis/apps/v1/namespaces/default/deployments/web";
    vec![
        request(
            "get of a missing object",
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/nothing",
            Value::Null,
        ),
        request(
            "list with a broken label selector",
            "GET",
            "/api/v1/namespaces/default/pods?labelSelector=app%20in%20(",
            Value::Null,
        ),
        request(
            "list with an unsupported field selector",
            "GET",
            "/api/v1/namespaces/default/pods?fieldSelector=spec.colour%3Dred",
            Value::Null,
        ),
        request(
            "list with a supported field selector",
            "GET",
            "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dnone",
            Value::Null,
        ),
        request(
            "create in a missing namespace",
            "POST",
            "/api/v1/namespaces/nowhere/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        ),
        request(
            "create of an existing object",
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            deployment(|_| {}),
        ),
        request(
            "create without a name",
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        ),
        request(
            "create of another kind than the path's",
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}),
        ),
        request(
            "replace with a stale resourceVersion",
            "PUT",
            web,
            deployment(|d| d["metadata"]["resourceVersion"] = json!("1")),
        ),
        request(
            "replace under another name",
            "PUT",
            web,
            deployment(|d| d["metadata"]["name"] = json!("other")),
        ),
        request(
            "create without kind or apiVersion",
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "unkinded"}, "data": {"a": "b"}}),
        ),
        patch(
            "apply without kind or apiVersion",
            "application/apply-patch+yaml",
            "/api/v1/namespaces/default/configmaps/unkinded?fieldManager=tester&dryRun=All",
            json!({"metadata": {"name": "unkinded"}, "data": {"a": "c"}}),
        ),
        request(
            "replace with another uid",
            "PUT",
            web,
            deployment(|d| d["metadata"]["uid"] = json!("4a1f7c8e-0000-4000-8000-00000000dead")),
        ),
        request(
            "replace naming another namespace",
            "PUT",
            web,
            deployment(|d| d["metadata"]["namespace"] = json!("kube-system")),
        ),
        request(
            "replace without a name",
            "PUT",
            web,
            deployment(|d| {
                d["metadata"].as_object_mut().unwrap().remove("name");
            }),
        ),
        request(
            "create under an unknown field validation",
            "POST",
            "/api/v1/namespaces/default/configmaps?dryRun=All&fieldValidation=Bogus",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        ),
        patch(
            "apply without a field manager",
            "application/apply-patch+yaml",
            "/api/v1/namespaces/default/configmaps/unkinded?dryRun=All",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unkinded"}, "data": {"a": "d"}}),
        ),
        Case {
            content_type: "text/plain",
            ..request(
                "create with a body in plain text",
                "POST",
                "/api/v1/namespaces/default/configmaps?dryRun=All",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            )
        },
        request(
            "list with a negative limit",
            "GET",
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets?limit=-1",
            Value::Null,
        ),
        request(
            "watch of initial events without a version match",
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&timeoutSeconds=1",
            Value::Null,
        ),
        request(
            "watch of initial events matching exactly",
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=Exact&allowWatchBookmarks=true&timeoutSeconds=1",
            Value::Null,
        ),
        request(
            "watch with a version match alone",
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
            Value::Null,
        ),
        request(
            "list with a version match but no version",
            "GET",
            "/api/v1/namespaces/default/configmaps?resourceVersionMatch=NotOlderThan",
            Value::Null,
        ),
        request(
            "list asking for initial events",
            "GET",
            "/api/v1/namespaces/default/configmaps?sendInitialEvents=true",
            Value::Null,
        ),
        request(
            "list with a label selector of three equals signs",
            "GET",
            "/api/v1/namespaces/default/pods?labelSelector=a%3D%3D%3Db",
            Value::Null,
        ),
        request(
            "token bound to a missing pod",
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "nopod"}}}),
        ),
        request(
            "replace of a missing object under another name",
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/nothing",
            deployment(|d| d["metadata"]["name"] = json!("other")),
        ),
        request(
            "replace of a missing object",
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/nothing",
            deployment(|d| d["metadata"]["name"] = json!("nothing")),
        ),
        request(
            "delete with an unknown propagation policy",
            "DELETE",
            &format!("{web}?propagationPolicy=Sideways"),
            Value::Null,
        ),
        request(
            "delete of the default namespace",
            "DELETE",
            "/api/v1/namespaces/default?dryRun=All",
            Value::Null,
        ),
        request(
            "delete of kube-public",
            "DELETE",
            "/api/v1/namespaces/kube-public?dryRun=All",
            Value::Null,
        ),
        request(
            "delete with a wrong uid precondition",
            "DELETE",
            web,
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "not-the-uid"}}),
        ),
        request(
            "dry-run with a bad value",
            "POST",
            "/api/v1/namespaces/default/configmaps?dryRun=Maybe",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        ),
    ]
}

fn deployment(edit: impl FnOnce(&mut Value)) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0",
                    "ports": [{"containerPort": 8080}]}]}}}
    });
    edit(&mut d);
    d
}

fn http_route(edit: impl FnOnce(&mut Value)) -> Value {
    let mut r = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gateway"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80, "weight": 90}, {"name": "web-canary", "port": 80, "weight": 10}]}]}
    });
    edit(&mut r);
    r
}

fn virtual_service(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web", "subset": "stable"}, "weight": 90},
            {"destination": {"host": "web", "subset": "canary"}, "weight": 10}]}]}
    });
    edit(&mut v);
    v
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments?dryRun=All";
const SERVICES: &str = "/api/v1/namespaces/default/services?dryRun=All";

const PODS: &str = "/api/v1/namespaces/default/pods?dryRun=All";

/// A pod running one container, edited.
fn pod(edit: impl FnOnce(&mut Value)) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runner"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}],
            "initContainers": [{"name": "setup", "image": "registry.example/setup:1.0"}]}});
    edit(&mut p);
    p
}

/// Pods under the ServiceAccount admission plugin, and the accounts'
/// token requests.
fn service_accounts() -> Vec<Case> {
    let tokens = "/api/v1/namespaces/default/serviceaccounts";
    let request = |spec: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    vec![
        case(
            "create of a ServiceAccount that mounts no token and names a pull secret",
            "/api/v1/namespaces/default/serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"},
                "automountServiceAccountToken": false, "imagePullSecrets": [{"name": "registry"}]}),
        ),
        case("pod of the default account", PODS, pod(|_| {})),
        case(
            "pod of a missing account",
            PODS,
            pod(|p| p["spec"]["serviceAccountName"] = json!("nobody")),
        ),
        case(
            "pod of a generated name and a missing account",
            PODS,
            pod(|p| {
                p["metadata"] = json!({"generateName": "runner-"});
                p["spec"]["serviceAccountName"] = json!("nobody");
            }),
        ),
        case(
            "pod of an account that mounts no token",
            PODS,
            pod(|p| p["spec"]["serviceAccountName"] = json!("builder")),
        ),
        case(
            "pod of that account asking for its token",
            PODS,
            pod(|p| {
                p["spec"]["serviceAccountName"] = json!("builder");
                p["spec"]["automountServiceAccountToken"] = json!(true);
                p["spec"]["imagePullSecrets"] = json!([{"name": "own"}]);
            }),
        ),
        case(
            "pod with limits alone",
            PODS,
            pod(|p| {
                p["spec"]["containers"][0]["resources"] =
                    json!({"limits": {"cpu": "2", "memory": "1Gi"}});
                p["spec"]["initContainers"][0]["resources"] =
                    json!({"limits": {"cpu": "500m", "memory": "128Mi"}});
            }),
        ),
        case(
            "pod with requests below its limits",
            PODS,
            pod(|p| {
                p["spec"]["containers"][0]["resources"] =
                    json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "1Gi"}});
            }),
        ),
        case(
            "pod refusing its token",
            PODS,
            pod(|p| p["spec"]["automountServiceAccountToken"] = json!(false)),
        ),
        case(
            "pod naming its account the old way",
            PODS,
            pod(|p| p["spec"]["serviceAccount"] = json!("builder")),
        ),
        case(
            "pod with its own volume at the token's path",
            PODS,
            pod(|p| {
                p["spec"]["volumes"] = json!([{"name": "own", "emptyDir": {}}]);
                p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "own",
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
            }),
        ),
        case(
            "deployment of an account",
            DEPLOYMENTS,
            deployment(|d| {
                d["metadata"]["name"] = json!("accounted");
                d["spec"]["template"]["spec"]["serviceAccountName"] = json!("builder");
            }),
        ),
        case(
            "token of the default account",
            &format!("{tokens}/default/token"),
            request(json!({})),
        ),
        case(
            "token for an audience, for an hour and a half",
            &format!("{tokens}/default/token"),
            request(json!({"audiences": ["vault"], "expirationSeconds": 5400})),
        ),
        case(
            "token for a minute",
            &format!("{tokens}/default/token"),
            request(json!({"expirationSeconds": 60})),
        ),
        case(
            "token of a missing account",
            &format!("{tokens}/nobody/token"),
            request(json!({})),
        ),
        case(
            "job",
            "/apis/batch/v1/namespaces/default/jobs?dryRun=All",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "migrate", "image": "registry.example/migrate:1.0"}]}}}}),
        ),
        case(
            "indexed job",
            "/apis/batch/v1/namespaces/default/jobs?dryRun=All",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "shards"},
                "spec": {"completions": 3, "completionMode": "Indexed", "template": {"spec": {"restartPolicy": "OnFailure",
                    "containers": [{"name": "shard", "image": "registry.example/shard:1.0"}]}}}}),
        ),
        case(
            "aggregated cluster role",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles?dryRun=All",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "monitoring"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-monitoring": "true"}}]}}),
        ),
    ]
}

/// Events written and read through both APIs (core/v1 and
/// events.k8s.io/v1 are two views of one store).
fn events() -> Vec<Case> {
    let core = "/api/v1/namespaces/default/events";
    let new = "/apis/events.k8s.io/v1/namespaces/default/events";
    let regarding = json!({"kind": "Deployment", "apiVersion": "apps/v1", "namespace": "default", "name": "web", "uid": "4a1f7c8e-0000-4000-8000-000000000001"});
    let v1 = |edit: &dyn Fn(&mut Value)| {
        let mut e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web.new"},
            "regarding": regarding, "reason": "BatchStarted", "note": "batch 1 of 3", "type": "Normal",
            "eventTime": "2026-01-02T03:04:05.000006Z", "reportingController": "example.com/releaser",
            "reportingInstance": "releaser-0", "action": "Release"});
        edit(&mut e);
        e
    };
    vec![
        case(
            "core event",
            core,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.core"},
                "involvedObject": regarding, "reason": "ScalingReplicaSet", "message": "Scaled up to 3",
                "type": "Normal", "source": {"component": "deployment-controller"},
                "firstTimestamp": "2026-01-02T03:04:05Z", "lastTimestamp": "2026-01-02T03:04:06Z", "count": 2}),
        ),
        case("events.k8s.io event", new, v1(&|_| {})),
        request(
            "core event read as events.k8s.io",
            "GET",
            &format!("{new}/web.core"),
            Value::Null,
        ),
        request(
            "events.k8s.io event read as core",
            "GET",
            &format!("{core}/web.new"),
            Value::Null,
        ),
        patch(
            "merge patch of an events.k8s.io event's series",
            MERGE,
            &format!("{new}/web.new"),
            json!({"series": {"count": 2, "lastObservedTime": "2026-01-02T03:05:05.000006Z"}}),
        ),
        case(
            "events.k8s.io event without time, controller or action",
            &format!("{new}?dryRun=All"),
            v1(&|e| {
                let map = e.as_object_mut().unwrap();
                for key in ["eventTime", "reportingController", "action"] {
                    map.remove(key);
                }
            }),
        ),
        case(
            "events.k8s.io event with deprecated fields",
            &format!("{new}?dryRun=All"),
            v1(&|e| {
                e["deprecatedCount"] = json!(3);
                e["deprecatedSource"] = json!({"component": "x"});
                e["type"] = json!("Odd");
            }),
        ),
        case(
            "core event without a time",
            &format!("{core}?dryRun=All"),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "bare"},
                "involvedObject": regarding, "reason": "Odd"}),
        ),
    ]
}

/// Mistakes chart authors make that kube-apiserver refuses.
fn chart_mistakes() -> Vec<Case> {
    let container = |d: &mut Value| d["spec"]["template"]["spec"]["containers"][0].take();
    let service = |spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": spec});
    let job = |template: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
            "spec": {"template": {"spec": template}}})
    };
    vec![
        case(
            "service with two unnamed ports",
            SERVICES,
            service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 443}]})),
        ),
        case(
            "service with one port twice",
            SERVICES,
            service(
                json!({"selector": {"app": "web"}, "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}),
            ),
        ),
        case(
            "service with one port name twice",
            SERVICES,
            service(
                json!({"selector": {"app": "web"}, "ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}),
            ),
        ),
        case(
            "external name service without the name",
            SERVICES,
            service(json!({"type": "ExternalName"})),
        ),
        case(
            "service without ports",
            SERVICES,
            service(json!({"selector": {"app": "web"}})),
        ),
        case(
            "deployment with two containers of one name",
            DEPLOYMENTS,
            deployment(|d| {
                let c = container(d);
                d["spec"]["template"]["spec"]["containers"] = json!([c.clone(), c]);
            }),
        ),
        case(
            "deployment with a container named in capitals",
            DEPLOYMENTS,
            deployment(|d| d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Web_1")),
        ),
        case(
            "deployment mounting a missing volume",
            DEPLOYMENTS,
            deployment(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
                    json!([{"name": "data", "mountPath": "/data"}]);
            }),
        ),
        case(
            "deployment with an unnamed variable",
            DEPLOYMENTS,
            deployment(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"value": "1"}])
            }),
        ),
        case(
            "deployment with a probe that checks nothing",
            DEPLOYMENTS,
            deployment(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
                    json!({"periodSeconds": 5})
            }),
        ),
        case(
            "deployment whose pods never restart",
            DEPLOYMENTS,
            deployment(|d| d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never")),
        ),
        case(
            "deployment of an unknown strategy",
            DEPLOYMENTS,
            deployment(|d| d["spec"]["strategy"] = json!({"type": "Bogus"})),
        ),
        case(
            "deployment that can neither surge nor drop",
            DEPLOYMENTS,
            deployment(
                |d| d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
            ),
        ),
        case(
            "job whose pods always restart",
            "/apis/batch/v1/namespaces/default/jobs?dryRun=All",
            job(json!({"containers": [{"name": "once", "image": "registry.example/once:1.0"}]})),
        ),
        case(
            "cronjob whose pods always restart",
            "/apis/batch/v1/namespaces/default/cronjobs?dryRun=All",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
                "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "Always", "containers": [{"name": "job", "image": "registry.example/job:1.0"}]}}}}}}),
        ),
    ]
}

fn corpus() -> Vec<Case> {
    vec![
        case("deployment", DEPLOYMENTS, deployment(|_| {})),
        case(
            "deployment with negative replicas",
            DEPLOYMENTS,
            deployment(|d| d["spec"]["replicas"] = json!(-1)),
        ),
        case(
            "deployment whose selector misses its template",
            DEPLOYMENTS,
            deployment(|d| d["spec"]["template"]["metadata"]["labels"]["app"] = json!("other")),
        ),
        case(
            "deployment with port 80800",
            DEPLOYMENTS,
            deployment(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
                    json!(80800);
            }),
        ),
        case(
            "deployment with a container without image",
            DEPLOYMENTS,
            deployment(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("")),
        ),
        case(
            "deployment with an unknown field, strict",
            "/apis/apps/v1/namespaces/default/deployments?dryRun=All&fieldValidation=Strict",
            deployment(|d| d["spec"]["surprise"] = json!(true)),
        ),
        case(
            "deployment with an unknown field, warned",
            DEPLOYMENTS,
            deployment(|d| {
                d["spec"]["surprise"] = json!(true);
                d["spec"]["template"]["spec"]["containers"][0]["colour"] = json!("red");
            }),
        ),
        case(
            "pod with an unknown field, ignored",
            "/api/v1/namespaces/default/pods?dryRun=All&fieldValidation=Ignore",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "p", "image": "registry.example/p:1", "colour": "red"}],
                    "nodeSelector": {"pool": "web"}, "surprise": 1}}),
        ),
        case(
            "pod with projected volumes and a wildcard toleration",
            "/api/v1/namespaces/default/pods?dryRun=All",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "v"},
            "spec": {"containers": [{"name": "v", "image": "registry.example/v:1"}],
                "tolerations": [{"operator": "Exists"}],
                "volumes": [
                    {"name": "c", "configMap": {"name": "settings"}},
                    {"name": "s", "secret": {"secretName": "creds"}},
                    {"name": "d", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                    {"name": "p", "projected": {"sources": [{"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
                ]}}),
        ),
        case(
            "service port with target port 0",
            SERVICES,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "zero"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 81, "protocol": "UDP", "targetPort": 0}]}}),
        ),
        case(
            "namespace with a dot in its name",
            "/api/v1/namespaces?dryRun=All",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}),
        ),
        case(
            "deployment with a label value with a space",
            DEPLOYMENTS,
            deployment(|d| d["metadata"]["labels"]["team"] = json!("two words")),
        ),
        case(
            "deployment with an upper-case name",
            DEPLOYMENTS,
            deployment(|d| d["metadata"]["name"] = json!("Web")),
        ),
        case(
            "statefulset",
            "/apis/apps/v1/namespaces/default/statefulsets?dryRun=All",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}},
                        "spec": {"containers": [{"name": "db", "image": "registry.example/db:1"}]}}}}),
        ),
        case(
            "service",
            SERVICES,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
        case(
            "headless service",
            SERVICES,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
        ),
        case(
            "service with port 0",
            SERVICES,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "zero"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 0}]}}),
        ),
        case(
            "node port service with a named target port",
            SERVICES,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge"},
                "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        ),
        case(
            "namespace",
            "/api/v1/namespaces?dryRun=All",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        ),
        case(
            "configmap",
            "/api/v1/namespaces/default/configmaps?dryRun=All",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"a": "b"}, "binaryData": {"z": "AAE="}}),
        ),
        case(
            "daemonset",
            "/apis/apps/v1/namespaces/default/daemonsets?dryRun=All",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                "spec": {"selector": {"matchLabels": {"app": "agent"}},
                    "template": {"metadata": {"labels": {"app": "agent"}},
                        "spec": {"containers": [{"name": "agent", "image": "registry.example/agent:1"}]}}}}),
        ),
        case(
            "pod disruption budget",
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets?dryRun=All",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        ),
        case(
            "role",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles?dryRun=All",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}),
        ),
        case(
            "role binding",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings?dryRun=All",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}),
        ),
        case(
            "persistent volume claim",
            "/api/v1/namespaces/default/persistentvolumeclaims?dryRun=All",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        case(
            "horizontal pod autoscaler",
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers?dryRun=All",
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
        ),
        case(
            "deployment with probes and quantities",
            DEPLOYMENTS,
            deployment(|d| {
                let c = &mut d["spec"]["template"]["spec"]["containers"][0];
                c["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 8080}});
                c["livenessProbe"] = json!({"tcpSocket": {"port": 8080}, "periodSeconds": 5});
                c["resources"] = json!({"requests": {"cpu": "0.25", "memory": "128974848"}, "limits": {"cpu": "1000m", "memory": "1Gi"}});
                c["env"] = json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]);
            }),
        ),
        case(
            "statefulset with a volume claim template",
            "/apis/apps/v1/namespaces/default/statefulsets?dryRun=All",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}},
                        "spec": {"containers": [{"name": "db", "image": "registry.example/db:1",
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
        ),
        case(
            "service of an unknown type",
            SERVICES,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "odd"},
                "spec": {"type": "Sideways", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        ),
        case(
            "namespace with an invalid name",
            "/api/v1/namespaces?dryRun=All",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Shop_Front"}}),
        ),
        case(
            "configmap with an invalid key",
            "/api/v1/namespaces/default/configmaps?dryRun=All",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"a b": "c"}}),
        ),
        case(
            "tls secret without its keys",
            "/api/v1/namespaces/default/secrets?dryRun=All",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"},
                "type": "kubernetes.io/tls", "data": {"ca.crt": "YQ=="}}),
        ),
        case(
            "service with an external name",
            SERVICES,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db-external"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
        ),
        case(
            "secret with string data",
            "/api/v1/namespaces/default/secrets?dryRun=All",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"a": "YQ=="}, "stringData": {"b": "bee"}}),
        ),
        case(
            "secret with data not base64",
            "/api/v1/namespaces/default/secrets?dryRun=All",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"a": "not base64!"}}),
        ),
        case(
            "ingress path without pathType",
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses?dryRun=All",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
                "spec": {"rules": [{"host": "web.example", "http": {"paths": [
                    {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        ),
        case(
            "ingress",
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses?dryRun=All",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
                "spec": {"rules": [{"host": "web.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        ),
        case(
            "crd without a schema",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions?dryRun=All",
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": true, "storage": true}]}}),
        ),
        case(
            "httproute",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes?dryRun=All",
            http_route(|_| {}),
        ),
        case(
            "httproute with a negative weight",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes?dryRun=All",
            http_route(|r| r["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(-1)),
        ),
        case(
            "httproute with a port as text",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes?dryRun=All",
            http_route(|r| r["spec"]["rules"][0]["backendRefs"][0]["port"] = json!("eighty")),
        ),
        case(
            "virtualservice",
            "/apis/networking.istio.io/v1/namespaces/default/virtualservices?dryRun=All",
            virtual_service(|_| {}),
        ),
        case(
            "virtualservice with a weight as text",
            "/apis/networking.istio.io/v1/namespaces/default/virtualservices?dryRun=All",
            virtual_service(|v| v["spec"]["http"][0]["route"][0]["weight"] = json!("ninety")),
        ),
    ]
}

/// What is compared of one answer.
fn view(answer: &(u16, Value)) -> Value {
    let (code, body) = answer;
    if *code >= 300 {
        let fields: BTreeSet<String> = body["details"]["causes"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|c| c["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        return json!({"code": code, "reason": body["reason"], "fields": fields});
    }
    let mut stored = body.clone();
    if let Some(map) = stored.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    // A pod's class of service, set from its spec on create.
    if body["kind"] == "Pod" {
        stored["qosClass"] = body["status"]["qosClass"].clone();
    }
    // Of the metadata, whether the kind counts generations.
    if body["metadata"].is_object() {
        stored["generation"] = json!(body["metadata"].get("generation").is_some());
    }
    let mut nothing = Value::Null;
    let spec = stored.get_mut("spec").unwrap_or(&mut nothing);
    // Addresses and ports the server allocates.
    for key in ["clusterIP", "clusterIPs"] {
        if spec[key] != json!("None")
            && spec[key] != json!(["None"])
            && let Some(spec) = spec.as_object_mut()
        {
            spec.remove(key);
        }
    }
    for port in spec["ports"].as_array_mut().into_iter().flatten() {
        // Test control planes may set their own range.
        if port["nodePort"].as_i64().is_some_and(|n| n > 0) {
            port["nodePort"] = json!("allocated");
        }
    }
    unrandom(&mut stored);
    if body["kind"] == "TokenRequest" {
        stored["status"] = json!({
            "token": body["status"]["token"].is_string(),
            "expirationTimestamp": body["status"]["expirationTimestamp"].is_string(),
        });
    }
    json!({"code": code, "stored": stored})
}

/// Replaces what a server makes at random: a token volume's name, a
/// Job's uid in its selector and labels.
fn unrandom(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let random = match (key.as_str(), v.as_str()) {
                    ("batch.kubernetes.io/controller-uid" | "controller-uid", Some(_)) => true,
                    ("name", Some(name)) => name.starts_with("kube-api-access-"),
                    _ => false,
                };
                if random {
                    *v = json!("random");
                } else {
                    unrandom(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unrandom),
        _ => {}
    }
}

/// The paths at which two values differ.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                differences(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if a != b => out.push(format!("{path}: real {a}, simulator {b}")),
        _ => {}
    }
}

async fn install_crds(server: &Server) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crds");
    for file in [
        "gateway-api-v1.6.1/httproutes.yaml",
        "istio-1.30.3/virtualservices.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for doc in text.split("\n---") {
            let Ok(crd) = serde_yaml::from_str::<Value>(doc) else {
                continue;
            };
            if crd["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let (code, body) = server
                .send(
                    "POST",
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                    &crd,
                )
                .await;
            // The simulator serves the routers' CRDs from its start.
            assert!(code == 201 || code == 409, "{file}: {code} {body}");
        }
    }
}

async fn wait_served(server: &Server, path: &str) {
    for _ in 0..100 {
        if server.send("GET", path, &Value::Null).await.0 == 200 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{path} never served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_manifests_get_the_same_answers_from_the_simulator_and_a_real_api_server() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // As production clusters run: pods are admitted under their
    // ServiceAccount.
    let plane = ControlPlane::start_with_service_accounts().await;
    let real = Server {
        base: format!("https://127.0.0.1:{}", plane.port()),
        token: Some(TOKEN),
        http: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap(),
    };
    let scenario = sluice_sim::scenario::Scenario::parse(
        "manifests",
        "name: manifests\nseed: 1\nversions:\n  - {image: registry.example/web:1.0}\n",
    )
    .unwrap();
    let sim = sluice_sim::scenario::Simulation::start(scenario).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, sim.api.router()).into_future());
    let simulated = Server {
        base: format!("http://{addr}"),
        token: None,
        http: reqwest::Client::new(),
    };
    install_crds(&real).await;
    install_crds(&simulated).await;
    // Each namespace's `default` account, as its controller makes it.
    for server in [&real, &simulated] {
        wait_served(server, "/api/v1/namespaces/default/serviceaccounts/default").await;
    }
    for server in [&real, &simulated] {
        wait_served(
            server,
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes",
        )
        .await;
        wait_served(
            server,
            "/apis/networking.istio.io/v1/namespaces/default/virtualservices",
        )
        .await;
    }

    // The object the replaces and deletes are made on, on both.
    for server in [&real, &simulated] {
        let (code, body) = server
            .send(
                "POST",
                "/apis/apps/v1/namespaces/default/deployments",
                &deployment(|_| {}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    // And the route the custom resource's patches are made on.
    for server in [&real, &simulated] {
        let (code, body) = server
            .send(
                "POST",
                "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes",
                &http_route(|_| {}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let mut cases = corpus();
    cases.extend(service_accounts());
    cases.extend(events());
    cases.extend(chart_mistakes());
    cases.extend(mistakes());
    cases.extend(patches());
    let mut same = 0;
    let mut new = Vec::new();
    let mut report = Vec::new();
    for c in &cases {
        let raw = real
            .send_as(c.method, &c.path, c.content_type, &c.body)
            .await;
        if std::env::var_os("SHOW_REAL").is_some() {
            eprintln!("REAL {}: {}", c.name, raw.1);
        }
        let a = view(&raw);
        let b = view(
            &simulated
                .send_as(c.method, &c.path, c.content_type, &c.body)
                .await,
        );
        let mut diff = Vec::new();
        differences("", &a, &b, &mut diff);
        if diff.is_empty() {
            same += 1;
            continue;
        }
        report.push(format!("{}: {}", c.name, diff.join("; ")));
        if !KNOWN.iter().any(|(name, _)| *name == c.name) {
            new.push(format!("{}:\n  {}", c.name, diff.join("\n  ")));
        }
    }
    eprintln!(
        "manifests: {same} of {} answered alike\n{}",
        cases.len(),
        report.join("\n")
    );
    // What `kubectl get` prints: the same columns, in the same order,
    // the same ones kept for `-o wide`.
    for path in [
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/namespaces/default/deployments",
        "/apis/apps/v1/namespaces/default/replicasets",
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces/default/serviceaccounts",
        "/api/v1/namespaces/default/events",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        "/apis/batch/v1/namespaces/default/jobs",
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        "/apis/apps/v1/namespaces/default/statefulsets",
        "/apis/apps/v1/namespaces/default/daemonsets",
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        "/api/v1/nodes",
        "/api/v1/namespaces",
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes",
        "/apis/networking.istio.io/v1/namespaces/default/virtualservices",
        "/api/v1/namespaces/default/resourcequotas",
        "/api/v1/namespaces/default/limitranges",
        "/api/v1/namespaces/default/persistentvolumeclaims",
        "/api/v1/persistentvolumes",
        "/api/v1/namespaces/default/endpoints",
        "/apis/storage.k8s.io/v1/storageclasses",
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
        "/apis/networking.k8s.io/v1/ingressclasses",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        "/apis/apps/v1/namespaces/default/controllerrevisions",
        "/apis/batch/v1/namespaces/default/cronjobs",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    ] {
        let (a, b) = (real.columns(path).await, simulated.columns(path).await);
        if a != b {
            let line = format!("columns of {path}: real {a:?}, simulator {b:?}");
            report.push(line.clone());
            new.push(line);
        }
    }
    let made = kubectl_creates(&plane.kubeconfig, addr).await;
    report.extend(made.iter().map(|d| format!("kubectl: {d}")));
    new.extend(made.iter().map(|d| format!("kubectl: {d}")));
    let go = client_go(&plane.kubeconfig, addr).await;
    report.extend(go.iter().map(|d| format!("client-go: {d}")));
    new.extend(go.iter().map(|d| format!("client-go: {d}")));
    assert!(new.is_empty(), "differences not known:\n{}", new.join("\n"));
    // A known difference that went away is taken off the list.
    for (name, _) in KNOWN {
        assert!(
            report.iter().any(|r| r.starts_with(&format!("{name}:"))),
            "{name} answers alike now: take it off KNOWN"
        );
    }
}

/// A real control plane (with ServiceAccounts, as production runs) and a
/// simulator of scenario `name`, each behind a [`Server`]; the plane and
/// the simulation run while they are held.
async fn both(
    name: &str,
) -> (
    ControlPlane,
    Server,
    sluice_sim::scenario::Simulation,
    Server,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plane = ControlPlane::start_with_service_accounts().await;
    let real = Server {
        base: format!("https://127.0.0.1:{}", plane.port()),
        token: Some(TOKEN),
        http: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap(),
    };
    let scenario = sluice_sim::scenario::Scenario::parse(
        name,
        &format!("name: {name}\nseed: 1\nversions:\n  - {{image: registry.example/web:1.0}}\n"),
    )
    .unwrap();
    let sim = sluice_sim::scenario::Simulation::start(scenario).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, sim.api.router()).into_future());
    let simulated = Server {
        base: format!("http://{addr}"),
        token: None,
        http: reqwest::Client::new(),
    };
    (plane, real, sim, simulated)
}

/// ResourceQuota as the admission plugin enforces it and the quota
/// controller reports it: the same creates in a namespace with a quota get
/// the same codes and messages from both servers, and the quota's status
/// comes to the same `hard` and `used`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_and_counts_as_on_a_real_cluster() {
    let (_plane, real, _sim, simulated) = both("quota").await;
    let ns = "/api/v1/namespaces/quota";
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"},
        "spec": {"hard": {"pods": "2", "requests.cpu": "1", "limits.memory": "1Gi",
                          "count/deployments.apps": "1", "secrets": "1",
                          // A number, as YAML writes `1` unquoted; a
                          // resource pods need not state.
                          "services.nodeports": 1, "requests.ephemeral-storage": "1Gi"}}});
    for server in [&real, &simulated] {
        let (code, body) = server
            .send(
                "POST",
                "/api/v1/namespaces",
                &json!({"metadata": {"name": "quota"}}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        wait_served(server, &format!("{ns}/serviceaccounts/default")).await;
        let (code, body) = server
            .send("POST", &format!("{ns}/resourcequotas"), &quota)
            .await;
        assert_eq!(code, 201, "{body}");
    }
    // A quota is enforced once its controller wrote its status.
    for server in [&real, &simulated] {
        let mut hard = Value::Null;
        for _ in 0..200 {
            let (_, q) = server
                .send("GET", &format!("{ns}/resourcequotas/compute"), &Value::Null)
                .await;
            hard = q["status"]["hard"].clone();
            if hard.is_object() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(hard.is_object(), "{}: the quota has no status", server.base);
    }
    let pod = |name: &str, app: Value, side: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [
                {"name": "app", "image": "registry.example/web:1.0", "resources": app},
                {"name": "side", "image": "registry.example/web:1.0", "resources": side}]}})
    };
    let sized = |cpu: &str| json!({"requests": {"cpu": cpu}, "limits": {"memory": "100Mi"}});
    let pods = format!("{ns}/pods");
    let deployment = |name: &str| {
        let mut d = deployment(|_| {});
        d["metadata"]["name"] = json!(name);
        d
    };
    let secret =
        |name: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}});
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "a pod stating nothing",
            pods.clone(),
            pod("q0", json!({}), json!({})),
        ),
        (
            "a pod stating some",
            pods.clone(),
            pod("q1", json!({"requests": {"cpu": "100m"}}), json!({})),
        ),
        (
            "a pod within the quota",
            pods.clone(),
            pod("q2", sized("600m"), sized("100m")),
        ),
        (
            "a pod past two limits",
            pods.clone(),
            pod("q3", sized("900m"), sized("100m")),
        ),
        (
            "a pod past the pod count",
            pods.clone(),
            pod("q4", sized("100m"), sized("100m")),
        ),
        (
            "a dry run past the pod count",
            format!("{pods}?dryRun=All"),
            pod("q5", sized("100m"), sized("100m")),
        ),
        (
            "a first deployment",
            "/apis/apps/v1/namespaces/quota/deployments".to_owned(),
            deployment("d1"),
        ),
        (
            "a second deployment",
            "/apis/apps/v1/namespaces/quota/deployments".to_owned(),
            deployment("d2"),
        ),
        ("a first secret", format!("{ns}/secrets"), secret("s1")),
        ("a second secret", format!("{ns}/secrets"), secret("s2")),
        (
            "a load balancer that allocates no node ports",
            format!("{ns}/services"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
                "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                         "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}),
        ),
        (
            "a quota with a negative count",
            format!("{ns}/resourcequotas?dryRun=All"),
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "neg"},
                "spec": {"hard": {"pods": "-1"}}}),
        ),
        (
            "a quota with a fractional count",
            format!("{ns}/resourcequotas?dryRun=All"),
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "half"},
                "spec": {"hard": {"pods": 1.5, "count/jobs.batch": "2"}}}),
        ),
        (
            "a pod requesting more than its limit",
            format!("{pods}?dryRun=All"),
            pod(
                "q6",
                json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1", "memory": "1Mi"}}),
                sized("1m"),
            ),
        ),
        (
            "a pod with a negative request",
            format!("{pods}?dryRun=All"),
            pod(
                "q7",
                json!({"requests": {"cpu": "-1"}, "limits": {"memory": "1Mi"}}),
                sized("1m"),
            ),
        ),
        (
            "a node port service past the node ports",
            format!("{ns}/services"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
                "spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}),
        ),
        (
            "a cluster IP service",
            format!("{ns}/services"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cip"},
                "spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}),
        ),
        (
            "PATCH a service made a node port past the node ports",
            format!("{ns}/services/cip"),
            json!({"spec": {"type": "NodePort"}}),
        ),
        (
            "PATCH a service made a node port with one port",
            format!("{ns}/services/cip"),
            json!({"spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80}]}}),
        ),
        (
            "PATCH a service given a second node port",
            format!("{ns}/services/cip"),
            json!({"spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}),
        ),
    ];
    // Quotas and limit ranges kube-apiserver refuses, each for one reason
    // (it lists several in its maps' random order).
    let quota_spec = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": spec});
    let range = |name: &str, limits: Value| json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name}, "spec": {"limits": limits}});
    let quotas = format!("{ns}/resourcequotas?dryRun=All");
    let ranges = format!("{ns}/limitranges?dryRun=All");
    let refusals: Vec<(&str, String, Value)> = vec![
        (
            "a quota of an unknown resource",
            quotas.clone(),
            quota_spec("q1", json!({"hard": {"limit.cpu": "1"}})),
        ),
        (
            "a quota of storage",
            quotas.clone(),
            quota_spec("q2", json!({"hard": {"storage": "1Gi"}})),
        ),
        (
            "a quota of a bad qualified name",
            quotas.clone(),
            quota_spec("q3", json!({"hard": {"Example.com/gpu": "1"}})),
        ),
        (
            "a fractional extended resource count",
            quotas.clone(),
            quota_spec("q4", json!({"hard": {"count/widgets.example.com": "500m"}})),
        ),
        (
            "an unknown scope",
            quotas.clone(),
            quota_spec(
                "q5",
                json!({"hard": {"pods": "1"}, "scopes": ["Sometimes"]}),
            ),
        ),
        (
            "conflicting scopes",
            quotas.clone(),
            quota_spec(
                "q6",
                json!({"hard": {"pods": "1"}, "scopes": ["Terminating", "NotTerminating"]}),
            ),
        ),
        (
            "a scope that cannot limit a resource",
            quotas.clone(),
            quota_spec(
                "q7",
                json!({"hard": {"secrets": "1"}, "scopes": ["BestEffort"]}),
            ),
        ),
        (
            "a scope selector with an unknown operator",
            quotas.clone(),
            quota_spec(
                "q8",
                json!({"hard": {"pods": "1"},
                "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "Near", "values": ["high"]}]}}),
            ),
        ),
        (
            "a scope selector In without values",
            quotas.clone(),
            quota_spec(
                "q9",
                json!({"hard": {"pods": "1"},
                "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In"}]}}),
            ),
        ),
        (
            "a best-effort selector not Exists",
            quotas.clone(),
            quota_spec(
                "q10",
                json!({"hard": {"pods": "1"},
                "scopeSelector": {"matchExpressions": [{"scopeName": "BestEffort", "operator": "DoesNotExist"}]}}),
            ),
        ),
        (
            "a scope selector that cannot limit a resource",
            quotas.clone(),
            quota_spec(
                "q11",
                json!({"hard": {"requests.cpu": "1"},
                "scopeSelector": {"matchExpressions": [{"scopeName": "BestEffort", "operator": "Exists"}]}}),
            ),
        ),
        (
            "a valid scoped quota",
            quotas.clone(),
            quota_spec(
                "q12",
                json!({"hard": {"pods": "3", "requests.cpu": "1"},
                "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
            ),
        ),
        (
            "a limit of an unknown type",
            ranges.clone(),
            range("r1", json!([{"type": "Node", "max": {"cpu": "1"}}])),
        ),
        (
            "a limit type twice",
            ranges.clone(),
            range(
                "r2",
                json!([{"type": "Pod", "max": {"cpu": "1"}}, {"type": "Pod", "max": {"memory": "1Gi"}}]),
            ),
        ),
        (
            "a pod limit with a default",
            ranges.clone(),
            range("r3", json!([{"type": "Pod", "default": {"cpu": "1"}}])),
        ),
        (
            "a container limit of a quota's resource",
            ranges.clone(),
            range(
                "r4",
                json!([{"type": "Container", "max": {"requests.cpu": "1"}}]),
            ),
        ),
        (
            "a min above the max",
            ranges.clone(),
            range(
                "r5",
                json!([{"type": "Pod", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]),
            ),
        ),
        (
            "a default above the max",
            ranges.clone(),
            range(
                "r6",
                json!([{"type": "Container", "max": {"memory": "1Gi"}, "default": {"memory": "2Gi"}}]),
            ),
        ),
        (
            "a default request above the default",
            ranges.clone(),
            range(
                "r7",
                json!([{"type": "Container", "default": {"cpu": "1"}, "defaultRequest": {"cpu": "2"}}]),
            ),
        ),
        (
            "a ratio below one",
            ranges.clone(),
            range(
                "r8",
                json!([{"type": "Pod", "maxLimitRequestRatio": {"cpu": "500m"}}]),
            ),
        ),
        (
            "a ratio above max over min",
            ranges.clone(),
            range(
                "r9",
                json!([{"type": "Pod", "min": {"cpu": "500m"}, "max": {"cpu": "1"}, "maxLimitRequestRatio": {"cpu": "3"}}]),
            ),
        ),
        (
            "a claim limit without storage",
            ranges.clone(),
            range(
                "r10",
                json!([{"type": "PersistentVolumeClaim", "max": {"cpu": "1"}}]),
            ),
        ),
        (
            "an extended resource with two defaults",
            ranges.clone(),
            range(
                "r11",
                json!([{"type": "Container", "default": {"example.com/gpu": "2"}, "defaultRequest": {"example.com/gpu": "1"}}]),
            ),
        ),
        (
            "a deployment whose expressions do not select its template",
            "/apis/apps/v1/namespaces/quota/deployments?dryRun=All".to_owned(),
            {
                let mut d = deployment("exprs");
                d["spec"]["selector"] =
                    json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]});
                d
            },
        ),
        (
            "a deployment whose expressions select its template",
            "/apis/apps/v1/namespaces/quota/deployments?dryRun=All".to_owned(),
            {
                let mut d = deployment("exprs-ok");
                d["spec"]["selector"] = json!({"matchExpressions": [
                    {"key": "app", "operator": "In", "values": ["web", "api"]}]});
                d
            },
        ),
        (
            "a service selecting a bad label key",
            format!("{ns}/services?dryRun=All"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sel"},
                "spec": {"selector": {"a/b/c": "1"}, "ports": [{"port": 80}]}}),
        ),
        (
            "a pod with a bad node selector key",
            format!("{pods}?dryRun=All"),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ns"},
                "spec": {"nodeSelector": {"a b": "1"}, "containers": [{"name": "app", "image": "registry.example/web:1.0",
                    "resources": {"requests": {"cpu": "1m"}, "limits": {"memory": "1Mi"}}}]}}),
        ),
        (
            "a budget selecting a bad label key",
            "/apis/policy/v1/namespaces/quota/poddisruptionbudgets?dryRun=All".to_owned(),
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a b": "1"}}}}),
        ),
        (
            "a network policy selecting a bad expression key",
            "/apis/networking.k8s.io/v1/namespaces/quota/networkpolicies?dryRun=All".to_owned(),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "np"},
                "spec": {"podSelector": {"matchExpressions": [{"key": "a b", "operator": "Exists"}]}}}),
        ),
        (
            "a pod with a bad label key",
            format!("{pods}?dryRun=All"),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lk", "labels": {"a b/c": "x"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0",
                    "resources": {"requests": {"cpu": "1m"}, "limits": {"memory": "1Mi"}}}]}}),
        ),
    ];
    let mut differ = Vec::new();
    for (name, path, body) in cases.iter().chain(&refusals) {
        let method = if name.starts_with("PATCH") {
            "PATCH"
        } else {
            "POST"
        };
        let kind = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let (a, b) = (
            real.send_as(method, path, kind, body).await,
            simulated.send_as(method, path, kind, body).await,
        );
        let said = |answer: &(u16, Value)| {
            json!({"code": answer.0, "reason": answer.1["reason"], "message": answer.1["message"],
                   "details": if answer.0 >= 300 { answer.1["details"].clone() } else { Value::Null }})
        };
        if said(&a) != said(&b) {
            differ.push(format!("{name}: real {}, simulator {}", said(&a), said(&b)));
        }
    }
    // Both controllers count the same usage once they caught up with the
    // creates: pod q2, the one pod of d1's ReplicaSet the pod count left
    // room for, one Deployment, one secret.
    let mut statuses = Vec::new();
    for server in [&real, &simulated] {
        let mut status = Value::Null;
        for _ in 0..200 {
            let (_, q) = server
                .send("GET", &format!("{ns}/resourcequotas/compute"), &Value::Null)
                .await;
            status = q["status"].clone();
            if status["used"]["secrets"] == "1"
                && status["used"]["count/deployments.apps"] == "1"
                && status["used"]["services.nodeports"] == "1"
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        statuses.push(status);
    }
    if statuses[0] != statuses[1] {
        differ.push(format!(
            "the quota's status: real {}, simulator {}",
            statuses[0], statuses[1]
        ));
    }
    // A patch that changes nothing writes nothing, on both: the same
    // resourceVersion, though the managedFields' times would move.
    for server in [&real, &simulated] {
        let path = format!("{ns}/services/cip");
        let (_, before) = server.send("GET", &path, &Value::Null).await;
        let (code, after) = server
            .send_as(
                "PATCH",
                &path,
                "application/merge-patch+json",
                &json!({"spec": {"type": "NodePort"}}),
            )
            .await;
        assert_eq!(code, 200, "{after}");
        if before["metadata"]["resourceVersion"] != after["metadata"]["resourceVersion"] {
            differ.push(format!(
                "{}: a patch that changes nothing moved the version",
                server.base
            ));
        }
    }
    // What `kubectl get quota` prints of it.
    let quotas_path = format!("{ns}/resourcequotas");
    let (a, b) = (
        real.cells(&quotas_path).await,
        simulated.cells(&quotas_path).await,
    );
    if a != b {
        differ.push(format!("kubectl get quota: real {a:?}, simulator {b:?}"));
    }
    assert!(differ.is_empty(), "differences:\n{}", differ.join("\n"));
    assert_eq!(statuses[1]["used"]["pods"], "2", "{}", statuses[1]);
    assert_eq!(
        statuses[1]["used"]["requests.cpu"], "900m",
        "{}",
        statuses[1]
    );
}

/// Quota `name`'s status in namespace path `ns`, once it has a `used`.
async fn quota_status(server: &Server, ns: &str, name: &str) -> Value {
    let mut status = Value::Null;
    for _ in 0..200 {
        let (_, q) = server
            .send("GET", &format!("{ns}/resourcequotas/{name}"), &Value::Null)
            .await;
        status = q["status"].clone();
        if status["used"].is_object() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    status
}

/// Quotas with scopes cover only the pods their scopes match, in what they
/// refuse and in what their status counts, alike on both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_quotas_cover_only_the_pods_they_match_as_on_a_real_cluster() {
    let (_plane, real, _sim, simulated) = both("scoped").await;
    let ns = "/api/v1/namespaces/scoped";
    let quotas = [
        json!({"metadata": {"name": "best-effort"},
            "spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}}),
        json!({"metadata": {"name": "high"},
            "spec": {"hard": {"pods": "1", "requests.cpu": "1"},
                     "scopeSelector": {"matchExpressions": [
                         {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}}),
        json!({"metadata": {"name": "terminating"},
            "spec": {"hard": {"pods": "1"}, "scopes": ["Terminating"]}}),
    ];
    for server in [&real, &simulated] {
        for (path, body) in [
            (
                "/api/v1/namespaces".to_owned(),
                json!({"metadata": {"name": "scoped"}}),
            ),
            (
                "/apis/scheduling.k8s.io/v1/priorityclasses".to_owned(),
                json!({"metadata": {"name": "high"}, "value": 1000}),
            ),
        ] {
            let (code, body) = server.send("POST", &path, &body).await;
            assert_eq!(code, 201, "{body}");
        }
        wait_served(server, &format!("{ns}/serviceaccounts/default")).await;
        for quota in &quotas {
            let (code, body) = server
                .send("POST", &format!("{ns}/resourcequotas"), quota)
                .await;
            assert_eq!(code, 201, "{body}");
        }
    }
    for server in [&real, &simulated] {
        for name in ["best-effort", "high", "terminating"] {
            assert!(quota_status(server, ns, name).await["used"].is_object());
        }
    }
    let pod = |name: &str, spec: Value| {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "app", "image": "registry.example/web:1.0",
            "resources": spec["resources"].clone()}]);
        if let Some(map) = spec.as_object_mut() {
            map.remove("resources");
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    };
    let cpu = |amount: &str| json!({"requests": {"cpu": amount}});
    let cases = [
        ("a best-effort pod", pod("be1", json!({}))),
        ("a second best-effort pod", pod("be2", json!({}))),
        (
            "a burstable pod no quota covers",
            pod("bu1", json!({"resources": cpu("100m")})),
        ),
        (
            "a high-priority pod",
            pod(
                "hi1",
                json!({"priorityClassName": "high", "resources": cpu("600m")}),
            ),
        ),
        (
            "a second high-priority pod",
            pod(
                "hi2",
                json!({"priorityClassName": "high", "resources": cpu("600m")}),
            ),
        ),
        (
            "a high-priority pod stating no CPU",
            pod(
                "hi3",
                json!({"priorityClassName": "high", "resources": {"requests": {"memory": "10Mi"}}}),
            ),
        ),
        (
            "a terminating pod",
            pod(
                "t1",
                json!({"activeDeadlineSeconds": 60, "resources": cpu("100m")}),
            ),
        ),
        (
            "a second terminating pod",
            pod(
                "t2",
                json!({"activeDeadlineSeconds": 60, "resources": cpu("100m")}),
            ),
        ),
    ];
    let mut differ = Vec::new();
    for (name, body) in &cases {
        let path = format!("{ns}/pods");
        let (a, b) = (
            real.send("POST", &path, body).await,
            simulated.send("POST", &path, body).await,
        );
        let said = |answer: &(u16, Value)| json!({"code": answer.0, "reason": answer.1["reason"], "message": answer.1["message"]});
        if said(&a) != said(&b) {
            differ.push(format!("{name}: real {}, simulator {}", said(&a), said(&b)));
        }
    }
    for name in ["best-effort", "high", "terminating"] {
        let mut statuses = Vec::new();
        for server in [&real, &simulated] {
            let mut status = Value::Null;
            for _ in 0..200 {
                status = quota_status(server, ns, name).await;
                if status["used"]["pods"] == "1" {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            statuses.push(status);
        }
        if statuses[0] != statuses[1] {
            differ.push(format!(
                "quota {name}'s status: real {}, simulator {}",
                statuses[0], statuses[1]
            ));
        }
    }
    assert!(differ.is_empty(), "differences:\n{}", differ.join("\n"));
}

/// LimitRange as the LimitRanger admission plugin applies it: the range's
/// own defaults when it is written, then each pod's resources filled in
/// (and said in its annotation) or the pod refused, alike on both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_range_fills_in_and_refuses_as_on_a_real_cluster() {
    let (_plane, real, _sim, simulated) = both("limits").await;
    let ns = "/api/v1/namespaces/limits";
    let range = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "bounds"},
        "spec": {"limits": [
            {"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "10Mi"},
             "default": {"memory": "100Mi"}, "maxLimitRequestRatio": {"cpu": "4"},
             // A number, as YAML writes `0.5` unquoted.
             "defaultRequest": {"cpu": 0.5}},
            {"type": "Pod", "max": {"memory": "1Gi"}}]}});
    let mut differ = Vec::new();
    let mut stored = Vec::new();
    for server in [&real, &simulated] {
        let (code, body) = server
            .send(
                "POST",
                "/api/v1/namespaces",
                &json!({"metadata": {"name": "limits"}}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        wait_served(server, &format!("{ns}/serviceaccounts/default")).await;
        let (code, body) = server
            .send("POST", &format!("{ns}/limitranges"), &range)
            .await;
        assert_eq!(code, 201, "{body}");
        stored.push(body["spec"].clone());
    }
    if stored[0] != stored[1] {
        differ.push(format!(
            "the range as stored: real {}, simulator {}",
            stored[0], stored[1]
        ));
    }
    let pod = |name: &str, resources: &[Value]| {
        let containers: Vec<Value> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"name": format!("c{i}"), "image": "registry.example/web:1.0", "resources": r}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": containers}})
    };
    let cases = [
        ("a pod stating nothing", pod("l0", &[json!({})])),
        (
            "a pod stating a request",
            pod("l1", &[json!({"requests": {"cpu": "500m"}})]),
        ),
        (
            "a pod past the container's max",
            pod("l2", &[json!({"limits": {"cpu": "2"}})]),
        ),
        (
            "a pod past the ratio",
            pod(
                "l3",
                &[json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "800m"}})],
            ),
        ),
        (
            "a pod below the min",
            pod("l4", &[json!({"requests": {"memory": "5Mi"}})]),
        ),
        (
            "a pod past the pod's max",
            pod(
                "l5",
                &[
                    json!({"limits": {"memory": "600Mi"}}),
                    json!({"limits": {"memory": "600Mi"}}),
                ],
            ),
        ),
        ("a pod whose sidecar takes it past the pod's max", {
            let mut p = pod("l6", &[json!({"limits": {"memory": "600Mi"}})]);
            p["spec"]["initContainers"] = json!([{"name": "side", "image": "registry.example/web:1.0",
                "restartPolicy": "Always", "resources": {"limits": {"memory": "600Mi"}}}]);
            p
        }),
    ];
    let pods = format!("{ns}/pods");
    for (name, body) in &cases {
        let (a, b) = (
            real.send("POST", &pods, body).await,
            simulated.send("POST", &pods, body).await,
        );
        let said = |answer: &(u16, Value)| {
            if answer.0 >= 300 {
                return json!({"code": answer.0, "reason": answer.1["reason"],
                    "message": answer.1["message"], "details": answer.1["details"]});
            }
            let resources: Vec<Value> = answer.1["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["resources"].clone())
                .collect();
            json!({"code": answer.0, "resources": resources,
                "annotation": answer.1["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
                "qos": answer.1["status"]["qosClass"]})
        };
        if said(&a) != said(&b) {
            differ.push(format!("{name}: real {}, simulator {}", said(&a), said(&b)));
        }
    }
    assert!(differ.is_empty(), "differences:\n{}", differ.join("\n"));
}

/// A kubeconfig for the simulator at `addr`, written into `dir`.
fn simulator_kubeconfig(dir: &std::path::Path, addr: std::net::SocketAddr) -> std::path::PathBuf {
    let path = dir.join("sim");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: sim, cluster: {{server: \"http://{addr}\"}}}}]\n\
             users: [{{name: sim, user: {{}}}}]\ncontexts: [{{name: sim, context: {{cluster: sim, user: sim}}}}]\n\
             current-context: sim\n"
        ),
    )
    .unwrap();
    path
}

/// client-go configured for protobuf (`controlplane/protoclient`), as
/// controllers built on it run: creates, an update seen by a watch, a
/// scale, a Secret with bytes, an events/v1 Event, a refusal, deletes.
/// What it saw on each server, step by step; returns the differences.
async fn client_go(real: &std::path::Path, sim: std::net::SocketAddr) -> Vec<String> {
    let real = real.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let sim_config = simulator_kubeconfig(dir.path(), sim);
        let controlplane = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane");
        let run = |config: &std::path::Path| -> Vec<Value> {
            let out = std::process::Command::new("go")
                .args(["run", "./protoclient"])
                .arg(config)
                .arg("over-protobuf")
                .current_dir(&controlplane)
                .output()
                .expect("go is on the machine (it builds the real control plane)");
            assert!(
                out.status.success(),
                "protoclient against {}: {}",
                config.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (a, b) = (run(&real), run(&sim_config));
        assert_eq!(a.len(), b.len(), "real {a:?}\nsimulator {b:?}");
        let mut diffs = Vec::new();
        for (x, y) in a.iter().zip(&b) {
            let mut diff = Vec::new();
            differences("", x, y, &mut diff);
            if !diff.is_empty() {
                diffs.push(format!("{}: {}", x["step"], diff.join("; ")));
            }
        }
        eprintln!("client-go: {} steps, {} differences", a.len(), diffs.len());
        diffs
    })
    .await
    .unwrap()
}

/// `kubectl create`, which sends built-in objects as protobuf, run against
/// both servers: the same objects stored, the same refusals. Returns the
/// differences.
async fn kubectl_creates(real: &std::path::Path, sim: std::net::SocketAddr) -> Vec<String> {
    let real = real.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let sim_config = simulator_kubeconfig(dir.path(), sim);
        let kubectl = |config: &std::path::Path, args: &[&str]| {
            let out = std::process::Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", config)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .output()
                .expect("kubectl is on the machine");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            )
        };
        let image = "--image=registry.example/web:1.0";
        // A `kind: List` file, as `kubectl get -o yaml` writes one: kubectl
        // reads /openapi/v2 to check it before it applies the items.
        let list = dir.path().join("list.yaml");
        std::fs::write(
            &list,
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: listed, namespace: made}\n  data: {a: \"1\"}\n",
        )
        .unwrap();
        let list = list.to_str().unwrap();
        let creates: &[&[&str]] = &[
            &["create", "namespace", "made"],
            &["apply", "-f", list],
            &[
                "create",
                "configmap",
                "settings",
                "-n",
                "made",
                "--from-literal=mode=fast",
                "--from-literal=empty=",
            ],
            &[
                "create",
                "secret",
                "generic",
                "creds",
                "-n",
                "made",
                "--from-literal=password=s3cret",
            ],
            &[
                "create",
                "deployment",
                "web",
                "-n",
                "made",
                image,
                "--replicas=3",
                "--port=8080",
            ],
            &[
                "create",
                "deployment",
                "none",
                "-n",
                "made",
                image,
                "--replicas=0",
            ],
            &[
                "create",
                "service",
                "clusterip",
                "web",
                "-n",
                "made",
                "--tcp=80:8080",
            ],
            &["create", "serviceaccount", "robot", "-n", "made"],
            &[
                "create",
                "role",
                "reader",
                "-n",
                "made",
                "--verb=get,list",
                "--resource=pods",
            ],
            &[
                "create",
                "rolebinding",
                "reader",
                "-n",
                "made",
                "--role=reader",
                "--serviceaccount=made:robot",
            ],
            &[
                "create",
                "quota",
                "pods",
                "-n",
                "made",
                "--hard=pods=10,requests.cpu=1500m",
            ],
            &[
                "create",
                "poddisruptionbudget",
                "web",
                "-n",
                "made",
                "--selector=app=web",
                "--min-available=1",
            ],
            &[
                "create",
                "priorityclass",
                "made-high",
                "--value=1000",
                "--description=made by kubectl",
            ],
            &[
                "create",
                "secret",
                "docker-registry",
                "pull",
                "-n",
                "made",
                "--docker-server=registry.example",
                "--docker-username=u",
                "--docker-password=p",
            ],
            &[
                "create",
                "service",
                "nodeport",
                "edge",
                "-n",
                "made",
                "--tcp=80:8080",
            ],
            &[
                "create",
                "service",
                "externalname",
                "away",
                "-n",
                "made",
                "--external-name=db.example.com",
            ],
            &[
                "create",
                "ingress",
                "web",
                "-n",
                "made",
                "--rule=shop.example/cart*=web:80",
                "--class=nginx",
            ],
            &[
                "create",
                "cronjob",
                "nightly",
                "-n",
                "made",
                image,
                "--schedule=0 3 * * *",
            ],
            &[
                "create",
                "clusterrole",
                "made-reader",
                "--verb=get",
                "--resource=deployments.apps",
            ],
            &[
                "create",
                "clusterrolebinding",
                "made-reader",
                "--clusterrole=made-reader",
                "--user=alice",
            ],
            // Refused, by both: a bad name, a negative count, a wrong port.
            &["create", "configmap", "Bad_Name", "-n", "made"],
            &[
                "create",
                "deployment",
                "neg",
                "-n",
                "made",
                image,
                "--replicas=-1",
            ],
            &[
                "create",
                "service",
                "clusterip",
                "far",
                "-n",
                "made",
                "--tcp=80800:80",
            ],
        ];
        let mut diffs = Vec::new();
        for args in creates {
            let (a, b) = (kubectl(&real, args), kubectl(&sim_config, args));
            if (a.0, &a.2) != (b.0, &b.2) {
                diffs.push(format!(
                    "{}: real {:?} {:?}, simulator {:?} {:?}",
                    args.join(" "),
                    a.0,
                    a.2,
                    b.0,
                    b.2
                ));
            }
        }
        let objects: &[(&str, &str)] = &[
            ("namespace", "made"),
            ("configmap", "settings"),
            ("configmap", "listed"),
            ("secret", "creds"),
            ("deployment", "web"),
            ("deployment", "none"),
            ("service", "web"),
            ("serviceaccount", "robot"),
            ("role", "reader"),
            ("rolebinding", "reader"),
            ("resourcequota", "pods"),
            ("poddisruptionbudget", "web"),
            ("priorityclass", "made-high"),
            ("priorityclass", "system-cluster-critical"),
            ("priorityclass", "system-node-critical"),
            ("secret", "pull"),
            ("service", "edge"),
            ("service", "away"),
            ("ingress", "web"),
            ("cronjob", "nightly"),
            ("clusterrole", "made-reader"),
            ("clusterrolebinding", "made-reader"),
        ];
        for (kind, name) in objects {
            let get = |config: &std::path::Path| {
                let (ok, out, err) =
                    kubectl(config, &["get", kind, name, "-n", "made", "-o", "json"]);
                assert!(ok, "kubectl get {kind} {name}: {err}");
                view(&(200, serde_json::from_str(&out).unwrap()))
            };
            let mut diff = Vec::new();
            differences("", &get(&real), &get(&sim_config), &mut diff);
            if !diff.is_empty() {
                diffs.push(format!("{kind} {name}: {}", diff.join("; ")));
            }
        }
        eprintln!(
            "kubectl: {} creates and {} objects, {} differences",
            creates.len(),
            objects.len(),
            diffs.len()
        );
        // A delete sends its options as protobuf too.
        for config in [&real, &sim_config] {
            let (ok, _, err) = kubectl(
                config,
                &[
                    "delete",
                    "configmap",
                    "settings",
                    "-n",
                    "made",
                    "--wait=false",
                ],
            );
            assert!(ok, "{err}");
        }
        diffs
    })
    .await
    .unwrap()
}

/// The simulator's protobuf layout table is what the Go types pinned for
/// the real control plane say; after a bump of `controlplane/go.mod`,
/// regenerate it with `go run ./prototable > ../../simulator/api/src/protobuf.table`
/// in `integration-tests/controlplane`.
#[test]
fn the_protobuf_table_is_what_the_pinned_go_types_say() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane");
    let out = std::process::Command::new("go")
        .args(["run", "./prototable"])
        .current_dir(&dir)
        .output()
        .expect("go is on the machine (it builds the real control plane)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed =
        std::fs::read_to_string(dir.join("../../simulator/api/src/protobuf.table")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "simulator/api/src/protobuf.table is stale: regenerate it (see this test's doc)"
    );
}
