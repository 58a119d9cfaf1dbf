//! What the admission webhook does to a workload update, as a pure
//! function of the object before and after the request and the Rollout
//! bound to it: the JSON Patch that holds the workload's own controller
//! back, or a refusal.
//!
//! A Deployment is held by the fields a partition release holds it with
//! (see `controller/partition.rs`): `spec.paused: true` (its controller
//! makes no ReplicaSet for the new template) and `spec.strategy: {type:
//! Recreate}` (its controller never scales the ReplicaSets of a paused
//! Deployment proportionally), with the annotations the release reads and
//! removes at its end: `sluice.dev/rollout` (the Rollout holding it),
//! `sluice.dev/paused-before` (the `paused` the user asked for),
//! `sluice.dev/original-strategy` (the strategy the user wrote) and
//! `sluice.dev/stable-template` (the digest of the template it ran before
//! the change, naming the stable revision).

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use crate::{keys, ownership};

/// Adds to `marks` the owners of the held fields, `recorded` (the
/// workload's record, if any) with the managers of `new` (the object after
/// the request from `old`) that own some of them now, a server-side
/// applier of this request owning what it applied now, when that differs
/// from the record `new` carries.
fn record_owners(
    marks: &mut Vec<(&'static str, String)>,
    recorded: Option<String>,
    (old, new): (&Value, &Value),
    held: &[&[&str]],
) {
    let before: Vec<_> = recorded
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let all = ownership::merged(
        before,
        ownership::held_owners(new, held),
        &ownership::appliers(old, new),
    );
    let text = ownership::record_text(&all);
    if new["metadata"]["annotations"][keys::FIELD_OWNERS].as_str() != Some(text.as_str()) {
        marks.retain(|(k, _)| *k != keys::FIELD_OWNERS);
        marks.push((keys::FIELD_OWNERS, text));
    }
}

/// The webhook's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Let it through as it is.
    Allow,
    /// Let it through with these JSON Patch operations applied.
    Patch(Vec<Value>),
    /// Refuse it, with the reason shown to the user.
    Deny(String),
}

/// A Deployment's pod template as the executor compares templates: typed,
/// so that the digest taken here equals the one the controller takes of
/// the same template read from a ReplicaSet.
pub fn deployment_template(d: &Deployment) -> Value {
    pod_template(d.spec.as_ref().map(|s| &s.template))
}

/// A workload's pod template as the executor digests it
/// ([`sluice_model::digest::template_hash`], the bound release's identity).
pub fn pod_template(t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// One JSON Pointer segment (RFC 6901).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The operations that set `annotations` on `object` (raw JSON): each
/// key, or the whole map when the object has none.
fn set_annotations(object: &Value, annotations: &[(&str, String)]) -> Vec<Value> {
    if annotations.is_empty() {
        return Vec::new();
    }
    if object["metadata"]["annotations"].is_object() {
        annotations
            .iter()
            .map(|(k, v)| {
                json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(k)), "value": v})
            })
            .collect()
    } else {
        let map: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        vec![json!({"op": "add", "path": "/metadata/annotations", "value": map})]
    }
}

/// The strategy that holds a Deployment.
fn hold_strategy() -> Value {
    json!({"type": "Recreate"})
}

