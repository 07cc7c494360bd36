//! The idempotency fingerprint of an edit request.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex sha256 of the canonical JSON form of `request`: object keys sorted, no
/// whitespace, numbers as serde_json prints them. Two requests that differ only in key
/// order or formatting hash alike; `1` and `1.0` are different numbers and do not.
pub fn request_hash(request: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(request, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            // Sorted explicitly: serde_json keeps insertion order when another crate in
            // the build enables its `preserve_order` feature.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a: Value =
            serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "s"}], "a": null}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"s","y":2}]}"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
    }

    #[test]
    fn different_values_change_the_hash() {
        let a = json!({"prompt": "The President", "layer": 7});
        let b = json!({"prompt": "The President", "layer": 9});
        assert_ne!(request_hash(&a), request_hash(&b));
    }

    #[test]
    fn hash_is_sha256_of_the_canonical_text() {
        let value = json!({"b": 1, "a": "x"});
        let expected = hex::encode(Sha256::digest(br#"{"a":"x","b":1}"#));
        assert_eq!(request_hash(&value), expected);
    }
}
