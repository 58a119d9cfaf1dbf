//! Partition-style releases of a Deployment: the native controller is held
//! and the executor moves pods between the stable and the new ReplicaSet
//! batch by batch, never above `replicas + maxSurge` pods and never below
//! `replicas - maxUnavailable` available ones. At the end the Deployment is
//! given back with the new template, finds the new ReplicaSet by template,
//! and has nothing left to do; every annotation the executor added is
//! removed.
//!
//! The hold is two fields. `spec.paused: true` stops the Deployment
//! controller from rolling out the new template itself. That alone is not
//! enough on a real cluster: kube-controller-manager still scales a paused
//! Deployment, and for a RollingUpdate strategy it spreads
//! `replicas + maxSurge` pods proportionally over every ReplicaSet with
//! pods whenever their sum differs from it, which undoes each batch the
//! executor sets (the sum differs between its two writes). So the hold
//! also sets `spec.strategy` to `Recreate`, which that controller never
//! scales proportionally (it only scales a lone ReplicaSet with pods to
//! `replicas`, or old ones to 0 once the new one is saturated, both of
//! which agree with a release going forward; going back, the new set's
//! `desired-replicas` is first set to the batch, see `move_pods` and
//! `roll_back`). The strategy as the user wrote it is kept
//! in the `sluice.dev/original-strategy` annotation, its maxSurge and
//! maxUnavailable still bound every move, and it is written back when the
//! Deployment is given back.

use std::sync::Arc;

use super::Action;
use k8s_openapi::{
    api::apps::v1::{Deployment, DeploymentStrategy, ReplicaSet},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch},
};
use serde_json::{Value, json};
use sluice_model::{quantity::Amount, spec::Quantity};
use sluice_proto::v1 as pb;

use super::{
    Ctx, Error, fail, steps,
    traffic::{Pins, Traffic},
};
use crate::{
    crd::{Rollout, RolloutStatus},
    keys,
    machine::{Progress, Start},
};

/// A ReplicaSet's pod template without its `pod-template-hash` label.
pub(super) fn template_of(rs: &ReplicaSet) -> Value {
    let mut t = serde_json::to_value(rs.spec.as_ref().and_then(|s| s.template.clone()))
        .unwrap_or(Value::Null);
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(keys::TEMPLATE_HASH);
    }
    t
}

pub(super) fn deployment_template(d: &Deployment) -> Value {
    serde_json::to_value(d.spec.as_ref().map(|s| s.template.clone())).unwrap_or(Value::Null)
}

/// The template the rollout asks for.
pub(super) fn desired_template(current: &Value, rollout: &Rollout) -> Value {
    if let Some(t) = &rollout.spec.template {
        return t.clone();
    }
    let mut t = current.clone();
    for key in ["initContainers", "containers"] {
        // Read without indexing: indexing a JSON object to write would add
        // the key, and change the template.
        let Some(containers) = t
            .get_mut("spec")
            .and_then(|s| s.get_mut(key))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers {
            if let Some(update) = rollout
                .spec
                .images
                .iter()
                .find(|u| c["name"] == u.container.as_str())
            {
                c["image"] = json!(update.image);
            }
        }
    }
    t
}

/// Why `rollout`'s images cannot apply to `template`: the containers it
/// names that the template does not have, with those it has.
pub(super) fn missing_containers(template: &Value, rollout: &Rollout) -> Option<String> {
    let has: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| template["spec"][k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let missing: Vec<String> = rollout
        .spec
        .images
        .iter()
        .enumerate()
        .filter(|(_, u)| !has.contains(&u.container.as_str()))
        .map(|(i, u)| format!("spec.images[{i}].container {:?}", u.container))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{}: {} {:?} has no such container (it has: {})",
            missing.join(", "),
            rollout.spec.workload.kind_name(),
            rollout.spec.workload.name,
            has.join(", ")
        )
    })
}

/// A short stable hash of a template, in the alphabet Kubernetes uses for names.
fn hash(template: &Value) -> String {
    sluice_model::digest::template_hash(template)
}

/// A list of the ReplicaSets a Deployment's selector may own: its
/// `matchLabels` as a label selector, so the API server sends only those.
pub(super) fn owned_candidates(d: &Deployment) -> ListParams {
    let labels = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    if labels.is_empty() {
        ListParams::default()
    } else {
        ListParams::default().labels(&labels)
    }
}

/// The Deployment's strategy as the user wrote it: the one a release keeps
/// aside while it holds the Deployment, else the current one.
fn user_strategy(d: &Deployment) -> Option<DeploymentStrategy> {
    match d.annotations().get(keys::ORIGINAL_STRATEGY) {
        Some(saved) => serde_json::from_str(saved).ok(),
        None => d.spec.as_ref().and_then(|s| s.strategy.clone()),
    }
}

/// A Deployment's maxSurge as written ("25%" when unset), for the planner.
pub(super) fn max_surge_text(d: &Deployment) -> String {
    match user_strategy(d)
        .and_then(|s| s.rolling_update)
        .and_then(|r| r.max_surge)
    {
        Some(IntOrString::Int(i)) => i.to_string(),
        Some(IntOrString::String(s)) => s,
        None => "25%".into(),
    }
}

/// A Deployment's maxSurge or maxUnavailable (25% when unset), read the
/// way the planner reads its quantities; unreadable text allows nothing.
pub(super) fn allowance(v: Option<&IntOrString>) -> Amount {
    let quantity = match v {
        Some(IntOrString::Int(i)) => Quantity::Number(i64::from(*i)),
        Some(IntOrString::String(s)) => Quantity::Text(s.clone()),
        None => Quantity::Text("25%".into()),
    };
    Amount::read(&quantity).unwrap_or(Amount::Count(0))
}

fn spec_replicas(rs: &ReplicaSet) -> u32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(0)
        .max(0) as u32
}

fn ready(rs: &ReplicaSet) -> u32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        .max(0) as u32
}

fn pods(rs: &ReplicaSet) -> u32 {
    rs.status.as_ref().map_or(0, |s| s.replicas).max(0) as u32
}

/// The revision of the one ReplicaSet of `owned` with pods (or wanting
/// some), when all `replicas` of them are ready.
pub(super) fn sole_revision(owned: &[Arc<ReplicaSet>], replicas: u32) -> Option<String> {
    let mut with_pods = owned
        .iter()
        .filter(|rs| spec_replicas(rs) > 0 || pods(rs) > 0);
    match (with_pods.next(), with_pods.next()) {
        (Some(rs), None) if replicas > 0 && ready(rs) >= replicas => {
            Some(hash_of(rs)).filter(|h| !h.is_empty())
        }
        _ => None,
    }
}

fn hash_of(rs: &ReplicaSet) -> String {
    rs.labels()
        .get(keys::TEMPLATE_HASH)
        .cloned()
        .unwrap_or_default()
}

