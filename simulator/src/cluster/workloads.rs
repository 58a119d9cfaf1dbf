//! The Deployment and ReplicaSet controllers, with Kubernetes' semantics.
//!
//! - ReplicaSets are named `<deployment>-<pod-template-hash>`; the hash is of
//!   the pod template, and labels the ReplicaSet's selector and pods.
//! - RollingUpdate scales the new ReplicaSet up to `replicas + maxSurge` pods
//!   in all, and old ones down while at least `replicas - maxUnavailable`
//!   pods are available (maxSurge rounds up, maxUnavailable down; both 0
//!   means maxUnavailable 1), unhealthy old pods first. Recreate scales the
//!   old ones to 0 and waits for their pods to go before scaling the new one.
//! - A paused Deployment starts no rollout: a changed template makes no new
//!   ReplicaSet until it is resumed.
//! - Revisions: `deployment.kubernetes.io/revision` on each ReplicaSet and
//!   the Deployment; rolling back to an old template gives it the next one.
//! - Status: replicas, updated, ready, available, unavailable,
//!   observedGeneration; conditions Available and Progressing (with
//!   ProgressDeadlineExceeded when no progress was made for
//!   progressDeadlineSeconds).

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    api::{
        store::Part,
        time::{parse_rfc3339, rfc3339},
    },
    cluster::engine::{Ctx, Work},
};

/// The label and annotation keys the controllers use.
pub mod keys {
    /// Label on ReplicaSets and pods.
    pub const TEMPLATE_HASH: &str = "pod-template-hash";
    /// Annotation with a rollout revision.
    pub const REVISION: &str = "deployment.kubernetes.io/revision";
    /// Annotation with the Deployment's replicas, on its ReplicaSets.
    pub const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
    /// Annotation with replicas + maxSurge, on ReplicaSets.
    pub const MAX: &str = "deployment.kubernetes.io/max-replicas";
}

/// A stable short hash of a pod template, in Kubernetes' safe alphabet.
pub fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(keys::TEMPLATE_HASH);
    }
    let text = serde_json::to_string(&t).unwrap_or_default();
    // FNV-1a, 32 bits, written with the alphabet Kubernetes uses for names.
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // As Kubernetes writes it (`rand.SafeEncodeString(fmt.Sprint(hash))`):
    // each decimal digit of the hash mapped into the name-safe alphabet.
    // The hashed text differs (Kubernetes hashes a dump of its Go struct),
    // so the names have the real form but not the real value.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// Whether a ReplicaSet's template is the Deployment's, ignoring the
/// `pod-template-hash` label: how Kubernetes finds a Deployment's new
/// ReplicaSet, whoever created it.
pub fn same_template(rs_template: &Value, template: &Value) -> bool {
    // Compared in place, as this runs on every Deployment reconcile: all
    // but the metadata, then the metadata but its labels, then the labels
    // but the hash.
    fn meta(t: &Value) -> Option<&Value> {
        t.get("metadata")
    }
    fn labels(t: &Value) -> Option<&Value> {
        meta(t).and_then(|m| m.get("labels"))
    }
    if !rs_template.is_object() || !template.is_object() {
        return rs_template == template;
    }
    entries_except(Some(rs_template), "metadata") == entries_except(Some(template), "metadata")
        && entries_except(meta(rs_template), "labels") == entries_except(meta(template), "labels")
        && entries_except(labels(rs_template), keys::TEMPLATE_HASH)
            == entries_except(labels(template), keys::TEMPLATE_HASH)
}

/// The entries of an object but the one named `skip`, in key order.
fn entries_except<'a>(object: Option<&'a Value>, skip: &str) -> Vec<(&'a String, &'a Value)> {
    object
        .and_then(Value::as_object)
        .map(|m| m.iter().filter(|(k, _)| *k != skip).collect())
        .unwrap_or_default()
}

/// An integer at `path`, or `default`.
pub fn int(v: &Value, path: &[&str], default: i64) -> i64 {
    path.iter()
        .fold(v, |v, p| &v[*p])
        .as_i64()
        .unwrap_or(default)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, p| &v[*p])
        .as_str()
        .unwrap_or_default()
}

/// An int-or-percent of `total`, rounded up or down.
pub fn int_or_percent(v: &Value, total: i64, round_up: bool, default: i64) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(default),
        Value::String(s) => match s
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
        {
            Some(p) if round_up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(default),
        },
        _ => default,
    }
}

