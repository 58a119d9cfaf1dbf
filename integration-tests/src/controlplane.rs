//! A real Kubernetes control plane on loopback, as the Go `envtest` package
//! starts one: etcd, kube-apiserver and kube-controller-manager built from
//! the Go modules pinned in `controlplane/go.mod` (by
//! `scripts/build-control-plane`, cached outside git), with free ports, a
//! generated service-account key pair and an admin token. Everything stops
//! when the value is dropped, also when a test panics.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The admin token the API server accepts.
pub const TOKEN: &str = "sluice-admin-token-0123456789";

/// What the API server admits and authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// RBAC, no ServiceAccount admission (pods need no ServiceAccount).
    Plain,
    /// `Node,RBAC` and ServiceAccount admission, as in production.
    ServiceAccounts,
}

/// A running control plane.
pub struct ControlPlane {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    /// Its kubeconfig (admin).
    pub kubeconfig: PathBuf,
    /// The API server's URL.
    pub url: String,
}

/// A port nobody listened on a moment ago, never the same one twice in
/// this process (control planes of tests running in parallel would
/// otherwise race for a port the kernel just handed back).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Times a control plane is started afresh (new ports, new folder) when a
/// component dies before the API server is ready, e.g. because another
/// process took one of its ports between choosing and binding it.
const ATTEMPTS: u32 = 3;