/// The Deployment and its ReplicaSets from the controller's cache: the
/// release's own sets once it knows both revisions (a Deployment's
/// ReplicaSets are named `<deployment>-<pod-template-hash>`), every set it
/// owns before that or once the release ended. `None` until the caches hold the Deployment.
fn cached(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    status: &RolloutStatus,
) -> Option<(Arc<Deployment>, Vec<Arc<ReplicaSet>>)> {
    let cache = ctx.cache()?;
    let deployment = cache.deployment(ns, name)?;
    let uid = deployment.uid()?;
    if !in_flight(status) || status.canary_revision.is_empty() {
        // Before the release has named its sets (or after it ended, when
        // the next change may bring back any set): every set the Deployment
        // owns, as the watch knows them (a write that depends on them
        // carries the resourceVersion read, so a lagging cache conflicts).
        // A set the watch keeps only the metadata of, with no fresh copy
        // read, makes the whole read go to the API server.
        let owned = cache
            .owned
            .names(&uid)
            .iter()
            .map(|set| cache.replicaset(ns, set))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .filter(|rs| rs.owner_references().iter().any(|o| o.uid == uid))
            .collect();
        return Some((deployment, owned));
    }
    let find = |hash: &String| {
        ctx.replicaset(&cache, ns, &format!("{name}-{hash}"))
            .filter(|rs| rs.owner_references().iter().any(|o| o.uid == uid))
    };
    let mut owned = [&status.stable_revision, &status.canary_revision]
        .into_iter()
        .map(find)
        .collect::<Option<Vec<_>>>()?;
    // A superseded version's set may be gone already.
    owned.extend(status.retired_revisions.iter().filter_map(find));
    Some((deployment, owned))
}

#[derive(Clone)]
struct Workload {
    client: kube::Client,
    deployments: Api<Deployment>,
    replicasets: Api<ReplicaSet>,
    deployment: Arc<Deployment>,
    owned: Vec<Arc<ReplicaSet>>,
    replicas: u32,
    surge: u32,
    unavailable: u32,
    max_surge_text: String,
    /// The Rollout is bound to the Deployment: the new version is the
    /// Deployment's own template, changed by the user.
    bound: bool,
    /// Where the objects the release writes are remembered as written,
    /// for the next reconcile to read before the watch shows them.
    fetched: Option<super::cache::Fetched>,
    /// ReplicaSet writes made through this view (counted to tell whether
    /// a look moved pods).
    writes: Arc<std::sync::atomic::AtomicU32>,
}

impl Workload {
    async fn load(
        ctx: &Ctx,
        ns: &str,
        rollout: &Rollout,
        status: &RolloutStatus,
    ) -> Result<Option<Self>, Error> {
        let name = rollout.spec.workload.name.as_str();
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
        let replicasets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
        let (deployment, owned) = match cached(ctx, ns, name, status) {
            Some(found) => found,
            None => {
                tracing::debug!(
                    rollout = %rollout.name_any(),
                    in_flight = in_flight(status),
                    "the workload read from the API server"
                );
                let Some(deployment) = deployments.get_opt(name).await? else {
                    return Ok(None);
                };
                let uid = deployment.uid().unwrap_or_default();
                let owned: Vec<Arc<ReplicaSet>> = replicasets
                    .list(&owned_candidates(&deployment))
                    .await?
                    .items
                    .into_iter()
                    .filter(|rs| rs.owner_references().iter().any(|o| o.uid == uid))
                    .map(Arc::new)
                    .collect();
                let deployment = Arc::new(deployment);
                // Remembered until the watch brings them whole: the
                // workload was not named when the watch last saw it.
                if let Some(cache) = ctx.cache() {
                    cache.fetched.put(&deployment, &owned);
                }
                (deployment, owned)
            }
        };
        let spec = deployment.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
        let rolling = user_strategy(&deployment)
            .and_then(|s| s.rolling_update)
            .unwrap_or_default();
        // Kubernetes rounds maxSurge up and maxUnavailable down, and does
        // not cap a count at the replicas.
        let surge = match allowance(rolling.max_surge.as_ref()) {
            Amount::Count(c) => c,
            percent => percent.pods_ceil(replicas),
        };
        let unavailable = allowance(rolling.max_unavailable.as_ref()).pods_floor(replicas);
        let max_surge_text = max_surge_text(&deployment);
        Ok(Some(Self {
            client: ctx.client.clone(),
            deployments,
            replicasets,
            deployment,
            owned,
            replicas,
            surge,
            unavailable,
            max_surge_text,
            bound: rollout.spec.bound(),
            fetched: ctx.cache().map(|c| c.fetched),
            writes: Arc::default(),
        }))
    }

    fn by_hash(&self, hash: &str) -> Option<&ReplicaSet> {
        self.owned
            .iter()
            .find(|rs| hash_of(rs) == hash)
            .map(|rs| &**rs)
    }

    /// Merge-patches the Deployment, returning it as stored.
    async fn patch_deployment(&self, patch: Value) -> Result<Deployment, Error> {
        let name = self.deployment.name_any();
        let written = self
            .deployments
            .patch(&name, &crate::writes::patch(), &Patch::Merge(patch))
            .await?;
        if let Some(fetched) = &self.fetched {
            fetched.wrote_deployment(written.clone());
        }
        Ok(written)
    }

    /// Merge-patches one of the Deployment's ReplicaSets; the set as
    /// written.
    async fn patch_replicaset(&self, rs: &ReplicaSet, patch: &Value) -> Result<ReplicaSet, Error> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let written = self
            .replicasets
            .patch(
                &rs.name_any(),
                &crate::writes::patch(),
                &Patch::Merge(patch),
            )
            .await?;
        if let Some(fetched) = &self.fetched {
            fetched.wrote_replicaset(written.clone());
        }
        Ok(written)
    }

    /// Sets a ReplicaSet's `desired-replicas` to `desired`, from the state
    /// it was read in (as [`Workload::scale`] does); the set as written.
    async fn mark_desired(
        &self,
        rs: &ReplicaSet,
        desired: u32,
    ) -> Result<Option<ReplicaSet>, Error> {
        tracing::debug!(replicaset = %rs.name_any(), desired, "unsaturating");
        self.patch_as_read(
            rs,
            json!({"metadata": {"annotations": {keys::DESIRED_REPLICAS: desired.to_string()}}}),
        )
        .await
    }

    /// Scales a ReplicaSet from the state it was read in; the set as
    /// written (see [`Workload::patch_as_read`]).
    async fn scale(&self, rs: &ReplicaSet, replicas: u32) -> Result<Option<ReplicaSet>, Error> {
        tracing::debug!(replicaset = %rs.name_any(), replicas, "scaling");
        // With the annotations kube-controller-manager reads to tell a
        // saturated ReplicaSet (it writes them when it scales): stale ones
        // would stall its own rollout once the Deployment is given back.
        self.patch_as_read(
            rs,
            json!({
                "metadata": {
                    "annotations": {
                        keys::DESIRED_REPLICAS: self.replicas.to_string(),
                        keys::MAX_REPLICAS: (self.replicas + self.surge).to_string(),
                    },
                },
                "spec": {"replicas": replicas},
            }),
        )
        .await
    }

    /// Merge-patches a ReplicaSet on condition that it is still at the
    /// version read: when it changed since (a cached read lagging a
    /// write), nothing is written and the change's own event brings the
    /// next reconcile. The set as written, `None` when nothing was.
    async fn patch_as_read(
        &self,
        rs: &ReplicaSet,
        mut patch: Value,
    ) -> Result<Option<ReplicaSet>, Error> {
        patch["metadata"]["resourceVersion"] = json!(rs.resource_version());
        match self.patch_replicaset(rs, &patch).await {
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
                tracing::debug!(replicaset = %rs.name_any(), "read was stale; waiting for the watch");
                Ok(None)
            }
            other => other.map(Some),
        }
    }
}

