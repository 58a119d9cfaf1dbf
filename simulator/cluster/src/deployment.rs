//! The Deployment controller, with Kubernetes' semantics.
//!
//! - ReplicaSets are named `<deployment>-<pod-template-hash>`; the hash is of
//!   the pod template, and labels the ReplicaSet's selector and pods.
//! - RollingUpdate scales the new ReplicaSet up to `replicas + maxSurge` pods
//!   in all, and old ones down while at least `replicas - maxUnavailable`
//!   pods are available (maxSurge rounds up, maxUnavailable down; both 0
//!   means maxUnavailable 1), unhealthy old pods first. Recreate scales the
//!   old ones to 0 and waits for their pods to go before scaling the new one.
//! - A paused Deployment starts no rollout: a changed template makes no new
//!   ReplicaSet until it is resumed. It is still scaled, and so is one
//!   whose `replicas` differ from a ReplicaSet's `desired-replicas`
//!   annotation, exactly as kube-controller-manager's `scale` does: a lone
//!   ReplicaSet with pods goes to `replicas`; a saturated new one sends the
//!   old ones to 0; otherwise, for RollingUpdate, `replicas + maxSurge` is
//!   spread over the ReplicaSets with pods in proportion to their size and
//!   their `max-replicas` annotation, largest first (see [`scale`]). A
//!   controller that moves a paused Deployment's ReplicaSets itself meets
//!   this here as it would on a real cluster.
//! - Revisions: `deployment.kubernetes.io/revision` on each ReplicaSet and
//!   the Deployment; rolling back to an old template gives it the next one.
//! - Status: replicas, updated, ready, available, unavailable,
//!   observedGeneration; conditions Available and Progressing (with
//!   ProgressDeadlineExceeded when no progress was made for
//!   progressDeadlineSeconds).
//!
//! A Deployment is reconciled each time one of its ReplicaSets' status
//! changes, so the controller reads typed views of the Deployment and its
//! ReplicaSets that leave their pod templates unparsed. A template is
//! parsed only to make a ReplicaSet from it, or to find the Deployment's
//! new ReplicaSet when the [`NewReplicaSets`] memo cannot say which it is.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    engine::{Ctx, Involved, Work},
    views::{DeploymentView, ReplicaSetStatus, ReplicaSetView, view},
    workloads::{
        copied_annotations, int, int_or_percent, keys, owner_ref, same_template, template_hash,
    },
};
use sluice_sim_api::{
    store::Part,
    time::{parse_rfc3339, rfc3339},
};

/// A ReplicaSet the controller read: its view, and its JSON to parse the
/// template from when it is needed (none for one this reconcile made).
struct Rs {
    view: Arc<ReplicaSetView>,
    json: Option<Arc<[u8]>>,
}

impl std::ops::Deref for Rs {
    type Target = ReplicaSetView;
    fn deref(&self) -> &ReplicaSetView {
        &self.view
    }
}

impl Rs {
    /// Its pod template, parsed.
    fn template(&self) -> Value {
        self.json
            .as_deref()
            .and_then(|json| serde_json::from_slice::<Value>(json).ok())
            .map(|mut rs| rs["spec"]["template"].take())
            .unwrap_or_default()
    }
}

/// Which ReplicaSet is each Deployment's new one, as last found.
///
/// A finding holds while neither template can have changed: a template
/// lives in its object's spec, so it changes only with the object's
/// generation. Keyed by namespace and name, and checked against the
/// Deployment's uid, so that a Deployment made again under the same name
/// starts afresh; forgotten when its Deployment is gone.
#[derive(Debug, Default)]
pub struct NewReplicaSets {
    found: HashMap<(String, String), Finding>,
}

#[derive(Debug)]
struct Finding {
    deployment_uid: String,
    deployment_generation: Option<i64>,
    rs_uid: String,
    rs_generation: Option<i64>,
}

impl NewReplicaSets {
    fn lookup(&self, d: &DeploymentView, all: &[Rs]) -> Option<usize> {
        let m = &d.metadata;
        let found = self.found.get(&(m.namespace.clone(), m.name.clone()))?;
        if found.deployment_uid != m.uid || found.deployment_generation != m.generation {
            return None;
        }
        all.iter().position(|rs| {
            rs.metadata.uid == found.rs_uid && rs.metadata.generation == found.rs_generation
        })
    }

