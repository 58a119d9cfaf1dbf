//! The `sluice.v1.Rollouts` gRPC service, backed by Rollout objects in the
//! cluster: the API keeps no state of its own.
//!
//! Every call names a rollout by namespace and name and is checked first:
//! valid names (`INVALID_ARGUMENT` with field violations), then the caller's
//! token allowed on that namespace (`PERMISSION_DENIED`). Mutations are
//! idempotent: repeating one that took effect returns the rollout as it is.
//! Intents reach the controller through the object: Pause and Resume set
//! `spec.paused`; Promote and Abort set an annotation the controller acts on
//! and removes; Retry clears the status of a rolled-back rollout; Delete
//! removes an ended rollout.
//!
//! # Layout
//! - [`errors`]: capped field violations, Kubernetes answers as statuses.
//! - [`workload`]: StartRollout's read of the workload it releases.
//! - [`page`]: ListRollouts' keyset page tokens.
//! - [`pending`]: a bound Rollout whose workload changed again after its
//!   last release ended reads as Pending until the executor takes it up.
//! - [`watch`]: WatchRollout's stream.

pub mod errors;
pub mod page;
pub mod pending;
pub mod watch;
pub mod workload;

use std::sync::Arc;

use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, Preconditions},
};
use prost::Message;
use serde_json::{Value, json};
use sluice_proto::v1::{self as pb, planner_client::PlannerClient, rollouts_server::Rollouts};
use sluice_runtime::{
    auth::{Caller, Scope, authorize},
    server::CancellationToken,
};
use tonic::{Request, Response, Status, transport::Channel};

use crate::{
    convert,
    crd::{Phase, Rollout, RolloutStatus},
    keys, validate,
};
use errors::{Target, invalid, invalid_field, kube_status};
use page::Cursor;

/// The Rollouts API.
#[derive(Clone)]
pub struct RolloutsApi {
    client: Option<Client>,
    /// The Rollouts as a watch sees them, for the bindings.
    bindings: Option<crate::admission::Bindings>,
    planner: PlannerClient<Channel>,
    /// Cancelled at shutdown; watch streams end on it.
    shutdown: CancellationToken,
    /// The namespaces this executor acts in (`--namespace`).
    scope: Scope,
    /// Where the controls' writes go for this process's controller.
    written: Arc<crate::controller::written::Written>,
}

impl std::fmt::Debug for RolloutsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutsApi").finish_non_exhaustive()
    }
}

impl RolloutsApi {
    /// An API over `client`'s cluster (`None`: every call is UNAVAILABLE),
    /// validating strategies with `planner`.
    pub fn new(
        client: Option<Client>,
        planner: PlannerClient<Channel>,
        shutdown: CancellationToken,
    ) -> Self {
        Self::within(client, Scope::All, planner, shutdown)
    }

    /// The same, acting only in the namespaces of `scope`: its watch of
    /// the Rollouts and every list stay there (callers are confined to
    /// them by the authenticator, see `Authenticator::within`).
    pub fn within(
        client: Option<Client>,
        scope: Scope,
        planner: PlannerClient<Channel>,
        shutdown: CancellationToken,
    ) -> Self {
        let bindings = client
            .clone()
            .map(|c| crate::admission::Bindings::start_in(c, &scope, shutdown.clone()));
        Self {
            client,
            bindings,
            planner,
            shutdown,
            scope,
            written: Arc::default(),
        }
    }

    /// The same, leaving the Rollouts its controls write in `written`,
    /// shared with the controller of this process.
    pub fn with_written(self, written: Arc<crate::controller::written::Written>) -> Self {
        Self { written, ..self }
    }

    /// The Rollouts as a watch sees them, for the bindings (`None` without
    /// a cluster).
    pub fn bindings(&self) -> Option<crate::admission::Bindings> {
        self.bindings.clone()
    }

