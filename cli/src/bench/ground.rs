//! Where one size of `sluice bench` runs: a fresh simulated cluster in this
//! process, or a cluster the user gave (`--kubeconfig`), such as the real
//! control plane with the simulator's agent as its nodes.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context as _;
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use sluice_executor::crd::Rollout;
use sluice_sim::scenario::{Scenario, Simulation};
use tokio_util::sync::CancellationToken;

use super::probe::Requests;

/// How the executor's requests are counted.
enum Counting {
    /// A counting proxy in front of the simulated API server.
    Proxy(Requests),
    /// The executor's own `sluice_executor_kube_requests_total`, read from
    /// its admin port at the end.
    Metrics,
}

/// One size's cluster.
pub(super) struct Ground {
    /// The harness's own client.
    pub(super) local: kube::Client,
    /// The kubeconfig the executor uses.
    pub(super) kubeconfig: std::path::PathBuf,
    /// The Prometheus the gate asks.
    pub(super) metrics_url: String,
    /// The Lease the executor takes.
    pub(super) lease: String,
    /// What every namespace of this size starts with.
    pub(super) prefix: String,
    counting: Counting,
    /// The namespaces made for this size, deleted at its end.
    made: Vec<String>,
    _keep: Vec<Box<dyn std::any::Any + Send>>,
}

impl Ground {
    /// A fresh simulated cluster holding `scenario`, served on loopback
    /// through a counting proxy until `stop`.
    pub(super) async fn simulated(
        scenario: Scenario,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let sim = Simulation::start(scenario)
            .map_err(|e| anyhow::anyhow!("starting the simulated cluster: {}", e.message))?;
        let local = kube::Client::new(sim.api.router(), "default");
        let by_kind = Requests::default();
        let router = by_kind.counting(
            sim.api.router(),
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        );
        let kube_addr = serve(router, stop).await?;
        let metrics_addr =
            serve(sluice_sim::metrics::http::router(sim.metrics.clone()), stop).await?;
        let (dir, kubeconfig) = super::kubeconfig_for(kube_addr)?;
        Ok(Self {
            local,
            kubeconfig,
            metrics_url: format!("http://{metrics_addr}"),
            lease: "sluice-executor".into(),
            prefix: "team-".into(),
            counting: Counting::Proxy(by_kind),
            made: Vec::new(),
            _keep: vec![Box::new(sim), Box::new(dir)],
        })
    }

    /// The cluster `kubeconfig` names, with `n` two-replica Deployments made
    /// for this size in namespaces of its own, and the Rollout CRD.
    pub(super) async fn given(kubeconfig: &Path, n: usize) -> anyhow::Result<Self> {
        let local = client_for(kubeconfig).await?;
        install_crd(&local).await?;
        let run = run_id();
        let prefix = format!("bench-{run}-{n}-");
        let mut ground = Self {
            local: local.clone(),
            kubeconfig: kubeconfig.to_owned(),
            // No analysis runs on a given cluster.
            metrics_url: "http://127.0.0.1:9".into(),
            lease: format!("sluice-bench-{run}-{n}"),
            prefix,
            counting: Counting::Metrics,
            made: Vec::new(),
            _keep: Vec::new(),
        };
        let namespaces: Api<Namespace> = Api::all(local.clone());
        for k in 0..n.clamp(1, 20) {
            let name = format!("{}{k}", ground.prefix);
            let object: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            namespaces.create(&PostParams::default(), &object).await?;
            ground.made.push(name);
        }
        for i in 0..n {
            let app = format!("app-{i}");
            let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
                "metadata": {"name": app, "labels": {"app": app}},
                "spec": {
                    "replicas": 2, "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app}},
                                 "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}]}},
                },
            }))?;
            Api::namespaced(local.clone(), &ground.namespace(i))
                .create(&PostParams::default(), &d)
                .await
                .with_context(|| format!("creating Deployment {i}"))?;
        }
        Ok(ground)
    }

    /// The namespace of workload and Rollout `i`.
    pub(super) fn namespace(&self, i: usize) -> String {
        format!("{}{}", self.prefix, i % 20)
    }

    /// The executors' requests so far, by `VERB resource`, per rollout of
    /// `n`, summed over them; `admins` are their admin addresses.
    pub(super) async fn requests(
        &self,
        admins: &[SocketAddr],
        n: usize,
    ) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
        Ok(match &self.counting {
            Counting::Proxy(by_kind) => by_kind.per(n),
            Counting::Metrics => {
                let mut sum = std::collections::BTreeMap::new();
                for admin in admins {
                    let text = reqwest::get(format!("http://{admin}/metrics"))
                        .await?
                        .text()
                        .await?;
                    for (k, v) in kube_requests(&text) {
                        *sum.entry(k).or_insert(0.0) += v as f64 / n.max(1) as f64;
                    }
                }
                sum
            }
        })
    }

    /// Deletes what this size made on a given cluster (in the background:
    /// the namespaces' contents go with them).
    pub(super) async fn clean(self, shards: u32) {
        let namespaces: Api<Namespace> = Api::all(self.local.clone());
        for name in &self.made {
            let _ = namespaces.delete(name, &DeleteParams::background()).await;
        }
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.local.clone(), "default");
        if matches!(self.counting, Counting::Metrics) {
            let _ = leases.delete(&self.lease, &DeleteParams::default()).await;
            for i in 0..shards {
                let name = format!("{}-{i}", self.lease);
                let _ = leases.delete(&name, &DeleteParams::default()).await;
            }
        }
    }
}