/// Reconciles a partition-style rollout of a Deployment.
pub(super) async fn reconcile(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    let ns = rollout.namespace().unwrap_or_default();

    let Some(w) = Workload::load(ctx, &ns, rollout, status).await? else {
        if rollout.spec.bound() {
            // A binding may come before its workload.
            status.message = format!(
                "waiting for Deployment {:?} to exist in namespace {ns:?}",
                rollout.spec.workload.name
            );
            return Ok(Action::requeue(std::time::Duration::from_secs(10)));
        }
        return Ok(fail(
            status,
            format!(
                "Deployment {:?} not found in namespace {ns:?}",
                rollout.spec.workload.name
            ),
        ));
    };
    if restore_hold(ctx, rollout, &w, status).await? {
        // The write's event brings the next look, on the Deployment held.
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    steps::drive(ctx, rollout, consumed, &w, status).await
}

/// Pauses the Deployment again when its hold was lost mid-release: unpaused
/// by `kubectl rollout resume` (or any write) with no admission webhook to
/// keep the hold, kube-controller-manager rolls the held `Recreate`
/// strategy out itself, taking every old pod down while the executor scales
/// them back, without end. Says so in a Warning Event; returns whether it
/// wrote.
async fn restore_hold(
    ctx: &Ctx,
    rollout: &Rollout,
    w: &Workload,
    status: &RolloutStatus,
) -> Result<bool, Error> {
    use crate::crd::Phase;
    let releasing = matches!(status.phase, Phase::Progressing | Phase::Paused)
        && !status.handing_back()
        && !status.canary_revision.is_empty();
    // A rollback gives the Deployment back itself once the stable pods
    // are up, with the stable template: held until then.
    let rolling_back = status.phase == Phase::RollingBack
        && w.by_hash(&status.stable_revision)
            .is_some_and(|stable| template_of(stable) != deployment_template(&w.deployment));
    let paused = w.deployment.spec.as_ref().and_then(|s| s.paused) == Some(true);
    if paused || !(releasing || rolling_back) || !w.ours(&rollout.name_any()) {
        return Ok(false);
    }
    w.patch_deployment(json!({
        "metadata": {"resourceVersion": w.deployment.resource_version()},
        "spec": {"paused": true, "strategy": hold_strategy()},
    }))
    .await?;
    let name = w.deployment.name_any();
    tracing::warn!(rollout = %rollout.name_any(), deployment = %name, "the release's hold was lost; paused again");
    super::send_event(
        ctx,
        rollout,
        kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: "HoldRestored".into(),
            note: Some(format!(
                "Deployment {name:?} was unpaused during the release (kubectl rollout resume?) \
                 and paused again: the release moves its pods. Pause or abort the release \
                 through its Rollout (sluice rollout pause|abort)"
            )),
            action: "Reconcile".into(),
            secondary: None,
        },
    );
    Ok(true)
}

/// Whether a Deployment's own controller has finished rolling it out:
/// it saw the newest spec, and every replica is updated, ready and
/// available, with no old pod left.
pub(super) fn complete(d: &Deployment) -> Result<(), String> {
    let count = |v: Option<i32>| v.unwrap_or(0).max(0) as u32;
    let replicas = count(d.spec.as_ref().and_then(|s| s.replicas).or(Some(1)));
    let st = d.status.clone().unwrap_or_default();
    if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Err(format!(
            "Deployment {:?}: its controller has not seen the newest spec",
            d.name_any()
        ));
    }
    let (updated, ready, available, total) = (
        count(st.updated_replicas),
        count(st.ready_replicas),
        count(st.available_replicas),
        count(st.replicas),
    );
    if updated == replicas && ready == replicas && available == replicas && total == replicas {
        Ok(())
    } else {
        Err(format!(
            "Deployment {:?}: {updated} of {replicas} pods updated, {available} available, {total} in all",
            d.name_any()
        ))
    }
}

/// A bound Deployment its user paused before changing it: what the
/// release waits for.
pub(super) fn paused_by_user(d: &Deployment) -> Option<String> {
    paused_before(d).then(|| {
        let name = d.name_any();
        format!(
            "Deployment {name:?} was paused (kubectl rollout pause) when it changed; \
             `kubectl rollout resume deployment/{name}` starts the release"
        )
    })
}

/// Whether a Deployment was paused before the release held it.
fn paused_before(d: &Deployment) -> bool {
    d.annotations()
        .get(keys::PAUSED_BEFORE)
        .is_some_and(|v| v == "true")
}

/// Whether a release still holds a Deployment: paused when it was not, or
/// with a strategy other than the user's.
pub(super) fn held(d: &Deployment) -> bool {
    let spec = d.spec.as_ref();
    let paused = spec.and_then(|s| s.paused).unwrap_or(false);
    let strategy_held = d.annotations().contains_key(keys::ORIGINAL_STRATEGY)
        && spec.and_then(|s| s.strategy.clone()) != user_strategy(d);
    paused != paused_before(d) || strategy_held
}

/// The patch that gives a held Deployment back to its controller with
/// `template` and the user's strategy, paused only if it was before.
pub(super) fn release_patch(d: &Deployment, template: Value) -> Value {
    let template = crate::writes::merge_to(&deployment_template(d), &template);
    let mut patch = json!({"spec": {"paused": paused_before(d), "template": template}});
    if d.annotations().contains_key(keys::ORIGINAL_STRATEGY) {
        // The saved fields replace the hold's; none saved means none
        // written (the API server's defaults).
        let saved = user_strategy(d).and_then(|s| serde_json::to_value(s).ok());
        patch["spec"]["strategy"] = match saved {
            Some(Value::Object(fields)) => {
                let mut strategy = json!({"rollingUpdate": null});
                for (k, v) in fields {
                    strategy[k] = v;
                }
                strategy
            }
            _ => Value::Null,
        };
    }
    patch
}

