//! Annotation keys the executor reads and writes. Every key it puts on a
//! user's object is removed when the release ends.

/// On a Deployment: the Rollout driving it.
pub const ROLLOUT: &str = "sluice.dev/rollout";
/// On a Deployment: whether it was paused before the release.
pub const PAUSED_BEFORE: &str = "sluice.dev/paused-before";
/// On a Rollout: a promotion asked for: `step` or `full`.
pub const PROMOTE: &str = "sluice.dev/promote";
/// On a Rollout: an abort asked for, with its reason.
pub const ABORT: &str = "sluice.dev/abort";
/// The label a Deployment's ReplicaSets and pods carry.
pub const TEMPLATE_HASH: &str = "pod-template-hash";
/// A ReplicaSet's rollout revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// On a Service: its selector before the release pinned it (JSON).
pub const ORIGINAL_SELECTOR: &str = "sluice.dev/original-selector";
/// On an HTTPRoute or VirtualService: its spec before the release (JSON).
pub const ORIGINAL_SPEC: &str = "sluice.dev/original-spec";
/// On a canary-style release's pods: the Deployment they are the canary of.
pub const CANARY_OF: &str = "sluice.dev/canary-of";

/// On an API-started Rollout: the release the executor has begun (its
/// identity, [`crate::machine::release_id`]). Written on the Rollout, over
/// the version read, before the start touches the workload, so a
/// DeleteRollout that checked an untouched Pending rollout either finds it
/// or fails its own precondition: the two can no longer cross.
pub const BEGUN: &str = "sluice.dev/begun";

/// The field manager of every write the executor makes, so a workload's
/// `managedFields` say which fields Sluice set.
pub const FIELD_MANAGER: &str = "sluice";

/// On a Deployment a partition-style release holds: its `spec.strategy` as
/// the user wrote it (JSON), written back when the release gives it back.
pub const ORIGINAL_STRATEGY: &str = "sluice.dev/original-strategy";

/// On a workload a bound Rollout holds: the digest
/// ([`crate::digest::template_hash`]) of the pod template it ran before the
/// change the admission webhook held, which names the stable revision.
pub const STABLE_TEMPLATE: &str = "sluice.dev/stable-template";

/// On a bound Rollout: the finalizer that gives its workload back to its
/// own controller, whole, when the Rollout is deleted mid-release.
pub const FINALIZER: &str = "sluice.dev/release";

/// On a StatefulSet a release holds: its partition before the release
/// ([`NO_PARTITION`] when none was written).
pub const PARTITION_BEFORE: &str = "sluice.dev/partition-before";

/// [`PARTITION_BEFORE`] of a StatefulSet whose user wrote no partition.
pub const NO_PARTITION: &str = "none";

/// On a workload a bound Rollout holds: who owned the fields the hold
/// changes (`managedFields` entries cut down to those fields, JSON), so
/// the release's end gives them back to their owners.
pub const FIELD_OWNERS: &str = "sluice.dev/field-owners";

/// On a ReplicaSet: the Deployment's replicas when it was last scaled
/// (kube-controller-manager reads it to tell a saturated ReplicaSet).
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// On a ReplicaSet: the Deployment's replicas plus its maxSurge then.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
