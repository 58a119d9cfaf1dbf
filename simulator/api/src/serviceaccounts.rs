//! Service accounts as a production cluster handles them: the
//! ServiceAccount admission plugin on every pod created (its account, its
//! API token volume, the account's image pull secrets), and the
//! TokenRequest a `kubectl create token` asks for.
//!
//! kube-apiserver refuses a pod whose ServiceAccount does not exist (403),
//! so a chart that forgot its ServiceAccount fails here as it fails on a
//! cluster. The `default` account is the exception that is waited for: the
//! real plugin retries until the controller has made it, so here it counts
//! as present in any namespace that exists.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::{status::ApiError, store::Store};

/// Where the token volume is mounted in every container.
pub(crate) const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The prefix of the token volume's name (a generated suffix follows).
const TOKEN_VOLUME: &str = "kube-api-access-";

/// The annotation of a static pod's mirror, which admission leaves alone.
const MIRROR: &str = "kubernetes.io/config.mirror";

/// The issuer and default audience of the tokens, as a cluster started with
/// `--service-account-issuer=https://kubernetes.default.svc` names them.
pub(crate) const ISSUER: &str = "https://kubernetes.default.svc";

/// What the ServiceAccount admission plugin does to a pod being created
/// in `namespace`: names its account (`default` when it names none),
/// refuses it when that account does not exist, mounts the account's API
/// token in every container unless automounting is turned off (by the pod,
/// or else by the account), and copies the account's image pull secrets
/// when the pod has none. `suffix` gives the token volume's name its
/// random part.
///
/// # Errors
/// 403 Forbidden naming the account, when it does not exist.
pub(crate) fn admit_pod(
    store: &Store,
    namespace: &str,
    pod: &mut Value,
    suffix: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if pod["metadata"]["annotations"].get(MIRROR).is_some() || !pod["spec"].is_object() {
        return Ok(());
    }
    let spec = &mut pod["spec"];
    let named = |field: &str| {
        spec.get(field)
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    };
    let account_name = named("serviceAccountName")
        .or_else(|| named("serviceAccount"))
        .unwrap_or_else(|| "default".to_owned());
    spec["serviceAccountName"] = json!(account_name);
    spec["serviceAccount"] = json!(account_name);
    let account = match account(store, namespace, &account_name) {
        Some(found) => found,
        None => {
            let pod_name = pod["metadata"]["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or_else(|| pod["metadata"]["generateName"].as_str())
                .unwrap_or("Unknown")
                .to_owned();
            return Err(ApiError::forbidden_object(
                "",
                "pods",
                &pod_name,
                &format!(
                    "error looking up service account {namespace}/{account_name}: serviceaccount \"{account_name}\" not found"
                ),
            ));
        }
    };
    let spec = &mut pod["spec"];
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        mount_token(spec, suffix);
    }
    let pull_secrets = &account["imagePullSecrets"];
    if spec["imagePullSecrets"]
        .as_array()
        .is_none_or(Vec::is_empty)
        && pull_secrets.as_array().is_some_and(|s| !s.is_empty())
    {
        spec["imagePullSecrets"] = json!(
            pull_secrets
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| json!({"name": s["name"]}))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The account `name` in `namespace`: as stored, or, for `default` in a
/// namespace that exists, an empty one (its controller is about to make
/// it, and kube-apiserver waits for that).
fn account(store: &Store, namespace: &str, name: &str) -> Option<Value> {
    let accounts = store.resource("", "serviceaccounts")?;
    match store.get_value(&accounts, namespace, name) {
        Ok(found) => Some(found),
        Err(_) if name == "default" => {
            let namespaces = store.resource("", "namespaces")?;
            store
                .get(&namespaces, "", namespace)
                .ok()
                .map(|_| json!({}))
        }
        Err(_) => None,
    }
}

/// Mounts the projected token volume in every container and init
/// container that has nothing mounted at [`TOKEN_MOUNT_PATH`], adding the
/// volume (unless one of its name is already there) when any does.
fn mount_token(spec: &mut Value, suffix: impl FnOnce() -> String) {
    let existing = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with(TOKEN_VOLUME))
        .map(str::to_owned);
    let has_volume = existing.is_some();
    let volume = existing.unwrap_or_else(|| format!("{TOKEN_VOLUME}{}", suffix()));
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter(|c| c.is_object()) {
            let mounted = container["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == TOKEN_MOUNT_PATH);
            if mounted {
                continue;
            }
            if !container["volumeMounts"].is_array() {
                container["volumeMounts"] = json!([]);
            }
            if let Some(mounts) = container["volumeMounts"].as_array_mut() {
                mounts
                    .push(json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
            }
            needed = true;
        }
    }
    if needed && !has_volume {
        if !spec["volumes"].is_array() {
            spec["volumes"] = json!([]);
        }
        if let Some(volumes) = spec["volumes"].as_array_mut() {
            volumes.push(json!({"name": volume, "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ],
            }}));
        }
    }
}

/// The shortest token lifetime a TokenRequest may ask for.
const SHORTEST: i64 = 600;

/// The answer to a TokenRequest for account `name` in `namespace`
/// (`POST .../serviceaccounts/<name>/token`): the request with its
/// defaults (audience: the issuer; one hour) and a token in its status.
///
/// The token has the claims of a Kubernetes service-account token but is
/// not signed (`alg: none`): the simulator takes any bearer token, and
/// nothing else should.
///
/// # Errors
/// 404 for an account that does not exist; 422 for a lifetime under ten
/// minutes or above 2^32 seconds; 400 for a body that is not a
/// TokenRequest.
pub(crate) fn token(
    store: &Store,
    namespace: &str,
    name: &str,
    mut request: Value,
    now: SystemTime,
) -> Result<Value, ApiError> {
    let accounts = store
        .resource("", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("no serviceaccounts resource"))?;
    let account = store.get_value(&accounts, namespace, name)?;
    // A token bound to an object lives no longer than it: the object must
    // exist.
    let bound = &request["spec"]["boundObjectRef"];
    if let Some(kind) = bound["kind"].as_str() {
        let (plural, scoped) = match kind {
            "Pod" => ("pods", namespace),
            "Secret" => ("secrets", namespace),
            "Node" => ("nodes", ""),
            other => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {other}"
                )));
            }
        };
        let object = bound["name"].as_str().unwrap_or_default();
        let res = store
            .resource("", plural)
            .ok_or_else(|| ApiError::internal(format!("no {plural} resource")))?;
        store.get(&res, scoped, object)?;
    }
    if !request.is_object() {
        return Err(ApiError::bad_request("the body is not a TokenRequest"));
    }
    if !request["spec"].is_object() {
        request["spec"] = json!({});
    }
    let spec = &mut request["spec"];
    if spec["audiences"].as_array().is_none_or(Vec::is_empty) {
        spec["audiences"] = json!([ISSUER]);
    }
    if spec.get("boundObjectRef").is_none() {
        spec["boundObjectRef"] = Value::Null;
    }
    let seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    spec["expirationSeconds"] = json!(seconds);
    let problem = if seconds < SHORTEST {
        Some("may not specify a duration less than 10 minutes")
    } else if seconds > 1 << 32 {
        Some("may not specify a duration larger than 2^32 seconds")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            &[(
                "spec.expirationSeconds".to_owned(),
                format!("Invalid value: {seconds}: {problem}"),
            )],
        ));
    }
    let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expires = issued + seconds.unsigned_abs();
    let claims = json!({
        "aud": spec["audiences"],
        "exp": expires,
        "iat": issued,
        "nbf": issued,
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": account["metadata"]["uid"]},
        },
    });
    let part = |v: &Value| base64_url(v.to_string().as_bytes());
    let token = format!(
        "{}.{}.",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(&claims)
    );
    let expiry = UNIX_EPOCH + Duration::from_secs(expires);
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": request["spec"],
        "status": {"token": token, "expirationTimestamp": crate::time::rfc3339(expiry)},
    }))
}

