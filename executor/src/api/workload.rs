//! The workload a StartRollout names, read before anything is written: it
//! must exist, in a namespace that exists, and have every container the
//! request gives a new image.

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Namespace, PodTemplateSpec},
};
use kube::{Api, Client};
use sluice_proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::errors::{Target, invalid, kube_status, namespace_not_found};

/// The precondition type of a missing workload.
pub const MISSING_WORKLOAD: &str = "WORKLOAD";

/// The workload's kind as Kubernetes names it.
fn kind_name(kind: pb::WorkloadKind) -> &'static str {
    match kind {
        pb::WorkloadKind::StatefulSet => "StatefulSet",
        pb::WorkloadKind::Deployment | pb::WorkloadKind::Unspecified => "Deployment",
    }
}

/// The pod template of the workload `spec` names, or `None` when it does
/// not exist.
async fn template(
    client: &Client,
    namespace: &str,
    kind: pb::WorkloadKind,
    name: &str,
) -> Result<Option<PodTemplateSpec>, kube::Error> {
    Ok(match kind {
        pb::WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|s| s.spec.unwrap_or_default().template),
        pb::WorkloadKind::Deployment | pb::WorkloadKind::Unspecified => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|d| d.spec.unwrap_or_default().template)
        }
    })
}

/// The Rollout whose mark (`sluice.dev/rollout`) is on a workload, if the
/// workload exists and has one.
///
/// # Errors
/// What the Kubernetes API answered.
pub async fn holder(
    client: &Client,
    namespace: &str,
    workload: &sluice_model::crd::WorkloadRef,
) -> Result<Option<String>, kube::Error> {
    use kube::ResourceExt;
    let annotations = match workload.kind {
        sluice_model::crd::WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get_opt(&workload.name)
                .await?
                .map(|s| s.annotations().clone())
        }
        sluice_model::crd::WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .get_opt(&workload.name)
                .await?
                .map(|d| d.annotations().clone())
        }
    };
    Ok(annotations.and_then(|a| a.get(sluice_model::keys::ROLLOUT).cloned()))
}

/// Checks the workload `spec` names in `namespace`.
///
/// # Errors
/// NOT_FOUND naming the namespace when it does not exist;
/// FAILED_PRECONDITION with a PreconditionFailure naming the workload when
/// it does not exist; INVALID_ARGUMENT naming `spec.images[i].container`
/// for a container its pod template does not have; what the Kubernetes API
/// answered otherwise.
pub async fn check(client: &Client, namespace: &str, spec: &pb::RolloutSpec) -> Result<(), Status> {
    let (kind, name) = spec
        .workload
        .as_ref()
        .map_or((pb::WorkloadKind::Deployment, ""), |w| {
            (w.kind(), w.name.as_str())
        });
    let target = Target::NewRollout(namespace, name);
    let Some(template) = template(client, namespace, kind, name)
        .await
        .map_err(|e| kube_status(e, target))?
    else {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        // Without leave to read namespaces, the workload is what is named.
        if let Ok(None) = namespaces.get_opt(namespace).await {
            return Err(namespace_not_found(namespace));
        }
        let subject = format!("{} {namespace}/{name}", kind_name(kind));
        let details = ErrorDetails::with_precondition_failure_violation(
            MISSING_WORKLOAD,
            subject.clone(),
            format!("spec.workload names {subject}, which does not exist"),
        );
        return Err(Status::with_error_details(
            Code::FailedPrecondition,
            format!("the workload {subject} does not exist; create it before releasing it"),
            details,
        ));
    };
    let has: Vec<String> = template
        .spec
        .map(|s| s.containers.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    let violations: Vec<(String, String)> = spec
        .images
        .iter()
        .enumerate()
        .filter(|(_, update)| !has.contains(&update.container))
        .map(|(i, update)| {
            (
                format!("spec.images[{i}].container"),
                format!(
                    "{} {namespace}/{name} has no container {:?}; its containers: {}",
                    kind_name(kind),
                    update.container,
                    has.join(", ")
                ),
            )
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(invalid(&violations))
    }
}