    fn remember(&mut self, d: &DeploymentView, rs: &Rs) {
        let m = &d.metadata;
        self.found.insert(
            (m.namespace.clone(), m.name.clone()),
            Finding {
                deployment_uid: m.uid.clone(),
                deployment_generation: m.generation,
                rs_uid: rs.metadata.uid.clone(),
                rs_generation: rs.metadata.generation,
            },
        );
    }

    fn forget(&mut self, namespace: &str, name: &str) {
        self.found.remove(&(namespace.to_owned(), name.to_owned()));
    }
}

/// The ReplicaSets the Deployment with `uid` controls, oldest first.
fn replicasets_of(ctx: &Ctx, uid: &str) -> Vec<Rs> {
    let res = &ctx.kinds.replicasets;
    let mut all: Vec<Rs> = ctx
        .store
        .dependents(uid)
        .into_iter()
        .filter(|d| d.resource.0 == res.group && d.resource.1 == res.plural)
        .filter_map(|d| {
            let view = view::<ReplicaSetView>(&d.json, d.decoded).ok()?;
            Some(Rs {
                view,
                json: Some(d.json),
            })
        })
        .collect();
    all.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    all
}

fn set_replicas(ctx: &mut Ctx, rs: &ReplicaSetView, replicas: i64, annotations: &[(&str, String)]) {
    let res = ctx.kinds.replicasets.clone();
    let m = &rs.metadata;
    ctx.modify(&res, &m.namespace, &m.name, Part::Main, |r| {
        r["spec"]["replicas"] = json!(replicas);
        for (k, v) in annotations {
            r["metadata"]["annotations"][*k] = json!(v);
        }
    });
    let before = rs.spec.replicas.unwrap_or(1);
    if let Some(owner) = m.owner_references.iter().find(|o| o.kind == "Deployment")
        && before != replicas
    {
        let way = if replicas > before { "up" } else { "down" };
        let about = Involved {
            kind: "Deployment",
            api_version: "apps/v1",
            namespace: &m.namespace,
            name: &owner.name,
            uid: &owner.uid,
        };
        let message = format!(
            "Scaled {way} replica set {} from {before} to {replicas}",
            m.name
        );
        ctx.event(
            about,
            false,
            ("ScalingReplicaSet", &message),
            "deployment-controller",
        );
    }
}

/// Writes the annotations of the Deployment `whole` that its controller
/// copies onto `rs`, its new ReplicaSet, where they differ.
fn copy_annotations(ctx: &mut Ctx, rs: &ReplicaSetView, whole: &Value) {
    let res = ctx.kinds.replicasets.clone();
    let m = &rs.metadata;
    ctx.modify(&res, &m.namespace, &m.name, Part::Main, |r| {
        for (k, v) in copied_annotations(&whole["metadata"]["annotations"]) {
            if r["metadata"]["annotations"][k.as_str()] != *v {
                r["metadata"]["annotations"][k.as_str()] = v.clone();
            }
        }
    });
}

/// The whole Deployment, parsed on first need.
struct Whole<'a> {
    json: &'a [u8],
    value: Option<Value>,
}

impl Whole<'_> {
    fn get(&mut self) -> &Value {
        let json = self.json;
        self.value
            .get_or_insert_with(|| serde_json::from_slice(json).unwrap_or_default())
    }
}

/// The position of the Deployment's new ReplicaSet (whose template is the
/// Deployment's, whoever made it), from the memo or by comparing templates.
fn find_new(ctx: &mut Ctx, d: &DeploymentView, whole: &mut Whole, all: &[Rs]) -> Option<usize> {
    if let Some(i) = ctx.new_replicasets.lookup(d, all) {
        return Some(i);
    }
    let template = &whole.get()["spec"]["template"];
    let i = all
        .iter()
        .position(|rs| same_template(&rs.template(), template))?;
    ctx.new_replicasets.remember(d, &all[i]);
    Some(i)
}

