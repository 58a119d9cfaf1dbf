//! The Rollouts API's bearer tokens kept in a Secret (`--token-secret`):
//! secure by default without a file to write first.
//!
//! The Secret's key `tokens.yaml` holds a token file (the format of
//! `--token-file`, see `sluice_runtime::auth`). When the Secret does not
//! exist, the first executor to start makes it with one token, `admin`,
//! for every namespace: 32 random bytes from the kernel, in hex. Replicas
//! starting together agree on it: a create that loses reads the winner's.
//!
//! *Assumptions*: the tokens are read at start; an edited Secret takes
//! effect when the executors restart.

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::Api;
use sluice_runtime::auth::Authenticator;

/// The key of the token file in the Secret.
pub const KEY: &str = "tokens.yaml";

/// The flag, for errors.
const FLAG: &str = "--token-secret";

/// The authenticator of the tokens in the Secret `namespace/name`, made
/// with one admin token when it is missing.
///
/// # Errors
/// Text naming the Secret: unreadable, not a token file, or the API
/// server's refusal.
pub async fn from_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Authenticator, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let at = || format!("{FLAG} {namespace}/{name}");
    let secret = match secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("{}: {e}", at()))?
    {
        Some(secret) => secret,
        None => {
            let fresh = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some([(KEY.to_owned(), ByteString(first_file()?.into_bytes()))].into()),
                ..Default::default()
            };
            match secrets.create(&crate::writes::post(), &fresh).await {
                Ok(made) => {
                    tracing::info!(secret = %name, %namespace, "made the API's token Secret with one admin token");
                    made
                }
                // Another replica made it first: its token is the one.
                Err(kube::Error::Api(e)) if e.code == 409 => secrets
                    .get(name)
                    .await
                    .map_err(|e| format!("{}: {e}", at()))?,
                Err(e) => return Err(format!("{}: {e}", at())),
            }
        }
    };
    let file = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .ok_or_else(|| format!("{}: has no key {KEY}", at()))?;
    let text = std::str::from_utf8(&file.0).map_err(|_| format!("{}: {KEY} is not text", at()))?;
    Authenticator::from_yaml(FLAG, text).map_err(|e| format!("{}: {e}", at()))
}

/// A token file with one `admin` token for every namespace.
fn first_file() -> Result<String, String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("{FLAG}: no random bytes for a token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "# Bearer tokens of the Rollouts API: callers send\n\
         # `authorization: Bearer <token>`. Add entries (name, token, namespaces)\n\
         # and restart the executors to take them up.\n\
         tokens:\n  - name: admin\n    token: {token}\n    namespaces: ['*']\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_file_is_a_token_file_with_one_long_random_admin_token() {
        let (a, b) = (first_file().expect("file"), first_file().expect("file"));
        assert_ne!(a, b, "random");
        Authenticator::from_yaml(FLAG, &a).expect("a token file the executor reads");
        let token = a
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("a token");
        assert_eq!(token.len(), 64);
    }
}
