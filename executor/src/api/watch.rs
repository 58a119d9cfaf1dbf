//! WatchRollout's stream: the Kubernetes watch of one Rollout, renewed
//! when the API server ends it (it does every few minutes), ended with OK
//! once the rollout reached a terminal phase or was deleted.
//!
//! *Guarantees*: an OK end means the last event sent was terminal or
//! DELETED; every other end is an error status (OUT_OF_RANGE for a
//! revision too old, UNAVAILABLE for a failed watch or a server shutting
//! down), so a client knows when to watch again.

use std::pin::Pin;

use futures::{Stream, StreamExt, stream::BoxStream};
use kube::{
    Api, ResourceExt,
    api::{WatchEvent, WatchParams},
};
use sluice_proto::v1 as pb;
use sluice_runtime::server::CancellationToken;
use tonic::Status;

use super::{
    errors::{Target, kube_status},
    finished, phase_of,
};
use crate::{convert, crd::Rollout};

/// Seconds the API server is asked to keep one watch open.
const WATCH_SECONDS: u32 = 290;

/// A stream of rollout events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RolloutEvent, Status>> + Send>>;

/// What the stream has to go on with.
struct Watch {
    api: Api<Rollout>,
    namespace: String,
    name: String,
    /// The last resourceVersion seen; a renewed watch starts after it.
    revision: String,
    events: Option<BoxStream<'static, Result<WatchEvent<Rollout>, kube::Error>>>,
    stop: CancellationToken,
    ended: bool,
}

fn event(kind: pb::RolloutEventType, rollout: &Rollout) -> pb::RolloutEvent {
    pb::RolloutEvent {
        r#type: kind as i32,
        rollout: Some(convert::rollout_to_proto(rollout)),
    }
}

/// The first event of a watch started now, for `current`.
pub fn initial(current: &Rollout) -> pb::RolloutEvent {
    event(pb::RolloutEventType::Initial, current)
}

impl Watch {
    /// The next item, or `None` once the stream ended.
    async fn next(&mut self) -> Option<Result<pb::RolloutEvent, Status>> {
        loop {
            if self.ended {
                return None;
            }
            let events = match &mut self.events {
                Some(events) => events,
                None => {
                    let params = WatchParams::default()
                        .fields(&format!("metadata.name={}", self.name))
                        .timeout(WATCH_SECONDS);
                    match self.api.watch(&params, &self.revision).await {
                        Ok(events) => self.events.insert(events.boxed()),
                        Err(e) => {
                            self.ended = true;
                            return Some(Err(kube_status(
                                e,
                                Target::Rollout(&self.namespace, &self.name),
                            )));
                        }
                    }
                }
            };
            let next = tokio::select! {
                next = events.next() => next,
                () = self.stop.cancelled() => {
                    self.ended = true;
                    return Some(Err(Status::unavailable(
                        "the executor is shutting down; watch again from the last revision",
                    )));
                }
            };
            match next {
                // The API server ended this watch: renew it.
                None => self.events = None,
                Some(Ok(WatchEvent::Added(ro) | WatchEvent::Modified(ro))) => {
                    self.revision = ro.resource_version().unwrap_or_default();
                    // Deleted with force: gone to the API already (see
                    // `deleted`), whatever the collector still holds.
                    if super::deleted(&ro) {
                        self.ended = true;
                        return Some(Ok(event(pb::RolloutEventType::Deleted, &ro)));
                    }
                    // Not ended while a change of the workload waits.
                    let ro = super::shown(&self.api, ro).await;
                    self.ended = finished(phase_of(&ro));
                    return Some(Ok(event(pb::RolloutEventType::Updated, &ro)));
                }
                Some(Ok(WatchEvent::Deleted(ro))) => {
                    self.ended = true;
                    return Some(Ok(event(pb::RolloutEventType::Deleted, &ro)));
                }
                Some(Ok(WatchEvent::Bookmark(b))) => self.revision = b.metadata.resource_version,
                Some(Ok(WatchEvent::Error(e))) => {
                    self.ended = true;
                    return Some(Err(if e.code == 410 {
                        Status::out_of_range(format!(
                            "revision too old: {}; watch again without since_revision",
                            e.message
                        ))
                    } else {
                        Status::unavailable(format!("the watch failed: {}", e.message))
                    }));
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(Status::unavailable(format!("the watch failed: {e}"))));
                }
            }
        }
    }
}

/// The events of rollout `name` after `revision`, preceded by `first`.
/// `ended` starts the stream ended: only `first` is sent.
pub fn stream(
    api: Api<Rollout>,
    (namespace, name): (String, String),
    revision: String,
    first: Option<pb::RolloutEvent>,
    ended: bool,
    stop: CancellationToken,
) -> EventStream {
    let watch = Watch {
        api,
        namespace,
        name,
        revision,
        events: None,
        stop,
        ended,
    };
    let live = futures::stream::unfold(watch, |mut watch| async move {
        let item = watch.next().await?;
        Some((item, watch))
    });
    Box::pin(futures::stream::iter(first.map(Ok)).chain(live))
}
