//! The StatefulSet and DaemonSet controllers.
//!
//! StatefulSet, as Kubernetes does it: pods `<name>-<ordinal>`; each pod's
//! `controller-revision-hash` label names the ControllerRevision of its
//! template. OrderedReady creates pods in ordinal order, each after the one
//! before is Ready, and removes them highest first; Parallel creates and
//! removes at once. RollingUpdate replaces pods whose revision is not the
//! update revision, highest ordinal first and one at a time once every pod
//! is Ready, leaving ordinals below `partition` on the current revision.
//! OnDelete replaces nothing. Status: replicas, ready, available, current
//! and updated replicas, currentRevision (becomes the update revision once
//! every pod runs it), updateRevision, observedGeneration.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{
    engine::{Ctx, Involved},
    placement::Placement,
    workloads::{int, is_ready, owner_ref, template_hash},
};

/// Label on StatefulSet pods naming their revision.
pub(crate) const REVISION_HASH: &str = "controller-revision-hash";
/// Label on StatefulSet pods naming the pod.
pub(crate) const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, p| &v[*p])
        .as_str()
        .unwrap_or_default()
}

fn ordinal(pod: &Value, set: &str) -> Option<i64> {
    text(pod, &["metadata", "name"])
        .strip_prefix(&format!("{set}-"))?
        .parse()
        .ok()
}

fn revision_of(pod: &Value) -> String {
    text(pod, &["metadata", "labels", REVISION_HASH]).to_owned()
}

/// Makes sure a ControllerRevision for `template` exists; returns its name.
fn ensure_revision(ctx: &mut Ctx, sts: &Value, template: &Value) -> String {
    let (ns, name) = (
        text(sts, &["metadata", "namespace"]),
        text(sts, &["metadata", "name"]),
    );
    let revision = format!("{name}-{}", template_hash(template));
    let res = ctx.kinds.revisions.clone();
    if ctx.get(&res, ns, &revision).is_none() {
        let existing = ctx.owned(text(sts, &["metadata", "uid"]), &res);
        let number = existing
            .iter()
            .map(|r| int(r, &["revision"], 0))
            .max()
            .unwrap_or(0)
            + 1;
        let object = json!({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": revision, "namespace": ns, "labels": sts["spec"]["selector"]["matchLabels"], "ownerReferences": [owner_ref("apps/v1", "StatefulSet", sts)]},
            "data": {"spec": {"template": template}},
            "revision": number,
        });
        let _ = ctx.store.create(&res, ns, object);
    }
    revision
}

fn template_of(ctx: &Ctx, ns: &str, revision: &str) -> Option<Value> {
    ctx.get(&ctx.kinds.revisions, ns, revision)
        .map(|r| r["data"]["spec"]["template"].clone())
}

