//! Where the executor finds its cluster: `--kubeconfig`, then `KUBECONFIG`
//! or `~/.kube/config`, then the pod's service account, as client-go's
//! clients look.
//!
//! In a pod the kubelet sets `KUBERNETES_SERVICE_HOST` and
//! `KUBERNETES_SERVICE_PORT` and mounts the service account's token, the
//! cluster's CA and the namespace in one folder (`--service-account-dir`,
//! so a test can lay one out anywhere). The token is a bound token the
//! kubelet renews; the client reads the file again rather than keeping the
//! first one.

use std::path::Path;

use rustls_pki_types::pem::PemObject;

use crate::config::Config;

/// Why there is no client configuration.
#[derive(Debug)]
pub enum Unreadable {
    /// Nothing names a cluster.
    Unconfigured(String),
    /// A cluster is named (`flag`: the flag or variable that names it) but
    /// its configuration cannot be read.
    Broken {
        /// `--kubeconfig`, `KUBECONFIG` or `--service-account-dir`.
        flag: &'static str,
        /// What is missing or wrong.
        why: String,
    },
}

/// The client configuration for `config`'s cluster.
///
/// # Errors
/// [`Unreadable`], naming the flag, variable or file at fault.
pub async fn read(config: &Config) -> Result<kube::Config, Unreadable> {
    let options = kube::config::KubeConfigOptions::default();
    let broken = |flag| move |why: String| Unreadable::Broken { flag, why };
    if let Some(path) = &config.kubeconfig {
        // (kube's read error names the file already.)
        let file = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| e.to_string())
            .map_err(broken("--kubeconfig"))?;
        return kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))
            .map_err(broken("--kubeconfig"));
    }
    let named = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
    match (kube::config::Kubeconfig::read(), named) {
        (Ok(file), _) => {
            return kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| e.to_string())
                .map_err(broken("KUBECONFIG"));
        }
        // Named but not readable: a mistake to say, not a reason to look
        // elsewhere (only a missing ~/.kube/config is).
        (Err(e), Some(named)) => {
            return Err(broken("KUBECONFIG")(format!(
                "{}: {e}",
                named.to_string_lossy()
            )));
        }
        (Err(_), None) => {}
    }
    pod(config)
}

/// The pod's configuration when `config` says this is a pod.
fn pod(config: &Config) -> Result<kube::Config, Unreadable> {
    match &config.kubernetes_service_host {
        Some(host) => in_pod(
            host,
            config.kubernetes_service_port,
            &config.service_account_dir,
        )
        .map_err(|why| Unreadable::Broken {
            flag: "--service-account-dir",
            why,
        }),
        None => Err(Unreadable::Unconfigured(
            "no cluster configured: no --kubeconfig, no KUBECONFIG or ~/.kube/config, \
             and not in a pod (KUBERNETES_SERVICE_HOST is unset)"
                .into(),
        )),
    }
}

/// A pod's configuration: the API server at `host:port`, trusted through
/// `dir/ca.crt`, with the bearer token in `dir/token` (read again as it
/// changes) and the namespace in `dir/namespace`.
///
/// # Errors
/// Text naming the file that is missing or not what it should be.
pub fn in_pod(host: &str, port: u16, dir: &Path) -> Result<kube::Config, String> {
    if host.trim().is_empty() {
        return Err("KUBERNETES_SERVICE_HOST is set but empty".into());
    }
    let file = |name: &str| dir.join(name);
    let read = |name: &str| {
        std::fs::read(file(name)).map_err(|e| format!("{}: {e}", file(name).display()))
    };
    // An IPv6 address goes in brackets in a URL.
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let url: http::Uri = format!("https://{authority}")
        .parse()
        .map_err(|e| format!("KUBERNETES_SERVICE_HOST {host:?}: {e}"))?;
    let ca = read("ca.crt")?;
    let roots = rustls_pki_types::CertificateDer::pem_slice_iter(&ca)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM: {e}", file("ca.crt").display()))?;
    if roots.is_empty() {
        return Err(format!(
            "{}: holds no certificate",
            file("ca.crt").display()
        ));
    }
    if String::from_utf8_lossy(&read("token")?).trim().is_empty() {
        return Err(format!("{}: the token is empty", file("token").display()));
    }
    let namespace = String::from_utf8_lossy(&read("namespace")?)
        .trim()
        .to_owned();
    let mut config = kube::Config::new(url);
    config.default_namespace = namespace;
    config.root_cert = Some(roots);
    config.root_cert_file = Some(file("ca.crt"));
    config.auth_info.token_file = Some(file("token").display().to_string());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["kubernetes".into()]).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("cert").pem()
    }

    fn pod_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ca.crt"), ca_pem()).expect("ca");
        std::fs::write(dir.path().join("token"), "eyJ.token").expect("token");
        std::fs::write(dir.path().join("namespace"), "sluice-system\n").expect("ns");
        dir
    }

    #[test]
    fn a_pods_folder_gives_the_api_server_its_ca_the_token_file_and_the_namespace() {
        let dir = pod_folder();
        let config = in_pod("10.96.0.1", 443, dir.path()).expect("config");
        assert_eq!(config.cluster_url.to_string(), "https://10.96.0.1:443/");
        assert_eq!(config.default_namespace, "sluice-system");
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            config.auth_info.token_file.as_deref(),
            Some(dir.path().join("token").to_str().expect("utf-8"))
        );
        let v6 = in_pod("fd00::1", 6443, dir.path()).expect("config");
        assert_eq!(v6.cluster_url.to_string(), "https://[fd00::1]:6443/");
    }

    #[test]
    fn a_pods_unreadable_folder_is_a_broken_configuration_of_service_account_dir() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().expect("dir");
        let config = Config::parse_from([
            "sluice-executor",
            "--kubernetes-service-host",
            "10.96.0.1",
            "--service-account-dir",
            dir.path().to_str().expect("utf-8"),
        ]);
        match pod(&config) {
            Err(Unreadable::Broken { flag, why }) => {
                assert_eq!(flag, "--service-account-dir");
                assert!(why.contains("ca.crt"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_or_bad_file_is_named() {
        let dir = pod_folder();
        std::fs::remove_file(dir.path().join("token")).expect("rm");
        let why = in_pod("10.96.0.1", 443, dir.path()).expect_err("no token");
        assert!(
            why.contains("token") && why.contains("No such file"),
            "{why}"
        );
        let dir = pod_folder();
        std::fs::write(dir.path().join("ca.crt"), "not a certificate").expect("ca");
        let why = in_pod("10.96.0.1", 443, dir.path()).expect_err("bad ca");
        assert!(why.contains("ca.crt"), "{why}");
        let dir = pod_folder();
        std::fs::write(dir.path().join("token"), "\n").expect("token");
        let why = in_pod("10.96.0.1", 443, dir.path()).expect_err("empty token");
        assert!(why.contains("token is empty"), "{why}");
        let why = in_pod("", 443, pod_folder().path()).expect_err("no host");
        assert!(why.contains("KUBERNETES_SERVICE_HOST"), "{why}");
    }
}
