//! How objects are found: the keys of tables and objects, searchable with
//! borrowed strings, and the names objects may have.

pub(super) type TableKey = (String, String);

pub(super) type ObjectKey = (String, String);

/// A key of two strings (a table's or an object's), so that the maps keyed
/// by owned pairs can be searched with borrowed ones: every read looks an
/// object up, and it should not allocate four strings to do so.
pub trait Pair {
    /// The two strings.
    fn pair(&self) -> (&str, &str);
}

impl Pair for (String, String) {
    fn pair(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl Pair for (&str, &str) {
    fn pair(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn Pair + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn Pair + 'a) {
        self
    }
}

impl std::hash::Hash for dyn Pair + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pair().hash(state);
    }
}

impl PartialEq for dyn Pair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for dyn Pair + '_ {}

impl PartialOrd for dyn Pair + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Pair + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pair().cmp(&other.pair())
    }
}

/// True for a DNS subdomain name (lowercase alphanumerics, `-` and `.`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// True for an RFC 1123 label (a namespace's name): lowercase
/// alphanumerics and `-`, at most 63, alphanumeric at both ends.
pub fn valid_label(name: &str) -> bool {
    valid_name(name) && name.len() <= 63 && !name.contains('.')
}
