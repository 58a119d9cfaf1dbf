//! Parameters of the executor's writes: each one names the field manager
//! [`keys::FIELD_MANAGER`], so `managedFields` on every object it touches
//! say which fields Sluice wrote (server-side apply users and GitOps tools
//! read them).

use kube::api::{PatchParams, PostParams};

use crate::keys;

/// Parameters for a patch.
pub fn patch() -> PatchParams {
    PatchParams {
        field_manager: Some(keys::FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Parameters for a create or a replace.
pub fn post() -> PostParams {
    PostParams {
        field_manager: Some(keys::FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Finishes a release's writes to a user's workload: `patch` (a merge
/// patch, e.g. the marks taken off) together with Sluice's entries removed
/// from its `managedFields`, so that Sluice owns none of the fields it set
/// and gave back, and the fields the hold changed given back to the
/// managers that owned them when it began (`crate::ownership`). Otherwise
/// the fields a release wrote last (the strategy, the partition) would stay
/// Sluice's, and a GitOps tool's later server-side apply of another value
/// would conflict with `sluice`.
///
/// Works from `known`, the object as last read, when it carries its
/// `managedFields`; the write is conditional on its version, so when it is
/// stale the write conflicts, and the object is read afresh and written
/// again. Without `known`, it reads the object first. Writes nothing when
/// there is nothing to change.
///
/// # Errors
/// The API server's, a conflict (409) on the fresh read's write included:
/// the next reconcile does it again.
pub async fn disown<K>(
    api: &kube::Api<K>,
    name: &str,
    known: Option<&K>,
    patch: serde_json::Value,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Some(known) = known.filter(|k| k.meta().managed_fields.is_some()) {
        match disown_from(api, name, known, patch.clone()).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            done => return done,
        }
    }
    let Some(fresh) = api.get_opt(name).await? else {
        return Ok(());
    };
    disown_from(api, name, &fresh, patch).await
}

/// [`disown`] from `object` as read.
async fn disown_from<K>(
    api: &kube::Api<K>,
    name: &str,
    object: &K,
    patch: serde_json::Value,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let fields = meta.managed_fields.clone().unwrap_or_default();
    let record = crate::ownership::recorded(meta.annotations.as_ref());
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let given = crate::ownership::give_back(fields.clone(), &record, &now);
    let mut patch = patch;
    if given != fields {
        patch["metadata"]["managedFields"] = serde_json::to_value(given).unwrap_or_default();
    }
    if patch.as_object().is_none_or(serde_json::Map::is_empty) {
        return Ok(());
    }
    patch["metadata"]["resourceVersion"] = serde_json::json!(meta.resource_version);
    api.patch(name, &self::patch(), &kube::api::Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The JSON merge patch that turns `current` into `target`: `target`
/// itself, with every object key `current` has and `target` lacks set to
/// null at every depth. A merge patch of `target` alone keeps such keys
/// (a nodeSelector, a label or a securityContext the target template does
/// not have would survive the write); lists are replaced whole either way.
pub fn merge_to(current: &serde_json::Value, target: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (current, target) {
        (Value::Object(now), Value::Object(wanted)) => {
            let mut patch: serde_json::Map<String, Value> = wanted
                .iter()
                .map(|(k, v)| {
                    let v = match now.get(k) {
                        Some(before) => merge_to(before, v),
                        None => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            for k in now.keys() {
                if !wanted.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => target.clone(),
    }
}

#[cfg(test)]
mod merge_tests {
    use serde_json::json;

    #[test]
    fn a_merge_patch_to_a_template_takes_away_what_the_template_lacks() {
        let current = json!({
            "metadata": {"labels": {"app": "web", "tier": "a"}},
            "spec": {"nodeSelector": {"nope": "never"}, "containers": [{"name": "web", "image": "2.0", "env": [{"name": "A"}]}]},
        });
        let target = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "1.0"}]},
        });
        let patch = super::merge_to(&current, &target);
        assert_eq!(
            patch,
            json!({
                "metadata": {"labels": {"app": "web", "tier": null}},
                "spec": {"nodeSelector": null, "containers": [{"name": "web", "image": "1.0"}]},
            })
        );
        // Applied as a merge patch, it leaves exactly the target.
        let mut applied = current.clone();
        json_patch_merge(&mut applied, &patch);
        assert_eq!(applied, target);
    }

    /// RFC 7386, as the API server applies a merge patch.
    fn json_patch_merge(doc: &mut serde_json::Value, patch: &serde_json::Value) {
        match patch {
            serde_json::Value::Object(fields) => {
                if !doc.is_object() {
                    *doc = json!({});
                }
                let map = doc.as_object_mut().unwrap();
                for (k, v) in fields {
                    if v.is_null() {
                        map.remove(k);
                    } else {
                        json_patch_merge(
                            map.entry(k.clone()).or_insert(serde_json::Value::Null),
                            v,
                        );
                    }
                }
            }
            other => *doc = other.clone(),
        }
    }
}