/// Takes a release's marks off a Deployment and the ReplicaSets it owns
/// (kube-controller-manager copies a Deployment's annotations onto its new
/// ReplicaSet).
pub(super) async fn remove_marks(
    client: &kube::Client,
    d: &Deployment,
    owned: &[Arc<ReplicaSet>],
) -> Result<(), Error> {
    let ns = d.namespace().unwrap_or_default();
    let marked = |annotations: &std::collections::BTreeMap<String, String>| {
        MARKS.iter().any(|k| annotations.contains_key(*k))
    };
    let unmark = json!({"metadata": {"annotations": MARKS.iter().map(|k| (k.to_string(), Value::Null)).collect::<serde_json::Map<_, _>>()}});
    // The marks off, and Sluice's ownership of what it gave back with them.
    let api = Api::<Deployment>::namespaced(client.clone(), &ns);
    let patch = if marked(d.annotations()) {
        unmark.clone()
    } else {
        json!({})
    };
    crate::writes::disown(&api, &d.name_any(), Some(d), patch).await?;
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    for rs in owned.iter().filter(|rs| marked(rs.annotations())) {
        replicasets
            .patch(
                &rs.name_any(),
                &crate::writes::patch(),
                &Patch::Merge(&unmark),
            )
            .await?;
    }
    tracing::debug!(deployment = %d.name_any(), "marks removed");
    Ok(())
}

/// Whether a release may start on a bound Deployment: held by `rollout`
/// (the webhook held the change), with a stable revision to start from
/// (`stable`); a change that reached an unheld Deployment slipped past the
/// webhook and is reported, not released.
pub(super) fn bound_start(
    d: &Deployment,
    rollout: &Rollout,
    status: &RolloutStatus,
    stable: Option<&ReplicaSet>,
) -> Start {
    let name = d.name_any();
    if !held_by(d, &rollout.name_any()) {
        if ended(status) {
            return slipped("Deployment", &name);
        }
        return match complete(d) {
            // Bound now; the next change of the template is released.
            Ok(()) => Start::NothingToDo,
            Err(why) => Start::Busy(format!("{why}; its own rollout must finish first")),
        };
    }
    let Some(stable) = stable else {
        return Start::Busy(format!(
            "no ReplicaSet of Deployment {name:?} runs the template it had before the change \
             (annotation {} is {:?})",
            keys::STABLE_TEMPLATE,
            d.annotations()
                .get(keys::STABLE_TEMPLATE)
                .map_or("missing", String::as_str)
        ));
    };
    if template_of(stable) == deployment_template(d) {
        // Changed back to the stable version (a revert).
        return Start::NothingToDo;
    }
    Start::Ready
}

/// Whether a release recorded in `status` is still going on (its stable
/// revision is the one a new change starts from); an ended one's revisions
/// say nothing of the next change.
pub(super) fn in_flight(status: &RolloutStatus) -> bool {
    use crate::crd::Phase;
    matches!(
        status.phase,
        Phase::Progressing | Phase::Paused | Phase::RollingBack | Phase::Pending
    ) && !status.stable_revision.is_empty()
}

/// Whether the binding's last release ended (so a change that reached the
/// workload unheld since slipped past the webhook); a binding still
/// waiting for its workload to settle has not begun watching changes.
pub(super) fn ended(status: &RolloutStatus) -> bool {
    use crate::crd::Phase;
    !status.release.is_empty()
        && matches!(
            status.phase,
            Phase::Succeeded | Phase::RolledBack | Phase::Failed
        )
}

/// A bound workload's template changed with no hold (no webhook answered,
/// or it is not registered): reported, since its own controller is rolling
/// the change out already.
pub(super) fn slipped(kind: &str, name: &str) -> Start {
    Start::Refused(format!(
        "the pod template of {kind} {name:?} changed without Sluice holding it \
         (is the admission webhook registered and the executor reachable?): \
         its own controller rolls it out in full, not in batches"
    ))
}

/// A bound Deployment's stable ReplicaSet before a release records it: the
/// one whose template has the digest the webhook recorded.
pub(super) fn bound_stable<'a>(
    d: &Deployment,
    owned: &'a [Arc<ReplicaSet>],
) -> Option<&'a ReplicaSet> {
    let before = d.annotations().get(keys::STABLE_TEMPLATE)?;
    owned
        .iter()
        .find(|rs| hash(&template_of(rs)) == *before)
        .map(|rs| &**rs)
}

/// A second binding of a workload another binding holds (two made at once
/// can both pass the webhook, which holds the workload for the older one):
/// it ends Failed, touching nothing.
pub(super) fn bound_elsewhere(kind: &str, name: &str, holder: &str) -> Start {
    Start::Refused(format!(
        "spec.workload: {kind} {name:?} is bound to Rollout {holder:?}, which holds it; a \
         workload takes one bound Rollout: delete this one"
    ))
}

/// A Rollout's start while another Rollout's mark is on its workload: a
/// second binding ends Failed ([`bound_elsewhere`]); any other waits for
/// that release to end, whatever the workload runs now (the other release
/// moves it).
pub(super) fn held_elsewhere(kind: &str, name: &str, holder: &str, bound: bool) -> Start {
    if bound {
        return bound_elsewhere(kind, name, holder);
    }
    Start::Busy(format!(
        "{kind} {name:?} is held by Rollout {holder:?}, whose release must end first"
    ))
}

/// The Rollout whose mark is on the Deployment, if any.
pub(super) fn holder_of(d: &Deployment) -> Option<String> {
    d.annotations().get(keys::ROLLOUT).cloned()
}

/// Whether `rollout` holds the Deployment (its mark is on it).
pub(super) fn held_by(d: &Deployment, rollout: &str) -> bool {
    d.annotations().get(keys::ROLLOUT).map(String::as_str) == Some(rollout)
}

/// The ReplicaSet a release keeps as stable: the recorded one, or the one
/// running the Deployment's current template.
pub(super) fn stable_of<'a>(
    d: &Deployment,
    owned: &'a [Arc<ReplicaSet>],
    status: &RolloutStatus,
) -> Option<&'a ReplicaSet> {
    if status.stable_revision.is_empty() {
        // A release that has held the Deployment but not yet recorded its
        // revisions (its status write lost to a concurrent change of the
        // Rollout) named the stable template on the Deployment: the
        // Deployment's own template is already the new one.
        if let Some(found) = bound_stable(d, owned) {
            return Some(found);
        }
        let current = deployment_template(d);
        owned.iter().find(|rs| template_of(rs) == current)
    } else {
        owned
            .iter()
            .find(|rs| hash_of(rs) == status.stable_revision)
    }
    .map(|rs| &**rs)
}

impl Workload {
    fn ours(&self, rollout: &str) -> bool {
        held_by(&self.deployment, rollout)
    }

    fn stable(&self, status: &RolloutStatus) -> Option<&ReplicaSet> {
        if self.bound && !in_flight(status) {
            // The template the admission webhook saw before the change it
            // held names the stable revision.
            return bound_stable(&self.deployment, &self.owned);
        }
        stable_of(&self.deployment, &self.owned, status)
    }