/// An owner reference to `owner` of `kind`.
pub fn owner_ref(api_version: &str, kind: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}

fn revision(rs: &Value) -> i64 {
    text(rs, &["metadata", "annotations", keys::REVISION])
        .parse()
        .unwrap_or(0)
}

fn created(rs: &Value) -> String {
    text(rs, &["metadata", "creationTimestamp"]).to_owned()
}

fn set_replicas(ctx: &mut Ctx, rs: &Value, replicas: i64, annotations: &[(&str, String)]) {
    let res = ctx.kinds.replicasets.clone();
    let (ns, name) = (
        text(rs, &["metadata", "namespace"]).to_owned(),
        text(rs, &["metadata", "name"]).to_owned(),
    );
    ctx.modify(&res, &ns, &name, Part::Main, |r| {
        r["spec"]["replicas"] = json!(replicas);
        for (k, v) in annotations {
            r["metadata"]["annotations"][*k] = json!(v);
        }
    });
}

/// Reconciles one Deployment.
pub fn reconcile_deployment(ctx: &mut Ctx, ns: &str, name: &str) {
    let res = ctx.kinds.deployments.clone();
    let Some(d) = ctx.get(&res, ns, name) else {
        return;
    };
    if d["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let uid = text(&d, &["metadata", "uid"]).to_owned();
    let replicas = int(&d, &["spec", "replicas"], 1);
    let paused = d["spec"]["paused"] == json!(true);
    let template = &d["spec"]["template"];
    let rs_res = ctx.kinds.replicasets.clone();
    let mut all = ctx.owned(&uid, &rs_res);
    all.sort_by_key(created);
    let max_revision = all.iter().map(revision).max().unwrap_or(0);
    let strategy = &d["spec"]["strategy"];
    let rolling = strategy["type"] != "Recreate";
    let max_surge = if rolling {
        int_or_percent(&strategy["rollingUpdate"]["maxSurge"], replicas, true, 1)
    } else {
        0
    };
    let mut max_unavailable = if rolling {
        int_or_percent(
            &strategy["rollingUpdate"]["maxUnavailable"],
            replicas,
            false,
            0,
        )
    } else {
        replicas
    };
    if rolling && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let annotations = [
        (keys::DESIRED, replicas.to_string()),
        (keys::MAX, (replicas + max_surge).to_string()),
    ];

    let mut new_index = all
        .iter()
        .position(|rs| same_template(&rs["spec"]["template"], template));
    let mut created_new = false;
    if new_index.is_none() && !paused {
        let hash = template_hash(template);
        let mut labels = template["metadata"]["labels"].clone();
        labels[keys::TEMPLATE_HASH] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"][keys::TEMPLATE_HASH] = json!(hash);
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"] = labels.clone();
        let old_pods: i64 = all.iter().map(|rs| int(rs, &["spec", "replicas"], 0)).sum();
        let initial = if rolling {
            (replicas + max_surge - old_pods).clamp(0, replicas)
        } else if old_pods == 0 {
            replicas
        } else {
            0
        };
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                "annotations": {keys::REVISION: (max_revision + 1).to_string(), keys::DESIRED: replicas.to_string(), keys::MAX: (replicas + max_surge).to_string()},
                "ownerReferences": [owner_ref("apps/v1", "Deployment", &d)],
            },
            "spec": {"replicas": initial, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0), "selector": selector, "template": rs_template},
        });
        match ctx.store.create(&rs_res, ns, rs) {
            Ok(rs) => {
                new_index = Some(all.len());
                all.push(rs);
                created_new = true;
            }
            Err(e) => {
                tracing::warn!(namespace = ns, deployment = name, error = %e.message, "creating ReplicaSet failed")
            }
        }
    }
    let revision_now = match new_index {
        Some(i) if !created_new && revision(&all[i]) < max_revision && !paused => {
            // Back to an older template: it becomes the newest revision.
            let bumped = max_revision + 1;
            set_replicas(
                ctx,
                &all[i],
                int(&all[i], &["spec", "replicas"], 0),
                &[(keys::REVISION, bumped.to_string())],
            );
            bumped
        }
        Some(i) => revision(&all[i]),
        None => max_revision,
    };

    if !paused {
        if let Some(i) = new_index {
            let new_rs = &all[i];
            let olds: Vec<&Value> = all
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r)
                .collect();
            let new_spec = int(new_rs, &["spec", "replicas"], 0);
            if rolling {
                let total: i64 = all.iter().map(|r| int(r, &["spec", "replicas"], 0)).sum();
                if new_spec > replicas {
                    set_replicas(ctx, new_rs, replicas, &annotations);
                } else if new_spec < replicas && total < replicas + max_surge {
                    let up = (replicas + max_surge - total).min(replicas - new_spec);
                    set_replicas(ctx, new_rs, new_spec + up, &annotations);
                } else {
                    scale_down_old(ctx, &olds, new_rs, replicas, max_unavailable, total);
                }
            } else {
                let old_specs: i64 = olds.iter().map(|r| int(r, &["spec", "replicas"], 0)).sum();
                // Every old pod must be gone, terminating ones included,
                // before the first new one: the Deployment controller's
                // "old pods running" check.
                let old_pods: usize = olds
                    .iter()
                    .map(|r| ctx.pods_of(text(r, &["metadata", "uid"])).len())
                    .sum();
                if old_specs > 0 {
                    for old in &olds {
                        if int(old, &["spec", "replicas"], 0) > 0 {
                            set_replicas(ctx, old, 0, &[]);
                        }
                    }
                } else if old_pods == 0 && new_spec != replicas {
                    set_replicas(ctx, new_rs, replicas, &annotations);
                }
            }
        }
    } else if let Some(i) = new_index {
        // Paused: no rollout, but a lone current ReplicaSet follows scaling.
        let others: i64 = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| int(r, &["spec", "replicas"], 0))
            .sum();
        if others == 0 && int(&all[i], &["spec", "replicas"], 0) != replicas {
            set_replicas(ctx, &all[i], replicas, &annotations);
        }
    }
    cleanup_history(ctx, &d, &all, new_index);
    update_status(
        ctx,
        &d,
        &all,
        new_index,
        revision_now,
        created_new,
        max_unavailable,
    );
}

