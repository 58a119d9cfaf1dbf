//! StatefulSet releases through `rollingUpdate.partition`: the new template
//! goes in with the partition at `replicas` (no pod changes), then each
//! batch lowers the partition so that the highest `canary` ordinals run the
//! new revision, as the StatefulSet controller replaces them one at a time.
//! At the end the partition is restored; a rollback puts the current
//! revision's template back, which the StatefulSet controller recognises,
//! and restores the partition.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{ControllerRevision, StatefulSet},
    core::v1::Pod,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::{Value, json};
use sluice_proto::v1 as pb;

use super::{
    Ctx, Error, fail, finish_step,
    partition::desired_template,
    plan, record, steps,
    traffic::{Pins, Traffic},
};
use crate::{
    crd::{Phase, Rollout, RolloutStatus},
    keys,
};

/// On a StatefulSet: its partition before the release.
const PARTITION_BEFORE: &str = "sluice.dev/partition-before";
/// The label naming a StatefulSet pod's revision.
const REVISION_HASH: &str = "controller-revision-hash";

struct Set {
    sets: Api<StatefulSet>,
    revisions: Api<ControllerRevision>,
    sts: StatefulSet,
    replicas: u32,
    /// Ready pods by revision.
    ready_by_revision: Vec<(String, bool)>,
}