    /// The template the release brings: the Deployment's own when the
    /// Rollout is bound to it, else the Rollout's on top of `stable`'s.
    fn wanted(&self, rollout: &Rollout, stable: &ReplicaSet) -> Value {
        if self.bound {
            deployment_template(&self.deployment)
        } else {
            desired_template(&template_of(stable), rollout)
        }
    }

    /// A bound Deployment's template that its stable pods do not run: the
    /// release of it was rolled back, and the hold stays (the template is
    /// what the user wrote; released, it would roll out in full) until the
    /// template changes again.
    fn holds_rejected(&self, stable: &ReplicaSet) -> bool {
        self.bound && template_of(stable) != deployment_template(&self.deployment)
    }

    fn bound_start(&self, rollout: &Rollout, status: &RolloutStatus) -> Start {
        bound_start(&self.deployment, rollout, status, self.stable(status))
    }

    /// Whether the release still holds the Deployment.
    fn held(&self) -> bool {
        held(&self.deployment)
    }

    /// Whether ReplicaSets running another template than `template` still
    /// have pods or want some.
    fn others_with_pods_than_template(&self, template: &Value) -> bool {
        self.owned
            .iter()
            .any(|rs| template_of(rs) != *template && (spec_replicas(rs) > 0 || pods(rs) > 0))
    }

    /// Owned ReplicaSets other than `keep` that still have pods or want some.
    fn others_with_pods<'a>(&'a self, keep: &'a str) -> impl Iterator<Item = &'a ReplicaSet> {
        self.owned
            .iter()
            .map(|rs| &**rs)
            .filter(move |rs| hash_of(rs) != keep && (spec_replicas(rs) > 0 || pods(rs) > 0))
    }
}

impl steps::Release for Workload {
    fn replicas(&self) -> u32 {
        self.replicas
    }

    fn holder(&self) -> Option<String> {
        holder_of(&self.deployment)
    }

    fn running_revision(&self) -> Option<String> {
        sole_revision(&self.owned, self.replicas)
    }

    fn max_surge(&self) -> String {
        self.max_surge_text.clone()
    }

    fn pins(&self, status: &RolloutStatus) -> Pins {
        let pin = |hash: &str| [(keys::TEMPLATE_HASH.to_owned(), hash.to_owned())].into();
        Pins {
            stable: pin(&status.stable_revision),
            canary: (!status.canary_revision.is_empty()).then(|| pin(&status.canary_revision)),
        }
    }

    fn release_id(&self, rollout: &Rollout) -> String {
        if self.bound {
            crate::machine::bound_release_id(&rollout.spec, &deployment_template(&self.deployment))
        } else {
            crate::machine::release_id(&rollout.spec)
        }
    }

    fn paused_by_user(&self) -> Option<String> {
        self.bound
            .then(|| paused_by_user(&self.deployment))
            .flatten()
    }

    fn start_check(&self, rollout: &Rollout, status: &RolloutStatus) -> Start {
        let ours = self.ours(&rollout.name_any());
        if let Some(holder) = self.deployment.annotations().get(keys::ROLLOUT)
            && !ours
        {
            let name = self.deployment.name_any();
            return held_elsewhere("Deployment", &name, holder, self.bound);
        }
        if self.bound {
            return self.bound_start(rollout, status);
        }
        if !ours && let Err(why) = complete(&self.deployment) {
            return Start::Busy(format!("{why}; its own rollout must finish first"));
        }
        let Some(stable) = self.stable(status) else {
            return Start::Busy(format!(
                "no ReplicaSet runs the current template of Deployment {:?}",
                self.deployment.name_any()
            ));
        };
        let stable_template = template_of(stable);
        if let Some(why) = missing_containers(&stable_template, rollout) {
            return Start::Refused(why);
        }
        if desired_template(&stable_template, rollout) == stable_template {
            return Start::NothingToDo;
        }
        Start::Ready
    }

    fn progress(&self, status: &RolloutStatus, batch: &pb::Batch) -> Option<Progress> {
        let stable = self.by_hash(&status.stable_revision)?;
        let canary = self.by_hash(&status.canary_revision)?;
        let n = self.replicas;
        let target_new = batch.canary_replicas.min(n);
        let ready_new = ready(canary);
        Some(Progress {
            ready_new,
            reached: spec_replicas(canary) == target_new
                && spec_replicas(stable) == n - target_new
                && ready_new + batch.max_unready >= target_new
                && pods(stable) == n - target_new
                && self
                    .others_with_pods(&status.canary_revision)
                    .all(|rs| hash_of(rs) == status.stable_revision),
            pod_share: (100 * ready_new.min(n)).checked_div(n).unwrap_or(0),
            // More new pods asked for than the batch, or fewer stable ones:
            // what kube-controller-manager does to a paused Deployment's
            // lone ReplicaSet with pods when it is scaled (it sizes that
            // set to `replicas`), and what a user's write to a set does.
            // Moved back at each look, a step's pause included; unready
            // new pods go at once, before they take traffic.
            misplaced: spec_replicas(canary) > target_new || spec_replicas(stable) < n - target_new,
        })
    }

    fn settling(&self, status: &RolloutStatus) -> bool {
        [&status.canary_revision, &status.stable_revision]
            .into_iter()
            .chain(&status.retired_revisions)
            .filter_map(|h| self.by_hash(h))
            .any(|rs| {
                let seen = rs.status.as_ref().and_then(|s| s.observed_generation);
                seen < rs.metadata.generation || pods(rs) > spec_replicas(rs)
            })
    }

    fn cannot_create(&self, status: &RolloutStatus) -> Option<String> {
        replica_failure(self.by_hash(&status.canary_revision)?)
    }

    fn unready_new(&self, status: &RolloutStatus) -> bool {
        self.by_hash(&status.canary_revision)
            .is_none_or(|canary| ready(canary) < spec_replicas(canary).max(pods(canary)))
    }

    fn handed_back(&self, status: &RolloutStatus) -> Result<(), String> {
        let canary = self
            .by_hash(&status.canary_revision)
            .ok_or("the new ReplicaSet is gone")?;
        if self.held() {
            return Err("the Deployment is still held by the release".into());
        }
        if template_of(canary) != deployment_template(&self.deployment) {
            return Err("the Deployment's template is not the new one".into());
        }
        if ready(canary) < self.replicas
            || self
                .others_with_pods(&status.canary_revision)
                .next()
                .is_some()
        {
            return Err(format!(
                "{} of {} new pods ready",
                ready(canary),
                self.replicas
            ));
        }
        complete(&self.deployment)
    }