/// Reconciles one Deployment.
pub(crate) fn reconcile_deployment(ctx: &mut Ctx, ns: &str, name: &str) {
    let res = ctx.kinds.deployments.clone();
    let Ok((json, decoded)) = ctx.store.get_decoded(&res, ns, name) else {
        ctx.new_replicasets.forget(ns, name);
        return;
    };
    let d = match view::<DeploymentView>(&json, decoded) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(namespace = ns, deployment = name, error = %e, "unreadable Deployment");
            return;
        }
    };
    if d.metadata.deletion_timestamp.is_some() {
        return;
    }
    let mut whole = Whole {
        json: &json,
        value: None,
    };
    let replicas = d.spec.replicas.unwrap_or(1).clamp(0, i64::from(i32::MAX));
    let paused = d.spec.paused == Some(true);
    let mut all = replicasets_of(ctx, &d.metadata.uid);
    let max_revision = all.iter().map(|rs| rs.metadata.revision()).max();
    let max_revision = max_revision.unwrap_or(0);
    let strategy = &d.spec.strategy;
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

    let mut new_index = find_new(ctx, &d, &mut whole, &all);
    let mut created_new = false;
    if new_index.is_none() && !paused {
        let old_pods: i64 = all.iter().map(|r| r.replicas()).sum();
        let initial = if rolling {
            (replicas + max_surge - old_pods).clamp(0, replicas)
        } else if old_pods == 0 {
            replicas
        } else {
            0
        };
        let rs = new_replicaset(&d, whole.get(), initial, max_revision + 1, max_surge);
        match ctx.store.create(&ctx.kinds.replicasets, ns, rs) {
            Ok(rs) => {
                if initial > 0 {
                    let about = Involved {
                        kind: "Deployment",
                        api_version: "apps/v1",
                        namespace: ns,
                        name: &d.metadata.name,
                        uid: &d.metadata.uid,
                    };
                    let message = format!(
                        "Scaled up replica set {} from 0 to {initial}",
                        rs["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    ctx.event(
                        about,
                        false,
                        ("ScalingReplicaSet", &message),
                        "deployment-controller",
                    );
                }
                // Found as the new one already: its template is not
                // looked up again in this reconcile.
                let made = Rs {
                    view: Arc::new(ReplicaSetView::deserialize(&rs).unwrap_or_default()),
                    json: None,
                };
                ctx.new_replicasets.remember(&d, &made);
                new_index = Some(all.len());
                all.push(made);
                created_new = true;
            }
            Err(e) => {
                tracing::warn!(namespace = ns, deployment = name, error = %e.message, "creating ReplicaSet failed")
            }
        }
    }
    let revision_now = match new_index {
        Some(i) if !created_new && all[i].metadata.revision() < max_revision && !paused => {
            // Back to an older template: it becomes the newest revision.
            let bumped = max_revision + 1;
            set_replicas(
                ctx,
                &all[i],
                all[i].replicas(),
                &[(keys::REVISION, bumped.to_string())],
            );
            bumped
        }
        Some(i) => all[i].metadata.revision(),
        None => max_revision,
    };

    // The new set carries the Deployment's annotations, paused or not, as
    // kube-controller-manager's sync of an existing new ReplicaSet copies
    // them (adding and overwriting; one the Deployment lost stays).
    if let Some(i) = new_index
        && !created_new
        && all[i].metadata.annotations.copied != d.metadata.annotations.copied
    {
        copy_annotations(ctx, &all[i], whole.get());
    }

    // The Deployment controller's "scaling event": a ReplicaSet with pods
    // was sized for other replicas than the Deployment's now.
    let scaling_event = all.iter().any(|rs| {
        rs.replicas() > 0
            && rs
                .metadata
                .annotations
                .desired
                .as_deref()
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|desired| desired != replicas)
    });
    if new_index.is_none() && paused {
        scale(ctx, &d, &all, None, rolling, max_surge);
    }
    if let Some(i) = new_index {
        let new_rs = &all[i];
        let olds: Vec<&Rs> = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| r)
            .collect();
        let new_spec = new_rs.replicas();
        if paused || scaling_event {
            scale(ctx, &d, &all, Some(i), rolling, max_surge);
        } else if rolling {
            let total: i64 = all.iter().map(|r| r.replicas()).sum();
            if new_spec > replicas {
                set_replicas(ctx, new_rs, replicas, &annotations);
            } else if new_spec < replicas && total < replicas + max_surge {
                let up = (replicas + max_surge - total).min(replicas - new_spec);
                set_replicas(ctx, new_rs, new_spec + up, &annotations);
            } else {
                scale_down_old(
                    ctx,
                    &olds,
                    new_rs,
                    replicas,
                    max_unavailable,
                    total,
                    &annotations,
                );
            }
        } else {
            let old_specs: i64 = olds.iter().map(|r| r.replicas()).sum();
            // Every old pod must be gone, terminating ones included, before
            // the first new one: the Deployment controller's "old pods
            // running" check.
            let old_pods: usize = olds
                .iter()
                .map(|r| ctx.pods_of(&r.metadata.uid).len())
                .sum();
            if old_specs > 0 {
                for old in olds.iter().filter(|r| r.replicas() > 0) {
                    set_replicas(ctx, old, 0, &annotations);
                }
            } else if old_pods == 0 && new_spec != replicas {
                set_replicas(ctx, new_rs, replicas, &annotations);
            }
        }
    }
    cleanup_history(ctx, &d, &all, new_index);
    let rollout = Rollout {
        all: &all,
        new_index,
        revision: revision_now,
        created_new,
        max_unavailable,
    };
    update_status(ctx, &d, &rollout);
}