/// The folder with the control-plane binaries: `SLUICE_CONTROL_PLANE`, or
/// what `scripts/build-control-plane` builds (or finds in its cache).
fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_CONTROL_PLANE") {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-control-plane");
    let output = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/build-control-plane runs");
    assert!(output.status.success(), "building the control plane failed");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager, and waits
    /// until the API server is ready.
    ///
    /// # Panics
    /// When a component does not start.
    pub async fn start() -> Self {
        Self::start_as(Admission::Plain).await
    }

    /// Starts one as a production cluster runs: the authorizers `Node,RBAC`,
    /// the ServiceAccount admission plugin, and the controllers that make
    /// each namespace's `default` ServiceAccount and publish the cluster's
    /// CA (`kube-root-ca.crt`) — what a pod's credentials need.
    ///
    /// # Panics
    /// As [`ControlPlane::start`].
    pub async fn start_with_service_accounts() -> Self {
        Self::start_as(Admission::ServiceAccounts).await
    }

    async fn start_as(admission: Admission) -> Self {
        let bin = binaries();
        let mut attempt = 1;
        loop {
            match Self::launch(&bin, admission).await {
                Ok(plane) => return plane,
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("control plane attempt {attempt} failed, starting afresh: {why}");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    async fn launch(bin: &Path, admission: Admission) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let path = |name: &str| root.join(name);
        let key = rcgen::KeyPair::generate().expect("key");
        std::fs::write(path("sa.key"), key.serialize_pem()).expect("write key");
        std::fs::write(path("sa.pub"), key.public_key_pem()).expect("write public key");
        std::fs::write(
            path("tokens.csv"),
            format!("{TOKEN},admin,admin,system:masters\n"),
        )
        .expect("write tokens");
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let log =
            |name: &str| std::fs::File::create(path(&format!("{name}.log"))).expect("log file");
        let mut children = Vec::new();
        children.push(
            Command::new(bin.join("etcd"))
                .args(["--data-dir", &path("etcd").display().to_string()])
                .args([
                    "--listen-client-url",
                    &format!("http://127.0.0.1:{etcd_port}"),
                ])
                .args([
                    "--listen-peer-url",
                    &format!("http://127.0.0.1:{peer_port}"),
                ])
                .stdout(Stdio::null())
                .stderr(log("etcd"))
                .spawn()
                .expect("etcd starts"),
        );
        children.push(
            Command::new(bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
                .arg(format!("--secure-port={api_port}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--cert-dir={}", path("certs").display()))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!(
                    "--service-account-key-file={}",
                    path("sa.pub").display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    path("sa.key").display()
                ))
                .arg(format!(
                    "--token-auth-file={}",
                    path("tokens.csv").display()
                ))
                .arg(match admission {
                    Admission::Plain => "--authorization-mode=RBAC",
                    Admission::ServiceAccounts => "--authorization-mode=Node,RBAC",
                })
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                .args(match admission {
                    Admission::Plain => &["--disable-admission-plugins=ServiceAccount"][..],
                    Admission::ServiceAccounts => &[],
                })
                .arg("--enable-priority-and-fairness=false")
                .stdout(Stdio::null())
                .stderr(log("kube-apiserver"))
                .spawn()
                .expect("kube-apiserver starts"),
        );
        let url = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = path("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: real\n  context:\n    cluster: real\n    user: admin\n    namespace: default\ncurrent-context: real\n"
            ),
        )
        .expect("write kubeconfig");
        let mut plane = Self {
            children,
            dir,
            kubeconfig,
            url,
        };
        plane.wait_ready().await?;
        let mut controllers = "deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,endpointslice-controller,garbage-collector-controller,namespace-controller,resourcequota-controller".to_owned();
        let mut kcm = Command::new(bin.join("kube-controller-manager"));
        if admission == Admission::ServiceAccounts {
            controllers
                .push_str(",serviceaccount-controller,root-ca-certificate-publisher-controller");
            std::fs::write(path("ca.crt"), plane.ca_pem()).expect("write ca");
            kcm.arg(format!("--root-ca-file={}", path("ca.crt").display()));
        }
        let kcm = kcm
            .arg(format!("--kubeconfig={}", plane.kubeconfig.display()))
            .arg(format!("--controllers={controllers}"))
            .arg("--leader-elect=false")
            // The default client limit (20 requests/s) would cap pod
            // creation at 20 pods/s; a test cluster wants the controllers
            // as fast as the API server allows, as KWOK's benchmarks do.
            .arg("--kube-api-qps=1000")
            .arg("--kube-api-burst=2000")
            .arg("--secure-port=0")
            .stdout(Stdio::null())
            .stderr(log("kube-controller-manager"))
            .spawn()
            .expect("kube-controller-manager starts");
        plane.children.push(kcm);
        Ok(plane)
    }

    /// Waits for `/readyz`; fails as soon as a component has exited, or
    /// after two minutes, with the logs.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = http
                .get(format!("{}/readyz", self.url))
                .bearer_auth(TOKEN)
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            let exited = self
                .children
                .iter_mut()
                .any(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                return Err(format!(
                    "kube-apiserver not ready{}; etcd log:\n{}\nkube-apiserver log:\n{}",
                    if exited { " (a component exited)" } else { "" },
                    self.log("etcd"),
                    self.log("kube-apiserver")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The CA the API server's serving certificate chains to (the last
    /// certificate of the chain it generated), in PEM: what a pod finds in
    /// its `ca.crt`.
    ///
    /// # Panics
    /// When the API server wrote no certificate.
    pub fn ca_pem(&self) -> String {
        let chain = std::fs::read_to_string(self.dir.path().join("certs/apiserver.crt"))
            .expect("the API server's certificate");
        let start = chain
            .rfind("-----BEGIN CERTIFICATE-----")
            .expect("a certificate");
        chain[start..].to_owned()
    }

    /// The API server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL")
    }

    /// A token the API server issues (TokenRequest) for the ServiceAccount
    /// `namespace/name`, as the kubelet gets one for a pod.
    ///
    /// # Panics
    /// When the API server refuses.
    pub fn token_for(&self, namespace: &str, name: &str) -> String {
        let (ok, out) = self.kubectl(&["create", "token", name, "-n", namespace, "--duration=2h"]);
        assert!(ok, "TokenRequest for {namespace}/{name}: {out}");
        out.trim().to_owned()
    }

    /// A component's log.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs kubectl against the control plane; returns (success, stdout + stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// A kube client with the admin token.
    pub async fn client(&self) -> kube::Client {
        let file = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
