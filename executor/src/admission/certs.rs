//! The webhook's serving certificate managed by the executor itself, for
//! clusters without cert-manager (`--webhook-secret`): a CA and a serving
//! certificate it signs, kept in one Secret that every replica shares; the
//! CA written into the `caBundle` of the webhook configurations; the
//! serving certificate signed again with the same CA before it expires, so
//! a rotation changes nothing the API server trusts and fails no request.
//!
//! The Secret holds `ca.crt`, `ca.key`, `tls.crt`, `tls.key` and
//! `tls.expires` (the serving certificate's end, in Unix seconds). Every
//! write is conditional on the version read: two replicas starting together
//! make one CA (the second's create fails and it reads the first's).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, PostParams},
};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The CA's distinguished name (the serving certificate names it as
/// issuer, so a CA rebuilt from its key signs certificates that chain).
const CA_NAME: &str = "sluice-webhook-ca";

/// How long a serving certificate lasts.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long before its end a serving certificate is replaced.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the Secret and the configurations are looked at: a
/// configuration installed (or replaced without its `caBundle`, as a
/// `kubectl apply` of `deploy/base/webhook.yaml` does) after the executor
/// started gets the CA within this.
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// What the executor manages.
#[derive(Debug, Clone)]
pub struct Managed {
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
    /// The names the serving certificate is valid for (DNS names or IPs).
    pub hosts: Vec<String>,
    /// Webhook configurations (mutating and validating) whose `caBundle`
    /// it keeps.
    pub configurations: Vec<String>,
    /// Replace the serving certificate when it ends within this.
    pub renew_before: Duration,
}

/// The serving certificate as the managing task last set it.
#[derive(Debug, Default)]
pub struct Current(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Current {
    /// Serves `key` from now on.
    pub fn set(&self, key: CertifiedKey) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(key));
    }
}

/// A civil date (year, month, day) from days since 1970-01-01.
fn civil(days: i64) -> (i32, u8, u8) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// The civil date of `at`.
fn ymd(at: SystemTime) -> (i32, u8, u8) {
    civil(
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400) as i64,
    )
}

/// Sets a certificate's validity from `from` to `to` (whole days).
fn validity(params: &mut rcgen::CertificateParams, from: SystemTime, to: SystemTime) {
    let (y, m, d) = ymd(from);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(to);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

fn ca_params(now: SystemTime) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    validity(
        &mut params,
        now - Duration::from_secs(86_400),
        now + Duration::from_secs(10 * 365 * 86_400),
    );
    Ok(params)
}