    fn client(&self) -> Result<Client, Status> {
        self.client.clone().ok_or_else(|| {
            Status::unavailable("no Kubernetes cluster is configured (--kubeconfig)")
        })
    }

    fn rollouts(&self, namespace: &str) -> Result<Api<Rollout>, Status> {
        Ok(Api::namespaced(self.client()?, namespace))
    }

    /// Everything wrong with `spec` that no cluster could fix: the
    /// executor's own rules and the planner's, as field violations.
    ///
    /// # Errors
    /// UNAVAILABLE when the planner cannot be asked.
    async fn spec_violations(
        &self,
        spec: &pb::RolloutSpec,
    ) -> Result<Vec<(String, String)>, Status> {
        let mut violations = Vec::new();
        let workload = spec.workload.as_ref().map_or("", |w| w.name.as_str());
        if !is_dns_subdomain(workload) {
            violations.push((
                "spec.workload.name".into(),
                format!(
                    "must name the Deployment or StatefulSet to release \
                     (lowercase letters, digits, '-' and '.'), got {:?}",
                    errors::clip(workload, 80)
                ),
            ));
        }
        if spec.images.is_empty() && spec.pod_template.is_none() {
            violations.push((
                "spec.images".into(),
                "give new images or spec.podTemplate".into(),
            ));
        }
        violations.extend(validate::spec_problems(spec));
        let known: Vec<String> = spec.analyses.iter().map(|a| a.name.clone()).collect();
        let validation = self
            .planner
            .clone()
            .validate(pb::ValidateRequest {
                strategy: spec.strategy.clone(),
                replicas: 0,
                known_analyses: known,
            })
            .await
            .map_err(|s| {
                Status::unavailable(format!(
                    "the planner could not validate the strategy: {}",
                    errors::clip(s.message(), errors::MAX_MESSAGE_BYTES)
                ))
            })?
            .into_inner();
        violations.extend(
            validation
                .errors
                .into_iter()
                .map(|p| (format!("spec.{}", p.field), p.description)),
        );
        violations.extend(validate::release_problems(spec));
        Ok(violations)
    }
}

/// True for a valid RFC 1123 label, the rule for namespaces and most names.
pub(crate) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A Kubernetes object name: a DNS subdomain (RFC 1123), dot-separated
/// labels each starting and ending with a letter or digit.
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks the namespace and name of a request, then the caller's access.
fn check_target<T>(request: &Request<T>, namespace: &str, name: &str) -> Result<(), Status> {
    let mut violations = Vec::new();
    for (field, value) in [("namespace", namespace), ("name", name)] {
        if !is_dns_label(value) {
            violations.push((
                field.to_owned(),
                format!(
                    "must be a lowercase RFC 1123 label (a-z, 0-9, '-'; at most 63), got {value:?}"
                ),
            ));
        }
    }
    if !violations.is_empty() {
        return Err(invalid(&violations));
    }
    authorize(request, namespace).map(|_| ())
}

/// Rollout `name` as the API shows it: as stored, or Pending when its
/// workload changed since its last release was recorded ([`pending`]).
async fn get(api: &Api<Rollout>, namespace: &str, name: &str) -> Result<Rollout, Status> {
    let stored = api
        .get(name)
        .await
        .map_err(|e| kube_status(e, Target::Rollout(namespace, name)))?;
    if deleted(&stored) {
        return Err(Status::not_found(format!(
            "rollout {namespace}/{name} not found"
        )));
    }
    Ok(shown(api, stored).await)
}

/// Whether a Rollout is deleted but for the garbage collector's `orphan`
/// finalizer (a forced DeleteRollout leaves what it made in place that
/// way, and the collector takes the Rollout away moments later): to the
/// API it no longer exists, as the delete answered. A bound Rollout that
/// still gives its workload back keeps its own finalizer and is shown.
pub(crate) fn deleted(r: &Rollout) -> bool {
    r.metadata.deletion_timestamp.is_some() && r.finalizers().iter().all(|f| f == "orphan")
}

