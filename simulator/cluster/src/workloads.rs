//! The ReplicaSet controller, and what the workload controllers share:
//! label and annotation keys, template hashes and comparisons, owner
//! references, and lenient reads of numbers.
//!
//! A ReplicaSet keeps `replicas` pods that are not being deleted, made from
//! its template and owned by it; when it has too many, it deletes the least
//! advanced first (unscheduled, then pending, then not ready, then ready;
//! newest first among equals). Status: replicas, fullyLabeledReplicas,
//! readyReplicas, availableReplicas, observedGeneration.

use serde_json::{Value, json};

use crate::{
    Work,
    engine::{Ctx, Involved},
    views::{ReplicaSetCondition, ReplicaSetStatus, ReplicaSetView, view},
};

/// The label and annotation keys the controllers use.
pub(crate) mod keys {
    /// Label on ReplicaSets and pods.
    pub(crate) const TEMPLATE_HASH: &str = "pod-template-hash";
    /// Annotation with a rollout revision.
    pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
    /// Annotation with the Deployment's replicas, on its ReplicaSets.
    pub(crate) const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
    /// Annotation with replicas + maxSurge, on ReplicaSets.
    pub(crate) const MAX: &str = "deployment.kubernetes.io/max-replicas";
    /// The annotations of a Deployment its controller does not copy onto
    /// its new ReplicaSet (kube-controller-manager's `annotationsToSkip`):
    /// kubectl's last applied configuration, the revisions and sizes it
    /// keeps itself, and the deprecated rollback request.
    pub(crate) const NOT_COPIED: [&str; 6] = [
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        DESIRED,
        MAX,
        "deprecated.deployment.rollback.to",
    ];
}

/// The annotations of a Deployment its controller copies onto its new
/// ReplicaSet, from the Deployment's `metadata.annotations`.
pub(crate) fn copied_annotations(
    annotations: &Value,
) -> impl Iterator<Item = (&String, &Value)> + '_ {
    annotations
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !keys::NOT_COPIED.contains(&k.as_str()))
}

/// A stable short hash of a pod template, in Kubernetes' safe alphabet.
pub(crate) fn template_hash(template: &Value) -> String {
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
pub(crate) fn same_template(rs_template: &Value, template: &Value) -> bool {
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
pub(crate) fn int(v: &Value, path: &[&str], default: i64) -> i64 {
    path.iter()
        .fold(v, |v, p| &v[*p])
        .as_i64()
        .unwrap_or(default)
        // The API's counts are int32.
        .clamp(i64::from(i32::MIN), i64::from(i32::MAX))
}

/// An int-or-percent of `total`, rounded up or down.
pub(crate) fn int_or_percent(v: &Value, total: i64, round_up: bool, default: i64) -> i64 {
    let value = match v {
        Value::Number(n) => n.as_i64().map_or(i128::from(default), i128::from),
        Value::String(s) => match s
            .trim()
            .strip_suffix('%')
            .and_then(|p| p.parse::<i128>().ok())
        {
            Some(p) if round_up => (p.saturating_mul(i128::from(total)) + 99) / 100,
            Some(p) => p.saturating_mul(i128::from(total)) / 100,
            None => s.parse().unwrap_or(i128::from(default)),
        },
        _ => i128::from(default),
    };
    // The API's fields are int32: whatever was written, the arithmetic
    // done with it stays in range.
    value.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i64
}

/// An owner reference to `owner` of `kind`.
pub(crate) fn owner_ref(api_version: &str, kind: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// Whether a pod is Ready.
pub(crate) fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|x| x["type"] == "Ready" && x["status"] == "True")
    })
}

/// The ReplicaSet controller's name on its Events.
const COMPONENT: &str = "replicaset-controller";

/// The condition of a ReplicaSet that cannot make its pods.
const FAILURE: &str = "ReplicaFailure";

