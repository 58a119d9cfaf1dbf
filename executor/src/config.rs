//! The executor's configuration.

use std::path::PathBuf;

use clap::Parser;
use sluice_runtime::{cli::ServiceConfig, config::ServerArgs};

/// Flags and `SLUICE_*` variables of `sluice-executor`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sluice-executor",
    version,
    about = "Sluice executor: the rollout controller and the Rollouts API"
)]
pub struct Config {
    /// Options every Sluice server takes.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Address of the planner (`host:port` or a URI).
    #[arg(long, env = "SLUICE_PLANNER_ADDR", default_value = "127.0.0.1:7101")]
    pub planner_addr: String,

    /// Address of the metrics gate (`host:port` or a URI).
    #[arg(long, env = "SLUICE_GATE_ADDR", default_value = "127.0.0.1:7102")]
    pub gate_addr: String,

    /// Kubeconfig of the cluster to release on; without it, `KUBECONFIG`,
    /// `~/.kube/config` or the pod's service account (below). Without any, the API answers
    /// UNAVAILABLE and health stays NOT_SERVING.
    #[arg(long, env = "SLUICE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Folder with the pod's service-account credentials (`token`, `ca.crt`,
    /// `namespace`), used with `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT` when no kubeconfig is given; the token
    /// file is read again as the kubelet renews it.
    #[arg(
        long,
        env = "SLUICE_SERVICE_ACCOUNT_DIR",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount"
    )]
    pub service_account_dir: PathBuf,

    /// The API server's host inside a pod; the kubelet sets it.
    #[arg(long, env = "KUBERNETES_SERVICE_HOST", hide = true)]
    pub kubernetes_service_host: Option<String>,

    /// The API server's port inside a pod; the kubelet sets it.
    #[arg(
        long,
        env = "KUBERNETES_SERVICE_PORT",
        hide = true,
        default_value_t = 443
    )]
    pub kubernetes_service_port: u16,

    /// Release only in these namespaces (repeat the flag or separate them
    /// with commas): watch, serve and admit their Rollouts and workloads
    /// only, so a Role in each is all the executor needs (besides its
    /// Lease). Unset: the whole cluster.
    #[arg(long, env = "SLUICE_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespace: Vec<String>,

    /// YAML file mapping bearer tokens to the namespaces they may act on.
    /// Without it the Rollouts API accepts every caller.
    #[arg(long, env = "SLUICE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// `namespace/name` of a Secret whose key `tokens.yaml` is the token
    /// file, made with one admin token when missing; instead of
    /// --token-file. Read at start.
    #[arg(long, env = "SLUICE_TOKEN_SECRET", conflicts_with = "token_file")]
    pub token_secret: Option<String>,

    /// Namespace of the Lease that picks the replica driving rollouts.
    #[arg(long, env = "SLUICE_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Name of that Lease.
    #[arg(long, env = "SLUICE_LEASE_NAME", default_value = "sluice-executor")]
    pub lease_name: String,

    /// Seconds a Lease holder's claim lasts without renewal; it renews
    /// about seven times within it and stops leading after two thirds of
    /// it without a renewal.
    #[arg(long, env = "SLUICE_LEASE_SECONDS", default_value_t = 15, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_seconds: u64,

    /// Shards the rollouts are split into, each driven by the replica
    /// holding its Lease (`<lease name>-<i>`; with 1, the Lease is named
    /// as given). Replicas share the shards evenly and take a dead one's
    /// over when its Leases expire. Every replica must run with the same
    /// count: while two counts are seen, no replica drives anything.
    #[arg(long, env = "SLUICE_SHARDS", default_value_t = 1, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: u32,

    /// Rollouts reconciled at once, at most (0: no bound). One Rollout is
    /// never reconciled twice at once whatever this says.
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_RECONCILES", default_value_t = crate::controller::DEFAULT_CONCURRENCY, allow_negative_numbers = true)]
    pub max_concurrent_reconciles: u16,

    /// Keep every Deployment and ReplicaSet of the cluster whole in memory,
    /// not only those Rollouts name. A release on a workload no Rollout
    /// named before then starts without reading it (a GET and a LIST
    /// fewer), at the price of the whole objects: some 40-75 KiB per
    /// workload in a big cluster, where the default keeps only a version.
    #[arg(long, env = "SLUICE_KEEP_ALL_WORKLOADS")]
    pub keep_all_workloads: bool,

    /// Address of the admission webhook (HTTPS) the API server calls to
    /// hold a bound workload's change; without it no webhook is served.
    #[arg(long, env = "SLUICE_WEBHOOK_ADDR")]
    pub webhook_addr: Option<std::net::SocketAddr>,

    /// PEM certificate chain the webhook presents; read again when the
    /// file changes (a rotated Secret).
    #[arg(long, env = "SLUICE_WEBHOOK_CERT", requires = "webhook_key")]
    pub webhook_cert: Option<PathBuf>,

    /// PEM private key of --webhook-cert.
    #[arg(long, env = "SLUICE_WEBHOOK_KEY", requires = "webhook_cert")]
    pub webhook_key: Option<PathBuf>,

    /// `namespace/name` of a Secret in which the executor keeps the
    /// webhook's CA and serving certificate itself (made when missing,
    /// renewed before it ends), writing the CA into the `caBundle` of the
    /// webhook configurations; instead of --webhook-cert and --webhook-key.
    #[arg(long, env = "SLUICE_WEBHOOK_SECRET", conflicts_with = "webhook_cert")]
    pub webhook_secret: Option<String>,

    /// A name the managed serving certificate is valid for (the webhook
    /// Service's DNS name; an IP for a webhook reached by address).
    #[arg(
        long,
        env = "SLUICE_WEBHOOK_HOST",
        value_delimiter = ',',
        default_value = "sluice-executor.sluice-system.svc"
    )]
    pub webhook_host: Vec<String>,

    /// Webhook configurations (mutating and validating, by name) whose
    /// `caBundle` the executor keeps, with --webhook-secret.
    #[arg(
        long,
        env = "SLUICE_WEBHOOK_CONFIGURATION",
        value_delimiter = ',',
        default_value = "sluice"
    )]
    pub webhook_configuration: Vec<String>,

    /// This replica's name in the Lease; the host name and process id when
    /// unset.
    #[arg(long, env = "SLUICE_IDENTITY")]
    pub identity: Option<String>,
}

impl Config {
    /// This replica's name in the Lease.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = host_name().unwrap_or_else(|| "executor".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerArgs {
        &self.server
    }
}

/// This machine's host name (a pod's name in a cluster), when it can be read.
pub(crate) fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
