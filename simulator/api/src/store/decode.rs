//! Objects decoded once, by their writer, for in-process watchers.
//!
//! The simulator's controllers read every pod event, and their Deployments
//! and ReplicaSets on every reconcile. Rather than have each reader parse
//! the JSON again, the store asks the resource's
//! [`Decoder`] for the decoded form, made from what the write already holds
//! parsed: the whole object when it is created or replaced, or what a status
//! write or a binding changed in its section (the new section, or the
//! entries it set), applied to the decoded form of the version it
//! replaced. The event carries the result in
//! [`WatchEvent::decoded`](super::WatchEvent::decoded); an event without
//! one is decoded by its first reader.

use std::{
    any::Any,
    sync::{Arc, RwLock},
};

use serde_json::Value;

use super::Store;
use crate::{resources::Resource, splice::Written};

/// An object as a [`Decoder`] made it.
pub type Decoded = Arc<dyn Any + Send + Sync>;

/// Makes the decoded form of one resource's objects.
///
/// *Guarantees* the implementor gives: what [`Decoder::whole`] and
/// [`Decoder::section`] return equals what decoding the stored JSON would
/// give. The store does not check it; the simulator's pod decoder is
/// tested for it.
pub trait Decoder: Send + Sync {
    /// The decoded form of a whole object (its resourceVersion not yet
    /// assigned), or `None` to leave it to the readers.
    fn whole(&self, object: &Value) -> Option<Decoded>;

    /// The decoded form of the object `before` was decoded from, with its
    /// top-level `section` (`spec` or `status`) now as `written` (when it
    /// is [`Written::Entries`], the entries not set are as they were);
    /// `None` to leave it to the readers.
    fn section(&self, before: &Decoded, section: &str, written: &Written) -> Option<Decoded>;
}

/// A resource's group and plural, and its decoder.
type ByResource = (String, String, Arc<dyn Decoder>);

/// The decoders, by resource (few, so a list).
#[derive(Default)]
pub(super) struct Decoders(RwLock<Vec<ByResource>>);

impl Decoders {
    /// The decoder of `res`, if one was given.
    pub(super) fn of(&self, res: &Resource) -> Option<Arc<dyn Decoder>> {
        let list = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.iter()
            .find(|(group, plural, _)| *group == res.group && *plural == res.plural)
            .map(|(_, _, decoder)| decoder.clone())
    }
}

impl Store {
    /// Has `decoder` decode the objects of (`group`, `plural`) as they are
    /// written, from then on, in place of the one given before.
    pub fn decode_with(&self, group: &str, plural: &str, decoder: Arc<dyn Decoder>) {
        let mut list = self
            .decoders
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.retain(|(g, p, _)| !(g == group && p == plural));
        list.push((group.to_owned(), plural.to_owned(), decoder));
    }
}
