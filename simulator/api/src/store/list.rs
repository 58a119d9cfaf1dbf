//! Lists, a page at a time, with continue tokens that keep the first
//! page's resourceVersion.

use std::sync::Arc;

use super::{ObjectKey, Store};
use crate::{
    resources::Resource,
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
};

/// A page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The objects, as JSON.
    pub items: Vec<Arc<[u8]>>,
    /// The store's resourceVersion when listed.
    pub resource_version: u64,
    /// Token for the next page.
    pub continue_token: Option<String>,
    /// Objects after this page.
    pub remaining: usize,
}

/// A continue token: the resourceVersion of the list's first page and the
/// last key served, hex-encoded.
fn encode_continue(rv: u64, key: &ObjectKey) -> String {
    let raw = format!("{rv}\u{0}{}\u{0}{}", key.0, key.1);
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, ObjectKey), ApiError> {
    let bad = || ApiError::bad_request(format!("continue token {token:?} is not valid"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect();
    let raw = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, '\u{0}');
    let (Some(rv), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let rv = rv.parse().map_err(|_| bad())?;
    Ok((rv, (ns.to_owned(), name.to_owned())))
}

impl Store {
    /// Lists objects, in name order, a page at a time.
    ///
    /// # Errors
    /// 400 for a continue token that does not parse.
    pub fn list(
        &self,
        res: &Resource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let inner = self.read();
        // Every page of a list reports the first page's resourceVersion, as
        // the real API server's do: a client watches from there, and the
        // watch replays what changed while it paged (objects in pages
        // already served included), so nothing is lost between the list
        // and the watch.
        let (list_rv, start): (u64, ObjectKey) = match continue_token {
            None | Some("") => (
                inner.rv,
                (namespace.unwrap_or_default().to_owned(), String::new()),
            ),
            Some(token) => decode_continue(token)?,
        };
        let mut page = ListPage {
            items: Vec::new(),
            resource_version: list_rv,
            continue_token: None,
            remaining: 0,
        };
        let Some(table) = inner.tables.get(&(res.group.clone(), res.plural.clone())) else {
            return Ok(page);
        };
        if list_rv < table.compacted {
            return Err(ApiError::gone(format!(
                "the provided continue parameter is too old: resource version {list_rv} is compacted ({})",
                table.compacted
            )));
        }
        let mut last: Option<&ObjectKey> = None;
        let after_start = continue_token.is_some_and(|t| !t.is_empty());
        for (key, entry) in table.objects.range(start.clone()..) {
            if after_start && *key == start {
                continue;
            }
            if let Some(ns) = namespace
                && key.0 != ns
            {
                break;
            }
            if !labels.matches(&entry.labels) || !fields.matches(&key.0, &key.1, &entry.fields) {
                continue;
            }
            if limit.is_some_and(|l| page.items.len() >= l) {
                page.remaining += 1;
                continue;
            }
            page.items.push(entry.bytes.clone());
            last = Some(key);
        }
        if page.remaining > 0 {
            page.continue_token = last.map(|key| encode_continue(list_rv, key));
        }
        Ok(page)
    }
}