    fn rolled_back(&self, status: &RolloutStatus) -> Result<(), String> {
        let stable = self
            .by_hash(&status.stable_revision)
            .ok_or("the stable ReplicaSet is gone")?;
        if self.holds_rejected(stable) {
            let left: u32 = self
                .others_with_pods(&status.stable_revision)
                .map(pods)
                .sum();
            if ready(stable) < self.replicas || left > 0 {
                return Err(format!(
                    "{} of {} stable pods ready; new pods left: {left}",
                    ready(stable),
                    self.replicas
                ));
            }
            if !self.held() {
                return Err("the Deployment's hold was taken off while its template is \
                     the rejected one"
                    .into());
            }
            return Ok(());
        }
        if self.held() {
            return Err(format!(
                "{} of {} stable pods ready; new pods left: {}",
                ready(stable),
                self.replicas,
                self.others_with_pods(&status.stable_revision)
                    .map(pods)
                    .sum::<u32>()
            ));
        }
        if template_of(stable) != deployment_template(&self.deployment) {
            return Err("the Deployment's template is not the stable one".into());
        }
        complete(&self.deployment)
    }

    async fn begin(
        &self,
        ctx: &Ctx,
        rollout: &Rollout,
        status: &mut RolloutStatus,
        first: &pb::Batch,
    ) -> Result<(), Error> {
        begin(ctx, rollout, self, status, first).await
    }

    async fn move_pods(
        &self,
        status: &mut RolloutStatus,
        batch: &pb::Batch,
    ) -> Result<bool, Error> {
        let (Some(canary), Some(stable)) = (
            self.by_hash(&status.canary_revision),
            self.by_hash(&status.stable_revision),
        ) else {
            return Ok(false);
        };
        let before = self.writes.load(std::sync::atomic::Ordering::Relaxed);
        move_pods(self, canary, stable, batch).await?;
        Ok(self.writes.load(std::sync::atomic::Ordering::Relaxed) != before)
    }

    async fn hand_back(
        &self,
        status: &RolloutStatus,
        traffic: Option<&Traffic>,
    ) -> Result<Option<String>, Error> {
        // Every pod is new: the Services select them all again, then the
        // router goes back to the stable Service.
        if let Some(t) = traffic {
            t.restore().await?;
        }
        let Some(canary) = self.by_hash(&status.canary_revision) else {
            return Ok(None);
        };
        // Old revisions left by an earlier release of this rollout go.
        for rs in self.others_with_pods(&status.canary_revision) {
            self.scale(rs, 0).await?;
        }
        let Some(written) = release_hold(self, template_of(canary)).await? else {
            return Ok(None);
        };
        // What the next look will find, but for its controller's answer.
        let given_back = Self {
            deployment: Arc::new(written),
            ..self.clone()
        };
        Ok(given_back.handed_back(status).err())
    }

    async fn roll_back(&self, status: &RolloutStatus) -> Result<(), Error> {
        let Some(stable) = self.by_hash(&status.stable_revision) else {
            return Ok(());
        };
        // Capacity back on stable first, then the other revisions go (see
        // `rollback_targets`). A saturated other set first loses its mark,
        // or the Deployment controller scales the stable set straight back
        // to 0 (see `move_pods`).
        if spec_replicas(stable) < self.replicas {
            for rs in self.others_with_pods(&status.stable_revision) {
                if spec_replicas(rs) >= self.replicas && desired_replicas(rs) == Some(self.replicas)
                {
                    self.mark_desired(rs, 0).await?;
                }
            }
        }
        if spec_replicas(stable) != self.replicas {
            self.scale(stable, self.replicas).await?;
        }
        let others: Vec<&ReplicaSet> = self.others_with_pods(&status.stable_revision).collect();
        let counts: Vec<(u32, u32)> = others
            .iter()
            .map(|rs| (spec_replicas(rs), ready(rs)))
            .collect();
        let targets = rollback_targets(
            (spec_replicas(stable), ready(stable)),
            &counts,
            self.replicas,
            self.unavailable,
            crate::machine::rollback_requested(status),
        );
        for ((rs, (spec, _)), target) in others.iter().zip(&counts).zip(targets) {
            if target < *spec {
                self.scale(rs, target).await?;
            }
        }
        let others = self
            .others_with_pods(&status.stable_revision)
            .next()
            .is_some();
        if ready(stable) < self.replicas || others || self.holds_rejected(stable) {
            // The ReplicaSets' events bring the next look. A bound
            // Deployment stays held on the rejected template.
            return Ok(());
        }
        release_hold(self, template_of(stable)).await.map(drop)
    }

    async fn unmark(&self) -> Result<(), Error> {
        if self.held() {
            // Still held: given back only when every pod already runs its
            // template (a bound Deployment changed back to the version that
            // runs); otherwise the hold and its marks stay (a bound
            // Deployment held on a rejected template).
            let current = deployment_template(&self.deployment);
            let runs = self
                .owned
                .iter()
                .any(|rs| template_of(rs) == current && ready(rs) >= self.replicas);
            if !runs || self.others_with_pods_than_template(&current) {
                return Ok(());
            }
            if let Some(written) = release_hold(self, current).await? {
                return remove_marks(&self.client, &written, &self.owned).await;
            }
        }
        self.remove_marks().await
    }
}

impl Workload {
    /// Takes the release's annotations off the Deployment and its
    /// ReplicaSets.
    async fn remove_marks(&self) -> Result<(), Error> {
        remove_marks(&self.client, &self.deployment, &self.owned).await
    }
}

/// Gives a Deployment held by `rollout` (a binding being deleted) back to
/// its own controller whole, wherever the release was: traffic objects
/// restored, analyses stopped, `paused` and the strategy as the user wrote
/// them, the marks off. Its controller then rolls out its template itself.
pub(super) async fn let_go(ctx: &Ctx, rollout: &Rollout) -> Result<(), Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    ctx.analyses.stop(&ns, &name);
    let status = RolloutStatus::default();
    let w = Workload::load(ctx, &ns, rollout, &status).await?;
    // A binding that does not hold its Deployment (a second one, refused)
    // leaves it and its traffic to the one that does.
    if w.as_ref().is_some_and(|w| {
        w.deployment
            .annotations()
            .get(keys::ROLLOUT)
            .is_some_and(|holder| *holder != name)
    }) {
        return Ok(());
    }
    if let Some(t) = Traffic::new(
        &ctx.client,
        &ns,
        &name,
        rollout.spec.traffic.as_ref(),
        rollout.spec.strategy.style == Some(sluice_model::spec::Style::BlueGreen),
    ) {
        t.restore().await?;
    }
    let Some(w) = w else {
        return Ok(());
    };
    if !w.ours(&name) {
        return Ok(());
    }
    if w.held()
        && let Some(written) = release_hold(&w, deployment_template(&w.deployment)).await?
    {
        return remove_marks(&w.client, &written, &w.owned).await;
    }
    w.remove_marks().await
}

/// The annotations a release puts on the Deployment (and that
/// kube-controller-manager copies onto its ReplicaSets), all taken off at
/// its end.
pub(super) const MARKS: [&str; 5] = [
    keys::ROLLOUT,
    keys::PAUSED_BEFORE,
    keys::ORIGINAL_STRATEGY,
    keys::STABLE_TEMPLATE,
    keys::FIELD_OWNERS,
];