/// Reconciles one StatefulSet.
pub(crate) fn reconcile_statefulset(ctx: &mut Ctx, ns: &str, name: &str) {
    let res = ctx.kinds.statefulsets.clone();
    let Some(sts) = ctx.get(&res, ns, name) else {
        return;
    };
    if sts["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let replicas = int(&sts, &["spec", "replicas"], 1);
    let template = sts["spec"]["template"].clone();
    let update_revision = ensure_revision(ctx, &sts, &template);
    let current_revision = match text(&sts, &["status", "currentRevision"]) {
        "" => update_revision.clone(),
        r => r.to_owned(),
    };
    let parallel = sts["spec"]["podManagementPolicy"] == "Parallel";
    let strategy = &sts["spec"]["updateStrategy"];
    let rolling = strategy["type"] != "OnDelete";
    let partition = int(strategy, &["rollingUpdate", "partition"], 0);
    let pods_res = ctx.kinds.pods.clone();
    let pods: BTreeMap<i64, Value> = ctx
        .owned(text(&sts, &["metadata", "uid"]), &pods_res)
        .into_iter()
        .filter_map(|p| ordinal(&p, name).map(|o| (o, p)))
        .collect();

    // Create missing pods in order.
    for ord in 0..replicas {
        match pods.get(&ord) {
            Some(pod) => {
                if !parallel && !is_ready(pod) {
                    break;
                }
            }
            None => {
                let revision = if ord < partition || !rolling {
                    current_revision.clone()
                } else {
                    update_revision.clone()
                };
                let pod_template =
                    template_of(ctx, ns, &revision).unwrap_or_else(|| template.clone());
                let mut labels = pod_template["metadata"]["labels"].clone();
                labels[REVISION_HASH] = json!(revision);
                labels[POD_NAME] = json!(format!("{name}-{ord}"));
                let pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{name}-{ord}"), "namespace": ns, "labels": labels, "annotations": pod_template["metadata"]["annotations"], "ownerReferences": [owner_ref("apps/v1", "StatefulSet", &sts)]},
                    "spec": pod_template["spec"],
                });
                pod_event(ctx, ns, ("StatefulSet", &sts), Change::Create(pod));
                if !parallel {
                    break;
                }
            }
        }
    }
    // Remove pods beyond replicas, highest first.
    for (_, pod) in pods.iter().rev().filter(|(o, _)| **o >= replicas) {
        let doomed = text(pod, &["metadata", "name"]).to_owned();
        pod_event(ctx, ns, ("StatefulSet", &sts), Change::Delete(&doomed));
        if !parallel {
            break;
        }
    }
    // Rolling update: one pod at a time, highest ordinal first, all Ready.
    let all_ready = pods.len() as i64 >= replicas && pods.values().all(is_ready);
    if rolling
        && all_ready
        && let Some((_, stale)) = pods
            .iter()
            .rev()
            .find(|(o, p)| **o >= partition && **o < replicas && revision_of(p) != update_revision)
    {
        let doomed = text(stale, &["metadata", "name"]).to_owned();
        pod_event(ctx, ns, ("StatefulSet", &sts), Change::Delete(&doomed));
    }
    let live: Vec<&Value> = pods
        .iter()
        .filter(|(o, _)| **o < replicas)
        .map(|(_, p)| p)
        .collect();
    let ready = live.iter().filter(|p| is_ready(p)).count();
    let updated = live
        .iter()
        .filter(|p| revision_of(p) == update_revision)
        .count();
    let current = live
        .iter()
        .filter(|p| revision_of(p) == current_revision)
        .count();
    let current_revision = if updated as i64 == replicas {
        update_revision.clone()
    } else {
        current_revision
    };
    let status = json!({
        "observedGeneration": int(&sts, &["metadata", "generation"], 1),
        "replicas": pods.len(), "readyReplicas": ready, "availableReplicas": ready,
        "currentReplicas": if current_revision == update_revision { updated } else { current },
        "updatedReplicas": updated, "currentRevision": current_revision, "updateRevision": update_revision,
        "collisionCount": 0,
    });
    ctx.set_status(&res, ns, name, &status);
}

/// What a workload controller does to one of its pods.
enum Change<'a> {
    Create(Value),
    Delete(&'a str),
}

/// Makes or deletes a pod of `owner` (its kind and object) and records the
/// Event its controller records when that succeeds.
fn pod_event(ctx: &mut Ctx, ns: &str, (kind, owner): (&str, &Value), change: Change<'_>) {
    let pods = ctx.kinds.pods.clone();
    let owner_name = text(owner, &["metadata", "name"]).to_owned();
    let (component, work) = if kind == "StatefulSet" {
        (
            "statefulset-controller",
            crate::Work::StatefulSet(ns.to_owned(), owner_name.clone()),
        )
    } else {
        (
            "daemonset-controller",
            crate::Work::DaemonSet(ns.to_owned(), owner_name.clone()),
        )
    };
    let (warning, reason, message) = match change {
        Change::Create(pod) => {
            let named = text(&pod, &["metadata", "name"]).to_owned();
            match ctx.store.create(&pods, ns, pod) {
                Ok(made) => {
                    ctx.succeeded(|| work.clone());
                    let pod = text(&made, &["metadata", "name"]);
                    let message = if kind == "StatefulSet" {
                        format!("create Pod {pod} in StatefulSet {owner_name} successful")
                    } else {
                        format!("Created pod: {pod}")
                    };
                    (false, "SuccessfulCreate", message)
                }
                Err(e) => {
                    // Said, and tried again later, as the real controllers
                    // do (a missing ServiceAccount, a refusing webhook).
                    ctx.retry(work);
                    let message = if kind == "StatefulSet" {
                        format!(
                            "create Pod {named} in StatefulSet {owner_name} failed error: {}",
                            e.message
                        )
                    } else {
                        format!("Error creating: {}", e.message)
                    };
                    (true, "FailedCreate", message)
                }
            }
        }
        Change::Delete(pod) => {
            if ctx
                .store
                .delete(&pods, ns, pod, &Default::default())
                .is_err()
            {
                return;
            }
            let message = if kind == "StatefulSet" {
                format!("delete Pod {pod} in StatefulSet {owner_name} successful")
            } else {
                format!("Deleted pod: {pod}")
            };
            (false, "SuccessfulDelete", message)
        }
    };
    let about = Involved {
        kind,
        api_version: "apps/v1",
        namespace: ns,
        name: &owner_name,
        uid: text(owner, &["metadata", "uid"]),
    };
    ctx.event(about, warning, (reason, &message), component);
}