/// A new ReplicaSet for the Deployment `whole`'s template.
fn new_replicaset(
    d: &DeploymentView,
    whole: &Value,
    initial: i64,
    revision: i64,
    max_surge: i64,
) -> Value {
    let template = &whole["spec"]["template"];
    let replicas = d.spec.replicas.unwrap_or(1).clamp(0, i64::from(i32::MAX));
    let hash = template_hash(template);
    let mut labels = template["metadata"]["labels"].clone();
    labels[keys::TEMPLATE_HASH] = json!(hash);
    let mut selector = whole["spec"]["selector"].clone();
    selector["matchLabels"][keys::TEMPLATE_HASH] = json!(hash);
    let mut rs_template = template.clone();
    rs_template["metadata"]["labels"] = labels.clone();
    // The Deployment's own annotations (a change-cause, a tool's marks)
    // come along, as kube-controller-manager copies them.
    let mut annotations: serde_json::Map<String, Value> =
        copied_annotations(&whole["metadata"]["annotations"])
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    annotations.insert(keys::REVISION.into(), json!(revision.to_string()));
    annotations.insert(keys::DESIRED.into(), json!(replicas.to_string()));
    annotations.insert(keys::MAX.into(), json!((replicas + max_surge).to_string()));
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", d.metadata.name), "namespace": d.metadata.namespace, "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_ref("apps/v1", "Deployment", whole)],
        },
        "spec": {"replicas": initial, "minReadySeconds": d.spec.min_ready_seconds.unwrap_or(0), "selector": selector, "template": rs_template},
    })
}

/// Old ReplicaSets scale down while enough pods stay available.
fn scale_down_old(
    ctx: &mut Ctx,
    olds: &[&Rs],
    new_rs: &Rs,
    replicas: i64,
    max_unavailable: i64,
    total: i64,
    annotations: &[(&str, String)],
) {
    let min_available = replicas - max_unavailable;
    let new_unavailable = new_rs.replicas() - new_rs.status.available_replicas;
    let mut budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return;
    }
    let mut specs: Vec<i64> = olds.iter().map(|r| r.replicas()).collect();
    // Unhealthy old pods go first: they serve nobody.
    for (spec, old) in specs.iter_mut().zip(olds) {
        let unhealthy = (*spec - old.status.available_replicas).max(0);
        let cut = unhealthy.min(budget);
        *spec -= cut;
        budget -= cut;
    }
    let available: i64 = olds
        .iter()
        .copied()
        .chain(std::iter::once(new_rs))
        .map(|r| r.status.available_replicas)
        .sum();
    let mut healthy_budget = (available - min_available).max(0);
    for (spec, old) in specs.iter_mut().zip(olds) {
        let cut = (*spec)
            .min(healthy_budget)
            .min(old.status.available_replicas.max(0));
        *spec -= cut;
        healthy_budget -= cut;
    }
    for (old, spec) in olds.iter().zip(specs) {
        if spec != old.replicas() {
            set_replicas(ctx, old, spec, annotations);
        }
    }
}