/// `bytes` in unpadded base64url, as a JWT's parts are written.
fn base64_url(bytes: &[u8]) -> String {
    serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first failed step

    use std::sync::Arc;

    use super::*;

    fn decode_part(part: &str) -> Value {
        let standard = part.replace('-', "+").replace('_', "/");
        let padded = format!("{standard}{}", "=".repeat((4 - standard.len() % 4) % 4));
        let bytes: k8s_openapi::ByteString = serde_json::from_value(json!(padded)).unwrap();
        serde_json::from_slice(&bytes.0).unwrap()
    }

    #[test]
    fn a_token_names_its_account_audience_and_lifetime() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let store = Store::new(Arc::new(move || at));
        let accounts = store.resource("", "serviceaccounts").unwrap();
        store
            .create(
                &accounts,
                "default",
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"}}),
            )
            .unwrap();
        let request = json!({"spec": {"audiences": ["vault"], "expirationSeconds": 900}});
        let issued = token(&store, "default", "web", request, at).unwrap();
        assert_eq!(
            issued["status"]["expirationTimestamp"],
            "2023-11-14T22:28:20Z"
        );
        let jwt = issued["status"]["token"].as_str().unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        assert_eq!(decode_part(parts[0])["alg"], "none");
        let claims = decode_part(parts[1]);
        assert_eq!(claims["sub"], "system:serviceaccount:default:web");
        assert_eq!(claims["aud"], json!(["vault"]));
        assert_eq!(claims["exp"], json!(1_700_000_900));
        assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "web");
        let missing = token(&store, "default", "nobody", json!({}), at).unwrap_err();
        assert_eq!(missing.code, 404);
    }
}
