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

use std::sync::Arc;

use super::Action;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch},
};
use serde_json::{Value, json};
use sluice_proto::v1 as pb;

use super::{
    Ctx, Error, fail,
    partition::{
        bound_stable, bound_start, complete, deployment_template, desired_template, held, held_by,
        max_surge_text, missing_containers, owned_candidates, release_patch, remove_marks,
        stable_of, template_of,
    },
    steps,
    traffic::{Pins, Traffic},
};
use crate::{
    crd::{Rollout, RolloutStatus},
    keys,
    machine::{Progress, Start},
};

struct Canary {
    deployments: Api<Deployment>,
    /// The user's Deployment.
    deployment: Deployment,
    /// Its ReplicaSets.
    owned: Vec<Arc<ReplicaSet>>,
    /// The canary Deployment, once made.
    canary: Option<Deployment>,
    /// The canary Deployment's newest ReplicaSet.
    canary_rs: Option<ReplicaSet>,
    replicas: u32,
    /// The Rollout is bound to the Deployment: the new version is its own
    /// template, changed by the user and held by the webhook.
    bound: bool,
    client: kube::Client,
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

impl Canary {
    async fn load(ctx: &Ctx, ns: &str, rollout: &Rollout) -> Result<Option<Self>, Error> {
        let name = rollout.spec.workload.name.as_str();
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
        let owned: Vec<Arc<ReplicaSet>> = owned_by(deployment.uid())
            .into_iter()
            .map(Arc::new)
            .collect();
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
            bound: rollout.spec.bound(),
            client: ctx.client.clone(),
        }))
    }

    fn name(&self) -> String {
        self.deployment.name_any()
    }

    fn by_hash(&self, hash: &str) -> Option<&ReplicaSet> {
        self.owned
            .iter()
            .find(|rs| rs.labels().get(keys::TEMPLATE_HASH).map(String::as_str) == Some(hash))
            .map(|rs| &**rs)
    }

    fn canary_ready(&self) -> u32 {
        self.canary.as_ref().map_or(0, |c| {
            count(c.status.as_ref().and_then(|s| s.ready_replicas))
        })
    }

    async fn merge(&self, name: &str, patch: Value) -> Result<(), Error> {
        self.deployments
            .patch(name, &crate::writes::patch(), &Patch::Merge(patch))
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
) -> Result<Action, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let Some(c) = Canary::load(ctx, &ns, rollout).await? else {
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

fn template_json(d: &Deployment) -> Value {
    serde_json::to_value(d.spec.as_ref().map(|s| s.template.clone())).unwrap_or(Value::Null)
}

/// Makes the canary Deployment at 0 replicas with the new template and
/// marks the user's Deployment; records the stable revision.
async fn begin(rollout: &Rollout, c: &Canary, status: &mut RolloutStatus) -> Result<(), Error> {
    let name = rollout.name_any();
    let current = template_json(&c.deployment);
    let Some(stable) = c.stable(status) else {
        return Err(Error::Missing(format!(
            "no ReplicaSet runs the current template of Deployment {:?}",
            c.name()
        )));
    };
    let stable_template = template_of(stable);
    let stable_hash = stable
        .labels()
        .get(keys::TEMPLATE_HASH)
        .cloned()
        .unwrap_or_default();
    let mut template = if c.bound {
        current.clone()
    } else {
        desired_template(&stable_template, rollout)
    };
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
    // The user's Deployment is taken first, over the version read, which
    // showed it free (or ours): of two Rollouts waiting for it, only the
    // first write takes it; the other's fails with a conflict and finds
    // the new holder when it runs again. An earlier release's hand-back
    // may have begun: the Deployment gets its stable template back.
    let mut mark = json!({"metadata": {"resourceVersion": c.deployment.resource_version(),
                                       "annotations": {keys::ROLLOUT: name}}});
    // A bound Deployment keeps the template the user applied, held.
    if current != stable_template && !c.bound {
        mark["spec"] = json!({"template": stable_template});
    }
    c.merge(&c.name(), mark).await?;
    match &c.canary {
        None => match c.deployments.create(&crate::writes::post(), &canary).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        },
        // Left by an earlier release of this rollout (continuous release):
        // it takes the newest template and starts from nothing.
        Some(existing) => {
            let template = crate::writes::merge_to(&template_json(existing), &template);
            c.merge(
                &canary.name_any(),
                json!({"metadata": {"annotations": {keys::ROLLOUT: name}}, "spec": {"replicas": 0, "template": template}}),
            )
            .await?;
        }
    }
    status.stable_revision = stable_hash;
    status.canary_revision = String::new();
    Ok(())
}

impl Canary {
    fn ours(&self, rollout: &str) -> bool {
        held_by(&self.deployment, rollout)
    }

    fn stable(&self, status: &RolloutStatus) -> Option<&ReplicaSet> {
        if self.bound && !super::partition::in_flight(status) {
            return bound_stable(&self.deployment, &self.owned);
        }
        stable_of(&self.deployment, &self.owned, status)
    }