/// What to do with an update of Deployment `old` into `new` (raw JSON, as
/// the API server sends them) whose bound Rollout is `binding`.
///
/// - A change of the pod template of a Deployment nobody holds is held:
///   paused, strategy `Recreate`, the marks recorded.
/// - Any update of a Deployment `binding` holds keeps the hold: an apply
///   of the user's manifest (a GitOps sync, `kubectl replace`) that sets
///   `paused` or `strategy` back or drops the marks gets them again; a
///   strategy it brings is kept as the user's strategy, given back at the
///   end. A template change while held is the newer version the release
///   restarts on (or, back to the stable template, a rollback).
/// - A change of the template of a Deployment another Rollout holds is
///   refused: that release must end first.
/// - Anything else passes as it is.
pub fn deployment_update(old: &Value, new: &Value, binding: &str) -> Answer {
    let (Ok(old_typed), Ok(new_typed)) = (
        serde_json::from_value::<Deployment>(old.clone()),
        serde_json::from_value::<Deployment>(new.clone()),
    ) else {
        return Answer::Deny("the review's object or oldObject is not a Deployment".into());
    };
    let annotation = |d: &Deployment, key: &str| {
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    let name = old_typed.metadata.name.clone().unwrap_or_default();
    let template_changed = deployment_template(&old_typed) != deployment_template(&new_typed);
    let new_spec = new_typed.spec.clone().unwrap_or_default();
    let strategy_text =
        |d: &Deployment| serde_json::to_string(&d.spec.as_ref().and_then(|s| s.strategy.clone()));
    match annotation(&old_typed, keys::ROLLOUT) {
        Some(holder) if holder != binding => {
            if template_changed {
                Answer::Deny(format!(
                    "Deployment {name:?} is being released by Rollout {holder:?}; change its \
                     pod template once that release has ended (or Abort it)"
                ))
            } else {
                Answer::Allow
            }
        }
        Some(_) => {
            // Held by `binding`: whatever the request did, the hold stays.
            let mut marks = Vec::new();
            for key in [
                keys::ROLLOUT,
                keys::PAUSED_BEFORE,
                keys::ORIGINAL_STRATEGY,
                keys::STABLE_TEMPLATE,
            ] {
                let kept = annotation(&old_typed, key);
                if let Some(kept) = kept
                    && annotation(&new_typed, key).is_none()
                {
                    marks.push((key, kept));
                }
            }
            if new_spec.paused != Some(true)
                && annotation(&old_typed, keys::PAUSED_BEFORE).as_deref() == Some("true")
            {
                // `kubectl rollout resume` of a Deployment its user paused
                // before changing it: the user's pause ends (the release,
                // which waited for it, starts); the hold stays.
                marks.retain(|(k, _)| *k != keys::PAUSED_BEFORE);
                marks.push((keys::PAUSED_BEFORE, "false".into()));
            }
            record_owners(
                &mut marks,
                annotation(&new_typed, keys::FIELD_OWNERS)
                    .or(annotation(&old_typed, keys::FIELD_OWNERS)),
                (old, new),
                ownership::DEPLOYMENT_HELD,
            );
            let mut ops = Vec::new();
            let strategy = serde_json::to_value(&new_spec.strategy).unwrap_or(Value::Null);
            if strategy != hold_strategy() {
                // The request brought a strategy of the user's own: it is
                // theirs from now on, given back at the release's end.
                if let Ok(text) = strategy_text(&new_typed) {
                    marks.retain(|(k, _)| *k != keys::ORIGINAL_STRATEGY);
                    marks.push((keys::ORIGINAL_STRATEGY, text));
                }
                ops.push(json!({"op": "add", "path": "/spec/strategy", "value": hold_strategy()}));
            }
            if new_spec.paused != Some(true) {
                ops.push(json!({"op": "add", "path": "/spec/paused", "value": true}));
            }
            let mut all = set_annotations(new, &marks);
            all.extend(ops);
            if all.is_empty() {
                Answer::Allow
            } else {
                Answer::Patch(all)
            }
        }
        None if !template_changed => Answer::Allow,
        None => {
            let paused = new_spec.paused.unwrap_or(false);
            let Ok(strategy) = strategy_text(&new_typed) else {
                return Answer::Deny("the Deployment's strategy cannot be read".into());
            };
            let stable = sluice_model::digest::template_hash(&deployment_template(&old_typed));
            let mut ops = set_annotations(
                new,
                &[
                    (keys::ROLLOUT, binding.to_owned()),
                    (keys::PAUSED_BEFORE, paused.to_string()),
                    (keys::ORIGINAL_STRATEGY, strategy),
                    (keys::STABLE_TEMPLATE, stable),
                    (
                        keys::FIELD_OWNERS,
                        ownership::record_text(&ownership::held_owners(
                            new,
                            ownership::DEPLOYMENT_HELD,
                        )),
                    ),
                ],
            );
            ops.push(json!({"op": "add", "path": "/spec/paused", "value": true}));
            ops.push(json!({"op": "add", "path": "/spec/strategy", "value": hold_strategy()}));
            Answer::Patch(ops)
        }
    }
}

/// What to do with an update of StatefulSet `old` into `new` (raw JSON)
/// whose bound Rollout is `binding`: as [`deployment_update`], with the
/// StatefulSet's own hold: `spec.updateStrategy.rollingUpdate.partition`
/// at `replicas` (its controller then makes the new revision but replaces
/// no pod), the partition the user asked for kept in
/// `sluice.dev/partition-before`. A StatefulSet updated `OnDelete` is not
/// held: its controller replaces no pod by itself anyway.
pub fn statefulset_update(old: &Value, new: &Value, binding: &str) -> Answer {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let (Ok(old_typed), Ok(new_typed)) = (
        serde_json::from_value::<StatefulSet>(old.clone()),
        serde_json::from_value::<StatefulSet>(new.clone()),
    ) else {
        return Answer::Deny("the review's object or oldObject is not a StatefulSet".into());
    };
    let template = |s: &StatefulSet| {
        serde_json::to_value(s.spec.as_ref().map(|s| s.template.clone())).unwrap_or(Value::Null)
    };
    let annotation = |s: &StatefulSet, key: &str| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    let strategy = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|s| s.update_strategy.clone())
            .unwrap_or_default()
    };
    let written = |s: &StatefulSet| strategy(s).rolling_update.and_then(|r| r.partition);
    let partition = |s: &StatefulSet| written(s).unwrap_or(0);
    // The user's partition as recorded: none written is recorded so, and
    // given back so (a `rollingUpdate` left behind would bar `OnDelete`).
    let users = |s: &StatefulSet| {
        written(s).map_or_else(|| crate::keys::NO_PARTITION.to_owned(), |p| p.to_string())
    };
    let name = old_typed.metadata.name.clone().unwrap_or_default();
    let changed = template(&old_typed) != template(&new_typed);
    let replicas = new_typed
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    // The partition alone is set: the rest of the strategy (its
    // maxUnavailable) stays the user's.
    let hold = |object: &Value, at: i32| {
        let update = &object["spec"]["updateStrategy"];
        if update["rollingUpdate"].is_object() {
            json!({"op": "add", "path": "/spec/updateStrategy/rollingUpdate/partition", "value": at})
        } else if update.is_object() {
            json!({"op": "add", "path": "/spec/updateStrategy/rollingUpdate", "value": {"partition": at}})
        } else {
            json!({"op": "add", "path": "/spec/updateStrategy", "value": {"type": "RollingUpdate", "rollingUpdate": {"partition": at}}})
        }
    };
    match annotation(&old_typed, keys::ROLLOUT) {
        Some(holder) if holder != binding => {
            if changed {
                Answer::Deny(format!(
                    "StatefulSet {name:?} is being released by Rollout {holder:?}; change its \
                     pod template once that release has ended (or Abort it)"
                ))
            } else {
                Answer::Allow
            }
        }
        Some(_) => {
            // Held: the partition stays where the release has it; one the
            // request brings is the user's from now on.
            let mut marks = Vec::new();
            for key in [keys::ROLLOUT, keys::PARTITION_BEFORE] {
                if let Some(kept) = annotation(&old_typed, key)
                    && annotation(&new_typed, key).is_none()
                {
                    marks.push((key, kept));
                }
            }
            record_owners(
                &mut marks,
                annotation(&new_typed, keys::FIELD_OWNERS)
                    .or(annotation(&old_typed, keys::FIELD_OWNERS)),
                (old, new),
                ownership::STATEFULSET_HELD,
            );
            let mut ops = Vec::new();
            // Scaled up in this request: the partition rises as much, so
            // the pods its controller adds are made at the stable revision
            // and the new ones never outnumber the batch (the executor
            // then moves the partition to the batch's place).
            let old_replicas = old_typed
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            let added = replicas - old_replicas;
            if added > 0 && written(&new_typed) == written(&old_typed) {
                ops.push(hold(new, (partition(&new_typed) + added).min(replicas)));
            }
            if strategy(&new_typed) != strategy(&old_typed) {
                if strategy(&new_typed).type_.as_deref() == Some("OnDelete") {
                    return Answer::Deny(format!(
                        "spec.updateStrategy.type: StatefulSet {name:?} is being released in \
                         batches by Rollout {binding:?}, which moves its partition; it cannot \
                         become OnDelete until that release has ended (or Abort it)"
                    ));
                }
                // The user's strategy is kept (their maxUnavailable
                // included). A partition the request changed is the
                // user's from now on, given back at the end, and stays
                // where the release has it meanwhile; one it kept (a sync
                // of a manifest that leaves the partition out) is the
                // release's, not the user's.
                if written(&new_typed) != written(&old_typed) {
                    marks.retain(|(k, _)| *k != keys::PARTITION_BEFORE);
                    marks.push((keys::PARTITION_BEFORE, users(&new_typed)));
                    ops.push(hold(new, partition(&old_typed)));
                }
            }
            let mut all = set_annotations(new, &marks);
            all.extend(ops);
            if all.is_empty() {
                Answer::Allow
            } else {
                Answer::Patch(all)
            }
        }
        // Switched from OnDelete to RollingUpdate with pods not yet on
        // the template: its controller would now replace them all at once,
        // so that is a change to release as well.
        None if !changed && !(leaves_on_delete(&old_typed, &new_typed)) => Answer::Allow,
        None if strategy(&new_typed).type_.as_deref() == Some("OnDelete") => Answer::Allow,
        None => {
            let mut ops = set_annotations(
                new,
                &[
                    (keys::ROLLOUT, binding.to_owned()),
                    (keys::PARTITION_BEFORE, users(&new_typed)),
                    (
                        keys::FIELD_OWNERS,
                        ownership::record_text(&ownership::held_owners(
                            new,
                            ownership::STATEFULSET_HELD,
                        )),
                    ),
                ],
            );
            ops.push(hold(new, replicas));
            Answer::Patch(ops)
        }
    }
}

