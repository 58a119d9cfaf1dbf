//! Bearer tokens mapped to the namespaces a caller may act on.
//!
//! The token file is YAML:
//!
//! ```yaml
//! tokens:
//!   - name: deploy-bot        # shown in logs, never the token itself
//!     token: 6f1c...          # what the client sends as `authorization: Bearer 6f1c...`
//!     namespaces: [payments, checkout]   # or ["*"] for every namespace
//! ```
//!
//! [`Authenticator::interceptor`] checks the token of every request and puts
//! the [`Caller`] into the request's extensions; handlers then call
//! [`authorize`] with the namespace the request acts on.
//!
//! *Errors*: a missing or unknown token is `UNAUTHENTICATED`; a namespace
//! outside the caller's is `PERMISSION_DENIED`.

use std::{collections::HashMap, fs, path::Path, sync::Arc};

use serde::Deserialize;
use tonic::{Request, Status, service::Interceptor};

use crate::Error;

/// Who is calling, and where they may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name from the token file, or `anonymous` without auth.
    pub name: String,
    /// The namespaces the caller may act on.
    pub scope: Scope,
}

/// The namespaces a caller may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// Only these.
    Namespaces(Vec<String>),
}

impl Scope {
    /// What both `self` and `other` allow.
    pub fn and(&self, other: &Scope) -> Scope {
        match (self, other) {
            (Scope::All, s) | (s, Scope::All) => s.clone(),
            (Scope::Namespaces(a), Scope::Namespaces(b)) => {
                Scope::Namespaces(a.iter().filter(|n| b.contains(n)).cloned().collect())
            }
        }
    }
}

impl Caller {
    /// True when the caller may act on `namespace`.
    pub fn may_access(&self, namespace: &str) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Namespaces(allowed) => allowed.iter().any(|n| n == namespace),
        }
    }
}

/// Checks that the caller of `request` may act on `namespace`.
///
/// Requests that did not pass through an [`Authenticator`] interceptor are
/// refused, so a service wired without one fails closed.
///
/// # Errors
/// `PERMISSION_DENIED` naming the namespace; `UNAUTHENTICATED` when the
/// request carries no caller.
pub fn authorize<T>(request: &Request<T>, namespace: &str) -> Result<Caller, Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::unauthenticated("no caller identity on the request"))?;
    if caller.may_access(namespace) {
        Ok(caller.clone())
    } else {
        Err(Status::permission_denied(match &caller.scope {
            Scope::Namespaces(allowed) => format!(
                "caller `{}` may not act on namespace `{namespace}`: only on {}",
                caller.name,
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            ),
            Scope::All => format!(
                "caller `{}` may not act on namespace `{namespace}`",
                caller.name
            ),
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: String,
    namespaces: Vec<String>,
}

/// Maps bearer tokens to callers; without a token file everyone is an
/// anonymous caller of every namespace.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Option<Arc<HashMap<String, Caller>>>,
    /// Where the service itself acts: every caller's scope is cut to it.
    within: Scope,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self {
            tokens: None,
            within: Scope::All,
        }
    }
}

impl Authenticator {
    /// No authentication: every request acts as `anonymous` on every namespace.
    pub fn open() -> Self {
        Self::default()
    }

    /// Reads a token file.
    ///
    /// # Errors
    /// [`Error::ReadFile`] or [`Error::Config`] naming `flag` and what is wrong.
    pub fn from_file(flag: &'static str, path: &Path) -> Result<Self, Error> {
        let text = fs::read_to_string(path).map_err(|source| Error::ReadFile {
            flag,
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(flag, &text)
    }

    /// Parses a token file's contents.
    ///
    /// # Errors
    /// [`Error::Config`] naming the entry and what is wrong with it.
    pub fn from_yaml(flag: &'static str, text: &str) -> Result<Self, Error> {
        let file: TokenFile = serde_yaml::from_str(text)
            .map_err(|e| Error::config(flag, format!("not a token file: {e}")))?;
        let mut tokens = HashMap::new();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            if entry.token.len() < 16 {
                return Err(Error::config(
                    flag,
                    format!(
                        "tokens[{i}] ({}): token must be at least 16 characters",
                        entry.name
                    ),
                ));
            }
            if entry.namespaces.is_empty() {
                return Err(Error::config(
                    flag,
                    format!("tokens[{i}] ({}): namespaces must not be empty", entry.name),
                ));
            }
            let scope = if entry.namespaces.iter().any(|n| n == "*") {
                Scope::All
            } else {
                Scope::Namespaces(entry.namespaces)
            };
            let caller = Caller {
                name: entry.name,
                scope,
            };
            if tokens.insert(entry.token, caller).is_some() {
                return Err(Error::config(
                    flag,
                    format!("tokens[{i}]: token is listed twice"),
                ));
            }
        }
        Ok(Self {
            tokens: Some(Arc::new(tokens)),
            within: Scope::All,
        })
    }

    /// The same, for a service that acts only in `scope`: a caller may act
    /// where its token and the service both allow.
    #[must_use]
    pub fn within(self, scope: Scope) -> Self {
        Self {
            within: scope,
            ..self
        }
    }

    /// The caller a request's metadata names.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a missing, malformed or unknown token.
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller {
                name: "anonymous".into(),
                scope: self.within.clone(),
            });
        };
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
        tokens
            .get(token.trim())
            .map(|caller| Caller {
                name: caller.name.clone(),
                scope: caller.scope.and(&self.within),
            })
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// A tonic interceptor that authenticates every request.
    pub fn interceptor(&self) -> AuthInterceptor {
        AuthInterceptor { auth: self.clone() }
    }
}

