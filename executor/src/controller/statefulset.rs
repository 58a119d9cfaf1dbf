//! StatefulSet releases through `rollingUpdate.partition`: the new template
//! goes in with the partition at `replicas` (no pod changes), then each
//! batch lowers the partition so that the highest `canary` ordinals run the
//! new revision, as the StatefulSet controller replaces them one at a time.
//! At the end the partition is restored; a rollback puts the current
//! revision's template back, which the StatefulSet controller recognises,
//! and restores the partition.

use super::Action;
use k8s_openapi::api::{
    apps::v1::{ControllerRevision, StatefulSet},
    core::v1::Pod,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch},
};
use serde_json::{Value, json};
use sluice_proto::v1 as pb;

use super::{
    Ctx, Error, fail,
    partition::{desired_template, missing_containers},
    steps,
    traffic::{Pins, Traffic},
};
use crate::{
    crd::{Rollout, RolloutStatus},
    keys,
    machine::{Progress, Start},
};

use keys::{NO_PARTITION, PARTITION_BEFORE};
/// The label naming a StatefulSet pod's revision.
const REVISION_HASH: &str = "controller-revision-hash";

struct Set {
    sets: Api<StatefulSet>,
    revisions: Api<ControllerRevision>,
    sts: StatefulSet,
    replicas: u32,
    /// Ready pods by revision, with their names.
    ready_by_revision: Vec<(String, bool)>,
    /// Pod names by revision.
    pods_by_revision: Vec<(String, String)>,
    /// The Rollout is bound to the StatefulSet: the new version is its own
    /// template, changed by the user.
    bound: bool,
}

impl Set {
    /// Merge-patches the StatefulSet.
    async fn merge(&self, patch: Value) -> Result<(), Error> {
        self.sets
            .patch(
                &self.sts.name_any(),
                &crate::writes::patch(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(())
    }

    async fn load(ctx: &Ctx, ns: &str, rollout: &Rollout) -> Result<Option<Self>, Error> {
        let name = rollout.spec.workload.name.as_str();
        let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
        let Some(sts) = sets.get_opt(name).await? else {
            return Ok(None);
        };
        let selector = sts
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        let pods_by_revision = listed
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                (
                    p.labels().get(REVISION_HASH).cloned().unwrap_or_default(),
                    p.name_any(),
                )
            })
            .collect();
        let ready_by_revision = listed
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                (
                    p.labels().get(REVISION_HASH).cloned().unwrap_or_default(),
                    ready,
                )
            })
            .collect();
        let replicas = sts
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as u32;
        Ok(Some(Self {
            sets,
            revisions: Api::namespaced(ctx.client.clone(), ns),
            sts,
            replicas,
            ready_by_revision,
            pods_by_revision,
            bound: rollout.spec.bound(),
        }))
    }

    fn partition(&self) -> u32 {
        self.sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0) as u32
    }

    fn revisions(&self) -> (String, String) {
        let st = self.sts.status.clone().unwrap_or_default();
        (
            st.current_revision.unwrap_or_default(),
            st.update_revision.unwrap_or_default(),
        )
    }

    fn pods_at(&self, revision: &str) -> (u32, u32) {
        let at: Vec<&(String, bool)> = self
            .ready_by_revision
            .iter()
            .filter(|(r, _)| r == revision)
            .collect();
        (
            at.len() as u32,
            at.iter().filter(|(_, ready)| *ready).count() as u32,
        )
    }

    async fn set_partition(&self, partition: u32) -> Result<(), Error> {
        let patch = json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}}});
        self.merge(patch).await
    }

    /// The ordinal of its pod named `pod` (`<name>-<ordinal>`).
    fn ordinal(&self, pod: &str) -> Option<u32> {
        pod.strip_prefix(self.sts.name_any().as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// Its `updateStrategy.type` (RollingUpdate when unset).
    fn update_type(&self) -> String {
        self.sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.clone())
            .unwrap_or_else(|| "RollingUpdate".into())
    }

    /// The partition the user had before the release (`None`: none was
    /// written, recorded as [`NO_PARTITION`]).
    fn users_partition(&self) -> Option<u32> {
        match self
            .sts
            .annotations()
            .get(PARTITION_BEFORE)
            .map(String::as_str)
        {
            Some(NO_PARTITION) => None,
            other => Some(other.and_then(|p| p.parse().ok()).unwrap_or(0)),
        }
    }

    /// Its `updateStrategy.rollingUpdate`.
    fn rolling_update(
        &self,
    ) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateStatefulSetStrategy> {
        self.sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
    }

    /// Whether its strategy is the user's again: their partition, or with
    /// none written, no `rollingUpdate` left that only the release's
    /// partition was in (a StatefulSet made `OnDelete` later could not
    /// keep it).
    fn restored(&self) -> bool {
        match self.users_partition() {
            Some(n) => self.partition() == n,
            None => self
                .rolling_update()
                .is_none_or(|r| r.max_unavailable.is_some() && r.partition.unwrap_or(0) == 0),
        }
    }

    /// The `updateStrategy` (merge patch) that gives the user's back.
    fn restore_strategy(&self) -> Value {
        let rolling = match self.users_partition() {
            Some(n) => json!({"partition": n}),
            None if self
                .rolling_update()
                .is_some_and(|r| r.max_unavailable.is_some()) =>
            {
                json!({"partition": null})
            }
            None => Value::Null,
        };
        json!({"type": "RollingUpdate", "rollingUpdate": rolling})
    }

    async fn restore(&self) -> Result<(), Error> {
        self.merge(json!({"spec": {"updateStrategy": self.restore_strategy()}}))
            .await
    }
}