/// Old ReplicaSets scale down while enough pods stay available.
fn scale_down_old(
    ctx: &mut Ctx,
    olds: &[&Value],
    new_rs: &Value,
    replicas: i64,
    max_unavailable: i64,
    total: i64,
) {
    let min_available = replicas - max_unavailable;
    let new_unavailable =
        int(new_rs, &["spec", "replicas"], 0) - int(new_rs, &["status", "availableReplicas"], 0);
    let mut budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return;
    }
    let mut specs: Vec<i64> = olds
        .iter()
        .map(|r| int(r, &["spec", "replicas"], 0))
        .collect();
    // Unhealthy old pods go first: they serve nobody.
    for (i, old) in olds.iter().enumerate() {
        let unhealthy = (specs[i] - int(old, &["status", "availableReplicas"], 0)).max(0);
        let cut = unhealthy.min(budget);
        specs[i] -= cut;
        budget -= cut;
    }
    let available: i64 = olds
        .iter()
        .copied()
        .chain(std::iter::once(new_rs))
        .map(|r| int(r, &["status", "availableReplicas"], 0))
        .sum();
    let mut healthy_budget = (available - min_available).max(0);
    for (i, spec) in specs.iter_mut().enumerate() {
        let cut = (*spec)
            .min(healthy_budget)
            .min((int(olds[i], &["status", "availableReplicas"], 0)).max(0));
        *spec -= cut;
        healthy_budget -= cut;
    }
    for (old, spec) in olds.iter().zip(specs) {
        if spec != int(old, &["spec", "replicas"], 0) {
            set_replicas(ctx, old, spec, &[]);
        }
    }
}

fn cleanup_history(ctx: &mut Ctx, d: &Value, all: &[Value], new_index: Option<usize>) {
    let limit = int(d, &["spec", "revisionHistoryLimit"], 10).max(0) as usize;
    let idle: Vec<&Value> = all
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            Some(*i) != new_index
                && int(r, &["spec", "replicas"], 0) == 0
                && int(r, &["status", "replicas"], 0) == 0
        })
        .map(|(_, r)| r)
        .collect();
    if idle.len() > limit {
        let res = ctx.kinds.replicasets.clone();
        for old in &idle[..idle.len() - limit] {
            let _ = ctx.store.delete(
                &res,
                text(old, &["metadata", "namespace"]),
                text(old, &["metadata", "name"]),
                &Default::default(),
            );
        }
    }
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &str,
    update: &str,
) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message, "lastUpdateTime": update, "lastTransitionTime": now})
}