    /// A bound Deployment held on a template its stable pods do not run.
    fn holds_rejected(&self, status: &RolloutStatus) -> bool {
        self.bound
            && self
                .by_hash(&status.stable_revision)
                .is_some_and(|rs| template_of(rs) != template_json(&self.deployment))
    }
}

impl steps::Release for Canary {
    fn replicas(&self) -> u32 {
        self.replicas
    }

    fn holder(&self) -> Option<String> {
        super::partition::holder_of(&self.deployment)
    }

    fn running_revision(&self) -> Option<String> {
        let canary_pods = self
            .canary_rs
            .as_ref()
            .and_then(|rs| rs.status.as_ref())
            .is_some_and(|s| s.replicas > 0);
        if canary_pods {
            return None;
        }
        super::partition::sole_revision(&self.owned, self.replicas)
    }

    fn max_surge(&self) -> String {
        max_surge_text(&self.deployment)
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

    fn release_id(&self, rollout: &Rollout) -> String {
        if self.bound {
            crate::machine::bound_release_id(&rollout.spec, &deployment_template(&self.deployment))
        } else {
            crate::machine::release_id(&rollout.spec)
        }
    }

    fn paused_by_user(&self) -> Option<String> {
        self.bound
            .then(|| super::partition::paused_by_user(&self.deployment))
            .flatten()
    }

    fn start_check(&self, rollout: &Rollout, status: &RolloutStatus) -> Start {
        if let Some(holder) = self.deployment.annotations().get(keys::ROLLOUT)
            && !self.ours(&rollout.name_any())
        {
            return super::partition::held_elsewhere(
                "Deployment",
                &self.name(),
                holder,
                self.bound,
            );
        }
        if self.bound {
            return bound_start(&self.deployment, rollout, status, self.stable(status));
        }
        if !self.ours(&rollout.name_any())
            && let Err(why) = complete(&self.deployment)
        {
            return Start::Busy(format!("{why}; its own rollout must finish first"));
        }
        let Some(stable) = self.stable(status) else {
            return Start::Busy(format!(
                "no ReplicaSet runs the current template of Deployment {:?}",
                self.name()
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

    fn cannot_create(&self, _status: &RolloutStatus) -> Option<String> {
        super::partition::replica_failure(self.canary_rs.as_ref()?)
    }

    fn progress(&self, status: &RolloutStatus, batch: &pb::Batch) -> Option<Progress> {
        self.by_hash(&status.stable_revision)?;
        let canary = self.canary.as_ref()?;
        let target = batch.canary_replicas.min(self.replicas);
        let st = canary.status.clone().unwrap_or_default();
        let ready_new = self.canary_ready();
        let known = self
            .canary_rs
            .as_ref()
            .and_then(|rs| rs.labels().get(keys::TEMPLATE_HASH));
        Some(Progress {
            ready_new,
            reached: canary.spec.as_ref().and_then(|s| s.replicas) == Some(target as i32)
                && known.is_some_and(|h| *h == status.canary_revision)
                && st.observed_generation.unwrap_or(0) >= canary.metadata.generation.unwrap_or(0)
                && count(st.updated_replicas) == target
                && count(st.replicas) == target
                && count(st.ready_replicas) + batch.max_unready >= target,
            pod_share: (100 * ready_new)
                .checked_div(self.replicas + ready_new)
                .unwrap_or(0),
            misplaced: false,
        })
    }

    fn handed_back(&self, status: &RolloutStatus) -> Result<(), String> {
        if self.canary.is_some() {
            let updated = count(
                self.deployment
                    .status
                    .as_ref()
                    .and_then(|s| s.updated_replicas),
            );
            return Err(format!(
                "{updated} of {} pods of {} updated; traffic stays on {} until all are",
                self.replicas,
                self.name(),
                canary_name(&self.name())
            ));
        }
        if self
            .by_hash(&status.stable_revision)
            .is_some_and(|rs| template_of(rs) == template_json(&self.deployment))
        {
            return Err(format!("{} still has the stable template", self.name()));
        }
        complete(&self.deployment)
    }

    fn rolled_back(&self, status: &RolloutStatus) -> Result<(), String> {
        if self.canary.is_some() {
            return Err(format!("{} is not deleted yet", canary_name(&self.name())));
        }
        if self.holds_rejected(status) {
            // Held on the rejected template, its stable pods untouched.
            let stable = self
                .by_hash(&status.stable_revision)
                .ok_or("the stable ReplicaSet is gone")?;
            let ready = count(stable.status.as_ref().and_then(|s| s.ready_replicas));
            if !held(&self.deployment) || ready < self.replicas {
                return Err(format!(
                    "{ready} of {} stable pods ready, the Deployment held",
                    self.replicas
                ));
            }
            return Ok(());
        }
        if self.bound && held(&self.deployment) {
            return Err(format!("{} is still held", self.name()));
        }
        let stable = self
            .by_hash(&status.stable_revision)
            .ok_or("the stable ReplicaSet is gone")?;
        if template_of(stable) != template_json(&self.deployment) {
            return Err(format!("{} does not have its stable template", self.name()));
        }
        complete(&self.deployment)
    }

    async fn begin(
        &self,
        _: &Ctx,
        rollout: &Rollout,
        status: &mut RolloutStatus,
        _: &pb::Batch,
    ) -> Result<(), Error> {
        begin(rollout, self, status).await
    }

    async fn move_pods(
        &self,
        status: &mut RolloutStatus,
        batch: &pb::Batch,
    ) -> Result<bool, Error> {
        let Some(canary) = &self.canary else {
            return Ok(false);
        };
        let target = batch.canary_replicas.min(self.replicas);
        let scale = canary.spec.as_ref().and_then(|s| s.replicas) != Some(target as i32);
        if scale {
            self.merge(&canary.name_any(), json!({"spec": {"replicas": target}}))
                .await?;
        }
        if let Some(rs) = &self.canary_rs
            && let Some(hash) = rs.labels().get(keys::TEMPLATE_HASH)
        {
            status.canary_revision.clone_from(hash);
        }
        Ok(scale)
    }

    async fn hand_back(
        &self,
        _: &RolloutStatus,
        traffic: Option<&Traffic>,
    ) -> Result<Option<String>, Error> {
        if self.bound && held(&self.deployment) {
            // The user's Deployment has the new template already: given
            // back, its own controller rolls it while traffic stays on the
            // canary.
            let patch = release_patch(&self.deployment, template_json(&self.deployment));
            return self.merge(&self.name(), patch).await.map(|()| None);
        }
        if self.bound {
            if complete(&self.deployment).is_err() {
                return Ok(None);
            }
        } else if let Some(template) = self.new_template() {
            if template_json(&self.deployment) != template {
                // The user's Deployment rolls to the new template by its
                // own controller while traffic stays on the canary.
                return self
                    .merge(
                        &self.name(),
                        json!({"spec": {"template": crate::writes::merge_to(&template_json(&self.deployment), &template)}}),
                    )
                    .await
                    .map(|()| None);
            }
            if complete(&self.deployment).is_err() {
                return Ok(None);
            }
        }
        if let Some(t) = traffic {
            t.restore().await?;
        }
        self.delete_canary().await.map(|()| None)
    }

    async fn unmark(&self) -> Result<(), Error> {
        if self.bound {
            if held(&self.deployment) {
                // Given back only when its pods run its template (a revert);
                // held on a rejected template, the hold and marks stay.
                let current = template_json(&self.deployment);
                let runs = self.owned.iter().any(|rs| {
                    template_of(rs) == current
                        && count(rs.status.as_ref().and_then(|s| s.ready_replicas)) >= self.replicas
                });
                if !runs {
                    return Ok(());
                }
                self.merge(&self.name(), release_patch(&self.deployment, current))
                    .await?;
            }
            return remove_marks(&self.client, &self.deployment, &self.owned).await;
        }
        // The mark off, and Sluice's ownership of the template it gave back.
        let patch = if self.deployment.annotations().contains_key(keys::ROLLOUT) {
            json!({"metadata": {"annotations": {keys::ROLLOUT: null}}})
        } else {
            json!({})
        };
        crate::writes::disown(
            &self.deployments,
            &self.name(),
            Some(&self.deployment),
            patch,
        )
        .await?;
        Ok(())
    }

    async fn roll_back(&self, status: &RolloutStatus) -> Result<(), Error> {
        if self.canary.is_some() {
            self.delete_canary().await?;
        }
        // The user's Deployment is whole unless a hand-back had begun: then
        // it gets its stable template back. A bound one keeps the template
        // the user applied, held.
        if self.bound {
            // Changed back to the stable template (a revert): given back.
            if held(&self.deployment)
                && self
                    .by_hash(&status.stable_revision)
                    .is_some_and(|rs| template_of(rs) == template_json(&self.deployment))
            {
                let patch = release_patch(&self.deployment, template_json(&self.deployment));
                self.merge(&self.name(), patch).await?;
            }
            return Ok(());
        }
        if let Some(stable) = self.by_hash(&status.stable_revision) {
            let stable_template = template_of(stable);
            if template_json(&self.deployment) != stable_template {
                self.merge(&self.name(), json!({"spec": {"template": stable_template}}))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Gives a bound Deployment released canary-style back to its own
/// controller whole when its binding is deleted: the canary Deployment
/// deleted, then as a partition release's (traffic restored, hold released,
/// marks off).
pub(super) async fn let_go(ctx: &Ctx, rollout: &Rollout) -> Result<(), Error> {
    let ns = rollout.namespace().unwrap_or_default();
    if let Some(c) = Canary::load(ctx, &ns, rollout).await?
        && c.canary.is_some()
        && c.ours(&rollout.name_any())
    {
        if let Some(t) = Traffic::new(
            &ctx.client,
            &ns,
            &rollout.name_any(),
            rollout.spec.traffic.as_ref(),
            rollout.spec.strategy.style == Some(sluice_model::spec::Style::BlueGreen),
        ) {
            t.restore().await?;
        }
        c.delete_canary().await?;
    }
    super::partition::let_go(ctx, rollout).await
}