/// kube-controller-manager's `scale` of a Deployment (run when it is paused
/// or its replicas changed), step for step, so that what fights it on a
/// real cluster fights it here: `all` oldest first, `new_index` the one
/// with the Deployment's template, if any.
fn scale(
    ctx: &mut Ctx,
    d: &DeploymentView,
    all: &[Rs],
    new_index: Option<usize>,
    rolling: bool,
    max_surge: i64,
) {
    let replicas = d.spec.replicas.unwrap_or(1).clamp(0, i64::from(i32::MAX));
    let annotations = [
        (keys::DESIRED, replicas.to_string()),
        (keys::MAX, (replicas + max_surge).to_string()),
    ];
    let active: Vec<usize> = (0..all.len()).filter(|&i| all[i].replicas() > 0).collect();
    // One ReplicaSet with pods (or none: the new one, else the newest)
    // takes every replica.
    let lone = match active.as_slice() {
        [] => new_index.or(all.len().checked_sub(1)),
        [only] => Some(*only),
        _ => None,
    };
    if let Some(i) = lone {
        if all[i].replicas() != replicas {
            set_replicas(ctx, &all[i], replicas, &annotations);
        }
        return;
    }
    if let Some(n) = new_index {
        let new_rs = &all[n];
        let desired = new_rs.metadata.annotations.desired.as_deref();
        let saturated = new_rs.replicas() == replicas
            && desired.and_then(|v| v.parse::<i64>().ok()) == Some(replicas)
            && new_rs.status.available_replicas == replicas;
        if saturated {
            for &i in active.iter().filter(|&&i| i != n) {
                set_replicas(ctx, &all[i], 0, &annotations);
            }
            return;
        }
    }
    if !rolling {
        return;
    }
    let allowed = if replicas > 0 {
        replicas + max_surge
    } else {
        0
    };
    let to_add = allowed - active.iter().map(|&i| all[i].replicas()).sum::<i64>();
    let mut order = active;
    // Largest first; ties go newest first when adding, oldest first when
    // removing (`all` is oldest first).
    if to_add > 0 {
        order.sort_by(|&a, &b| all[b].replicas().cmp(&all[a].replicas()).then(b.cmp(&a)));
    } else if to_add < 0 {
        order.sort_by(|&a, &b| all[b].replicas().cmp(&all[a].replicas()).then(a.cmp(&b)));
    }
    // The Deployment's own count, for a set without `max-replicas`.
    let status_replicas = || {
        serde_json::from_str::<Value>(&d.status)
            .ok()
            .and_then(|s| s["replicas"].as_i64())
            .unwrap_or(0)
    };
    let mut added = 0;
    let mut sizes: Vec<i64> = Vec::with_capacity(order.len());
    for &i in &order {
        let rs = &all[i];
        let size = rs.replicas();
        let proportion = if to_add == 0 || to_add == added || size == 0 {
            0
        } else {
            let fraction = if replicas == 0 {
                -size
            } else {
                let before = rs
                    .metadata
                    .annotations
                    .max
                    .as_deref()
                    .and_then(|v| v.parse::<i64>().ok())
                    .filter(|&m| m != 0)
                    .unwrap_or_else(status_replicas);
                if before == 0 {
                    0
                } else {
                    ((size * (replicas + max_surge)) as f64 / before as f64).round() as i64 - size
                }
            };
            let left = to_add - added;
            if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            }
        };
        added += proportion;
        sizes.push(size + proportion);
    }
    for (k, &i) in order.iter().enumerate() {
        let mut size = sizes[k];
        if k == 0 && to_add != 0 {
            size = (size + to_add - added).max(0);
        }
        let rs = &all[i];
        let stale = |v: &Option<String>, want: i64| v.as_deref() != Some(want.to_string().as_str());
        if size != rs.replicas()
            || stale(&rs.metadata.annotations.desired, replicas)
            || stale(&rs.metadata.annotations.max, replicas + max_surge)
        {
            set_replicas(ctx, rs, size, &annotations);
        }
    }
}

