//! The grammars kube-apiserver checks names against, with its words for
//! what is wrong: qualified names (label keys, resource names, a
//! LimitRange's types) and the resource names quotas, limit ranges and
//! containers may use.

/// What a qualified name's name part must be, with the regular expression
/// it must match, as the message words it.
const QUALIFIED_WORDS: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// What is wrong with `value` as a qualified name (an optional DNS
/// subdomain and `/`, then a name of at most 63 characters), in the words
/// of apimachinery's `IsQualifiedName`; empty when nothing is.
pub(crate) fn qualified_name(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_owned());
            } else {
                out.extend(
                    subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_WORDS} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".to_owned());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let good = !name.is_empty()
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'));
    if !good {
        out.push(format!("name part {QUALIFIED_WORDS}"));
    }
    out
}

/// What is wrong with `value` as a DNS subdomain (RFC 1123), in
/// apimachinery's words.
pub(crate) fn subdomain(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value.len() > 253 {
        out.push("must be no more than 253 characters".to_owned());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    if !value.split('.').all(label_ok) {
        out.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_owned(),
        );
    }
    out
}

/// `Invalid value: "value": why` for each of `whys`, at `path`.
fn invalid(path: &str, value: &str, whys: Vec<String>) -> Vec<(String, String)> {
    whys.into_iter()
        .map(|why| (path.to_owned(), format!("Invalid value: {value:?}: {why}")))
        .collect()
}

/// Hugepages, which quotas and containers name by page size.
fn hugepages(name: &str) -> bool {
    name.starts_with("hugepages-") || name.starts_with("requests.hugepages-")
}

/// The resources counted in whole units, known without a domain.
const COUNTS: [&str; 9] = [
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

/// A resource name kube-apiserver knows without a domain.
fn standard(name: &str) -> bool {
    const AMOUNTS: [&str; 11] = [
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "storage",
        "requests.storage",
    ];
    AMOUNTS.contains(&name) || COUNTS.contains(&name) || hugepages(name)
}

/// A resource name a quota may limit without a domain.
pub(crate) fn standard_for_quota(name: &str) -> bool {
    name != "storage" && standard(name)
}

/// A resource in the `kubernetes.io` domain (every name without one).
pub(crate) fn native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// An extended resource (`example.com/gpu`): outside `kubernetes.io`, not
/// a quota's `requests.` name, and a qualified name as a quota writes it.
pub(crate) fn extended(name: &str) -> bool {
    !native(name)
        && !name.starts_with("requests.")
        && qualified_name(&format!("requests.{name}")).is_empty()
}

/// A resource counted in whole units.
pub(crate) fn integer_resource(name: &str) -> bool {
    COUNTS.contains(&name) || extended(name)
}

/// The problems of resource name `name` at `path`: a qualified name, and
/// a standard one when it has no domain.
pub(crate) fn resource_name(name: &str, path: &str) -> Vec<(String, String)> {
    let out = invalid(path, name, qualified_name(name));
    if !out.is_empty() || name.contains('/') || standard(name) {
        return out;
    }
    invalid(
        path,
        name,
        vec!["must be a standard resource type or fully qualified".to_owned()],
    )
}

/// The problems of `name` as a resource a quota limits.
pub(crate) fn quota_resource_name(name: &str, path: &str) -> Vec<(String, String)> {
    let mut out = resource_name(name, path);
    if !name.contains('/') && !standard_for_quota(name) {
        out.extend(invalid(
            path,
            name,
            vec!["must be a standard resource for quota".to_owned()],
        ));
    }
    out
}

/// The problems of `name` as a resource a container requests.
pub(crate) fn container_resource_name(name: &str, path: &str) -> Vec<(String, String)> {
    let mut out = resource_name(name, path);
    if !name.contains('/') {
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage")
            && !name.starts_with("hugepages-")
        {
            out.extend(invalid(
                path,
                name,
                vec!["must be a standard resource for containers".to_owned()],
            ));
        }
    } else if !native(name) && !extended(name) {
        out.extend(invalid(
            path,
            name,
            vec!["doesn't follow extended resource name standard".to_owned()],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_read_as_apimachinery_reads_them() {
        for good in ["app", "example.com/App_1", "a.b-c", "k8s.io/x"] {
            assert!(qualified_name(good).is_empty(), "{good}");
        }
        assert_eq!(qualified_name("a b").len(), 1);
        assert_eq!(qualified_name("").len(), 2);
        assert_eq!(qualified_name("/x"), ["prefix part must be non-empty"]);
        assert!(qualified_name("Ex.com/x")[0].starts_with("prefix part a lowercase"));
        assert!(qualified_name("a/b/c")[0].starts_with("a qualified name"));
        assert_eq!(qualified_name(&"x".repeat(64)).len(), 1);
    }

    #[test]
    fn resource_names_are_sorted_as_kube_apiserver_sorts_them() {
        assert!(quota_resource_name("pods", "p").is_empty());
        assert!(quota_resource_name("count/deployments.apps", "p").is_empty());
        assert_eq!(quota_resource_name("limit.cpu", "p").len(), 2);
        assert_eq!(quota_resource_name("storage", "p").len(), 1);
        assert!(container_resource_name("example.com/gpu", "p").is_empty());
        assert_eq!(container_resource_name("requests.cpu", "p").len(), 1);
        assert!(integer_resource("count/deployments.apps"));
        assert!(!integer_resource("requests.example.com/gpu"));
        assert!(!integer_resource("cpu"));
    }
}