impl Set {
    fn ours(&self, rollout: &str) -> bool {
        self.sts
            .annotations()
            .get(keys::ROLLOUT)
            .map(String::as_str)
            == Some(rollout)
    }

    fn marked(&self) -> bool {
        self.sts.annotations().contains_key(keys::ROLLOUT)
    }

    /// Whether the release still holds the partition away from the user's.
    fn held(&self) -> bool {
        self.marked() && !self.restored()
    }

    /// A bound StatefulSet held on a template its stable pods do not run
    /// (its release rolled back): the hold stays until it changes again.
    fn holds_rejected(&self, status: &RolloutStatus) -> bool {
        let (_, update) = self.revisions();
        self.bound && !status.stable_revision.is_empty() && update != status.stable_revision
    }

    /// Whether its controller has seen its newest spec.
    fn observed(&self) -> bool {
        self.sts.status.as_ref().and_then(|s| s.observed_generation) >= self.sts.metadata.generation
    }

    /// Whether a release may start on a bound StatefulSet (see the
    /// Deployment's `bound_start`).
    fn bound_start(&self, rollout: &Rollout, status: &RolloutStatus) -> Start {
        let name = self.sts.name_any();
        let (current, update) = self.revisions();
        if !self.ours(&rollout.name_any()) {
            if let Some(holder) = self.sts.annotations().get(keys::ROLLOUT) {
                return super::partition::bound_elsewhere("StatefulSet", &name, holder);
            }
            if super::partition::ended(status) {
                return super::partition::slipped("StatefulSet", &name);
            }
            let (pods, ready) = self.pods_at(&current);
            return if current == update && pods >= self.replicas && ready >= self.replicas {
                Start::NothingToDo
            } else {
                Start::Busy(format!(
                    "StatefulSet {name:?}: {ready} of {} pods ready on its current revision; its own update must finish first",
                    self.replicas
                ))
            };
        }
        if !self.observed() || update.is_empty() {
            return Start::Busy(format!(
                "StatefulSet {name:?}: its controller has not seen the newest template"
            ));
        }
        let stable = if super::partition::in_flight(status) {
            status.stable_revision.clone()
        } else {
            current
        };
        if update == stable {
            // Changed back to the stable version (a revert).
            return Start::NothingToDo;
        }
        Start::Ready
    }

    /// The stable revision's template, from its ControllerRevision.
    async fn stable_template(&self, revision: &str) -> Result<Option<Value>, Error> {
        let Some(revision) = self.revisions.get_opt(revision).await? else {
            return Ok(None);
        };
        let mut stable =
            revision.data.map(|d| d.0).unwrap_or(Value::Null)["spec"]["template"].clone();
        if let Some(t) = stable.as_object_mut() {
            t.remove("$patch");
        }
        Ok(Some(stable))
    }
}

impl steps::Release for Set {
    fn replicas(&self) -> u32 {
        self.replicas
    }

    fn holder(&self) -> Option<String> {
        self.sts.annotations().get(keys::ROLLOUT).cloned()
    }

    fn running_revision(&self) -> Option<String> {
        let (current, update) = self.revisions();
        let (pods, ready) = self.pods_at(&current);
        (!current.is_empty()
            && current == update
            && self.replicas > 0
            && pods >= self.replicas
            && ready >= self.replicas)
            .then_some(current)
    }