/// Old ReplicaSets with nothing left in them, past the history limit, go.
fn cleanup_history(ctx: &mut Ctx, d: &DeploymentView, all: &[Rs], new_index: Option<usize>) {
    let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let idle: Vec<&Rs> = all
        .iter()
        .enumerate()
        .filter(|(i, r)| Some(*i) != new_index && r.replicas() == 0 && r.status.replicas == 0)
        .map(|(_, r)| r)
        .collect();
    if idle.len() > limit {
        let res = ctx.kinds.replicasets.clone();
        for old in &idle[..idle.len() - limit] {
            let m = &old.metadata;
            let _ = ctx
                .store
                .delete(&res, &m.namespace, &m.name, &Default::default());
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

/// Where a reconcile left the Deployment's ReplicaSets.
struct Rollout<'a> {
    all: &'a [Rs],
    new_index: Option<usize>,
    /// The new ReplicaSet's revision.
    revision: i64,
    created_new: bool,
    max_unavailable: i64,
}

fn update_status(ctx: &mut Ctx, d: &DeploymentView, rollout: &Rollout) {
    let Rollout { all, .. } = rollout;
    let (ns, name) = (&d.metadata.namespace, &d.metadata.name);
    let generation = d.metadata.generation.unwrap_or(1);
    let replicas = d.spec.replicas.unwrap_or(1).clamp(0, i64::from(i32::MAX));
    let sum = |f: fn(&ReplicaSetStatus) -> i64| -> i64 { all.iter().map(|r| f(&r.status)).sum() };
    let (current, ready, available) = (
        sum(|s| s.replicas),
        sum(|s| s.ready_replicas),
        sum(|s| s.available_replicas),
    );
    let new_rs = rollout.new_index.map(|i| &all[i]);
    let updated = new_rs.map_or(0, |rs| rs.status.replicas);
    let new_name = new_rs.map_or("", |rs| rs.metadata.name.as_str());
    let old: Value = serde_json::from_str(&d.status).unwrap_or_default();
    let old = &old;
    let now_time = ctx.now();
    let now = rfc3339(now_time);
    let complete = updated == replicas && available == replicas && current == replicas;
    let complete = complete && new_rs.is_some();
    let progressed = rollout.created_new
        || int(old, &["updatedReplicas"], 0) != updated
        || int(old, &["availableReplicas"], 0) != available
        || int(old, &["readyReplicas"], 0) != ready
        || int(old, &["observedGeneration"], 0) != generation;
    let previous = old["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|x| x["type"] == "Progressing"))
        .cloned();
    let last_update = previous
        .as_ref()
        .and_then(|p| p["lastUpdateTime"].as_str())
        .map_or_else(|| now.clone(), str::to_owned);
    let deadline = d
        .spec
        .progress_deadline_seconds
        .unwrap_or(600)
        .clamp(0, i64::from(i32::MAX));
    let deadline = Duration::from_secs(deadline as u64);
    let progressing = if d.spec.paused == Some(true) {
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
        let reason = if rollout.created_new {
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
                p["lastUpdateTime"].as_str().unwrap_or_default(),
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
    let is_available = available >= replicas - rollout.max_unavailable;
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
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": current, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": (replicas - available).max(0),
        "conditions": [keep_transition(available_condition), keep_transition(progressing)],
    });
    // Go leaves these out at zero (`omitempty`), so kube-controller-manager
    // never writes `availableReplicas: 0`.
    if let Some(map) = status.as_object_mut() {
        map.retain(|_, v| v.as_i64() != Some(0));
    }
    let res = ctx.kinds.deployments.clone();
    // Unchanged from what this reconcile read: nothing to write. (Had the
    // status changed since, that write's event brings another reconcile.)
    if *old != status {
        ctx.set_status(&res, ns, name, &status);
    }
    let revision = rollout.revision;
    if revision > 0 && d.metadata.revision() != revision {
        ctx.modify(&res, ns, name, Part::Main, |o| {
            o["metadata"]["annotations"][keys::REVISION] = json!(revision.to_string());
        });
    }
}