#[allow(clippy::too_many_arguments)]
fn update_status(
    ctx: &mut Ctx,
    d: &Value,
    all: &[Value],
    new_index: Option<usize>,
    revision: i64,
    created_new: bool,
    max_unavailable: i64,
) {
    let (ns, name) = (
        text(d, &["metadata", "namespace"]).to_owned(),
        text(d, &["metadata", "name"]).to_owned(),
    );
    let replicas = int(d, &["spec", "replicas"], 1);
    let sum = |f: &str| -> i64 { all.iter().map(|r| int(r, &["status", f], 0)).sum() };
    let (current, ready, available) = (
        sum("replicas"),
        sum("readyReplicas"),
        sum("availableReplicas"),
    );
    let updated = new_index.map_or(0, |i| int(&all[i], &["status", "replicas"], 0));
    let new_name = new_index.map_or(String::new(), |i| {
        text(&all[i], &["metadata", "name"]).to_owned()
    });
    let old = &d["status"];
    let now_time = ctx.now();
    let now = rfc3339(now_time);
    let complete =
        updated == replicas && available == replicas && current == replicas && new_index.is_some();
    let progressed = created_new
        || int(old, &["updatedReplicas"], 0) != updated
        || int(old, &["availableReplicas"], 0) != available
        || int(old, &["readyReplicas"], 0) != ready
        || int(old, &["observedGeneration"], 0) != int(d, &["metadata", "generation"], 1);
    let previous = old["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|x| x["type"] == "Progressing"))
        .cloned();
    let last_update = previous
        .as_ref()
        .map(|p| text(p, &["lastUpdateTime"]).to_owned())
        .unwrap_or_else(|| now.clone());
    let deadline =
        Duration::from_secs(int(d, &["spec", "progressDeadlineSeconds"], 600).max(0) as u64);
    let progressing = if d["spec"]["paused"] == json!(true) {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            &now,
            &now,
        )
    } else if complete {
        let keep = previous
            .as_ref()
            .is_some_and(|p| p["reason"] == "NewReplicaSetAvailable");
        let stamp = if keep {
            last_update.clone()
        } else {
            now.clone()
        };
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            &stamp,
            &stamp,
        )
    } else if progressed {
        let wait = ctx.real(deadline);
        ctx.after(wait, Work::Deployment(ns.clone(), name.clone()));
        let reason = if created_new {
            "NewReplicaSetCreated"
        } else {
            "ReplicaSetUpdated"
        };
        condition(
            "Progressing",
            "True",
            reason,
            format!("ReplicaSet \"{new_name}\" is progressing."),
            &now,
            &now,
        )
    } else {
        let since = parse_rfc3339(&last_update).unwrap_or(now_time);
        let stalled = now_time.duration_since(since).unwrap_or_default() >= deadline;
        match previous {
            Some(p) if stalled => condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                &now,
                text(&p, &["lastUpdateTime"]),
            ),
            Some(p) => p,
            None => condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                &now,
                &now,
            ),
        }
    };
    let is_available = available >= replicas - max_unavailable;
    let available_condition = condition(
        "Available",
        if is_available { "True" } else { "False" },
        if is_available {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if is_available {
            "Deployment has minimum availability.".into()
        } else {
            "Deployment does not have minimum availability.".into()
        },
        &now,
        &now,
    );
    let keep_transition = |c: Value| -> Value {
        let prev = old["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["type"] == c["type"]).cloned());
        match prev {
            Some(p) if p["status"] == c["status"] && p["reason"] == c["reason"] => {
                let mut c = c;
                c["lastTransitionTime"] = p["lastTransitionTime"].clone();
                if c["lastUpdateTime"] == json!(now) && p["reason"] == c["reason"] && !progressed {
                    c["lastUpdateTime"] = p["lastUpdateTime"].clone();
                }
                c
            }
            _ => c,
        }
    };
    let status = json!({
        "observedGeneration": int(d, &["metadata", "generation"], 1),
        "replicas": current, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": (replicas - available).max(0),
        "conditions": [keep_transition(available_condition), keep_transition(progressing)],
    });
    let res = ctx.kinds.deployments.clone();
    // Unchanged from what this reconcile read: nothing to write. (Had the
    // status changed since, that write's event brings another reconcile.)
    if *old != status {
        ctx.modify_status(&res, &ns, &name, |s| *s = status.clone());
    }
    if revision > 0 && text(d, &["metadata", "annotations", keys::REVISION]) != revision.to_string()
    {
        ctx.modify(&res, &ns, &name, Part::Main, |o| {
            o["metadata"]["annotations"][keys::REVISION] = json!(revision.to_string());
        });
    }
}

/// Whether a pod is Ready.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|x| x["type"] == "Ready" && x["status"] == "True")
    })
}

