//! Who owns the fields a hold changes, and giving them back.
//!
//! The admission webhook's hold (`spec.paused` and `spec.strategy` of a
//! Deployment, `spec.updateStrategy` of a StatefulSet) is a mutation the
//! API server attributes to nobody: the owners of those fields keep them.
//! The executor's own writes during and at the end of the release
//! (lowering a partition, giving the user's strategy back) are updates by
//! the manager `sluice`, and an update takes the fields it changes from
//! every other manager. Removing Sluice's entry at the end would then
//! leave them owned by nobody, and a GitOps tool that later drops
//! `strategy` from its manifest would no longer remove it (server-side
//! apply removes only fields the applier owns).
//!
//! So the webhook records, in [`keys::FIELD_OWNERS`], each manager's share
//! of the held fields when it holds the workload ([`held_owners`]), and the
//! release's last write ([`give_back`]) returns those shares to their
//! managers as it drops Sluice's entry.
//!
//! A `FieldsV1` set is handled here as the set of its members' paths, each
//! ending in `.` (the member itself), which is how the wire form marks a
//! node that is a member and has members below it.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use serde_json::{Map, Value};

use crate::keys;

/// A member's path from the object's root, ending in `.`.
type Path = Vec<String>;

/// The held fields of a Deployment.
pub const DEPLOYMENT_HELD: &[&[&str]] = &[&["f:spec", "f:paused"], &["f:spec", "f:strategy"]];

/// The held fields of a StatefulSet.
pub const STATEFULSET_HELD: &[&[&str]] = &[&["f:spec", "f:updateStrategy"]];

/// The members of a `FieldsV1` tree.
fn members(fields: &Value) -> BTreeSet<Path> {
    fn walk(node: &Value, at: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(map) = node.as_object() else {
            return;
        };
        if map.is_empty() && !at.is_empty() {
            let mut p = at.clone();
            p.push(".".into());
            out.insert(p);
        }
        for (k, v) in map {
            if k == "." {
                let mut p = at.clone();
                p.push(".".into());
                out.insert(p);
            } else {
                at.push(k.clone());
                walk(v, at, out);
                at.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

/// The `FieldsV1` tree of a set of members.
fn tree(set: &BTreeSet<Path>) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let child = node
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(child) = child {
            insert(child, rest);
        }
    }
    // A node whose only member is itself is written `{}`.
    fn compact(node: Value) -> Value {
        match node {
            Value::Object(map) if map.len() == 1 && map.contains_key(".") => {
                Value::Object(Map::new())
            }
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, compact(v))).collect())
            }
            other => other,
        }
    }
    let mut root = Map::new();
    for path in set {
        insert(&mut root, path);
    }
    compact(Value::Object(root))
}

fn entry_members(e: &ManagedFieldsEntry) -> BTreeSet<Path> {
    e.fields_v1
        .as_ref()
        .map(|f| members(&f.0))
        .unwrap_or_default()
}

/// Whether member `path` lies under `prefix`.
fn under(path: &[String], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
}

/// Adds `more` to what `e` owns.
fn add_members(e: &mut ManagedFieldsEntry, more: BTreeSet<Path>) {
    let mut all = entry_members(e);
    all.extend(more);
    e.fields_v1 = Some(FieldsV1(tree(&all)));
}

fn same_owner(a: &ManagedFieldsEntry, b: &ManagedFieldsEntry) -> bool {
    a.manager == b.manager && a.operation == b.operation && a.subresource == b.subresource
}

fn ours(e: &ManagedFieldsEntry) -> bool {
    e.manager.as_deref() == Some(keys::FIELD_MANAGER)
}

/// Each manager's share of the fields under `held` in `object`'s
/// `managedFields` (raw JSON, as an admission review carries it), Sluice's
/// own left out; managers with no share are left out.
pub fn held_owners(object: &Value, held: &[&[&str]]) -> Vec<ManagedFieldsEntry> {
    let entries: Vec<ManagedFieldsEntry> =
        serde_json::from_value(object["metadata"]["managedFields"].clone()).unwrap_or_default();
    entries
        .into_iter()
        .filter(|e| !ours(e))
        .filter_map(|e| {
            let share: BTreeSet<Path> = entry_members(&e)
                .into_iter()
                .filter(|p| held.iter().any(|h| under(p, h)))
                .collect();
            (!share.is_empty()).then(|| ManagedFieldsEntry {
                fields_v1: Some(FieldsV1(tree(&share))),
                fields_type: Some("FieldsV1".into()),
                time: None,
                ..e
            })
        })
        .collect()
}

