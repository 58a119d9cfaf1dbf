//! What kube-controller-manager keeps in every namespace: the
//! ServiceAccount controller's `default` account, and the root CA
//! publisher's `kube-root-ca.crt` ConfigMap, which every pod's API token
//! volume reads. Each is made again when it is removed; the ConfigMap's
//! data is put back when it is changed. (The ServiceAccount admission that
//! gives pods their account is the API server's: `sluice-sim-api`.)
//!
//! Also the ClusterRole aggregation controller: a ClusterRole with an
//! `aggregationRule` gets the rules of every ClusterRole its selectors
//! match, as charts' `aggregate-to-admin`/`-edit`/`-view` labels expect.

use serde_json::{Value, json};

use crate::engine::Ctx;
use sluice_sim_api::{selector::LabelSelector, store::Part};

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

/// Gives each aggregating ClusterRole the rules of the ClusterRoles its
/// selectors match (by name, each rule once, itself left out), as
/// kube-controller-manager's aggregation controller does; a role whose
/// rules are already those is not written.
pub(crate) fn aggregate_cluster_roles(ctx: &mut Ctx) {
    let res = ctx.kinds.cluster_roles.clone();
    let Ok(page) = ctx.store.list(
        &res,
        None,
        &LabelSelector::default(),
        &Default::default(),
        None,
        None,
    ) else {
        return;
    };
    let mut roles: Vec<Value> = page
        .items
        .iter()
        .filter_map(|bytes| serde_json::from_slice(bytes).ok())
        .collect();
    roles.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    for role in roles.iter().filter(|r| r["aggregationRule"].is_object()) {
        let name = role["metadata"]["name"].as_str().unwrap_or_default();
        let mut rules: Vec<Value> = Vec::new();
        let selectors = role["aggregationRule"]["clusterRoleSelectors"].as_array();
        for selector in selectors.into_iter().flatten() {
            let selector = LabelSelector::from_object(selector);
            for other in &roles {
                let labels: Vec<(String, String)> = other["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                if other["metadata"]["name"] == name || !selector.matches(&labels) {
                    continue;
                }
                for rule in other["rules"].as_array().into_iter().flatten() {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
        }
        let current = role["rules"].as_array().cloned().unwrap_or_default();
        if rules != current {
            ctx.modify(&res, "", name, Part::Main, |r: &mut Value| {
                r["rules"] = json!(rules);
            });
        }
    }
}
