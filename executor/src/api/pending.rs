//! A bound Rollout between a change of its workload and the executor's
//! first look at it: the admission webhook held the new pod template in
//! the request that made it, but the Rollout's status still describes the
//! release before. Until the executor records the new release (one
//! reconcile later), the API shows such a Rollout as Pending, as the
//! executor is about to record it ([`crate::machine::awaiting_release`]),
//! so that `kubectl set image … && sluice rollout watch …` never reads the
//! last release's Succeeded as the outcome of the change just made, and
//! Pause, Abort and Delete act on the release that is waiting.
//!
//! Only bound Rollouts whose status ended or is in flight are looked at
//! (a newer template mid-release is a new release too), with one read of their
//! workload each (a list of the kind per namespace when many are); a
//! workload that cannot be read leaves the Rollout as stored.

use std::{collections::BTreeMap, time::SystemTime};

use futures::{StreamExt, stream};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::PodTemplateSpec,
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde_json::Value;

use crate::{
    admission::hold::pod_template as template,
    crd::{Phase, Rollout, WorkloadKind},
};

/// Beyond this many Rollouts of one kind in one namespace to look at, the
/// workloads are listed once instead of read one by one.
const READS_BEFORE_A_LIST: usize = 4;

/// Reads running at once.
const CONCURRENT_READS: usize = 8;

/// Whether `rollout` could be waiting for a change of its workload: bound,
/// and its last recorded release ended or in flight (not rolling back).
fn candidate(rollout: &Rollout) -> bool {
    rollout.spec.bound()
        && rollout.status.as_ref().is_some_and(|s| {
            !s.release.is_empty()
                && matches!(
                    s.phase,
                    Phase::Succeeded
                        | Phase::RolledBack
                        | Phase::Failed
                        | Phase::Progressing
                        | Phase::Paused
                )
        })
}

/// The pod template of the workload `rollout` binds, if it can be read.
async fn read(client: &Client, namespace: &str, rollout: &Rollout) -> Option<Value> {
    let name = &rollout.spec.workload.name;
    match rollout.spec.workload.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .map(|d| template(d.spec.as_ref().map(|s| &s.template))),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .map(|s| template(s.spec.as_ref().map(|s| &s.template))),
    }
}

/// The pod templates of every workload of `kind` in `namespace`, by name.
async fn list(client: &Client, namespace: &str, kind: WorkloadKind) -> BTreeMap<String, Value> {
    let params = ListParams::default();
    let named = |name: String, t: Option<&PodTemplateSpec>| (name, template(t));
    match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|d| named(d.name_any(), d.spec.as_ref().map(|s| &s.template)))
                    .collect()
            })
            .unwrap_or_default(),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .list(&params)
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|s| named(s.name_any(), s.spec.as_ref().map(|s| &s.template)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `rollout` as it reads with its workload's pod template `now_template`.
fn shown(mut rollout: Rollout, now_template: Option<&Value>) -> Rollout {
    let (Some(template), Some(status)) = (now_template, rollout.status.as_ref()) else {
        return rollout;
    };
    let release = crate::machine::bound_release_id(&rollout.spec, template);
    let generation = rollout.metadata.generation.unwrap_or(0);
    if let Some(next) = crate::machine::awaiting_release(
        status,
        &release,
        rollout.spec.paused,
        generation,
        SystemTime::now(),
    ) {
        rollout.status = Some(next);
    }
    rollout
}

/// `rollout` as the API shows it (see the module's documentation).
pub async fn present(client: &Client, rollout: Rollout) -> Rollout {
    if !candidate(&rollout) {
        return rollout;
    }
    let namespace = rollout.namespace().unwrap_or_default();
    let now = read(client, &namespace, &rollout).await;
    shown(rollout, now.as_ref())
}

/// Every one of `rollouts` as the API shows it, in the same order.
pub async fn present_all(client: &Client, rollouts: Vec<Rollout>) -> Vec<Rollout> {
    // The Rollouts to look at, by namespace and workload kind.
    let mut groups: BTreeMap<(String, WorkloadKind), Vec<usize>> = BTreeMap::new();
    for (i, r) in rollouts.iter().enumerate() {
        if candidate(r) {
            let key = (r.namespace().unwrap_or_default(), r.spec.workload.kind);
            groups.entry(key).or_default().push(i);
        }
    }
    let mut templates: BTreeMap<usize, Value> = BTreeMap::new();
    let mut singles = Vec::new();
    for ((namespace, kind), members) in groups {
        if members.len() > READS_BEFORE_A_LIST {
            let all = list(client, &namespace, kind).await;
            for i in members {
                if let Some(t) = all.get(&rollouts[i].spec.workload.name) {
                    templates.insert(i, t.clone());
                }
            }
        } else {
            singles.extend(members.into_iter().map(|i| (namespace.clone(), i)));
        }
    }
    let read_ones: Vec<(usize, Option<Value>)> = stream::iter(singles)
        .map(|(namespace, i)| {
            let rollout = &rollouts[i];
            async move { (i, read(client, &namespace, rollout).await) }
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect()
        .await;
    templates.extend(read_ones.into_iter().filter_map(|(i, t)| Some((i, t?))));
    rollouts
        .into_iter()
        .enumerate()
        .map(|(i, r)| shown(r, templates.get(&i)))
        .collect()
}
