//! Analyses run beside the reconciler: one gate `Analyze` stream per
//! rollout step, whose verdict and evidence are written to the Rollout's
//! status (which wakes the reconciler). If the executor restarts, the
//! reconciler starts the analysis again: a step is never judged on no data.

use std::{collections::HashMap, sync::Mutex};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use sluice_proto::v1::{self as pb, metrics_gate_client::MetricsGateClient};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::crd::{Evidence, Rollout, Verdict};

/// Running analyses, by `namespace/name/step`.
#[derive(Debug, Default)]
pub struct Analyses {
    running: Mutex<HashMap<String, JoinHandle<()>>>,
}

fn verdict(v: i32) -> Verdict {
    match pb::Verdict::try_from(v).unwrap_or_default() {
        pb::Verdict::Pass => Verdict::Pass,
        pb::Verdict::Fail => Verdict::Fail,
        pb::Verdict::Inconclusive => Verdict::Inconclusive,
        _ => Verdict::Error,
    }
}

fn evidence(m: &pb::Measurement) -> Evidence {
    let e = m.evidence.clone().unwrap_or_default();
    Evidence {
        metric: m.metric.clone(),
        outcome: pb::Outcome::try_from(m.outcome)
            .unwrap_or_default()
            .as_str_name()
            .trim_start_matches("OUTCOME_")
            .to_owned(),
        query: e.query,
        value: e.values.first().map(|s| s.value).filter(|v| v.is_finite()),
        decided_by: e.decided_by,
        message: e.message,
        time: m.time.map(|t| t.to_string()).unwrap_or_default(),
    }
}

impl Analyses {
    /// Starts the analysis of `step` unless it runs already.
    pub fn ensure(
        &self,
        client: &Client,
        gate: &MetricsGateClient<Channel>,
        rollout: &Rollout,
        step: u32,
        request: pb::AnalyzeRequest,
    ) {
        let ns = rollout.metadata.namespace.clone().unwrap_or_default();
        let name = rollout.metadata.name.clone().unwrap_or_default();
        let key = format!("{ns}/{name}/{step}");
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(&key).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let (client, mut gate) = (client.clone(), gate.clone());
        let handle = tokio::spawn(async move {
            let api: Api<Rollout> = Api::namespaced(client, &ns);
            let mut last: Vec<Evidence> = Vec::new();
            let outcome = match gate.analyze(request).await {
                Err(status) => Some((
                    Verdict::Error,
                    format!("the gate refused the analysis: {}", status.message()),
                )),
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    let mut result = None;
                    loop {
                        match stream.message().await {
                            Ok(Some(event)) => match event.event {
                                Some(pb::analyze_event::Event::Measurement(m)) => {
                                    last.retain(|e| e.metric != m.metric);
                                    last.push(evidence(&m));
                                }
                                Some(pb::analyze_event::Event::Verdict(v)) => {
                                    result = Some((verdict(v.verdict), v.message));
                                    break;
                                }
                                _ => {}
                            },
                            Ok(None) => break,
                            Err(status) => {
                                result = Some((
                                    Verdict::Error,
                                    format!("the gate's stream ended: {}", status.message()),
                                ));
                                break;
                            }
                        }
                    }
                    result
                }
            };
            let Some((verdict, message)) = outcome else {
                return;
            };
            tracing::info!(rollout = %name, step, ?verdict, %message, "analysis verdict");
            let patch = json!({"status": {"analysis": {"step": step, "verdict": verdict, "message": message, "evidence": last}}});
            if let Err(error) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::warn!(rollout = %name, %error, "writing the analysis verdict failed");
            }
        });
        running.insert(key, handle);
    }

    /// Stops every analysis of a rollout.
    pub fn stop(&self, namespace: &str, name: &str) {
        let prefix = format!("{namespace}/{name}/");
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|k, h| {
            if k.starts_with(&prefix) {
                h.abort();
                false
            } else {
                true
            }
        });
    }
}
