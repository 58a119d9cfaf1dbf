//! What kube-controller-manager keeps in every namespace: the
//! ServiceAccount controller's `default` account, and the root CA
//! publisher's `kube-root-ca.crt` ConfigMap, which every pod's API token
//! volume reads. Each is made again when it is removed; the ConfigMap's
//! data is put back when it is changed. (The ServiceAccount admission that
//! gives pods their account is the API server's: `sluice-sim-api`.)

use serde_json::{Value, json};

use crate::engine::Ctx;
use sluice_sim_api::store::Part;

/// The account every pod runs as unless it names another.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The ConfigMap with the cluster's CA.
pub const ROOT_CA: &str = "kube-root-ca.crt";

/// The key of the CA in [`ROOT_CA`].
const CA_KEY: &str = "ca.crt";

/// What [`ROOT_CA`] holds under [`CA_KEY`]: nothing. The simulated pods
/// run no code that would verify the API server with it, and its clients
/// outside get the CA from their kubeconfig.
const CA: &str = "";

/// Makes what is missing in namespace `name`, unless it is going away.
pub(crate) fn reconcile_namespace(ctx: &mut Ctx, name: &str) {
    let namespaces = ctx.kinds.namespaces.clone();
    let Some(namespace) = ctx.get(&namespaces, "", name) else {
        return;
    };
    if namespace["status"]["phase"] == "Terminating"
        || namespace["metadata"]["deletionTimestamp"].is_string()
    {
        return;
    }
    let accounts = ctx.kinds.accounts.clone();
    if ctx.get(&accounts, name, DEFAULT_ACCOUNT).is_none() {
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT_ACCOUNT, "namespace": name}});
        if let Err(e) = ctx.store.create(&accounts, name, account)
            && e.code != 409
        {
            tracing::warn!(namespace = name, error = %e.message, "creating the default ServiceAccount failed");
        }
    }
    let config_maps = ctx.kinds.config_maps.clone();
    match ctx.get(&config_maps, name, ROOT_CA) {
        None => {
            let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA, "namespace": name,
                    "annotations": {"kubernetes.io/description": DESCRIPTION}},
                "data": {CA_KEY: CA}});
            if let Err(e) = ctx.store.create(&config_maps, name, map)
                && e.code != 409
            {
                tracing::warn!(namespace = name, error = %e.message, "publishing kube-root-ca.crt failed");
            }
        }
        Some(map) if map["data"] != json!({CA_KEY: CA}) => {
            ctx.modify(&config_maps, name, ROOT_CA, Part::Main, |m: &mut Value| {
                m["data"] = json!({CA_KEY: CA});
            });
        }
        Some(_) => {}
    }
}

/// The description kube-controller-manager's publisher gives the map.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