/// The tolerations of a DaemonSet's pods: the template's, and those the
/// DaemonSet controller adds when missing.
fn daemon_tolerations(own: &Value) -> Value {
    let mut all = own.as_array().cloned().unwrap_or_default();
    let added = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    for (key, effect) in added {
        if !all.iter().any(|t| t["key"] == key && t["effect"] == effect) {
            all.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    Value::Array(all)
}

/// Reconciles one DaemonSet: a pod on every ready node its pods may run
/// on, updated one node at a time (maxUnavailable 1).
pub(crate) fn reconcile_daemonset(ctx: &mut Ctx, ns: &str, name: &str) {
    let res = ctx.kinds.daemonsets.clone();
    let Some(ds) = ctx.get(&res, ns, name) else {
        return;
    };
    if ds["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let mut template = ds["spec"]["template"].clone();
    let hash = template_hash(&template);
    // Its pods tolerate what the DaemonSet controller adds to every one
    // (nodes not ready, unreachable, under pressure, unschedulable), and
    // go on every ready node their selector, affinity and tolerations allow.
    let tolerations = daemon_tolerations(&template["spec"]["tolerations"]);
    template["spec"]["tolerations"] = tolerations.clone();
    let placement = Placement::of_spec(
        &template["spec"]["nodeSelector"],
        &template["spec"]["affinity"],
        &tolerations,
    );
    let nodes = ctx.kubelet.eligible(&placement);
    let pods_res = ctx.kinds.pods.clone();
    let pods = ctx.owned(text(&ds, &["metadata", "uid"]), &pods_res);
    let on = |node: &str| {
        pods.iter()
            .find(|p| text(p, &["spec", "nodeName"]) == node)
            .cloned()
    };
    for node in &nodes {
        if on(node).is_none() {
            let mut labels = template["metadata"]["labels"].clone();
            labels[REVISION_HASH] = json!(hash);
            let mut spec = template["spec"].clone();
            spec["nodeName"] = json!(node);
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": labels, "ownerReferences": [owner_ref("apps/v1", "DaemonSet", &ds)]},
                "spec": spec,
            });
            pod_event(ctx, ns, ("DaemonSet", &ds), Change::Create(pod));
        }
    }
    for pod in &pods {
        if !nodes.iter().any(|n| n == text(pod, &["spec", "nodeName"])) {
            let doomed = text(pod, &["metadata", "name"]).to_owned();
            pod_event(ctx, ns, ("DaemonSet", &ds), Change::Delete(&doomed));
        }
    }
    if pods.len() == nodes.len()
        && pods.iter().all(is_ready)
        && let Some(stale) = pods
            .iter()
            .find(|p| text(p, &["metadata", "labels", REVISION_HASH]) != hash)
    {
        let doomed = text(stale, &["metadata", "name"]).to_owned();
        pod_event(ctx, ns, ("DaemonSet", &ds), Change::Delete(&doomed));
    }
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let updated = pods
        .iter()
        .filter(|p| text(p, &["metadata", "labels", REVISION_HASH]) == hash)
        .count();
    let status = json!({
        "desiredNumberScheduled": nodes.len(), "currentNumberScheduled": pods.len(), "numberMisscheduled": 0,
        "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": updated,
        "observedGeneration": int(&ds, &["metadata", "generation"], 1),
    });
    ctx.set_status(&res, ns, name, &status);
}