impl Set {
    /// Merge-patches the StatefulSet.
    async fn merge(&self, patch: Value) -> Result<(), Error> {
        self.sets
            .patch(
                &self.sts.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(())
    }

    async fn load(ctx: &Ctx, ns: &str, name: &str) -> Result<Option<Self>, Error> {
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
        let ready_by_revision = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
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

    fn partition_before(&self) -> u32 {
        self.sts
            .annotations()
            .get(PARTITION_BEFORE)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

impl steps::Release for Set {
    fn replicas(&self) -> u32 {
        self.replicas
    }

    fn max_surge(&self) -> String {
        // A StatefulSet replaces pods in place: no surge.
        "0".into()
    }

    fn ready_new(&self, status: &RolloutStatus) -> Option<u32> {
        if status.canary_revision.is_empty() {
            return Some(0);
        }
        Some(self.pods_at(&status.canary_revision).1)
    }

    async fn advance(&self, status: &mut RolloutStatus, batch: &pb::Batch) -> Result<bool, Error> {
        let (_, update) = self.revisions();
        if status.canary_revision.is_empty() {
            if update.is_empty() || update == status.stable_revision {
                // The StatefulSet controller has not seen the template yet.
                return Ok(false);
            }
            status.canary_revision = update.clone();
        }
        let target = self.replicas.saturating_sub(batch.canary_replicas);
        if self.partition() != target {
            self.set_partition(target).await?;
            return Ok(false);
        }
        let (pods, ready) = self.pods_at(&status.canary_revision);
        Ok(pods == batch.canary_replicas && ready + batch.max_unready >= batch.canary_replicas)
    }

    fn pins(&self, status: &RolloutStatus) -> Pins {
        let pin = |rev: &str| [(REVISION_HASH.to_owned(), rev.to_owned())].into();
        Pins {
            stable: pin(&status.stable_revision),
            canary: (!status.canary_revision.is_empty()).then(|| pin(&status.canary_revision)),
        }
    }

    async fn finish(
        &self,
        _: &mut RolloutStatus,
        _: &str,
        traffic: Option<&Traffic>,
        _: &pb::Plan,
    ) -> Result<Option<Action>, Error> {
        if let Some(t) = traffic {
            t.restore().await?;
        }
        let patch = json!({
            "metadata": {"annotations": {keys::ROLLOUT: null, PARTITION_BEFORE: null}},
            "spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": self.partition_before()}}},
        });
        self.merge(patch).await?;
        Ok(None)
    }

    async fn start(
        &self,
        ctx: &Ctx,
        rollout: &Rollout,
        status: &mut RolloutStatus,
    ) -> Result<Action, Error> {
        start(ctx, rollout, self, status).await
    }

    async fn rollback(&self, status: &mut RolloutStatus) -> Result<Action, Error> {
        rollback(self, status).await
    }
}

/// Reconciles a partition release of a StatefulSet.
pub(super) async fn reconcile(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let Some(set) = Set::load(ctx, &ns, &rollout.spec.workload.name).await? else {
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
    serde_json::to_value(sts.spec.as_ref().map(|s| s.template.clone())).unwrap_or(Value::Null)
}

async fn start(
    ctx: &Ctx,
    rollout: &Rollout,
    set: &Set,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    let name = rollout.name_any();
    let strategy = set
        .sts
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.clone())
        .unwrap_or_else(|| "RollingUpdate".into());
    if strategy != "RollingUpdate" {
        return Ok(fail(
            status,
            format!(
                "StatefulSet {:?} uses {strategy}; only RollingUpdate can be released in batches",
                set.sts.name_any()
            ),
        ));
    }
    let (current, update) = set.revisions();
    let ours = set.sts.annotations().get(keys::ROLLOUT) == Some(&name);
    if !ours && current != update {
        return Ok(fail(
            status,
            format!(
                "StatefulSet {:?} is in the middle of an update; wait for it to finish",
                set.sts.name_any()
            ),
        ));
    }
    let stable = if ours && !status.stable_revision.is_empty() {
        status.stable_revision.clone()
    } else {
        current
    };
    let wanted = desired_template(&template(&set.sts), rollout);
    if !ours && wanted == template(&set.sts) {
        status.phase = Phase::Succeeded;
        status.message = "nothing to release: the workload already runs this version".into();
        return Ok(Action::await_change());
    }
    let before = if ours {
        set.partition_before()
    } else {
        set.partition()
    };
    let patch = json!({
        "metadata": {"annotations": {keys::ROLLOUT: name, PARTITION_BEFORE: before.to_string()}},
        "spec": {"template": wanted, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": set.replicas}}},
    });
    set.merge(patch).await?;
    let plan = plan(ctx, rollout, set.replicas, "0").await?;
    let first = plan.batches.first().cloned().unwrap_or_default();
    *status = RolloutStatus {
        phase: Phase::Progressing,
        total_steps: plan.batches.len() as u32,
        stable_revision: stable,
        message: format!(
            "releasing to {} replicas in {} steps",
            set.replicas,
            plan.batches.len()
        ),
        observed_generation: status.observed_generation,
        ..RolloutStatus::default()
    };
    record(status, &first);
    Ok(Action::requeue(Duration::ZERO))
}

async fn rollback(set: &Set, status: &mut RolloutStatus) -> Result<Action, Error> {
    let Some(revision) = set.revisions.get_opt(&status.stable_revision).await? else {
        return Ok(fail(
            status,
            format!(
                "cannot roll back: ControllerRevision {:?} is gone",
                status.stable_revision
            ),
        ));
    };
    let mut stable = revision.data.map(|d| d.0).unwrap_or(Value::Null)["spec"]["template"].clone();
    if let Some(t) = stable.as_object_mut() {
        t.remove("$patch");
    }
    if template(&set.sts) != stable || set.partition() != set.partition_before() {
        let patch = json!({"spec": {"template": stable, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": set.partition_before()}}}});
        set.merge(patch).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    status.traffic = 0;
    status.canary_replicas = 0;
    let (_, update) = set.revisions();
    let (pods, ready) = set.pods_at(&status.stable_revision);
    if update != status.stable_revision || pods < set.replicas || ready < set.replicas {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let unmark =
        json!({"metadata": {"annotations": {keys::ROLLOUT: null, PARTITION_BEFORE: null}}});
    set.merge(unmark).await?;
    finish_step(status);
    status.phase = Phase::RolledBack;
    status.pause_until = None;
    Ok(Action::await_change())
}
