//! The `sluice.v1.Rollouts` gRPC service.
//!
//! Every call names a rollout by namespace and name. Before anything else a
//! call is checked: both names present and valid Kubernetes names
//! (`INVALID_ARGUMENT` with field violations otherwise), then the caller's
//! token allowed on that namespace (`PERMISSION_DENIED`).

use std::pin::Pin;

use sluice_proto::v1::{self as pb, rollouts_server::Rollouts};
use sluice_runtime::{auth::authorize, server::CancellationToken};
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The Rollouts API.
#[derive(Debug, Clone)]
pub struct RolloutsApi {
    /// Cancelled at shutdown; watch streams end on it.
    shutdown: CancellationToken,
}

impl RolloutsApi {
    /// An API whose streams end when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self { shutdown }
    }
}

/// True for a valid RFC 1123 label, the rule for namespaces and most names.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Checks the namespace and name of a request, then the caller's access.
fn check_target<T>(request: &Request<T>, namespace: &str, name: &str) -> Result<(), Status> {
    let mut details = ErrorDetails::new();
    for (field, value) in [("namespace", namespace), ("name", name)] {
        if !is_dns_label(value) {
            details.add_bad_request_violation(
                field,
                format!(
                    "must be a lowercase RFC 1123 label (a-z, 0-9, '-'; at most 63), got {value:?}"
                ),
            );
        }
    }
    if details.has_bad_request_violations() {
        return Err(Status::with_error_details(
            Code::InvalidArgument,
            "invalid rollout name",
            details,
        ));
    }
    authorize(request, namespace).map(|_| ())
}

const NOT_YET: &str = "the rollout controller is not implemented yet (issue 7)";

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RolloutEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Rollouts for RolloutsApi {
    type WatchRolloutStream = EventStream;

    async fn start_rollout(
        &self,
        request: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        Err(Status::unimplemented(NOT_YET))
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        Err(Status::unimplemented(NOT_YET))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        let namespace = &request.get_ref().namespace;
        if !namespace.is_empty() {
            authorize(&request, namespace)?;
        }
        Err(Status::unimplemented(NOT_YET))
    }

    async fn watch_rollout(
        &self,
        request: Request<pb::WatchRolloutRequest>,
    ) -> Result<Response<Self::WatchRolloutStream>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        let _ = &self.shutdown;
        Err(Status::unimplemented(NOT_YET))
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        Err(Status::unimplemented(NOT_YET))
    }

    async fn pause(
        &self,
        request: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        Err(Status::unimplemented(NOT_YET))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        Err(Status::unimplemented(NOT_YET))
    }

    async fn abort(
        &self,
        request: Request<pb::AbortRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        Err(Status::unimplemented(NOT_YET))
    }

    async fn retry(
        &self,
        request: Request<pb::RetryRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.get_ref();
        check_target(&request, &r.namespace, &r.name)?;
        Err(Status::unimplemented(NOT_YET))
    }
}
