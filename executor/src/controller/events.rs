//! Kubernetes Events about rollouts, published beside the reconciles
//! rather than inside them.
//!
//! A reconcile that changed a rollout's phase or step hands its Event to a
//! bounded queue and returns; one task publishes the queue, a few at a
//! time. An Event is a note for people (`kubectl describe`), so a release
//! never waits on one: with the API server slow, the step moves on and the
//! note follows.
//!
//! *Guarantees*: Events are sent in the order they were queued, up to
//! [`PARALLEL`] at once; a full queue drops the newest one and counts it
//! (`sluice_executor_events_dropped_total`), as client-go's broadcaster
//! drops when its queue is full.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, Recorder},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::metrics::Metrics;

/// Events waiting to be published before new ones are dropped.
pub const QUEUE: usize = 1000;
/// Events being published at once.
pub const PARALLEL: usize = 8;

/// Where reconciles leave their Events.
#[derive(Debug, Clone)]
pub struct EventSink {
    queue: mpsc::Sender<(Event, ObjectReference)>,
    metrics: Arc<Metrics>,
}

impl EventSink {
    /// Starts the publishing task on the current runtime; it ends when the
    /// last sink is dropped, after publishing what was queued.
    /// Its Events name `identity` as the replica that made them
    /// (`reportingInstance`), or the host name without one.
    pub fn start(client: Client, metrics: Arc<Metrics>, identity: Option<String>) -> Self {
        let (queue, received) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let publishing = ReceiverStream::new(received).for_each_concurrent(PARALLEL, move |(event, reference)| {
            // A recorder per Event: a shared one would fold Events of the
            // same reason into one series that keeps the first note (each
            // step's message would be lost) and would scan its whole cache
            // of recent Events on every publish.
            let reporter = match &identity {
                Some(id) => kube::runtime::events::Reporter {
                    controller: "sluice-executor".into(),
                    instance: Some(id.clone()),
                },
                None => "sluice-executor".into(),
            };
            let recorder = Recorder::new(client.clone(), reporter);
            async move {
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::debug!(%error, reason = %event.reason, "recording an event failed");
                }
            }
        });
        tokio::spawn(tracing::Instrument::instrument(
            publishing,
            tracing::info_span!("events"),
        ));
        Self { queue, metrics }
    }

    /// Queues an Event about `reference`; never waits.
    pub fn send(&self, event: Event, reference: ObjectReference) {
        if self.queue.try_send((event, reference)).is_err() {
            self.metrics.event_dropped();
            tracing::debug!("event queue full; event dropped");
        }
    }
}