    fn max_surge(&self) -> String {
        // A StatefulSet replaces pods in place: no surge.
        "0".into()
    }

    fn pins(&self, status: &RolloutStatus) -> Pins {
        let pin = |rev: &str| [(REVISION_HASH.to_owned(), rev.to_owned())].into();
        Pins {
            stable: pin(&status.stable_revision),
            canary: (!status.canary_revision.is_empty()).then(|| pin(&status.canary_revision)),
        }
    }

    fn release_id(&self, rollout: &Rollout) -> String {
        if self.bound {
            let id = crate::machine::bound_release_id(&rollout.spec, &template(&self.sts));
            // A template refused for OnDelete is released anew once the
            // StatefulSet is RollingUpdate again (the webhook held it).
            if self.update_type() == "OnDelete" {
                format!("{id}/OnDelete")
            } else {
                id
            }
        } else {
            crate::machine::release_id(&rollout.spec)
        }
    }

    fn start_check(&self, rollout: &Rollout, status: &RolloutStatus) -> Start {
        let strategy = self.update_type();
        if strategy != "RollingUpdate" {
            let (current, update) = self.revisions();
            if self.bound && !current.is_empty() && current == update {
                // Made OnDelete with every pod on its template: nothing
                // to release, and nothing refused.
                return Start::NothingToDo;
            }
            return Start::Refused(format!(
                "StatefulSet {:?} uses {strategy}; only RollingUpdate can be released in batches",
                self.sts.name_any()
            ));
        }
        if self.bound {
            return self.bound_start(rollout, status);
        }
        if let Some(why) = missing_containers(&template(&self.sts), rollout) {
            return Start::Refused(why);
        }
        let (current, update) = self.revisions();
        let ours = self.ours(&rollout.name_any());
        if !ours {
            let (pods, ready) = self.pods_at(&current);
            if current != update
                || current.is_empty()
                || pods < self.replicas
                || ready < self.replicas
            {
                return Start::Busy(format!(
                    "StatefulSet {:?}: {ready} of {} pods ready on its current revision; its own update must finish first",
                    self.sts.name_any(),
                    self.replicas
                ));
            }
            if desired_template(&template(&self.sts), rollout) == template(&self.sts) {
                return Start::NothingToDo;
            }
        }
        Start::Ready
    }

    fn progress(&self, status: &RolloutStatus, batch: &pb::Batch) -> Option<Progress> {
        let (pods, ready) = if status.canary_revision.is_empty() {
            (0, 0)
        } else {
            self.pods_at(&status.canary_revision)
        };
        let target = self.replicas.saturating_sub(batch.canary_replicas);
        // Pods of neither version (a replaced release's) are not the batch.
        let (current, _) = self.revisions();
        let others = self
            .pods_by_revision
            .iter()
            .any(|(r, _)| *r != current && *r != status.canary_revision);
        Some(Progress {
            ready_new: ready,
            reached: !status.canary_revision.is_empty()
                && !others
                && self.partition() == target
                && pods == batch.canary_replicas
                && ready + batch.max_unready >= batch.canary_replicas,
            pod_share: (100 * ready.min(self.replicas))
                .checked_div(self.replicas)
                .unwrap_or(0),
            misplaced: others || self.partition() != target,
        })
    }

    fn handed_back(&self, status: &RolloutStatus) -> Result<(), String> {
        if self.held() {
            return Err(format!(
                "StatefulSet {:?} is still held by the release",
                self.sts.name_any()
            ));
        }
        let (_, update) = self.revisions();
        let (pods, ready) = self.pods_at(&status.canary_revision);
        if update != status.canary_revision || pods < self.replicas || ready < self.replicas {
            return Err(format!(
                "{ready} of {} pods ready on the new revision",
                self.replicas
            ));
        }
        Ok(())
    }

    fn rolled_back(&self, status: &RolloutStatus) -> Result<(), String> {
        let (_, update) = self.revisions();
        let (pods, ready) = self.pods_at(&status.stable_revision);
        if self.holds_rejected(status) {
            // Held on the rejected template: every pod back on stable.
            let (new, _) = self.pods_at(&update);
            if pods < self.replicas || ready < self.replicas || new > 0 || !self.marked() {
                return Err(format!(
                    "{ready} of {} pods ready on the stable revision; {new} new left",
                    self.replicas
                ));
            }
            return Ok(());
        }
        if self.held()
            || update != status.stable_revision
            || pods < self.replicas
            || ready < self.replicas
        {
            return Err(format!(
                "{ready} of {} pods ready on the stable revision",
                self.replicas
            ));
        }
        Ok(())
    }

