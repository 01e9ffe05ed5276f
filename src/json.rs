//! Small readers for JSON that arrives from clients, other servers and the database.

use serde_json::Value;

/// The strings of a JSON array (other elements skipped); nothing when it is not an array.
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether any string of the value, object keys included, contains U+0000. PostgreSQL
/// cannot store that character in a text column, so it is refused (or removed) before it
/// reaches one, on either database alike.
pub fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// The value with U+0000 removed from every string and key (for data that is not signed,
/// such as EDUs, and is stored field by field).
pub fn strip_nul(v: &Value) -> Value {
    match v {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(a) => Value::Array(a.iter().map(strip_nul).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.replace('\0', ""), strip_nul(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_found_and_removed() {
        let v = json!({"a": ["x", {"b\0": 1}], "c": "d"});
        assert!(contains_nul(&v));
        assert_eq!(strip_nul(&v), json!({"a": ["x", {"b": 1}], "c": "d"}));
        assert!(!contains_nul(&strip_nul(&v)));
        assert!(contains_nul(&json!(["a\0b"])));
        assert!(!contains_nul(&json!({"a": [1, null, true, "z"]})));
    }

    #[test]
    fn strings_of_an_array() {
        assert_eq!(string_list(Some(&json!(["a", 1, "b"]))), ["a", "b"]);
        assert!(string_list(Some(&json!("a"))).is_empty());
        assert!(string_list(None).is_empty());
    }
}