/// The Secret's data for a fresh CA and serving certificate, or for a new
/// serving certificate from the CA in `existing`.
fn issue(
    hosts: &[String],
    existing: Option<(&str, &str)>,
    now: SystemTime,
) -> Result<BTreeMap<String, ByteString>, rcgen::Error> {
    let (ca_pem, ca_key) = match existing {
        Some((cert, key)) => (cert.to_owned(), rcgen::KeyPair::from_pem(key)?),
        None => {
            let key = rcgen::KeyPair::generate()?;
            (ca_params(now)?.self_signed(&key)?.pem(), key)
        }
    };
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = rcgen::Issuer::new(ca_params(now)?, ca_key);
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        hosts.first().map_or("sluice-executor", String::as_str),
    );
    let end = now + SERVING_LIFETIME;
    validity(&mut params, now - Duration::from_secs(86_400), end);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let bytes = |s: String| ByteString(s.into_bytes());
    Ok(BTreeMap::from([
        ("ca.crt".to_owned(), bytes(ca_pem)),
        ("ca.key".to_owned(), bytes(ca_key_pem)),
        ("tls.crt".to_owned(), bytes(cert.pem())),
        ("tls.key".to_owned(), bytes(key.serialize_pem())),
        (
            "tls.expires".to_owned(),
            bytes(
                end.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    .to_string(),
            ),
        ),
    ]))
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// A rustls key from the Secret's data.
fn certified(data: &BTreeMap<String, ByteString>) -> Result<CertifiedKey, String> {
    let cert = text(data, "tls.crt").ok_or("tls.crt is missing")?;
    let key = text(data, "tls.key").ok_or("tls.key is missing")?;
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    let private =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("tls.key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| format!("tls.key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Why managing failed.
type Failure = String;

impl Managed {
    /// Makes sure the Secret holds a CA and a serving certificate valid for
    /// longer than `renew_before`, and that every configuration trusts the
    /// CA; returns the serving key.
    ///
    /// # Errors
    /// What the API server answered, or a certificate that cannot be made.
    pub async fn ensure(
        &self,
        client: &kube::Client,
        now: SystemTime,
    ) -> Result<CertifiedKey, Failure> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let data = loop {
            let existing = secrets
                .get_opt(&self.name)
                .await
                .map_err(|e| e.to_string())?;
            let data = existing
                .as_ref()
                .and_then(|s| s.data.clone())
                .unwrap_or_default();
            let ca = text(&data, "ca.crt").zip(text(&data, "ca.key"));
            let ends = text(&data, "tls.expires")
                .and_then(|t| t.parse::<u64>().ok())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s));
            let fresh =
                ends.is_some_and(|end| end > now + self.renew_before) && certified(&data).is_ok();
            if ca.is_some() && fresh {
                break data;
            }
            let issued = issue(
                &self.hosts,
                ca.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
                now,
            )
            .map_err(|e| format!("making the webhook certificate: {e}"))?;
            let written = match existing {
                None => {
                    let secret = Secret {
                        metadata: kube::api::ObjectMeta {
                            name: Some(self.name.clone()),
                            namespace: Some(self.namespace.clone()),
                            ..Default::default()
                        },
                        type_: Some("Opaque".into()),
                        data: Some(issued),
                        ..Default::default()
                    };
                    secrets.create(&crate::writes::post(), &secret).await
                }
                Some(mut secret) => {
                    secret.data = Some(issued);
                    secrets
                        .replace(&self.name, &crate::writes::post(), &secret)
                        .await
                }
            };
            match written {
                Ok(secret) => {
                    tracing::info!(secret = %self.name, "webhook certificate issued");
                    break secret.data.unwrap_or_default();
                }
                // Another replica wrote first: read what it wrote.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.to_string()),
            }
        };
        let ca = data.get("ca.crt").map(|b| b.0.clone()).unwrap_or_default();
        for name in &self.configurations {
            for (kind, plural) in [
                (
                    "MutatingWebhookConfiguration",
                    "mutatingwebhookconfigurations",
                ),
                (
                    "ValidatingWebhookConfiguration",
                    "validatingwebhookconfigurations",
                ),
            ] {
                trust(client, kind, plural, name, &ca).await?;
            }
        }
        certified(&data)
    }

    /// Keeps the certificate current until `stop`: checks now and then every
    /// 30 seconds (ten after a failure), and puts each new serving key in
    /// `current`.
    pub async fn run(self, client: kube::Client, current: Arc<Current>, stop: CancellationToken) {
        loop {
            let wait = match self.ensure(&client, SystemTime::now()).await {
                Ok(key) => {
                    current.set(key);
                    CHECK_EVERY
                }
                Err(why) => {
                    tracing::warn!(%why, secret = %self.name, "the webhook certificate could not be kept");
                    Duration::from_secs(10)
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Writes `ca` into every webhook's `caBundle` of configuration `name`
/// (of `kind`) that does not carry it; a missing configuration is left
/// alone (it is installed separately).
async fn trust(
    client: &kube::Client,
    kind: &str,
    plural: &str,
    name: &str,
    ca: &[u8],
) -> Result<(), Failure> {
    let resource = ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let bundle = serde_json::to_value(ByteString(ca.to_vec())).unwrap_or(Value::Null);
    for _ in 0..5 {
        let Some(mut config) = api.get_opt(name).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let mut changed = false;
        for hook in config.data["webhooks"].as_array_mut().into_iter().flatten() {
            if hook["clientConfig"]["caBundle"] != bundle {
                hook["clientConfig"]["caBundle"] = bundle.clone();
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        match api
            .replace(
                name,
                &PostParams {
                    field_manager: Some(crate::keys::FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &config,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(configuration = name, kind, "webhook CA bundle written");
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("{kind} {name} kept changing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;

    #[test]
    fn days_become_civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(20_792), (2026, 12, 5));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_serving_certificate_issued_again_chains_to_the_same_ca() {
        let now = UNIX_EPOCH + Duration::from_secs(20_792 * 86_400);
        let hosts = vec!["127.0.0.1".to_owned()];
        let first = issue(&hosts, None, now).unwrap();
        let ca = text(&first, "ca.crt").unwrap();
        let ca_key = text(&first, "ca.key").unwrap();
        let second = issue(
            &hosts,
            Some((&ca, &ca_key)),
            now + Duration::from_secs(86_400),
        )
        .unwrap();
        assert_eq!(text(&second, "ca.crt").unwrap(), ca, "the CA is kept");
        assert_ne!(text(&second, "tls.crt"), text(&first, "tls.crt"));
        // Both serving certificates verify against the one CA.
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        for data in [&first, &second] {
            let chain: Vec<_> =
                CertificateDer::pem_slice_iter(text(data, "tls.crt").unwrap().as_bytes())
                    .map(Result::unwrap)
                    .collect();
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let at = rustls_pki_types::UnixTime::since_unix_epoch(
                (now + Duration::from_secs(2 * 86_400))
                    .duration_since(UNIX_EPOCH)
                    .unwrap(),
            );
            verifier
                .verify_server_cert(&chain[0], &[], &name, &[], at)
                .expect("chains to the CA");
        }
        assert!(certified(&second).is_ok());
    }
}