/// The interceptor made by [`Authenticator::interceptor`].
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    auth: Authenticator,
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.auth.authenticate(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    const FILE: &str = "tokens:
  - name: payments-bot
    token: aaaaaaaaaaaaaaaaaaaa
    namespaces: [payments]
  - name: admin
    token: bbbbbbbbbbbbbbbbbbbb
    namespaces: ['*']
";

    fn request_with(token: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
        }
        request
    }

    fn intercept(token: Option<&str>) -> Result<Request<()>, Status> {
        Authenticator::from_yaml("--token-file", FILE)
            .unwrap()
            .interceptor()
            .call(request_with(token))
    }

    #[test]
    fn a_service_confined_to_namespaces_cuts_every_callers_scope_to_them() {
        let within = Scope::Namespaces(vec!["payments".into(), "shop".into()]);
        let open = Authenticator::open()
            .within(within.clone())
            .interceptor()
            .call(request_with(None))
            .unwrap();
        assert!(authorize(&open, "shop").is_ok());
        let denied = authorize(&open, "checkout").unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(
            denied.message().contains("only on payments, shop"),
            "{}",
            denied.message()
        );
        let tokens = Authenticator::from_yaml("--token-file", FILE)
            .unwrap()
            .within(within);
        let admin = tokens
            .clone()
            .interceptor()
            .call(request_with(Some("Bearer bbbbbbbbbbbbbbbbbbbb")))
            .unwrap();
        assert!(
            authorize(&admin, "shop").is_ok(),
            "'*' meets the service's scope"
        );
        assert!(authorize(&admin, "checkout").is_err());
        let bot = tokens
            .interceptor()
            .call(request_with(Some("Bearer aaaaaaaaaaaaaaaaaaaa")))
            .unwrap();
        assert!(authorize(&bot, "payments").is_ok());
        assert!(
            authorize(&bot, "shop").is_err(),
            "not the token's namespace"
        );
    }

    #[test]
    fn a_known_token_may_act_on_its_namespaces_only() {
        let request = intercept(Some("Bearer aaaaaaaaaaaaaaaaaaaa")).unwrap();
        assert!(authorize(&request, "payments").is_ok());
        let denied = authorize(&request, "checkout").unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(
            denied.message().contains("checkout"),
            "{}",
            denied.message()
        );
    }

    #[test]
    fn a_wildcard_token_may_act_anywhere() {
        let request = intercept(Some("Bearer bbbbbbbbbbbbbbbbbbbb")).unwrap();
        assert!(authorize(&request, "anything").is_ok());
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
        for token in [
            None,
            Some("aaaaaaaaaaaaaaaaaaaa"),
            Some("Bearer nope-nope-nope-nope"),
        ] {
            assert_eq!(
                intercept(token).unwrap_err().code(),
                Code::Unauthenticated,
                "{token:?}"
            );
        }
    }

    #[test]
    fn requests_that_skipped_the_interceptor_are_refused() {
        assert_eq!(
            authorize(&request_with(None), "x").unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn without_a_token_file_everyone_may_act_everywhere() {
        let request = Authenticator::open()
            .interceptor()
            .call(request_with(None))
            .unwrap();
        assert!(authorize(&request, "payments").is_ok());
    }

    #[test]
    fn bad_token_files_name_the_entry() {
        let short = "tokens: [{name: x, token: short, namespaces: [a]}]";
        let err = Authenticator::from_yaml("--token-file", short)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--token-file") && err.contains("tokens[0] (x)"),
            "{err}"
        );
        let empty = "tokens: [{name: y, token: cccccccccccccccccccc, namespaces: []}]";
        let err = Authenticator::from_yaml("--token-file", empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("namespaces must not be empty"), "{err}");
    }
}
