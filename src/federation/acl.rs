//! Server ACLs (`m.room.server_acl`): which servers may take part in a room.

use serde_json::Value;

/// A glob with `*` (any run of characters) and `?` (one character), case-insensitive.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether the ACL content lets `server` (a server name, port included) in, by the spec's
/// rules: the port is ignored; IP literals are refused when `allow_ip_literals` is false; deny
/// wins over allow; nothing is allowed unless some `allow` entry matches.
pub fn allows(acl: &Value, server: &str) -> bool {
    let host = match server.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => server,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    if is_ip
        && !acl
            .get("allow_ip_literals")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    {
        return false;
    }
    let list = |key: &str| -> Vec<String> {
        acl.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    if list("deny").iter().any(|p| glob(p, host)) {
        return false;
    }
    list("allow").iter().any(|p| glob(p, host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deny_wins_and_ports_are_ignored() {
        let acl = json!({"allow": ["*"], "deny": ["evil.example", "*.bad.org"]});
        assert!(allows(&acl, "good.example:8448"));
        assert!(!allows(&acl, "evil.example:8448"));
        assert!(!allows(&acl, "a.bad.org"));
        assert!(allows(&acl, "bad.org"));
    }

    #[test]
    fn empty_allow_allows_nothing_and_ip_literals() {
        assert!(!allows(&json!({}), "a.example"));
        let acl = json!({"allow": ["*"], "allow_ip_literals": false});
        assert!(!allows(&acl, "127.0.0.1:8448"));
        assert!(!allows(&acl, "[::1]:8448"));
        assert!(allows(&json!({"allow": ["*"]}), "127.0.0.1:8448"));
        assert!(allows(&json!({"allow": ["ex?mple.org"]}), "EXAMPLE.org"));
    }
}
