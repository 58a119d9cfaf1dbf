//! Canary-style and blue-green releases of a Deployment: the new version
//! runs in a Deployment of its own, `<name>-canary`, beside the user's,
//! which stays whole and untouched until the end.
//!
//! - Canary-style: the canary Deployment grows batch by batch while traffic
//!   moves as the plan says.
//! - Blue-green: the canary Deployment comes up at full size at once;
//!   traffic switches as the plan says; after the last step the old version
//!   is kept for the rollback window.
//!
//! Handing back: the user's Deployment gets the new template and rolls by
//! its own controller while traffic stays on the canary; once it is
//! complete, traffic goes back to the user's Service as it was, and the
//! canary Deployment is deleted. A rollback sends traffic to stable first,
//! then deletes the canary Deployment; the user's Deployment was never
//! changed.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::{Value, json};
use sluice_proto::v1 as pb;

use super::{
    Ctx, Error, fail, finish_step, parse_time,
    partition::{desired_template, max_surge_text, owned_candidates, template_of},
    plan, record, steps,
    traffic::{Pins, Traffic},
};
use crate::{
    crd::{Phase, Rollout, RolloutStatus},
    keys,
};

struct Canary {
    deployments: Api<Deployment>,
    /// The user's Deployment.
    deployment: Deployment,
    /// Its ReplicaSets.
    owned: Vec<ReplicaSet>,
    /// The canary Deployment, once made.
    canary: Option<Deployment>,
    /// The canary Deployment's newest ReplicaSet.
    canary_rs: Option<ReplicaSet>,
    replicas: u32,
    blue_green: bool,
}

fn canary_name(deployment: &str) -> String {
    format!("{deployment}-canary")
}

fn count(v: Option<i32>) -> u32 {
    v.unwrap_or(0).max(0) as u32
}

