//! Analyses run beside the reconciler: one gate `Analyze` stream per
//! rollout step, whose verdict and evidence are written to the Rollout's
//! status. If the executor restarts, the reconciler starts the analysis
//! again: a step is never judged on no data.
//!
//! A written verdict wakes the reconciler at once, with the Rollout the
//! write returned: the reconciler reads that version instead of the watch
//! cache's older one until the watch catches up ([`super::written`]), so
//! a failed verdict turns into a rollback without waiting for the write to
//! come back through the watch.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::{Api, Client, api::Patch, runtime::reflector::ObjectRef};
use serde_json::json;
use sluice_proto::v1::{self as pb, metrics_gate_client::MetricsGateClient};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

use super::written::Written;
use crate::crd::{Evidence, Rollout, Verdict};

/// Running analyses, by `namespace/name/step`.
#[derive(Debug, Default)]
pub struct Analyses {
    running: Mutex<HashMap<String, JoinHandle<()>>>,
    /// Where a verdict's write leaves the Rollout it returned.
    written: Arc<Written>,
    /// Where a written verdict asks the controller for a reconcile.
    wake: Mutex<Option<mpsc::UnboundedSender<ObjectRef<Rollout>>>>,
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
    /// The reconciles verdicts ask for, for the controller's `reconcile_on`.
    pub fn wakes(&self) -> impl futures::Stream<Item = ObjectRef<Rollout>> + use<> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        UnboundedReceiverStream::new(receiver)
    }

    /// Analyses whose verdicts' writes are kept in `written`.
    pub fn new(written: Arc<Written>) -> Self {
        Self {
            running: Mutex::default(),
            written,
            wake: Mutex::default(),
        }
    }

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
        let written = Arc::clone(&self.written);
        let wake = self.wake.lock().unwrap_or_else(|p| p.into_inner()).clone();
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
            match api
                .patch_status(&name, &crate::writes::patch(), &Patch::Merge(patch))
                .await
            {
                Ok(rollout) => {
                    let reference = ObjectRef::from_obj(&rollout);
                    written.record(rollout);
                    if let Some(wake) = wake {
                        // The controller has stopped when nobody listens;
                        // its successor reads the verdict from the cluster.
                        let _ = wake.send(reference);
                    }
                }
                Err(error) => {
                    tracing::warn!(rollout = %name, %error, "writing the analysis verdict failed");
                }
            }
        });
        running.insert(key, handle);
    }

    /// Stops every analysis of a rollout.
    pub fn stop(&self, namespace: &str, name: &str) {
        self.written.forget(namespace, name);
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
