//! kube-controller-manager's resource quota controller: each
//! ResourceQuota's `status.hard` (its spec's) and `status.used`, counted
//! again when the quota changes and when an object of its namespace the
//! controllers watch comes or goes, and every [`RESYNC`] of cluster time
//! (its `--resource-quota-sync-period`) for the rest. The admission that
//! enforces them is the API server's (`sluice_sim_api::quota`).

use std::time::Duration;

use crate::engine::{Ctx, Work};

/// How often every quota of a namespace is counted again.
pub(crate) const RESYNC: Duration = Duration::from_secs(300);

/// Writes the status of every quota of namespace `ns`.
pub(crate) fn reconcile_quotas(ctx: &mut Ctx, ns: &str) {
    let res = ctx.kinds.quotas.clone();
    let quotas = sluice_sim_api::quota::quotas(&ctx.store, ns);
    if quotas.is_empty() {
        ctx.quota_namespaces.remove(ns);
        return;
    }
    for quota in &quotas {
        let status = sluice_sim_api::quota::status(&ctx.store, ns, quota);
        if quota["status"] != status {
            let name = quota["metadata"]["name"].as_str().unwrap_or_default();
            ctx.set_status(&res, ns, name, &status);
        }
    }
}

/// Notes the quotas' namespaces, and what brings a count again.
pub(crate) fn route(ctx: &mut Ctx, plural: &str, ns: &str, echo: bool) {
    if plural == "resourcequotas" {
        if ctx.quota_namespaces.insert(ns.to_owned()) {
            let resync = ctx.real(RESYNC);
            ctx.after(resync, Work::QuotaResync(ns.to_owned()));
        }
        if !echo {
            ctx.enqueue(Work::Quotas(ns.to_owned()));
        }
    } else if !ns.is_empty() && ctx.quota_namespaces.contains(ns) {
        ctx.enqueue(Work::Quotas(ns.to_owned()));
    }
}

/// The periodic count of namespace `ns`: again after [`RESYNC`] while it
/// has quotas.
pub(crate) fn resync(ctx: &mut Ctx, ns: &str) {
    reconcile_quotas(ctx, ns);
    if ctx.quota_namespaces.contains(ns) {
        let resync = ctx.real(RESYNC);
        ctx.after(resync, Work::QuotaResync(ns.to_owned()));
    }
}