/// Reconciles one ReplicaSet: pods to match replicas, then status.
pub fn reconcile_replicaset(ctx: &mut Ctx, ns: &str, name: &str) {
    let res = ctx.kinds.replicasets.clone();
    // The facts first (cheap to read); the whole object only when pods
    // must be made from its template.
    let Ok(bytes) = ctx.store.get(&res, ns, name) else {
        return;
    };
    let Ok(facts) = serde_json::from_slice::<RsFacts>(&bytes) else {
        return;
    };
    if facts.metadata.deletion_timestamp.is_some() {
        return;
    }
    let replicas = facts.spec.replicas.unwrap_or(1);
    let pods_res = ctx.kinds.pods.clone();
    let mut pods: Vec<_> = ctx
        .pods_of(&facts.metadata.uid)
        .into_iter()
        .filter(|p| !p.deleting)
        .collect();
    let active = pods.len() as i64;
    if active < replicas {
        let Ok(rs) = serde_json::from_slice::<Value>(&bytes) else {
            return;
        };
        let template = &rs["spec"]["template"];
        for _ in active..replicas {
            let mut pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": template["metadata"]["labels"], "ownerReferences": [owner_ref("apps/v1", "ReplicaSet", &rs)]},
                "spec": template["spec"],
            });
            if let Some(annotations) = template["metadata"].get("annotations") {
                pod["metadata"]["annotations"] = annotations.clone();
            }
            if let Err(e) = ctx.store.create(&pods_res, ns, pod) {
                tracing::warn!(namespace = ns, replicaset = name, error = %e.message, "creating pod failed");
                break;
            }
        }
    } else if active > replicas {
        pods.sort_by_key(|p| p.rank());
        let excess = (active - replicas) as usize;
        for pod in pods.iter().take(excess) {
            let _ = ctx
                .store
                .delete(&pods_res, ns, &pod.name, &Default::default());
        }
        pods.drain(..excess);
    }
    let ready = pods.iter().filter(|p| p.ready).count();
    let status = json!({
        "replicas": pods.len(), "fullyLabeledReplicas": pods.len(), "readyReplicas": ready,
        "availableReplicas": ready, "observedGeneration": facts.metadata.generation.unwrap_or(1),
    });
    // Unchanged: nothing to write, and no need to read the whole object.
    if facts.status == status {
        return;
    }
    ctx.modify_status(&res, ns, name, |s| *s = status.clone());
}

/// What the ReplicaSet controller reads of its ReplicaSet.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RsFacts {
    metadata: RsMeta,
    spec: RsSpecFacts,
    status: Value,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RsMeta {
    uid: String,
    generation: Option<i64>,
    deletion_timestamp: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RsSpecFacts {
    replicas: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(labels: Value, image: &str) -> Value {
        json!({"metadata": {"labels": labels, "annotations": {"a": "1"}}, "spec": {"containers": [{"name": "app", "image": image}]}})
    }

    #[test]
    fn templates_that_differ_only_in_the_hash_label_are_the_same() {
        let deployment = template(json!({"app": "web"}), "web:2");
        let rs = template(json!({"app": "web", keys::TEMPLATE_HASH: "x7z"}), "web:2");
        assert!(same_template(&rs, &deployment));
        assert!(same_template(&deployment, &deployment));
    }

    #[test]
    fn templates_that_differ_in_anything_else_are_not() {
        let deployment = template(json!({"app": "web"}), "web:2");
        let other_image = template(json!({"app": "web", keys::TEMPLATE_HASH: "x7z"}), "web:1");
        let other_label = template(json!({"app": "web", "tier": "a"}), "web:2");
        let mut other_annotation = deployment.clone();
        other_annotation["metadata"]["annotations"]["a"] = json!("2");
        let mut more_spec = deployment.clone();
        more_spec["spec"]["hostname"] = json!("h");
        for other in [other_image, other_label, other_annotation, more_spec] {
            assert!(!same_template(&other, &deployment), "{other}");
            assert!(!same_template(&deployment, &other), "{other}");
        }
    }
}