/// Whether an update of StatefulSet `old` into `new` leaves `OnDelete`
/// for `RollingUpdate` while some pods run another revision than the
/// template's (`status.currentRevision` behind `status.updateRevision`).
fn leaves_on_delete(
    old: &k8s_openapi::api::apps::v1::StatefulSet,
    new: &k8s_openapi::api::apps::v1::StatefulSet,
) -> bool {
    let kind = |s: &k8s_openapi::api::apps::v1::StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.clone())
    };
    let behind = old
        .status
        .as_ref()
        .is_some_and(|s| s.current_revision.is_some() && s.current_revision != s.update_revision);
    kind(old).as_deref() == Some("OnDelete") && kind(new).as_deref() != Some("OnDelete") && behind
}

/// What an update of a Rollout may not change: whether it is bound (a
/// binding releases its workload's own changes, a Rollout with a version
/// releases that version), and the workload of a binding or of a release
/// in flight (the workload it holds would be left held). An update that
/// keeps the workload is allowed (a control, a finalizer, a new strategy:
/// not a new binding); `None` for one that names another workload and may,
/// to be checked as a create is.
pub fn rollout_update(old: &crate::crd::Rollout, new: &crate::crd::Rollout) -> Option<Answer> {
    use kube::ResourceExt as _;
    let (before, after) = (&old.spec, &new.spec);
    if before.bound() && !after.bound() {
        return Some(Answer::Deny(format!(
            "spec.images: Rollout {:?} is bound to {} {:?} and releases the changes made to it: \
             change the workload (in git) instead, or delete this Rollout and create one that \
             names a version",
            new.name_any(),
            before.workload.kind_name(),
            before.workload.name
        )));
    }
    if !before.bound() && after.bound() {
        return Some(Answer::Deny(format!(
            "spec.images: Rollout {:?} releases a version; leaving out its images and template \
             would bind it to {} {:?} instead: delete it and create the binding",
            new.name_any(),
            before.workload.kind_name(),
            before.workload.name
        )));
    }
    if before.workload == after.workload {
        return Some(Answer::Allow);
    }
    let in_flight = old.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            crate::crd::Phase::Progressing
                | crate::crd::Phase::Paused
                | crate::crd::Phase::RollingBack
        )
    });
    if before.bound() || in_flight {
        let why = if before.bound() {
            "a bound Rollout's workload cannot change"
        } else {
            "the workload of a release in flight cannot change"
        };
        return Some(Answer::Deny(format!(
            "spec.workload: Invalid value: {} {:?}: {why} (it is {} {:?}); delete this Rollout \
             (its workload is given back whole) and create one for the other workload",
            after.workload.kind_name(),
            after.workload.name,
            before.workload.kind_name(),
            before.workload.name
        )));
    }
    None
}