/// Reconciles one ReplicaSet: pods to match replicas, then status.
pub(crate) fn reconcile_replicaset(ctx: &mut Ctx, ns: &str, name: &str) {
    let res = ctx.kinds.replicasets.clone();
    // The view first (as its writer decoded it); the whole object only
    // when pods must be made from its template.
    let Ok((json, decoded)) = ctx.store.get_decoded(&res, ns, name) else {
        return;
    };
    let Ok(rs) = view::<ReplicaSetView>(&json, decoded) else {
        return;
    };
    if rs.metadata.deletion_timestamp.is_some() {
        return;
    }
    let replicas = rs.spec.replicas.unwrap_or(1).clamp(0, i64::from(i32::MAX));
    let pods_res = ctx.kinds.pods.clone();
    let mut pods: Vec<_> = ctx
        .pods_of(&rs.metadata.uid)
        .into_iter()
        .filter(|p| !p.deleting)
        .collect();
    let active = pods.len() as i64;
    let uid = rs.metadata.uid.clone();
    let about = Involved {
        kind: "ReplicaSet",
        api_version: "apps/v1",
        namespace: ns,
        name,
        uid: &uid,
    };
    // What stopped this sync's pods from being made, if anything.
    let mut failure = None;
    if active < replicas {
        let Ok(rs) = serde_json::from_slice::<Value>(&json) else {
            return;
        };
        let template = &rs["spec"]["template"];
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": template["metadata"]["labels"], "ownerReferences": [owner_ref("apps/v1", "ReplicaSet", &rs)]},
            "spec": template["spec"],
        });
        if let Some(annotations) = template["metadata"].get("annotations") {
            pod["metadata"]["annotations"] = annotations.clone();
        }
        let missing = (replicas - active) as usize;
        match ctx.store.create_copies(&pods_res, ns, pod, missing) {
            Ok(names) => {
                ctx.succeeded(|| Work::ReplicaSet(ns.to_owned(), name.to_owned()));
                for pod in names {
                    let message = format!("Created pod: {pod}");
                    ctx.event(about, false, ("SuccessfulCreate", &message), COMPONENT);
                }
            }
            Err(e) => {
                tracing::warn!(namespace = ns, replicaset = name, error = %e.message, "creating pods failed");
                let message = format!("Error creating: {}", e.message);
                ctx.event(about, true, ("FailedCreate", &message), COMPONENT);
                failure = Some(e.message);
                // Tried again later, whatever the cause (a missing
                // ServiceAccount, a webhook that refused, a quota).
                ctx.retry(Work::ReplicaSet(ns.to_owned(), name.to_owned()));
            }
        }
    } else if active > replicas {
        pods.sort_by_key(|p| p.rank());
        let excess = (active - replicas) as usize;
        for pod in pods.iter().take(excess) {
            if ctx
                .store
                .delete(&pods_res, ns, &pod.name, &Default::default())
                .is_ok()
            {
                let message = format!("Deleted pod: {}", pod.name);
                ctx.event(about, false, ("SuccessfulDelete", &message), COMPONENT);
            }
        }
        // The status below still counts the pods just deleted, as
        // kube-controller-manager's does (it counts the pods it listed
        // before deleting); their deletion brings the next sync, which
        // counts them out. A controller reading `readyReplicas` right after
        // a scale-down sees the old count, on a real cluster as here.
    }
    let (current, ready) = (
        pods.len() as i64,
        pods.iter().filter(|p| p.ready).count() as i64,
    );
    // kube-controller-manager's `ReplicaFailure`: set (as first seen)
    // while making pods fails, taken off by the first sync that does not.
    let conditions = match (
        failure,
        rs.status.conditions.iter().find(|c| c.kind == FAILURE),
    ) {
        (Some(_), Some(kept)) => vec![kept.clone()],
        (Some(message), None) => vec![ReplicaSetCondition {
            kind: FAILURE.into(),
            status: "True".into(),
            last_transition_time: sluice_sim_api::time::rfc3339(ctx.now()),
            reason: "FailedCreate".into(),
            message,
        }],
        (None, _) => Vec::new(),
    };
    let status = ReplicaSetStatus {
        replicas: current,
        fully_labeled_replicas: Some(current),
        ready_replicas: ready,
        available_replicas: ready,
        observed_generation: Some(rs.metadata.generation.unwrap_or(1)),
        conditions,
    };
    // Unchanged: nothing to write.
    if rs.status == status {
        return;
    }
    if let Ok(status) = serde_json::to_value(&status) {
        ctx.set_status(&res, ns, name, &status);
    }
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
