//! Which executor replica drives the rollouts: the holder of one
//! `coordination.k8s.io/v1` Lease. Every replica serves the Rollouts API
//! (it only writes Rollout objects); only the holder runs the controller.
//!
//! *Guarantees*: a holder renews every `renew_every`; it stops leading as
//! soon as another replica holds the Lease, or when it could not renew for
//! `renew_deadline`, which is shorter than the Lease's duration, so two
//! replicas never lead at once as long as clocks agree within the margin.
//! A replica shutting down releases the Lease, so another takes over at
//! its next attempt rather than after the Lease expires. Since the cluster
//! is the only state, the new holder resumes every rollout at its step.
//!
//! *Assumptions*: the replicas' clocks are within a second or so.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, api::ResourceExt};
use serde_json::{Value, json};
use sluice_runtime::server::CancellationToken;

/// How a replica takes part in the election.
#[derive(Debug, Clone)]
pub struct Election {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica, as written in `holderIdentity`.
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub lease_duration: Duration,
    /// How long a holder keeps leading while its renewals fail.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub renew_every: Duration,
    /// What the Lease's times are read and written with: the wall clock
    /// moved on by tokio's, so tests on paused time expire Leases too.
    pub clock: crate::controller::Clock,
}

impl Election {
    /// Defaults in the spirit of client-go's leader election (15 s lease,
    /// 10 s renew deadline, 2 s between attempts).
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            clock: crate::controller::Clock::default(),
        }
    }
}

fn micro_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let whole = prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    }
    .to_string();
    // Lease times are MicroTime: RFC 3339 with exactly six fraction digits.
    format!("{}.{:06}Z", whole.trim_end_matches('Z'), d.subsec_micros())
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let ts: prost_types::Timestamp = text.parse().ok()?;
    SystemTime::try_from(ts).ok()
}

/// What one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease (acquired or renewed).
    Held,
    /// Another replica holds it.
    Other,
}

async fn attempt(api: &Api<Lease>, e: &Election) -> Result<Attempt, kube::Error> {
    let now = e.clock.now();
    let seconds = e.lease_duration.as_secs().max(1);
    let Some(lease) = api.get_opt(&e.name).await? else {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": e.name, "namespace": e.namespace},
            "spec": {"holderIdentity": e.identity, "leaseDurationSeconds": seconds,
                     "acquireTime": micro_time(now), "renewTime": micro_time(now), "leaseTransitions": 0},
        }))
        .map_err(kube::Error::SerdeError)?;
        return match api.create(&crate::writes::post(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Other),
            Err(err) => Err(err),
        };
    };
    let spec = serde_json::to_value(&lease.spec).unwrap_or(Value::Null);
    let holder = spec["holderIdentity"].as_str().unwrap_or_default();
    let renewed = spec["renewTime"].as_str().and_then(parse_time);
    let duration = Duration::from_secs(spec["leaseDurationSeconds"].as_u64().unwrap_or(seconds));
    let expired = renewed.is_none_or(|t| t + duration <= now);
    if holder != e.identity && !holder.is_empty() && !expired {
        return Ok(Attempt::Other);
    }
    let mut next = spec.clone();
    next["holderIdentity"] = json!(e.identity);
    next["leaseDurationSeconds"] = json!(seconds);
    next["renewTime"] = json!(micro_time(now));
    if holder != e.identity {
        next["acquireTime"] = json!(micro_time(now));
        next["leaseTransitions"] = json!(spec["leaseTransitions"].as_i64().unwrap_or(0) + 1);
    }
    let mut updated = lease.clone();
    updated.spec = serde_json::from_value(next).map_err(kube::Error::SerdeError)?;
    // A replace carries the resourceVersion read: a concurrent taker loses.
    match api.replace(&e.name, &crate::writes::post(), &updated).await {
        Ok(_) => Ok(Attempt::Held),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Other),
        Err(err) => Err(err),
    }
}

/// Gives the Lease up if this replica holds it.
async fn release(api: &Api<Lease>, e: &Election) {
    let Ok(Some(lease)) = api.get_opt(&e.name).await else {
        return;
    };
    let spec = serde_json::to_value(&lease.spec).unwrap_or(Value::Null);
    if spec["holderIdentity"].as_str() != Some(e.identity.as_str()) {
        return;
    }
    let mut next = spec;
    next["holderIdentity"] = Value::Null;
    let mut updated = lease.clone();
    if let Ok(s) = serde_json::from_value(next) {
        updated.spec = s;
        let _ = api
            .replace(&lease.name_any(), &crate::writes::post(), &updated)
            .await;
    }
}

/// Takes part in the election until `shutdown`, running `lead` with a
/// token that is cancelled when leadership is lost (it may then be called
/// again on regaining it).
pub async fn run<F>(client: Client, election: Election, shutdown: CancellationToken, lead: F)
where
    F: Fn(CancellationToken),
{
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut leading: Option<CancellationToken> = None;
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        let outcome = attempt(&api, &election).await;
        match (&outcome, &leading) {
            (Ok(Attempt::Held), None) => {
                tracing::info!(identity = %election.identity, lease = %election.name, "leading");
                let token = shutdown.child_token();
                lead(token.clone());
                leading = Some(token);
                last_renewal = tokio::time::Instant::now();
            }
            (Ok(Attempt::Held), Some(_)) => last_renewal = tokio::time::Instant::now(),
            (Ok(Attempt::Other), Some(token)) => {
                tracing::warn!(identity = %election.identity, "another replica holds the lease; stopping");
                token.cancel();
                leading = None;
            }
            (Err(error), Some(token)) if last_renewal.elapsed() >= election.renew_deadline => {
                tracing::warn!(%error, "could not renew the lease in time; stopping");
                token.cancel();
                leading = None;
            }
            (Err(error), _) => tracing::debug!(%error, "lease attempt failed"),
            (Ok(Attempt::Other), None) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(election.renew_every) => {}
        }
    }
    if let Some(token) = leading {
        token.cancel();
        release(&api, &election).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_times_have_six_fraction_digits() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(micro_time(t), "2023-11-14T22:13:20.123456Z");
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(micro_time(whole), "2023-11-14T22:13:20.000000Z");
        assert_eq!(
            parse_time(&micro_time(t)).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000)
        );
    }
}