/// Holds the Deployment on the new template and creates the release's
/// ReplicaSet with the first batch's pods, as many as the surge allows
/// (what the first look at the batch would scale it to); records both
/// revisions in `status`.
async fn begin(
    ctx: &Ctx,
    rollout: &Rollout,
    w: &Workload,
    status: &mut RolloutStatus,
    first: &pb::Batch,
) -> Result<(), Error> {
    let name = rollout.name_any();
    let ours = w.ours(&name);
    let Some(stable) = w.stable(status).cloned() else {
        return Err(Error::Missing(format!(
            "no ReplicaSet runs the current template of Deployment {:?}",
            w.deployment.name_any()
        )));
    };
    let wanted = w.wanted(rollout, &stable);
    let paused_before = w
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.paused)
        .unwrap_or(false);
    let before = if ours {
        w.deployment
            .annotations()
            .get(keys::PAUSED_BEFORE)
            .cloned()
            .unwrap_or_default()
    } else {
        paused_before.to_string()
    };
    let original = match w.deployment.annotations().get(keys::ORIGINAL_STRATEGY) {
        Some(saved) if ours => saved.clone(),
        _ => serde_json::to_string(&w.deployment.spec.as_ref().and_then(|s| s.strategy.clone()))
            .unwrap_or_default(),
    };
    let stable_template = match w.deployment.annotations().get(keys::STABLE_TEMPLATE) {
        Some(saved) if ours => saved.clone(),
        _ => hash(&template_of(&stable)),
    };
    // Over the version read, which showed the Deployment free (or ours):
    // two Rollouts waiting for it both see it free when the holder lets
    // go, and only the first write may take it. The other's fails with a
    // conflict and finds the new holder when it runs again.
    let patch = json!({
        "metadata": {"resourceVersion": w.deployment.resource_version(),
                     "annotations": {keys::ROLLOUT: name, keys::PAUSED_BEFORE: before, keys::ORIGINAL_STRATEGY: original, keys::STABLE_TEMPLATE: stable_template}},
        "spec": {"paused": true, "template": crate::writes::merge_to(&deployment_template(&w.deployment), &wanted), "strategy": hold_strategy()},
    });
    let d = w.patch_deployment(patch).await?;
    let template = deployment_template(&d);
    // A ReplicaSet that already runs this template (an earlier version
    // released again) is the new one: kube-controller-manager finds its
    // ReplicaSet by template, and a second one would fight it at hand-back.
    let reused = w
        .owned
        .iter()
        .find(|rs| template_of(rs) == template && hash_of(rs) != hash_of(&stable))
        .map(|rs| hash_of(rs));
    let new_hash = reused.unwrap_or_else(|| hash(&template));
    let stable_hash = hash_of(&stable);
    if w.by_hash(&new_hash).is_none() {
        let existing = spec_replicas(&stable).max(pods(&stable))
            + leftover(&retired(w, &new_hash, &stable_hash));
        let replicas = first
            .canary_replicas
            .min(w.replicas)
            .min((w.replicas + w.surge).saturating_sub(existing));
        let mut labels = template["metadata"]["labels"].clone();
        labels[keys::TEMPLATE_HASH] = json!(new_hash);
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"] = labels.clone();
        let mut selector = serde_json::to_value(d.spec.as_ref().map(|s| s.selector.clone()))
            .unwrap_or(Value::Null);
        selector["matchLabels"][keys::TEMPLATE_HASH] = json!(new_hash);
        let revision = w
            .owned
            .iter()
            .filter_map(|rs| rs.annotations().get(keys::REVISION)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {
                "name": format!("{}-{new_hash}", d.name_any()), "labels": labels,
                // With the annotations a scale writes (see `Workload::scale`).
                "annotations": {
                    keys::REVISION: revision.to_string(), keys::ROLLOUT: name,
                    keys::DESIRED_REPLICAS: w.replicas.to_string(),
                    keys::MAX_REPLICAS: (w.replicas + w.surge).to_string(),
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": d.name_any(), "uid": d.uid().unwrap_or_default(), "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
        }))
        .map_err(|e| Error::Missing(e.to_string()))?;
        match w.replicasets.create(&crate::writes::post(), &rs).await {
            Ok(created) => ctx.created(created),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The stable set carries no mark: its events wake the Rollouts naming
    // its Deployment (`cache::Named::rollouts_of`), and an unmarked set
    // needs no write at the end.
    // Versions of earlier releases that still have pods (or carry the
    // release's mark) are retired: moved to 0 as the new one comes up.
    status.retired_revisions = w
        .owned
        .iter()
        .filter(|rs| {
            spec_replicas(rs) > 0 || pods(rs) > 0 || rs.annotations().contains_key(keys::ROLLOUT)
        })
        .map(|rs| hash_of(rs))
        .filter(|h| *h != new_hash && *h != stable_hash)
        .collect();
    status.canary_revision = new_hash;
    status.stable_revision = stable_hash;
    tracing::info!(rollout = %name, "release started");
    Ok(())
}

/// Moves pods towards the batch, never above replicas + maxSurge pods and
/// never below replicas - maxUnavailable available ones.
async fn move_pods(
    w: &Workload,
    canary: &ReplicaSet,
    stable: &ReplicaSet,
    batch: &pb::Batch,
) -> Result<(), Error> {
    let n = w.replicas;
    let target_new = batch.canary_replicas.min(n);
    let target_old = n - target_new;
    let (new_spec, old_spec) = (spec_replicas(canary), spec_replicas(stable));
    // Pods of revisions a newer release retired count against the surge and
    // go first, but, like stable pods, only as fast as availability allows
    // (their unready ones at once: they serve nobody).
    let retired = retired(w, &hash_of(canary), &hash_of(stable));
    let leftover = leftover(&retired);
    let min_available = n.saturating_sub(w.unavailable);
    let available = ready(canary).min(new_spec)
        + ready(stable).min(old_spec)
        + retired
            .iter()
            .map(|rs| ready(rs).min(spec_replicas(rs)))
            .sum::<u32>();
    let mut budget = available.saturating_sub(min_available);
    // With neither surge nor unavailability allowed, one pod must go for a
    // new one to come.
    let stuck = w.surge == 0 && w.unavailable == 0 && new_spec < target_new && budget == 0;
    if stuck {
        budget = 1;
    }
    for rs in &retired {
        let spec = spec_replicas(rs);
        if spec == 0 {
            continue;
        }
        let healthy = ready(rs).min(spec);
        let cut = (spec - healthy) + healthy.min(budget);
        budget -= healthy.min(budget);
        if cut > 0 && w.scale(rs, spec - cut).await?.is_none() {
            return Ok(());
        }
    }
    let existing = (new_spec + old_spec).max(pods(canary) + pods(stable)) + leftover;
    // The new set as last written by this move: a second write to it in
    // the same move must not be refused as made on a stale read.
    let mut canary = std::borrow::Cow::Borrowed(canary);
    if old_spec < target_old {
        // Stable pods come back before any new one goes: with the stable
        // set at 0 the new one is the paused Deployment's lone ReplicaSet
        // with pods, which the Deployment controller sizes to `replicas`
        // at each of its syncs (kube-controller-manager's `scale`), a cut
        // of it included, so the new set would be cut and grown again
        // without end.
        //
        // And a new set holding every replica, available, with
        // `desired-replicas` saying so is saturated to that controller,
        // which then scales every other set to 0: a stable set scaled up
        // beside it would be scaled back at once. Its mark says the batch
        // first (its replicas unchanged, which that controller leaves).
        if new_spec >= n && desired_replicas(&canary) == Some(n) {
            match w.mark_desired(&canary, target_new).await? {
                Some(written) => canary = std::borrow::Cow::Owned(written),
                None => return Ok(()),
            }
        }
        if w.scale(stable, target_old).await?.is_none() {
            return Ok(());
        }
    }
    if new_spec < target_new {
        let room = (n + w.surge).saturating_sub(existing);
        if room > 0 {
            w.scale(&canary, (new_spec + room).min(target_new)).await?;
        }
    } else if new_spec > target_new {
        // Fewer new pods than there are (a smaller batch after a changed
        // strategy, a scale-down, or a scale-up the Deployment controller
        // gave the new set alone): the stable ones came back above, and
        // ready new pods go only while replicas - maxUnavailable stay
        // available; unready ones go at once.
        let healthy = ready(&canary).min(new_spec);
        let unready = new_spec - healthy;
        let ready_cut = (new_spec - target_new).saturating_sub(unready).min(budget);
        budget -= ready_cut;
        let cut = (new_spec - target_new).min(unready) + ready_cut;
        if cut > 0 && w.scale(&canary, new_spec - cut).await?.is_none() {
            return Ok(());
        }
    } else if new_spec > 0 && desired_replicas(&canary).is_some_and(|d| d != n) {
        // The batch is what runs, under a mark another look changed (see
        // above) or a resize made stale: the mark says replicas again, or
        // the Deployment controller, given the Deployment back, would take
        // every sync for a resize and never roll out itself again.
        if w.mark_desired(&canary, n).await?.is_none() {
            return Ok(());
        }
    }
    if old_spec > target_old {
        // Old pods go as new ones become ready, keeping at least
        // replicas - maxUnavailable available.
        let down = budget.min(old_spec - target_old);
        if down > 0 {
            w.scale(stable, old_spec - down).await?;
        }
    }
    Ok(())
}

/// The sets of `w` with pods or asking for some, other than the new one
/// (`canary`) and the stable one: versions a newer release retired.
fn retired<'a>(w: &'a Workload, canary: &str, stable: &str) -> Vec<&'a ReplicaSet> {
    w.owned
        .iter()
        .map(|rs| &**rs)
        .filter(|rs| hash_of(rs) != canary && hash_of(rs) != stable)
        .filter(|rs| spec_replicas(rs) > 0 || pods(rs) > 0)
        .collect()
}