/// Whether a Rollout (`name`, its spec as raw JSON) may be created or
/// changed beside `others` (the namespace's other Rollouts: name, bound,
/// workload kind and name): a workload takes one Rollout bound to it, and
/// no other Rollout while it has one.
pub fn rollout_admission(
    name: &str,
    spec: &crate::crd::RolloutSpec,
    others: &[(String, bool, crate::crd::WorkloadRef)],
) -> Answer {
    for (other, other_bound, workload) in others {
        if other == name || *workload != spec.workload {
            continue;
        }
        if spec.bound() || *other_bound {
            let kind = spec.workload.kind_name();
            let what = if *other_bound {
                format!("is bound to Rollout {other:?}")
            } else {
                format!("is released by Rollout {other:?}")
            };
            return Answer::Deny(format!(
                "spec.workload: {kind} {:?} {what}; a workload takes one bound Rollout and no \
                 other Rollout beside it (delete {other:?} first)",
                spec.workload.name
            ));
        }
    }
    Answer::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str, annotations: Value, paused: Option<bool>) -> Value {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": image}]}},
            },
        });
        if !annotations.is_null() {
            d["metadata"]["annotations"] = annotations;
        }
        if let Some(p) = paused {
            d["spec"]["paused"] = json!(p);
        }
        d
    }

    /// `object` with the patch applied (add operations on objects only,
    /// as the webhook makes them).
    fn apply(object: &Value, ops: &[Value]) -> Value {
        let mut out = object.clone();
        for op in ops {
            assert_eq!(op["op"], "add");
            let path: Vec<String> = op["path"].as_str().unwrap()[1..]
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect();
            let mut at = &mut out;
            for seg in &path[..path.len() - 1] {
                at = at.get_mut(seg.as_str()).expect("parent exists");
            }
            at[path.last().unwrap().as_str()] = op["value"].clone();
        }
        out
    }

    #[test]
    fn a_template_change_is_held_in_the_same_request() {
        let old = deployment("v1", Value::Null, None);
        let new = deployment("v2", Value::Null, None);
        let Answer::Patch(ops) = deployment_update(&old, &new, "web") else {
            panic!("not held");
        };
        let held = apply(&new, &ops);
        assert_eq!(held["spec"]["paused"], true);
        assert_eq!(held["spec"]["strategy"], json!({"type": "Recreate"}));
        let a = &held["metadata"]["annotations"];
        assert_eq!(a[keys::ROLLOUT], "web");
        assert_eq!(a[keys::PAUSED_BEFORE], "false");
        let saved: Value =
            serde_json::from_str(a[keys::ORIGINAL_STRATEGY].as_str().unwrap()).unwrap();
        assert_eq!(saved, new["spec"]["strategy"]);
        let old_typed: Deployment = serde_json::from_value(old).unwrap();
        assert_eq!(
            a[keys::STABLE_TEMPLATE],
            sluice_model::digest::template_hash(&deployment_template(&old_typed)).as_str()
        );
        // The new template itself is left as the user wrote it.
        assert_eq!(held["spec"]["template"], new["spec"]["template"]);
    }

    #[test]
    fn changes_outside_the_template_pass_untouched() {
        let old = deployment("v1", json!({"team": "a"}), None);
        let mut new = deployment("v1", json!({"team": "b"}), None);
        new["spec"]["replicas"] = json!(9);
        new["metadata"]["labels"] = json!({"tier": "front"});
        assert_eq!(deployment_update(&old, &new, "web"), Answer::Allow);
    }

    #[test]
    fn existing_annotations_get_the_marks_key_by_key_escaped() {
        let old = deployment("v1", json!({"team": "a"}), Some(true));
        let new = deployment("v2", json!({"team": "a"}), Some(true));
        let Answer::Patch(ops) = deployment_update(&old, &new, "web") else {
            panic!("not held");
        };
        assert!(
            ops.iter()
                .any(|o| o["path"] == "/metadata/annotations/sluice.dev~1rollout"),
            "{ops:?}"
        );
        let held = apply(&new, &ops);
        assert_eq!(held["metadata"]["annotations"]["team"], "a");
        assert_eq!(held["metadata"]["annotations"][keys::PAUSED_BEFORE], "true");
    }

    #[test]
    fn a_resume_of_a_deployment_paused_before_it_changed_ends_the_users_pause_not_the_hold() {
        let old = deployment("v1", Value::Null, Some(true));
        let new = deployment("v2", Value::Null, Some(true));
        let Answer::Patch(ops) = deployment_update(&old, &new, "web") else {
            panic!("not held");
        };
        let held = apply(&new, &ops);
        assert_eq!(held["metadata"]["annotations"][keys::PAUSED_BEFORE], "true");
        // `kubectl rollout resume`: a patch of spec.paused to false.
        let mut resumed = held.clone();
        resumed["spec"]["paused"] = json!(false);
        let Answer::Patch(ops) = deployment_update(&held, &resumed, "web") else {
            panic!("hold not kept");
        };
        let after = apply(&resumed, &ops);
        assert_eq!(after["spec"]["paused"], true, "still held");
        assert_eq!(
            after["metadata"]["annotations"][keys::PAUSED_BEFORE],
            "false"
        );
        assert_eq!(after["metadata"]["annotations"][keys::ROLLOUT], "web");
        // Any other update keeps the user's pause as it was.
        let mut labelled = held.clone();
        labelled["metadata"]["labels"] = json!({"tier": "front"});
        assert_eq!(deployment_update(&held, &labelled, "web"), Answer::Allow);
    }

    #[test]
    fn a_sync_of_the_users_manifest_during_a_release_keeps_the_hold() {
        let old = deployment("v1", Value::Null, None);
        let new = deployment("v2", Value::Null, None);
        let Answer::Patch(ops) = deployment_update(&old, &new, "web") else {
            panic!("not held");
        };
        let held = apply(&new, &ops);
        // Nothing changed: nothing to do.
        assert_eq!(deployment_update(&held, &held, "web"), Answer::Allow);
        // `kubectl replace` of the manifest with a new maxSurge: the hold
        // and every mark come back, the new strategy is the user's now.
        let mut replaced = deployment("v2", Value::Null, None);
        replaced["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!(1);
        let Answer::Patch(ops) = deployment_update(&held, &replaced, "web") else {
            panic!("hold not kept");
        };
        let again = apply(&replaced, &ops);
        assert_eq!(again["spec"]["paused"], true);
        assert_eq!(again["spec"]["strategy"], json!({"type": "Recreate"}));
        let a = &again["metadata"]["annotations"];
        assert_eq!(a[keys::ROLLOUT], "web");
        assert_eq!(
            a[keys::STABLE_TEMPLATE],
            held["metadata"]["annotations"][keys::STABLE_TEMPLATE]
        );
        let saved: Value =
            serde_json::from_str(a[keys::ORIGINAL_STRATEGY].as_str().unwrap()).unwrap();
        assert_eq!(saved["rollingUpdate"]["maxSurge"], 1);
        // A newer template while held: held still, the stable one kept.
        let newer = apply(
            &deployment("v3", held["metadata"]["annotations"].clone(), Some(true)),
            &[json!({"op": "add", "path": "/spec/strategy", "value": {"type": "Recreate"}})],
        );
        assert_eq!(deployment_update(&held, &newer, "web"), Answer::Allow);
    }

    #[test]
    fn a_template_change_under_another_rollouts_release_is_refused() {
        let old = deployment(
            "v1",
            json!({"sluice.dev/rollout": "platform-release"}),
            Some(true),
        );
        let new = deployment(
            "v2",
            json!({"sluice.dev/rollout": "platform-release"}),
            Some(true),
        );
        let Answer::Deny(why) = deployment_update(&old, &new, "web") else {
            panic!("not refused");
        };
        assert!(why.contains("platform-release"), "{why}");
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(6);
        assert_eq!(deployment_update(&old, &scaled, "web"), Answer::Allow);
    }

    #[test]
    fn a_statefulset_template_change_is_held_by_its_partition() {
        let sts = |image: &str, partition: Option<i32>| {
            let mut s = json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": image}]}},
                    "updateStrategy": {"type": "RollingUpdate"}},
            });
            if let Some(p) = partition {
                s["spec"]["updateStrategy"]["rollingUpdate"] = json!({"partition": p});
            }
            s
        };
        let Answer::Patch(ops) = statefulset_update(&sts("v1", None), &sts("v2", None), "db")
        else {
            panic!("not held");
        };
        let held = apply(&sts("v2", None), &ops);
        assert_eq!(
            held["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            3
        );
        // None was written: recorded so, to be given back so.
        assert_eq!(
            held["metadata"]["annotations"][keys::PARTITION_BEFORE],
            keys::NO_PARTITION
        );
        assert_eq!(held["metadata"]["annotations"][keys::ROLLOUT], "db");
        // A sync that sets the partition back keeps the release's, and
        // its own is the user's from now on.
        let mut moved = held.clone();
        moved["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(2);
        let mut synced = moved.clone();
        synced["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}});
        let Answer::Patch(ops) = statefulset_update(&moved, &synced, "db") else {
            panic!("hold not kept");
        };
        let kept = apply(&synced, &ops);
        assert_eq!(
            kept["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            2
        );
        assert_eq!(kept["metadata"]["annotations"][keys::PARTITION_BEFORE], "1");
        // The rest of the user's strategy is kept, when held and when a
        // change mid-release brings a new maxUnavailable.
        let mut limited = sts("v2", Some(0));
        limited["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!(2);
        let mut before = limited.clone();
        before["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v1");
        let Answer::Patch(ops) = statefulset_update(&before, &limited, "db") else {
            panic!("not held");
        };
        let held = apply(&limited, &ops);
        assert_eq!(
            held["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 3, "maxUnavailable": 2}})
        );
        let mut wider = held.clone();
        wider["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"partition": 0, "maxUnavailable": 3});
        let Answer::Patch(ops) = statefulset_update(&held, &wider, "db") else {
            panic!("hold not kept");
        };
        assert_eq!(
            apply(&wider, &ops)["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 3, "maxUnavailable": 3}})
        );
        // A sync of a manifest that leaves the partition out but brings
        // another strategy field keeps the user's partition as it was: the
        // live one is the release's.
        let mut moved = held.clone();
        moved["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(1);
        let mut resynced = moved.clone();
        resynced["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!(1);
        match statefulset_update(&moved, &resynced, "db") {
            Answer::Allow => {}
            Answer::Patch(ops) => assert!(
                ops.iter().all(|op| op["path"]
                    != "/metadata/annotations/sluice.dev~1partition-before"
                    && !op["path"].as_str().unwrap().contains("partition")),
                "{ops:?}"
            ),
            Answer::Deny(why) => panic!("{why}"),
        }
        // Scaled up from 3 to 12 mid-release (partition 2: one new pod):
        // the partition rises by 9 in the same request, so the pods its
        // controller adds are made at the stable revision.
        let mut at_two = held.clone();
        at_two["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(2);
        let mut scaled = at_two.clone();
        scaled["spec"]["replicas"] = json!(12);
        let Answer::Patch(ops) = statefulset_update(&at_two, &scaled, "db") else {
            panic!("partition not raised");
        };
        assert_eq!(
            apply(&scaled, &ops)["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            11
        );
        // Made OnDelete mid-release, it would stop the release's moves: refused,
        // naming the field.
        let mut on_delete = held.clone();
        on_delete["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        let Answer::Deny(why) = statefulset_update(&held, &on_delete, "db") else {
            panic!("not refused");
        };
        assert!(why.starts_with("spec.updateStrategy.type"), "{why}");
        // OnDelete replaces no pod by itself: not held.
        let mut on_delete = sts("v2", None);
        on_delete["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert_eq!(
            statefulset_update(&sts("v1", None), &on_delete, "db"),
            Answer::Allow
        );
        // Back to RollingUpdate with pods still on the old revision: its
        // controller would replace them all, so it is held; with every pod
        // on the template there is nothing to release.
        let mut behind = on_delete.clone();
        behind["status"] = json!({"currentRevision": "db-1", "updateRevision": "db-2"});
        let rolling = sts("v2", None);
        let Answer::Patch(ops) = statefulset_update(&behind, &rolling, "db") else {
            panic!("not held");
        };
        assert_eq!(
            apply(&rolling, &ops)["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            3
        );
        behind["status"]["currentRevision"] = json!("db-2");
        assert_eq!(statefulset_update(&behind, &rolling, "db"), Answer::Allow);
    }

    #[test]
    fn a_second_binding_of_one_workload_is_refused_naming_the_first() {
        use crate::crd::{RolloutSpec, WorkloadKind, WorkloadRef};
        let web = WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "web".into(),
        };
        let bound = RolloutSpec {
            workload: web.clone(),
            ..RolloutSpec::default()
        };
        let others = [("web-binding".to_owned(), true, web.clone())];
        let Answer::Deny(why) = rollout_admission("second", &bound, &others) else {
            panic!("not refused");
        };
        assert!(
            why.contains("web-binding") && why.starts_with("spec.workload"),
            "{why}"
        );
        // The binding itself may change.
        assert_eq!(
            rollout_admission("web-binding", &bound, &others),
            Answer::Allow
        );
        // Another workload is free.
        let api = RolloutSpec {
            workload: WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: "api".into(),
            },
            ..RolloutSpec::default()
        };
        assert_eq!(rollout_admission("api", &api, &others), Answer::Allow);
        // Two Rollouts naming new versions may share a workload (the second
        // waits for the first); a binding beside one may not.
        let mut versioned = bound.clone();
        versioned.images = vec![crate::crd::ImageUpdate {
            container: "app".into(),
            image: "v2".into(),
        }];
        let plain = [("release-1".to_owned(), false, web)];
        assert_eq!(
            rollout_admission("release-2", &versioned, &plain),
            Answer::Allow
        );
        assert!(matches!(
            rollout_admission("binding", &bound, &plain),
            Answer::Deny(_)
        ));
    }

    #[test]
    fn an_update_may_not_move_a_release_in_flight_or_a_binding_but_may_move_an_idle_release() {
        let rollout = |images: bool, workload: &str, phase: Option<crate::crd::Phase>| {
            let mut r: crate::crd::Rollout = serde_json::from_value(json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"workload": {"kind": "Deployment", "name": workload}},
            }))
            .unwrap();
            if images {
                r.spec.images = serde_json::from_value(
                    json!([{"container": "app", "image": "registry.example/web:2"}]),
                )
                .unwrap();
            }
            r.status = phase.map(|phase| crate::crd::RolloutStatus {
                phase,
                ..Default::default()
            });
            r
        };
        use crate::crd::Phase;
        // The same workload: allowed, whatever else changes.
        assert_eq!(
            rollout_update(&rollout(false, "web", None), &rollout(false, "web", None)),
            Some(Answer::Allow)
        );
        // A release in flight keeps its workload; an ended one may move,
        // checked then as a create is (None).
        let Some(Answer::Deny(why)) = rollout_update(
            &rollout(true, "web", Some(Phase::Paused)),
            &rollout(true, "api", Some(Phase::Paused)),
        ) else {
            panic!("a release in flight moved");
        };
        assert!(why.contains("release in flight cannot change"), "{why}");
        assert_eq!(
            rollout_update(
                &rollout(true, "web", Some(Phase::Succeeded)),
                &rollout(true, "api", Some(Phase::Succeeded)),
            ),
            None
        );
        // A binding never moves, nor turns into a release of a version.
        assert!(matches!(
            rollout_update(&rollout(false, "web", None), &rollout(false, "api", None)),
            Some(Answer::Deny(_))
        ));
        assert!(matches!(
            rollout_update(&rollout(false, "web", None), &rollout(true, "web", None)),
            Some(Answer::Deny(_))
        ));
    }
}
