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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_of_an_array() {
        assert_eq!(string_list(Some(&json!(["a", 1, "b"]))), ["a", "b"]);
        assert!(string_list(Some(&json!("a"))).is_empty());
        assert!(string_list(None).is_empty());
    }
}