fn revision(rs: &ReplicaSet) -> u64 {
    rs.annotations()
        .get(keys::REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Whether a Deployment's controller has finished rolling it out.
fn complete(d: &Deployment, replicas: u32) -> bool {
    let st = d.status.clone().unwrap_or_default();
    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && count(st.updated_replicas) == replicas
        && count(st.ready_replicas) == replicas
        && count(st.available_replicas) == replicas
        && count(st.replicas) == replicas
}

impl Canary {
    async fn load(
        ctx: &Ctx,
        ns: &str,
        name: &str,
        blue_green: bool,
    ) -> Result<Option<Self>, Error> {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
        let replicasets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
        let Some(deployment) = deployments.get_opt(name).await? else {
            return Ok(None);
        };
        let canary = deployments.get_opt(&canary_name(name)).await?;
        // The canary Deployment's selector is the user's plus a label, so
        // the user's selector finds both sets of ReplicaSets.
        let all = replicasets
            .list(&owned_candidates(&deployment))
            .await?
            .items;
        let owned_by = |uid: Option<String>| {
            let uid = uid.unwrap_or_default();
            all.iter()
                .filter(|rs| rs.owner_references().iter().any(|o| o.uid == uid))
                .cloned()
                .collect::<Vec<_>>()
        };
        let owned = owned_by(deployment.uid());
        let canary_rs = canary
            .as_ref()
            .map(|c| owned_by(c.uid()))
            .and_then(|list| list.into_iter().max_by_key(revision));
        let replicas = count(
            deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .or(Some(1)),
        );
        Ok(Some(Self {
            deployments,
            deployment,
            owned,
            canary,
            canary_rs,
            replicas,
            blue_green,
        }))
    }

    fn name(&self) -> String {
        self.deployment.name_any()
    }

    fn by_hash(&self, hash: &str) -> Option<&ReplicaSet> {
        self.owned
            .iter()
            .find(|rs| rs.labels().get(keys::TEMPLATE_HASH).map(String::as_str) == Some(hash))
    }

    fn canary_ready(&self) -> u32 {
        self.canary.as_ref().map_or(0, |c| {
            count(c.status.as_ref().and_then(|s| s.ready_replicas))
        })
    }

    async fn merge(&self, name: &str, patch: Value) -> Result<(), Error> {
        self.deployments
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// The new template, as the user's Deployment will carry it.
    fn new_template(&self) -> Option<Value> {
        let mut t =
            serde_json::to_value(self.canary.as_ref()?.spec.as_ref()?.template.clone()).ok()?;
        if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
            labels.remove(keys::CANARY_OF);
        }
        Some(t)
    }

    async fn delete_canary(&self) -> Result<(), Error> {
        match self
            .deployments
            .delete(&canary_name(&self.name()), &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reconciles a canary-style or blue-green release of a Deployment.
pub(super) async fn reconcile(
    ctx: &Ctx,
    rollout: &Rollout,
    consumed: &mut Vec<&'static str>,
    status: &mut RolloutStatus,
    blue_green: bool,
) -> Result<Action, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let Some(c) = Canary::load(ctx, &ns, &rollout.spec.workload.name, blue_green).await? else {
        return Ok(fail(
            status,
            format!(
                "Deployment {:?} not found in namespace {ns:?}",
                rollout.spec.workload.name
            ),
        ));
    };
    steps::drive(ctx, rollout, consumed, &c, status).await
}

async fn start(
    ctx: &Ctx,
    rollout: &Rollout,
    c: &Canary,
    status: &mut RolloutStatus,
) -> Result<Action, Error> {
    let name = rollout.name_any();
    let current = serde_json::to_value(c.deployment.spec.as_ref().map(|s| s.template.clone()))
        .unwrap_or(Value::Null);
    let stable = if !status.stable_revision.is_empty() {
        c.by_hash(&status.stable_revision)
    } else {
        c.owned.iter().find(|rs| template_of(rs) == current)
    };
    let Some(stable) = stable.filter(|_| complete(&c.deployment, c.replicas)) else {
        return Ok(fail(
            status,
            format!(
                "Deployment {:?} is not fully rolled out to its current template; wait for it to finish",
                c.name()
            ),
        ));
    };
    let wanted = desired_template(&current, rollout);
    if wanted == current {
        status.phase = Phase::Succeeded;
        status.message = "nothing to release: the workload already runs this version".into();
        return Ok(Action::await_change());
    }
    let mut template = wanted;
    template["metadata"]["labels"][keys::CANARY_OF] = json!(c.name());
    let mut selector = serde_json::to_value(c.deployment.spec.as_ref().map(|s| s.selector.clone()))
        .unwrap_or(Value::Null);
    selector["matchLabels"][keys::CANARY_OF] = json!(c.name());
    let owner = rollout.controller_owner_ref(&()).map(|o| json!([o]));
    let canary: Deployment = serde_json::from_value(json!({
        "metadata": {
            "name": canary_name(&c.name()),
            "labels": c.deployment.labels(),
            "annotations": {keys::ROLLOUT: name},
            "ownerReferences": owner,
        },
        "spec": {
            "replicas": 0,
            "selector": selector,
            "template": template,
            "strategy": c.deployment.spec.as_ref().and_then(|s| s.strategy.clone()),
            "minReadySeconds": c.deployment.spec.as_ref().and_then(|s| s.min_ready_seconds),
        },
    }))
    .map_err(|e| Error::Missing(format!("canary Deployment: {e}")))?;
    match &c.canary {
        None => match c.deployments.create(&PostParams::default(), &canary).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        },
        // Left by an earlier release of this rollout (continuous release):
        // it takes the newest template and starts from nothing.
        Some(_) => {
            c.merge(
                &canary.name_any(),
                json!({"metadata": {"annotations": {keys::ROLLOUT: name}}, "spec": {"replicas": 0, "template": template}}),
            )
            .await?;
        }
    }
    c.merge(
        &c.name(),
        json!({"metadata": {"annotations": {keys::ROLLOUT: name}}}),
    )
    .await?;
    let plan = plan(ctx, rollout, c.replicas, &max_surge_text(&c.deployment)).await?;
    let first = plan.batches.first().cloned().unwrap_or_default();
    *status = RolloutStatus {
        phase: Phase::Progressing,
        total_steps: plan.batches.len() as u32,
        stable_revision: stable
            .labels()
            .get(keys::TEMPLATE_HASH)
            .cloned()
            .unwrap_or_default(),
        message: format!(
            "releasing {} replicas beside {} in {} steps",
            c.replicas,
            canary_name(&c.name()),
            plan.batches.len()
        ),
        observed_generation: status.observed_generation,
        ..RolloutStatus::default()
    };
    record(status, &first);
    Ok(Action::requeue(Duration::ZERO))
}

impl steps::Release for Canary {
    fn replicas(&self) -> u32 {
        self.replicas
    }

    fn max_surge(&self) -> String {
        max_surge_text(&self.deployment)
    }

    fn ready_new(&self, status: &RolloutStatus) -> Option<u32> {
        self.by_hash(&status.stable_revision)?;
        self.canary.as_ref()?;
        Some(self.canary_ready())
    }

    fn pod_share(&self, ready_new: u32) -> u32 {
        (100 * ready_new)
            .checked_div(self.replicas + ready_new)
            .unwrap_or(0)
    }

    fn pins(&self, status: &RolloutStatus) -> Pins {
        Pins {
            stable: [(
                keys::TEMPLATE_HASH.to_owned(),
                status.stable_revision.clone(),
            )]
            .into(),
            canary: Some([(keys::CANARY_OF.to_owned(), self.name())].into()),
        }
    }

    fn canary_workload(&self) -> Option<String> {
        Some(canary_name(&self.name()))
    }

    async fn advance(&self, status: &mut RolloutStatus, batch: &pb::Batch) -> Result<bool, Error> {
        let Some(canary) = &self.canary else {
            return Ok(false);
        };
        let target = batch.canary_replicas.min(self.replicas);
        if canary.spec.as_ref().and_then(|s| s.replicas) != Some(target as i32) {
            self.merge(&canary.name_any(), json!({"spec": {"replicas": target}}))
                .await?;
            return Ok(false);
        }
        if let Some(rs) = &self.canary_rs
            && let Some(hash) = rs.labels().get(keys::TEMPLATE_HASH)
        {
            status.canary_revision.clone_from(hash);
        }
        let st = canary.status.clone().unwrap_or_default();
        Ok(
            st.observed_generation.unwrap_or(0) >= canary.metadata.generation.unwrap_or(0)
                && count(st.updated_replicas) == target
                && count(st.replicas) == target
                && count(st.ready_replicas) + batch.max_unready >= target,
        )
    }

    async fn finish(
        &self,
        status: &mut RolloutStatus,
        _rollout: &str,
        traffic: Option<&Traffic>,
        plan: &pb::Plan,
    ) -> Result<Option<Action>, Error> {
        // Blue-green keeps the old version whole for its rollback window.
        let window = if self.blue_green {
            plan.rollback_window.map_or(Duration::from_secs(600), |d| {
                Duration::from_secs(d.seconds.max(0) as u64)
            })
        } else {
            Duration::ZERO
        };
        let after = match status.handback_after.as_deref().and_then(parse_time) {
            Some(t) => t,
            None => {
                let at = SystemTime::now() + window;
                status.handback_after = Some(super::time_text(at));
                at
            }
        };
        if let Ok(left) = after.duration_since(SystemTime::now())
            && !left.is_zero()
        {
            status.message = format!(
                "all traffic on the new version; the old version is kept until {}",
                status.handback_after.clone().unwrap_or_default()
            );
            return Ok(Some(Action::requeue(left)));
        }
        let Some(template) = self.new_template() else {
            return Err(Error::Missing(format!(
                "Deployment {:?} is gone",
                canary_name(&self.name())
            )));
        };
        let current =
            serde_json::to_value(self.deployment.spec.as_ref().map(|s| s.template.clone()))
                .unwrap_or(Value::Null);
        if current != template {
            self.merge(&self.name(), json!({"spec": {"template": template}}))
                .await?;
            status.message = format!("handing back: {} takes the new template", self.name());
            return Ok(Some(Action::await_change()));
        }
        if !complete(&self.deployment, self.replicas) {
            let updated = count(
                self.deployment
                    .status
                    .as_ref()
                    .and_then(|s| s.updated_replicas),
            );
            status.message = format!(
                "handing back: {updated} of {} pods of {} updated; traffic stays on {}",
                self.replicas,
                self.name(),
                canary_name(&self.name())
            );
            return Ok(Some(Action::await_change()));
        }
        if let Some(t) = traffic {
            t.restore().await?;
        }
        self.delete_canary().await?;
        self.merge(
            &self.name(),
            json!({"metadata": {"annotations": {keys::ROLLOUT: null}}}),
        )
        .await?;
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
        status.traffic = 0;
        status.canary_replicas = 0;
        if self.canary.is_some() {
            self.delete_canary().await?;
        }
        // The user's Deployment is whole: it only loses the mark, and, if a
        // hand-back had begun, gets its stable template back.
        if let Some(stable) = self.by_hash(&status.stable_revision) {
            let current =
                serde_json::to_value(self.deployment.spec.as_ref().map(|s| s.template.clone()))
                    .unwrap_or(Value::Null);
            let stable_template = template_of(stable);
            if current != stable_template {
                self.merge(&self.name(), json!({"spec": {"template": stable_template}}))
                    .await?;
                return Ok(Action::await_change());
            }
        }
        if !complete(&self.deployment, self.replicas) {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        self.merge(
            &self.name(),
            json!({"metadata": {"annotations": {keys::ROLLOUT: null}}}),
        )
        .await?;
        finish_step(status);
        status.phase = Phase::RolledBack;
        status.pause_until = None;
        status.handback_after = None;
        Ok(Action::await_change())
    }
}