    async fn begin(
        &self,
        _: &Ctx,
        rollout: &Rollout,
        status: &mut RolloutStatus,
        _: &pb::Batch,
    ) -> Result<(), Error> {
        let name = rollout.name_any();
        let ours = self.ours(&name);
        let (current, _) = self.revisions();
        let stable = if ours && !status.stable_revision.is_empty() {
            status.stable_revision.clone()
        } else {
            current
        };
        // Released from the stable revision's template, so a new release
        // in flight replaces the one before it.
        let base = match self.stable_template(&stable).await? {
            Some(t) if ours => t,
            _ => template(&self.sts),
        };
        let wanted = if self.bound {
            template(&self.sts)
        } else {
            desired_template(&base, rollout)
        };
        let before = if ours {
            self.users_partition()
        } else {
            self.rolling_update()
                .and_then(|r| r.partition)
                .map(|p| p.max(0) as u32)
        };
        let before = before.map_or_else(|| NO_PARTITION.to_owned(), |p| p.to_string());
        // Over the version read, which showed it free (or ours): of two
        // Rollouts taking it at once, only the first write does.
        let patch = json!({
            "metadata": {"resourceVersion": self.sts.resource_version(),
                         "annotations": {keys::ROLLOUT: name, PARTITION_BEFORE: before}},
            "spec": {"template": crate::writes::merge_to(&template(&self.sts), &wanted), "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": self.replicas}}},
        });
        self.merge(patch).await?;
        status.stable_revision = stable;
        status.canary_revision = String::new();
        Ok(())
    }

    async fn move_pods(
        &self,
        status: &mut RolloutStatus,
        batch: &pb::Batch,
    ) -> Result<bool, Error> {
        let (_, update) = self.revisions();
        if status.canary_revision.is_empty() {
            if update.is_empty() || update == status.stable_revision {
                // The StatefulSet controller has not seen the template yet.
                return Ok(false);
            }
            status.canary_revision = update;
        }
        // Pods below the partition keep the revision they run: new ones
        // left there by a scale-up or a smaller batch, and a replaced
        // release's, go back to the stable revision, as its controller
        // makes a pod below the partition again. Until they have, the
        // partition stays as many pods higher as new ones are left below
        // it, so the new pods never outnumber the batch.
        let (current, _) = self.revisions();
        let target = self.replicas.saturating_sub(batch.canary_replicas);
        let new_below = self
            .pods_by_revision
            .iter()
            .filter(|(revision, pod)| {
                *revision == status.canary_revision && self.ordinal(pod).is_some_and(|o| o < target)
            })
            .count() as u32;
        let partition = (target + new_below).min(self.replicas);
        if self.partition() != partition {
            // One change at a time: its controller replaces pods for it,
            // and strays are replaced on a later look, from what is
            // available then.
            return self.set_partition(partition).await.map(|()| true);
        }
        if !current.is_empty() && current != status.canary_revision {
            self.replace_strays(partition, &current).await?;
        }
        Ok(false)
    }

    async fn hand_back(
        &self,
        _: &RolloutStatus,
        traffic: Option<&Traffic>,
    ) -> Result<Option<String>, Error> {
        if let Some(t) = traffic {
            t.restore().await?;
        }
        if self.held() {
            self.restore().await?;
        }
        Ok(None)
    }

    async fn unmark(&self) -> Result<(), Error> {
        if self.held() {
            // Still held: given back only when there is nothing to roll
            // (a bound StatefulSet changed back to the revision it runs);
            // otherwise the hold and its marks stay (held on a rejected
            // template).
            let (current, update) = self.revisions();
            if current != update || !self.observed() {
                return Ok(());
            }
            self.restore().await?;
        }
        self.remove_marks().await
    }

    async fn roll_back(&self, status: &RolloutStatus) -> Result<(), Error> {
        if !self.marked() {
            return Ok(());
        }
        if self.holds_rejected(status) {
            // The template stays as the user applied it, held: every pod
            // goes back to the stable revision (a pod below the partition
            // is made again at the current revision when deleted).
            if self.partition() != self.replicas {
                self.set_partition(self.replicas).await?;
            }
            let (current, _) = self.revisions();
            if !current.is_empty() {
                self.replace_strays(self.replicas, &current).await?;
            }
            return Ok(());
        }
        let Some(stable) = self.stable_template(&status.stable_revision).await? else {
            return Err(Error::Missing(format!(
                "cannot roll back: ControllerRevision {:?} is gone",
                status.stable_revision
            )));
        };
        if template(&self.sts) != stable || !self.restored() {
            let stable = crate::writes::merge_to(&template(&self.sts), &stable);
            let patch =
                json!({"spec": {"template": stable, "updateStrategy": self.restore_strategy()}});
            return self.merge(patch).await;
        }
        Ok(())
    }
}

