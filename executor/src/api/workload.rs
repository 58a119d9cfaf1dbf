//! The workload a StartRollout names, read before anything is written: it
//! must exist, in a namespace that exists, and have every container the
//! request gives a new image.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Namespace, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
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

/// The pod template and selector of the workload `spec` names, or `None`
/// when it does not exist.
async fn template(
    client: &Client,
    namespace: &str,
    kind: pb::WorkloadKind,
    name: &str,
) -> Result<Option<(PodTemplateSpec, LabelSelector)>, kube::Error> {
    Ok(match kind {
        pb::WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|s| {
                let spec = s.spec.unwrap_or_default();
                (spec.template, spec.selector)
            }),
        pb::WorkloadKind::Deployment | pb::WorkloadKind::Unspecified => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|d| {
                    let spec = d.spec.unwrap_or_default();
                    (spec.template, spec.selector)
                })
        }
    })
}

/// Why a new pod template cannot replace the workload's: it is no
/// PodTemplateSpec, or its labels fall outside the workload's selector
/// (kube-apiserver would refuse the workload with it, 422, when the release
/// writes it).
fn template_problems(
    template: &prost_types::Struct,
    selector: &LabelSelector,
    workload: &str,
) -> Vec<(String, String)> {
    let json = sluice_model::rollout_convert::struct_to_json(template);
    let parsed: PodTemplateSpec = match serde_json::from_value(json) {
        Ok(t) => t,
        Err(e) => {
            return vec![(
                "spec.podTemplate".into(),
                format!("must be a Kubernetes PodTemplateSpec: {e}"),
            )];
        }
    };
    let labels = parsed.metadata.and_then(|m| m.labels).unwrap_or_default();
    let mut problems = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            problems.push((
                "spec.podTemplate.metadata.labels".into(),
                format!(
                    "must match the selector of {workload} ({key}={value}), got {}",
                    labels
                        .get(key)
                        .map_or_else(|| format!("no label {key}"), |v| format!("{key}={v}"))
                ),
            ));
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        let holds = match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => true,
        };
        if !holds {
            problems.push((
                "spec.podTemplate.metadata.labels".into(),
                format!(
                    "must match the selector of {workload} ({} {} {values:?}), got {}",
                    e.key,
                    e.operator,
                    value.map_or_else(
                        || format!("no label {}", e.key),
                        |v| format!("{}={v}", e.key)
                    )
                ),
            ));
        }
    }
    problems
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
    let Some((template, selector)) = template(client, namespace, kind, name)
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
    let subject = format!("{} {namespace}/{name}", kind_name(kind));
    let mut violations: Vec<(String, String)> = spec
        .pod_template
        .as_ref()
        .map(|t| template_problems(t, &selector, &subject))
        .unwrap_or_default();
    violations.extend(
        spec.images
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
            }),
    );
    if violations.is_empty() {
        Ok(())
    } else {
        Err(invalid(&violations))
    }
}
