//! ListRollouts page tokens: a keyset cursor, the last (namespace, name) a
//! page returned, so the next page starts strictly after it in sorted order
//! whatever was created or deleted meanwhile.
//!
//! A token is `v1/<namespace>/<name>` in unpadded base64url: opaque to
//! clients, and names contain no `/`, so it splits one way only.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// The version prefix of a token's text.
const VERSION: &str = "v1";

/// Where a page ends: the last rollout it returned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The rollout's namespace.
    pub namespace: String,
    /// The rollout's name.
    pub name: String,
}

impl Cursor {
    /// The token a client sends to get the page after this one.
    pub fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{VERSION}/{}/{}", self.namespace, self.name))
    }

    /// The cursor a token carries, or `None` when it is not a token
    /// [`Cursor::token`] made from valid names.
    pub fn parse(token: &str, valid_name: impl Fn(&str) -> bool) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.split('/');
        let (Some(VERSION), Some(namespace), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        (valid_name(namespace) && valid_name(name)).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str) -> bool {
        true
    }

    #[test]
    fn a_token_reads_back_as_the_cursor_it_was_made_from() {
        let cursor = Cursor {
            namespace: "shop".into(),
            name: "web".into(),
        };
        let token = cursor.token();
        assert!(!token.contains("shop"), "opaque: {token}");
        assert_eq!(Cursor::parse(&token, any), Some(cursor));
    }

    #[test]
    fn offsets_garbage_and_invalid_names_are_not_tokens() {
        for token in ["100", "", "!!", &URL_SAFE_NO_PAD.encode("v2/a/b")] {
            assert_eq!(Cursor::parse(token, any), None, "{token:?}");
        }
        let bad = URL_SAFE_NO_PAD.encode("v1/shop/Web");
        assert_eq!(Cursor::parse(&bad, |n| n == n.to_lowercase()), None);
    }
}