/// `rollout`, just read or written through `api`, as the API shows it.
async fn shown(api: &Api<Rollout>, rollout: Rollout) -> Rollout {
    pending::present(&api.clone().into_client(), rollout).await
}

pub(crate) fn phase_of(r: &Rollout) -> Phase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

pub(crate) fn finished(p: Phase) -> bool {
    matches!(p, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
}

/// The longest reason a Pause or an Abort takes (it is kept in an
/// annotation and said in the rollout's message).
const MAX_REASON_BYTES: usize = 1024;

fn check_reason(reason: &str) -> Result<(), Status> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(invalid_field(
            "reason",
            format!(
                "must be at most {MAX_REASON_BYTES} bytes, got {}",
                reason.len()
            ),
        ));
    }
    Ok(())
}

/// How many times a control call reads and writes again when the Rollout
/// changed between its read and its write.
const CHECKED_WRITE_TRIES: usize = 5;

/// The refusal of a control that comes after the workload was given back.
fn too_late(namespace: &str, name: &str, what: &str) -> Status {
    Status::failed_precondition(format!(
        "rollout {namespace}/{name} is handing its workload back: every step is done and \
         the workload's own controller is replacing the old pods, so it ends Succeeded; \
         {what}"
    ))
}

fn handing_back(r: &Rollout) -> bool {
    r.status.as_ref().is_some_and(RolloutStatus::handing_back)
}

impl RolloutsApi {
    /// Writes what `decide` makes of the Rollout over exactly the version
    /// it read, reading again when another write came between (the
    /// executor recording a step, say): what a call checked is what it
    /// acts on. `decide` returns the merge patch to write, `None` when
    /// there is nothing to write, or the call's refusal.
    async fn write_checked(
        &self,
        namespace: &str,
        name: &str,
        decide: impl Fn(&Rollout) -> Result<Option<Value>, Status>,
    ) -> Result<Rollout, Status> {
        let api = self.rollouts(namespace)?;
        for _ in 0..CHECKED_WRITE_TRIES {
            let current = get(&api, namespace, name).await?;
            let Some(mut patch) = decide(&current)? else {
                return Ok(current);
            };
            patch["metadata"]["resourceVersion"] = json!(current.resource_version());
            match api
                .patch(name, &crate::writes::patch(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    self.written.record_and_wake(updated.clone());
                    return Ok(shown(&api, updated).await);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(kube_status(e, Target::Rollout(namespace, name))),
            }
        }
        Err(Status::aborted(format!(
            "rollout {namespace}/{name} kept changing while the call ran; nothing was written, \
             call again"
        )))
    }

    async fn set_paused(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
    ) -> Result<Response<pb::Rollout>, Status> {
        let rollout = self
            .write_checked(namespace, name, |current| {
                let phase = phase_of(current);
                if finished(phase) {
                    return Err(Status::failed_precondition(format!(
                        "rollout {namespace}/{name} has ended ({phase:?})"
                    )));
                }
                if paused && phase == Phase::RollingBack {
                    // Nothing holds a rollback: traffic is already on
                    // stable, and stopping half-way would leave both
                    // versions up.
                    return Err(Status::failed_precondition(format!(
                        "rollout {namespace}/{name} is RollingBack; a rollback is not paused"
                    )));
                }
                if paused && handing_back(current) {
                    return Err(too_late(namespace, name, "there is nothing left to pause"));
                }
                Ok((current.spec.paused != paused).then(|| json!({"spec": {"paused": paused}})))
            })
            .await?;
        Ok(Response::new(convert::rollout_to_proto(&rollout)))
    }
}

#[tonic::async_trait]
impl Rollouts for RolloutsApi {
    type WatchRolloutStream = watch::EventStream;

