//! The `sluice.v1.Planner` gRPC service.

use sluice_proto::v1::{
    self as pb,
    planner_server::{Planner, PlannerServer},
};
use sluice_runtime::{Error, server::GrpcServer, shutdown::Signal};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{Config, PlanOptions, convert, spec::Quantity, validate};

/// Serves the planner until `shutdown` completes.
///
/// # Errors
/// See [`sluice_runtime::server::BoundServer::serve`].
pub async fn serve(config: Config, shutdown: Signal) -> Result<(), Error> {
    GrpcServer::new("planner", config.server)
        .add_service(PlannerServer::new(PlannerService))
        .bind()
        .await?
        .serve(shutdown)
        .await
}

/// The planner service. Stateless: every call is a pure function of its request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlannerService;

/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` listing every problem.
pub fn invalid_argument(problems: &[validate::FieldProblem]) -> Status {
    let mut details = ErrorDetails::new();
    for p in problems {
        details.add_bad_request_violation(p.field.clone(), p.description.clone());
    }
    let summary = match problems {
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
        [] => "invalid request".to_owned(),
    };
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

fn known(names: &[String]) -> Option<Vec<String>> {
    (!names.is_empty()).then(|| names.to_vec())
}

#[tonic::async_trait]
impl Planner for PlannerService {
    #[tracing::instrument(skip_all, fields(replicas = request.get_ref().replicas))]
    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let request = request.into_inner();
        let strategy = convert::strategy_from_proto(&request.strategy.unwrap_or_default());
        let options = PlanOptions {
            replicas: request.replicas,
            max_surge: (!request.max_surge.trim().is_empty())
                .then_some(Quantity::Text(request.max_surge)),
            progress: request.progress.as_ref().map(convert::progress_from_proto),
            known_analyses: known(&request.known_analyses),
        };
        let plan = crate::make_plan(&strategy, &options).map_err(|p| invalid_argument(&p))?;
        Ok(Response::new(pb::PlanResponse {
            plan: Some(convert::plan_to_proto(&plan)),
        }))
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let request = request.into_inner();
        let strategy = convert::strategy_from_proto(&request.strategy.unwrap_or_default());
        let known = known(&request.known_analyses);
        let context = validate::Context {
            replicas: (request.replicas > 0).then_some(request.replicas),
            known_analyses: known.as_deref(),
        };
        let response = match validate::validate(&strategy, context) {
            Ok(validated) => pb::ValidateResponse {
                errors: Vec::new(),
                warnings: convert::proto_warnings(&validated.warnings),
            },
            Err(problems) => pb::ValidateResponse {
                errors: problems
                    .into_iter()
                    .map(|p| pb::FieldProblem {
                        field: p.field,
                        description: p.description,
                    })
                    .collect(),
                warnings: Vec::new(),
            },
        };
        Ok(Response::new(response))
    }
}