/// The pods `sets` hold or ask for.
fn leftover(sets: &[&ReplicaSet]) -> u32 {
    sets.iter().map(|rs| spec_replicas(rs).max(pods(rs))).sum()
}

/// What a ReplicaSet's `ReplicaFailure` condition says, while it holds:
/// its controller cannot make the pods asked for (kube-controller-manager
/// keeps the first error it met).
pub(super) fn replica_failure(rs: &ReplicaSet) -> Option<String> {
    rs.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        .map(|c| {
            c.message
                .clone()
                .or_else(|| c.reason.clone())
                .unwrap_or_else(|| "ReplicaFailure".into())
        })
}

/// A ReplicaSet's `deployment.kubernetes.io/desired-replicas`.
fn desired_replicas(rs: &ReplicaSet) -> Option<u32> {
    rs.annotations()
        .get(keys::DESIRED_REPLICAS)
        .and_then(|v| v.parse().ok())
}

/// Where a rollback scales the sets other than stable (each `(spec, ready)`)
/// this look. After a failure they go at once (their pods are what hurts).
/// After an Abort or a revert of healthy pods: their unready pods at once
/// (they serve nobody), their ready ones only while `replicas -
/// unavailable` pods stay available, as the user's strategy allows.
///
/// A set's ready count lags its own scale-down (its status is written after
/// the pods go, kube-controller-manager counting the deleted pods once
/// more), so at most its spec counts: otherwise each look before the
/// status catches up would cut again from the same budget.
fn rollback_targets(
    stable: (u32, u32),
    others: &[(u32, u32)],
    replicas: u32,
    unavailable: u32,
    requested: bool,
) -> Vec<u32> {
    let available = stable.1.min(stable.0)
        + others
            .iter()
            .map(|(spec, ready)| (*ready).min(*spec))
            .sum::<u32>();
    let mut budget = if requested {
        available.saturating_sub(replicas.saturating_sub(unavailable))
    } else {
        u32::MAX
    };
    others
        .iter()
        .map(|&(spec, ready)| {
            let healthy = ready.min(spec);
            let cut = (spec - healthy) + healthy.min(budget);
            budget -= healthy.min(budget);
            spec - cut
        })
        .collect()
}

/// The strategy a held Deployment has: one kube-controller-manager never
/// scales proportionally (see the module's comment).
fn hold_strategy() -> Value {
    json!({"type": "Recreate", "rollingUpdate": null})
}

/// Gives the Deployment back to its controller with `template` and the
/// user's strategy, paused only if it was before; the release's marks stay
/// for [`steps::Release::unmark`].
/// Returns the Deployment as written, when it wrote.
async fn release_hold(w: &Workload, template: Value) -> Result<Option<Deployment>, Error> {
    if !w.held() && deployment_template(&w.deployment) == template {
        return Ok(None);
    }
    let written = w
        .patch_deployment(release_patch(&w.deployment, template))
        .await?;
    tracing::debug!(deployment = %w.deployment.name_any(), "workload handed back");
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use super::rollback_targets;

    #[test]
    fn an_abort_or_a_revert_keeps_replicas_minus_max_unavailable_available() {
        // 10 replicas, 2 may be missing: stable at 5 ready of 10 wanted, the
        // new set 4 ready. One new pod may go now.
        assert_eq!(rollback_targets((10, 5), &[(4, 4)], 10, 2, true), vec![3]);
        // Its scale-down seen before its status: still 4 counted ready of
        // a spec of 3. No further cut until stable pods come up.
        assert_eq!(rollback_targets((10, 5), &[(3, 4)], 10, 2, true), vec![3]);
        // Unready new pods go at once.
        assert_eq!(rollback_targets((10, 8), &[(4, 1)], 10, 2, true), vec![0]);
        assert_eq!(rollback_targets((10, 6), &[(4, 2)], 10, 2, true), vec![2]);
        // After a failed analysis every new pod goes at once.
        assert_eq!(rollback_targets((10, 5), &[(4, 4)], 10, 2, false), vec![0]);
    }
}
