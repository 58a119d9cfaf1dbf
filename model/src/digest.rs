//! Short, stable digests: of what a Rollout releases, and of pod
//! templates (to find a workload's revision by its template).

use serde_json::Value;

/// FNV-1a over `text`: stable across processes and versions.
fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A digest as 16 hex digits.
pub fn hex(text: &str) -> String {
    format!("{:016x}", fnv(text))
}

/// A pod template's digest in the alphabet Kubernetes uses for names (no
/// vowels), 10 characters. Templates equal as JSON values have the same
/// digest whatever their key order.
pub fn template_hash(template: &Value) -> String {
    let mut h = fnv(&serde_json::to_string(template).unwrap_or_default());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_digest_ignores_key_order_and_sees_every_value() {
        let a: Value = serde_json::from_str(r#"{"spec":{"containers":[{"name":"app","image":"v1"}]},"metadata":{"labels":{"app":"web"}}}"#).unwrap();
        let b = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "v1", "name": "app"}]}});
        assert_eq!(template_hash(&a), template_hash(&b));
        let c = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "v2", "name": "app"}]}});
        assert_ne!(template_hash(&a), template_hash(&c));
        assert_eq!(template_hash(&a).len(), 10);
    }
}
