//! A summary of the simulated cluster for `Simulator.GetState`.

use std::collections::BTreeMap;

use serde_json::Value;
use sluice_proto::v1 as pb;

use crate::{api::selector::LabelSelector, scenario::Simulation};

fn list(sim: &Simulation, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
    let store = sim.api.store();
    let Some(res) = store.resource(group, plural) else {
        return Vec::new();
    };
    store
        .list(
            &res,
            namespace,
            &LabelSelector::default(),
            &Default::default(),
            None,
            None,
        )
        .map(|p| {
            p.items
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|x| x["type"] == "Ready" && x["status"] == "True")
    })
}

fn version(pod: &Value) -> String {
    let image = pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default();
    image
        .rsplit_once(':')
        .map_or(image, |(_, tag)| tag)
        .to_owned()
}

/// The state of `sim`, limited to `namespace` when not empty.
pub(crate) fn of(sim: &Simulation, namespace: &str) -> pb::ClusterState {
    let ns = (!namespace.is_empty()).then_some(namespace);
    let pods = list(sim, "", "pods", ns);
    let nodes = list(sim, "", "nodes", None)
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            pb::NodeState {
                ready: n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|x| x["type"] == "Ready" && x["status"] == "True")
                }),
                pods: pods
                    .iter()
                    .filter(|p| p["spec"]["nodeName"].as_str() == Some(name.as_str()))
                    .count() as u32,
                capacity: n["status"]["allocatable"]["pods"]
                    .as_str()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                name,
            }
        })
        .collect();
    let per_pod = crate::metrics::traffic::split(
        sim.api.store(),
        &sim.metrics
            .state
            .lock()
            .map(|s| s.loads.clone())
            .unwrap_or_default(),
        0.0,
    );
    let mut workloads = Vec::new();
    for (plural, kind) in [
        ("deployments", "Deployment"),
        ("statefulsets", "StatefulSet"),
    ] {
        for w in list(sim, "apps", plural, ns) {
            let wns = w["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let selector = LabelSelector::from_object(&w["spec"]["selector"]);
            let mut versions: BTreeMap<String, (u32, u32)> = BTreeMap::new();
            let mut rps: BTreeMap<String, f64> = BTreeMap::new();
            for pod in pods.iter().filter(|p| {
                p["metadata"]["namespace"].as_str() == Some(wns.as_str())
                    && selector.matches(&crate::api::selector::labels_of(p))
            }) {
                let v = version(pod);
                let entry = versions.entry(v.clone()).or_default();
                entry.0 += 1;
                entry.1 += u32::from(ready(pod));
                let key = (
                    wns.clone(),
                    pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
                *rps.entry(v).or_default() += per_pod.get(&key).copied().unwrap_or(0.0);
            }
            workloads.push(pb::WorkloadState {
                namespace: wns,
                kind: kind.into(),
                name: w["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                versions: versions
                    .into_iter()
                    .map(|(version, (pods, ready))| pb::VersionPods {
                        version,
                        pods,
                        ready,
                    })
                    .collect(),
                requests_per_second: rps.into_iter().collect(),
            });
        }
    }
    let faults = sim
        .faults
        .lock()
        .map(|f| {
            f.iter()
                .map(|(id, _)| pb::Fault {
                    id: id.clone(),
                    ..Default::default()
                })
                .collect()
        })
        .unwrap_or_default();
    pb::ClusterState {
        scenario: sim.scenario.name.clone(),
        now: Some(prost_types::Timestamp::from((sim.api.clock())())),
        nodes,
        workloads,
        faults,
    }
}