/// The owners recorded on a workload (its [`keys::FIELD_OWNERS`]); none
/// when it has no record or one that cannot be read.
pub fn recorded(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Vec<ManagedFieldsEntry> {
    annotations
        .and_then(|a| a.get(keys::FIELD_OWNERS))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// The server-side appliers that wrote in a request from `old` to `new`
/// (raw objects): their entries differ. An applier's entry is what its
/// last apply said, so their share now replaces the recorded one.
pub fn appliers(old: &Value, new: &Value) -> Vec<ManagedFieldsEntry> {
    let read = |o: &Value| -> Vec<ManagedFieldsEntry> {
        serde_json::from_value(o["metadata"]["managedFields"].clone()).unwrap_or_default()
    };
    let before = read(old);
    read(new)
        .into_iter()
        .filter(|e| e.operation.as_deref() == Some("Apply") && !ours(e))
        .filter(|e| !before.contains(e))
        .collect()
}

/// `before` and `now` together: a manager in both owns the union of its
/// shares, except the `appliers` of this request, whose share is what
/// they applied now (none when they dropped the fields). For a workload
/// held again by a later request (a newer template, a GitOps sync): who
/// owned the fields then, and who applies them now.
pub fn merged(
    before: Vec<ManagedFieldsEntry>,
    now: Vec<ManagedFieldsEntry>,
    appliers: &[ManagedFieldsEntry],
) -> Vec<ManagedFieldsEntry> {
    let mut out: Vec<ManagedFieldsEntry> = before
        .into_iter()
        .filter(|o| !appliers.iter().any(|a| same_owner(a, o)))
        .collect();
    for e in now {
        match out.iter_mut().find(|o| same_owner(o, &e)) {
            Some(o) => add_members(o, entry_members(&e)),
            None => out.push(e),
        }
    }
    out
}

/// The text of a record, for [`keys::FIELD_OWNERS`].
pub fn record_text(owners: &[ManagedFieldsEntry]) -> String {
    serde_json::to_string(owners).unwrap_or_else(|_| "[]".into())
}

/// `entries` without Sluice's, each recorded owner given its share back:
/// every field of its share that no manager outside the record has taken
/// since (a field another manager changed after the hold is theirs). An
/// owner whose entry is gone (an update manager all of whose fields Sluice
/// took) gets it again, stamped `now`.
pub fn give_back(
    entries: Vec<ManagedFieldsEntry>,
    record: &[ManagedFieldsEntry],
    now: &Time,
) -> Vec<ManagedFieldsEntry> {
    let mut out: Vec<ManagedFieldsEntry> = entries.into_iter().filter(|e| !ours(e)).collect();
    let taken: BTreeSet<Path> = out
        .iter()
        .filter(|e| !record.iter().any(|r| same_owner(r, e)))
        .flat_map(entry_members)
        .collect();
    for r in record {
        let share: BTreeSet<Path> = entry_members(r).difference(&taken).cloned().collect();
        if share.is_empty() {
            continue;
        }
        match out.iter_mut().find(|e| same_owner(e, r)) {
            Some(e) => add_members(e, share),
            None => out.push(ManagedFieldsEntry {
                fields_v1: Some(FieldsV1(tree(&share))),
                fields_type: Some("FieldsV1".into()),
                time: Some(now.clone()),
                ..r.clone()
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            api_version: Some("apps/v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn a_tree_reads_back_as_it_was_written() {
        let fields = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}, "f:type": {}},
                       "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}}},
        });
        assert_eq!(tree(&members(&fields)), fields);
    }

    #[test]
    fn the_hold_records_each_managers_share_of_the_held_fields_only() {
        let object = json!({"metadata": {"managedFields": [
            {"manager": "argocd-controller", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "time": "2026-01-01T00:00:00Z",
             "fieldsV1": {"f:spec": {"f:replicas": {}, "f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}}}}}},
            {"manager": "kubectl-set", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:template": {"f:spec": {}}}}},
            {"manager": "sluice", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:paused": {}}}},
        ]}});
        let owners = held_owners(&object, DEPLOYMENT_HELD);
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(owners[0].manager.as_deref(), Some("argocd-controller"));
        assert_eq!(owners[0].time, None);
        assert_eq!(
            owners[0].fields_v1.as_ref().map(|f| &f.0),
            Some(&json!({"f:spec": {"f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}}}}}))
        );
    }

    #[test]
    fn the_end_gives_each_owner_its_share_and_drops_sluices_entry() {
        let record = vec![
            entry(
                "argocd-controller",
                "Apply",
                json!({"f:spec": {"f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}}, "f:type": {}}}}),
            ),
            entry(
                "kubectl-client-side-apply",
                "Update",
                json!({"f:spec": {"f:paused": {}}}),
            ),
        ];
        // After the release: Sluice took the strategy and paused; another
        // manager changed `type` since.
        let live = vec![
            entry(
                "argocd-controller",
                "Apply",
                json!({"f:spec": {"f:replicas": {}}}),
            ),
            entry(
                "kubectl-edit",
                "Update",
                json!({"f:spec": {"f:strategy": {"f:type": {}}}}),
            ),
            entry(
                "sluice",
                "Update",
                json!({"f:spec": {"f:paused": {}, "f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}}}}}),
            ),
        ];
        let now = Time(epoch());
        let out = give_back(live, &record, &now);
        assert!(out.iter().all(|e| !ours(e)));
        let argo = out
            .iter()
            .find(|e| e.manager.as_deref() == Some("argocd-controller"))
            .expect("kept");
        assert_eq!(
            argo.fields_v1.as_ref().map(|f| &f.0),
            Some(
                &json!({"f:spec": {"f:replicas": {}, "f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}}}}})
            )
        );
        let kubectl = out
            .iter()
            .find(|e| e.manager.as_deref() == Some("kubectl-client-side-apply"))
            .expect("an owner whose entry was gone gets it again");
        assert_eq!(
            kubectl.fields_v1.as_ref().map(|f| &f.0),
            Some(&json!({"f:spec": {"f:paused": {}}}))
        );
        assert_eq!(kubectl.time.as_ref(), Some(&now));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn a_later_hold_adds_the_new_appliers_share() {
        let first = vec![entry(
            "flux",
            "Apply",
            json!({"f:spec": {"f:strategy": {"f:type": {}}}}),
        )];
        let now = vec![
            entry(
                "flux",
                "Apply",
                json!({"f:spec": {"f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}}}}}),
            ),
            entry("kubectl", "Update", json!({"f:spec": {"f:paused": {}}})),
        ];
        let all = merged(first, now, &[]);
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0].fields_v1.as_ref().map(|f| &f.0),
            Some(
                &json!({"f:spec": {"f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}}, "f:type": {}}}})
            )
        );
    }

    #[test]
    fn an_applier_that_drops_a_held_field_mid_release_no_longer_owns_it() {
        let applied = |fields: Value| {
            json!({"metadata": {"managedFields": [{"manager": "argocd-controller", "operation": "Apply",
                "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "time": "2026-01-01T00:00:00Z", "fieldsV1": fields}]}})
        };
        let with_strategy =
            applied(json!({"f:spec": {"f:replicas": {}, "f:strategy": {"f:type": {}}}}));
        let without = applied(json!({"f:spec": {"f:replicas": {}}}));
        let recorded = held_owners(&with_strategy, DEPLOYMENT_HELD);
        assert_eq!(recorded.len(), 1);
        let who = appliers(&with_strategy, &without);
        assert_eq!(who.len(), 1);
        let all = merged(
            recorded.clone(),
            held_owners(&without, DEPLOYMENT_HELD),
            &who,
        );
        assert!(all.is_empty(), "{all:?}");
        // A request by someone else leaves the applier's record alone.
        assert!(appliers(&with_strategy, &with_strategy).is_empty());
        assert_eq!(merged(recorded.clone(), Vec::new(), &[]), recorded);
    }

    fn epoch() -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH
    }
}