/// A client of the cluster `kubeconfig` names.
pub(super) async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("--kubeconfig: reading {}", kubeconfig.display()))?,
        &Default::default(),
    )
    .await
    .context("--kubeconfig")?;
    Ok(kube::Client::try_from(config)?)
}

/// A number naming this run, so the names it makes on a given cluster do
/// not meet an earlier run's still being deleted.
pub(super) fn run_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 100_000
}

/// Serves `router` on a free loopback port until `stop`.
pub(super) async fn serve(
    router: axum::Router,
    stop: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let (listener, addr) = super::listen().await?;
    tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    Ok(addr)
}

/// Creates the Rollout CRD when the cluster lacks it, and waits until it
/// serves.
async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = Rollout::crd();
    if crds.get_opt(&crd.name_any()).await?.is_none() {
        crds.create(&PostParams::default(), &crd)
            .await
            .context("installing the Rollout CRD")?;
    }
    let rollouts: Api<Rollout> = Api::all(client.clone());
    for _ in 0..100 {
        if rollouts.list(&ListParams::default().limit(1)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the Rollout CRD never served")
}

/// `sluice_executor_kube_requests_total` of a metrics page, summed by
/// `VERB resource` as the counting proxy names requests.
fn kube_requests(text: &str) -> std::collections::BTreeMap<String, u64> {
    super::probe::summed(text, "sluice_executor_kube_requests_total", |label| {
        // As the proxy names them: by HTTP method, a list or a watch apart.
        let verb = match label("verb").as_str() {
            "create" => "POST".to_owned(),
            "update" => "PUT".to_owned(),
            other => other.to_uppercase(),
        };
        format!("{verb} {}", label("resource"))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_executors_request_counts_are_read_by_verb_and_resource() {
        let page = r#"# HELP sluice_executor_kube_requests_total Calls
sluice_executor_kube_requests_total{verb="patch",resource="replicasets",code="200"} 7
sluice_executor_kube_requests_total{verb="patch",resource="replicasets",code="409"} 2
sluice_executor_kube_requests_total{verb="get",resource="deployments",code="200"} 3
sluice_executor_kube_requests_total{verb="create",resource="events",code="201"} 4
sluice_executor_kube_request_duration_seconds_count{verb="get"} 3
"#;
        let by = super::kube_requests(page);
        assert_eq!(by["PATCH replicasets"], 9);
        assert_eq!(by["GET deployments"], 3);
        assert_eq!(by["POST events"], 4);
        assert_eq!(by.len(), 3);
    }
}