    async fn start_rollout(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let size = request.get_ref().encoded_len();
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        let (namespace, name) = (r.namespace.clone(), r.name.clone());
        let spec = r
            .spec
            .clone()
            .ok_or_else(|| invalid_field("spec", "is required"))?;
        let mut violations = self.spec_violations(&spec).await?;
        if size > validate::MAX_REQUEST_BYTES {
            violations.push((
                "spec".into(),
                format!(
                    "the request must be at most {} bytes, got {size}",
                    validate::MAX_REQUEST_BYTES
                ),
            ));
        }
        if !violations.is_empty() {
            return Err(invalid(&violations));
        }
        let client = self.client()?;
        let wanted = convert::spec_from_proto(&spec);
        let api: Api<Rollout> = Api::namespaced(client.clone(), &namespace);
        let target = Target::NewRollout(&namespace, &name);
        let existing = api
            .get_opt(&name)
            .await
            .map_err(|e| kube_status(e, target))?;
        // A bound Rollout's releases start from the workload's own changes.
        if let Some(existing) = existing.as_ref().filter(|e| e.spec.bound()) {
            return Err(Status::failed_precondition(format!(
                "Rollout {namespace}/{name} is bound to {} {:?}: it releases each change of \
                 that workload's pod template (kubectl apply, a GitOps sync); change the \
                 workload (in git), not the Rollout",
                existing.spec.workload.kind_name(),
                existing.spec.workload.name
            )));
        }
        // A workload with a bound Rollout takes no other.
        if let Some(bindings) = &self.bindings {
            bindings
                .synced(&namespace)
                .await
                .map_err(Status::unavailable)?;
            if let Some((binding, _)) = bindings
                .naming(&namespace, &wanted.workload, &name)
                .into_iter()
                .find(|(_, bound)| *bound)
            {
                return Err(Status::failed_precondition(format!(
                    "{} {namespace}/{} is bound to Rollout {binding:?}: its releases start from \
                     changes of its pod template (kubectl apply, a GitOps sync); change the \
                     workload (in git), or delete that Rollout first",
                    wanted.workload.kind_name(),
                    wanted.workload.name,
                )));
            }
        }
        // A repeated start returns the rollout as it is, whatever became of
        // the workload since.
        if let Some(existing) = &existing {
            let mut same = existing.spec.clone();
            same.paused = wanted.paused;
            if same == wanted {
                return Ok(Response::new(convert::rollout_to_proto(existing)));
            }
        }
        workload::check(&client, &namespace, &spec).await?;
        match existing {
            None => {
                let object = Rollout::new(&name, wanted);
                let created = api
                    .create(&crate::writes::post(), &object)
                    .await
                    .map_err(|e| kube_status(e, target))?;
                tracing::info!(%namespace, %name, "rollout started");
                Ok(Response::new(convert::rollout_to_proto(&created)))
            }
            Some(existing) => {
                // The whole spec is replaced, at the version read: a field
                // the new spec leaves out is gone, not kept from the old.
                let mut replacement = existing.clone();
                replacement.spec = wanted;
                replacement.spec.paused = existing.spec.paused;
                let mut updated = api
                    .replace(&name, &crate::writes::post(), &replacement)
                    .await
                    .map_err(|e| kube_status(e, Target::Rollout(&namespace, &name)))?;
                // An ended rollout asked for a new release: its old terminal
                // status must not be read as the new release's outcome (a
                // watch would end at once on it). It is cleared, as Retry
                // clears it, unless the controller already wrote a newer one
                // (the write is conditional on the version just replaced).
                let ended = finished(phase_of(&existing));
                let new_release = existing.status.as_ref().map(|s| s.release.as_str())
                    != Some(crate::machine::release_id(&updated.spec).as_str());
                if ended && new_release {
                    let clear = json!({"metadata": {"resourceVersion": updated.resource_version()}, "status": null});
                    match api
                        .patch_status(&name, &crate::writes::patch(), &Patch::Merge(clear))
                        .await
                    {
                        Ok(cleared) => updated = cleared,
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            updated = get(&api, &namespace, &name).await?;
                        }
                        Err(e) => return Err(kube_status(e, Target::Rollout(&namespace, &name))),
                    }
                }
                tracing::info!(%namespace, %name, "rollout updated; it starts again on the new version");
                Ok(Response::new(convert::rollout_to_proto(&updated)))
            }
        }
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        let api = self.rollouts(&r.namespace)?;
        Ok(Response::new(convert::rollout_to_proto(
            &get(&api, &r.namespace, &r.name).await?,
        )))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no caller identity on the request"))?;
        // A namespace asked is checked as every other call checks it.
        if !request.get_ref().namespace.is_empty() {
            let ns = request.get_ref().namespace.clone();
            if !is_dns_label(&ns) {
                return Err(invalid(&[(
                    "namespace".into(),
                    format!(
                        "must be a lowercase RFC 1123 label (a-z, 0-9, '-'; at most 63), got {ns:?}"
                    ),
                )]));
            }
            authorize(&request, &ns)?;
        }
        let r = request.into_inner();
        // A phase number the proto does not define would match nothing,
        // silently: refused, naming it.
        if let Some((i, n)) = r
            .phases
            .iter()
            .enumerate()
            .find(|(_, n)| pb::RolloutPhase::try_from(**n).is_err() || **n == 0)
        {
            return Err(invalid(&[(
                format!("phases[{i}]"),
                format!(
                    "must be a RolloutPhase (ROLLOUT_PHASE_PENDING to ROLLOUT_PHASE_FAILED), got the number {n}"
                ),
            )]));
        }
        let page_size = match r.page_size {
            0 => 100,
            n if n <= 1000 => n as usize,
            n => {
                return Err(invalid(&[(
                    "page_size".into(),
                    format!("must be at most 1000, got {n}"),
                )]));
            }
        };
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(Cursor::parse(&r.page_token, is_dns_label).ok_or_else(|| {
                invalid_field(
                    "page_token",
                    format!(
                        "not a token from a previous page: {:?}",
                        errors::clip(&r.page_token, 80)
                    ),
                )
            })?)
        };
        let client = self.client()?;
        // The namespace asked, else every namespace this executor acts in.
        let apis: Vec<Api<Rollout>> = if r.namespace.is_empty() {
            crate::watch::apis(&client, &self.scope)
        } else {
            vec![Api::namespaced(client.clone(), &r.namespace)]
        };
        let across = apis.len() > 1;
        let mut items = Vec::new();
        for api in apis {
            match api.list(&ListParams::default()).await {
                Ok(list) => items.extend(list.items),
                // Across several namespaces, one the API server refuses
                // (no Role there, or no such namespace) lists nothing
                // rather than failing the others.
                Err(kube::Error::Api(e)) if across && (e.code == 403 || e.code == 404) => {
                    tracing::warn!(error = %e.message, "ListRollouts: a watched namespace cannot be listed");
                }
                Err(e) => return Err(kube_status(e, Target::Rollout(&r.namespace, "*"))),
            }
        }
        // A bound Rollout waiting for the executor to take up its
        // workload's change is filtered as the Pending it is shown as.
        let items = pending::present_all(&client, items).await;
        let cursor = |ro: &Rollout| Cursor {
            namespace: ro.namespace().unwrap_or_default(),
            name: ro.name_any(),
        };
        let mut visible: Vec<Rollout> = items
            .into_iter()
            .filter(|ro| caller.may_access(&ro.namespace().unwrap_or_default()))
            .filter(|ro| !deleted(ro))
            .filter(|ro| {
                r.phases.is_empty() || r.phases.contains(&convert::proto_phase(phase_of(ro)))
            })
            .filter(|ro| after.as_ref().is_none_or(|after| cursor(ro) > *after))
            .collect();
        visible.sort_by_key(cursor);
        let more = visible.len() > page_size;
        visible.truncate(page_size);
        let next_page_token = match visible.last() {
            Some(last) if more => cursor(last).token(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: visible.iter().map(convert::rollout_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        let (namespace, name) = (r.namespace.clone(), r.name.clone());
        // A revision is one this API answered with: a decimal number.
        if !r.since_revision.is_empty() && r.since_revision.parse::<u64>().is_err() {
            return Err(invalid_field(
                "since_revision",
                format!(
                    "must be a revision a Rollout was returned with (a decimal number), got {:?}",
                    r.since_revision.chars().take(64).collect::<String>()
                ),
            ));
        }
        let api = self.rollouts(&namespace)?;
        let current = get(&api, &namespace, &name).await?;
        let revision = current.resource_version().unwrap_or_default();
        let ended = finished(phase_of(&current));
        let (first, from, ended) = if r.since_revision.is_empty() {
            (Some(watch::initial(&current)), revision, ended)
        } else {
            // Nothing can follow the revision of an ended rollout.
            let at_end = ended && r.since_revision == revision;
            (None, r.since_revision.clone(), at_end)
        };
        Ok(Response::new(watch::stream(
            api,
            (namespace, name),
            from,
            first,
            ended,
            self.shutdown.clone(),
        )))
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        let (ns, name) = (r.namespace.as_str(), r.name.as_str());
        let rollout = self
            .write_checked(ns, name, |current| {
                let phase = phase_of(current);
                // An ended rollout says it has ended, paused on request or not.
                if current.spec.paused && !finished(phase) {
                    return Err(Status::failed_precondition(format!(
                        "rollout {ns}/{name} is paused on request; Resume it first"
                    )));
                }
                let allowed =
                    matches!(phase, Phase::Paused) || (r.full && phase == Phase::Progressing);
                if !allowed {
                    return Err(Status::failed_precondition(format!(
                        "rollout {ns}/{name} is {phase:?}; Promote needs a paused rollout (or `full` on a progressing one)"
                    )));
                }
                if handing_back(current) {
                    return Err(too_late(ns, name, "there is nothing left to promote"));
                }
                // A spec asking for another version that the executor has
                // not started yet: the step shown is the old release's.
                let recorded = current.status.as_ref().map_or("", |s| s.release.as_str());
                if !current.spec.bound()
                    && !recorded.is_empty()
                    && recorded != crate::machine::release_id(&current.spec)
                {
                    return Err(Status::failed_precondition(format!(
                        "rollout {ns}/{name} asks for a new release the executor has not \
                         started yet; a Promote meant for the one it replaces is refused \
                         rather than dropped: Promote once the new one runs"
                    )));
                }
                // The step it was asked at: a promotion that crosses a step
                // the executor just recorded does not skip the next one.
                let step = current.status.as_ref().map_or(0, |s| s.current_step);
                let value = format!("{}:{step}", if r.full { "full" } else { "step" });
                Ok(Some(json!({"metadata": {"annotations": {keys::PROMOTE: value}}})))
            })
            .await?;
        Ok(Response::new(convert::rollout_to_proto(&rollout)))
    }

    async fn pause(
        &self,
        request: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        check_reason(&r.reason)?;
        self.set_paused(&r.namespace, &r.name, true).await
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        self.set_paused(&r.namespace, &r.name, false).await
    }

    async fn abort(
        &self,
        request: Request<pb::AbortRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        check_reason(&r.reason)?;
        let (ns, name) = (r.namespace.as_str(), r.name.as_str());
        let reason = if r.reason.is_empty() {
            "aborted by request"
        } else {
            r.reason.as_str()
        };
        let rollout = self
            .write_checked(ns, name, |current| match phase_of(current) {
                Phase::RollingBack | Phase::RolledBack => Ok(None),
                _ if handing_back(current) => Err(too_late(
                    ns,
                    name,
                    "to go back, release the previous version",
                )),
                // Pending included: a release waiting to start can be called off.
                Phase::Pending | Phase::Progressing | Phase::Paused => Ok(Some(
                    json!({"metadata": {"annotations": {keys::ABORT: reason}}}),
                )),
                phase => Err(Status::failed_precondition(format!(
                    "rollout {ns}/{name} is {phase:?}; only a running rollout can be aborted"
                ))),
            })
            .await?;
        Ok(Response::new(convert::rollout_to_proto(&rollout)))
    }

    async fn retry(
        &self,
        request: Request<pb::RetryRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        let api = self.rollouts(&r.namespace)?;
        let current = get(&api, &r.namespace, &r.name).await?;
        match phase_of(&current) {
            Phase::RolledBack | Phase::Failed => {
                let cleared = api
                    .patch_status(
                        &r.name,
                        &crate::writes::patch(),
                        &Patch::Merge(json!({"status": null})),
                    )
                    .await
                    .map_err(|e| kube_status(e, Target::Rollout(&r.namespace, &r.name)))?;
                Ok(Response::new(convert::rollout_to_proto(&cleared)))
            }
            Phase::Pending => Ok(Response::new(convert::rollout_to_proto(&current))),
            phase => Err(Status::failed_precondition(format!(
                "rollout {}/{} is {phase:?}; Retry starts a rolled-back rollout again",
                r.namespace, r.name
            ))),
        }
    }

    async fn delete_rollout(
        &self,
        request: Request<pb::DeleteRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        let api = self.rollouts(&r.namespace)?;
        let target = Target::Rollout(&r.namespace, &r.name);
        let current = get(&api, &r.namespace, &r.name).await?;
        let phase = phase_of(&current);
        // A Pending release that never began has touched nothing: no
        // revision recorded, and (an API-started one) no hold of its own on
        // the workload, which a start whose status write was still on its
        // way (or lost to a Pause) has already put there.
        let untouched = phase == Phase::Pending
            && current
                .status
                .as_ref()
                .is_none_or(|s| s.stable_revision.is_empty())
            && current
                .annotations()
                .get(keys::BEGUN)
                .is_none_or(|begun| *begun != crate::machine::release_id(&current.spec))
            && (current.spec.bound()
                || workload::holder(
                    &api.clone().into_client(),
                    &r.namespace,
                    &current.spec.workload,
                )
                .await
                .map_err(|e| kube_status(e, target))?
                .as_deref()
                    != Some(r.name.as_str()));
        if !finished(phase) && !untouched && !r.force {
            return Err(Status::failed_precondition(format!(
                "rollout {}/{} is {phase:?}; Abort it and delete it once RolledBack, \
                 or pass force to leave the workload as it is now",
                r.namespace, r.name
            )));
        }
        // Delete exactly what was checked: a rollout that changed since
        // (restarted, say) is ABORTED, not deleted unseen.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: current.uid(),
                resource_version: current.resource_version(),
            }),
            // Forced, what the release made (a canary Deployment it owns)
            // stays as it is with the routes that lead to it, as promised;
            // the garbage collector would otherwise remove it under them.
            propagation_policy: r.force.then_some(kube::api::PropagationPolicy::Orphan),
            ..DeleteParams::default()
        };
        api.delete(&r.name, &params)
            .await
            .map_err(|e| kube_status(e, target))?;
        tracing::info!(namespace = %r.namespace, name = %r.name, ?phase, force = r.force, "rollout deleted");
        Ok(Response::new(convert::rollout_to_proto(&current)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(deleting: bool, finalizers: &[&str]) -> Rollout {
        let mut r: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"workload": {"kind": "Deployment", "name": "web"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        if deleting {
            r.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        r.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        r
    }

    #[test]
    fn a_forced_delete_waiting_only_for_the_collector_is_gone_to_the_api() {
        assert!(deleted(&with(true, &["orphan"])));
        assert!(deleted(&with(true, &[])));
        // A bound Rollout giving its workload back is still there.
        assert!(!deleted(&with(true, &["orphan", keys::FINALIZER])));
        assert!(!deleted(&with(true, &[keys::FINALIZER])));
        assert!(!deleted(&with(false, &["orphan"])));
    }
}