impl Set {
    /// Pods its controller may have unavailable in a rolling update
    /// (`updateStrategy.rollingUpdate.maxUnavailable`, 1 when unset, a
    /// percentage rounded down but at least 1).
    fn max_unavailable(&self) -> u32 {
        // Read as a Deployment's allowance is; unset means 1 for a StatefulSet.
        self.sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref())
            .map_or(1, |given| {
                super::partition::allowance(Some(given)).pods_floor(self.replicas)
            })
            .max(1)
    }

    /// Deletes its pods below ordinal `below` that run another revision
    /// than `keep` (its controller makes a pod below the partition again
    /// at its current revision): those not ready at once, ready ones only
    /// as its maxUnavailable allows, counting every pod missing or not
    /// ready now (the ones deleted before come back first).
    async fn replace_strays(&self, below: u32, keep: &str) -> Result<(), Error> {
        let pods: Api<Pod> = Api::namespaced(
            self.sets.clone().into_client(),
            &self.sts.namespace().unwrap_or_default(),
        );
        let below_partition = |pod: &str| self.ordinal(pod).is_some_and(|o| o < below);
        let ready_now = self.ready_by_revision.iter().filter(|(_, r)| *r).count() as u32;
        let mut budget = self
            .max_unavailable()
            .saturating_sub(self.replicas.saturating_sub(ready_now));
        for ((revision, pod), (_, ready)) in
            self.pods_by_revision.iter().zip(&self.ready_by_revision)
        {
            if revision == keep || !below_partition(pod) {
                continue;
            }
            if *ready {
                if budget == 0 {
                    continue;
                }
                budget -= 1;
            }
            match pods.delete(pod, &Default::default()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Takes the release's annotations off the StatefulSet.
    async fn remove_marks(&self) -> Result<(), Error> {
        // The marks off, and Sluice's ownership of the partition it gave back.
        let patch = if self.marked() || self.sts.annotations().contains_key(PARTITION_BEFORE) {
            json!({"metadata": {"annotations": {keys::ROLLOUT: null, PARTITION_BEFORE: null, keys::FIELD_OWNERS: null}}})
        } else {
            json!({})
        };
        crate::writes::disown(&self.sets, &self.sts.name_any(), Some(&self.sts), patch).await?;
        Ok(())
    }
}

/// Gives a StatefulSet held by `rollout` (a binding being deleted) back to
/// its own controller whole: traffic objects restored, analyses stopped,
/// the user's partition back, the marks off.
pub(super) async fn let_go(ctx: &Ctx, rollout: &Rollout) -> Result<(), Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    ctx.analyses.stop(&ns, &name);
    let set = Set::load(ctx, &ns, rollout).await?;
    // A binding that does not hold its StatefulSet (a second one, refused)
    // leaves it and its traffic to the one that does.
    if set.as_ref().is_some_and(|set| {
        set.sts
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
        false,
    ) {
        t.restore().await?;
    }
    let Some(set) = set else {
        return Ok(());
    };
    if !set.ours(&name) {
        return Ok(());
    }
    if set.held() {
        set.restore().await?;
    }
    set.remove_marks().await
}

/// Reconciles a partition release of a StatefulSet.
pub(super) async fn reconcile(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let Some(set) = Set::load(ctx, &ns, rollout).await? else {
        return Ok(fail(
            status,
            format!(
                "StatefulSet {:?} not found in namespace {ns:?}",
                rollout.spec.workload.name
            ),
        ));
    };
    steps::drive(ctx, rollout, consumed, &set, status).await
}

fn template(sts: &StatefulSet) -> Value {
    crate::admission::hold::pod_template(sts.spec.as_ref().map(|s| &s.template))
}
