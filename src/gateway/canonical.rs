//! Canonical form helpers shared by the adapters: sorted keys, lists sorted by natural key, volatile
//! fields removed, stable file names. Canonicalizing twice gives the bytes of once.

use serde_json::{Map, Value};

/// Fields that change without a configuration change, removed wherever they appear in an entity.
pub const VOLATILE: &[&str] = &[
    "created_at",
    "updated_at",
    "createdDate",
    "lastUpdatedDate",
    "version_info",
    "last_updated",
    "etag",
    "ETag",
];

/// Serializes `v` as the canonical document: pretty JSON, keys sorted, two-space indent, newline.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&sort_keys(v)).expect("JSON values serialize");
    out.push(b'\n');
    out
}

/// `v` with every object's keys in sorted order (whatever map order serde_json was built with).
pub fn sort_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sort_keys(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sort_keys).collect()),
        x => x.clone(),
    }
}

/// Removes the fields named in `names` from `v` and every object below it.
pub fn strip(v: &mut Value, names: &[&str]) {
    match v {
        Value::Object(m) => {
            for n in names {
                m.remove(*n);
            }
            m.values_mut().for_each(|x| strip(x, names));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip(x, names)),
        _ => {}
    }
}

/// Removes the top-level fields `names` of an object.
pub fn drop_fields(v: &mut Value, names: &[&str]) {
    if let Value::Object(m) = v {
        for n in names {
            m.remove(*n);
        }
    }
}

/// Sorts the list at field `field` of `v` (where it is a list of scalars): for set-like fields such
/// as tags, methods and protocols whose order carries no meaning.
pub fn sort_set(v: &mut Value, field: &str) {
    if let Some(Value::Array(a)) = v.get_mut(field) {
        a.sort_by_key(scalar_key);
        a.dedup();
    }
}

/// A sort key for a scalar (strings as themselves, others as JSON text).
pub fn scalar_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        x => x.to_string(),
    }
}

/// The string field `field` of `v`, if any.
pub fn str_field<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

/// A file name for the natural key `key`: characters outside `[A-Za-z0-9._@=+,:-]` are percent-encoded
/// (so are a leading dot and `%` itself), keeping names unique, portable and free of `/`.
///
/// The empty key is `%00`, which is also how the key of one NUL byte would be written; that key is
/// therefore `%00%` instead (a lone `%` is never written otherwise), so that no two keys share a name.
pub fn file_name(key: &str) -> String {
    if key == NUL_KEY {
        return NUL_KEY_NAME.into();
    }
    let mut out = String::with_capacity(key.len());
    for (i, b) in key.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'-' | b'@' | b'=' | b'+' | b',' | b':')
            || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// The key made of one NUL byte, and its file name (see [`file_name`]).
const NUL_KEY: &str = "\0";
const NUL_KEY_NAME: &str = "%00%";

/// The key a [`file_name`] stands for; `None` when `name` is not one.
pub fn key_of_file_name(name: &str) -> Option<String> {
    if name == "%00" {
        return Some(String::new());
    }
    if name == NUL_KEY_NAME {
        return Some(NUL_KEY.into());
    }
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a JSON or YAML document (JSON is YAML, but parsing JSON as JSON is faster and stricter).
///
/// # Errors
/// The parser's message with line and column.
pub fn parse_json_or_yaml(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        return serde_json::from_str(text).map_err(|e| e.to_string());
    }
    // A lone JSON scalar is read as JSON too: in a quoted string a YAML reader folds the raw line
    // breaks U+0085, U+2028 and U+2029 into spaces, which JSON (and so canonical bytes) keeps.
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// JSON pointers of every field named one of `names`, at any depth of `v`, in document order: for
/// marking secrets whose place varies (`password` of any handler, `private_key` of any issuer).
pub fn field_pointers(v: &Value, names: &[&str]) -> Vec<String> {
    fn walk(v: &Value, at: &str, names: &[&str], out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    if names.contains(&k.as_str()) && !x.is_null() {
                        out.push(p);
                    } else {
                        walk(x, &p, names, out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{at}/{i}"), names, out);
                }
            }
            _ => {}
        }
    }
    let mut out = vec![];
    walk(v, "", names, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn canonical_bytes_of_a_string_with_raw_line_breaks_read_back_the_same() {
        // Found by the canonical fuzz target: the YAML `"%\N"` is "%" and U+0085, whose canonical
        // bytes (JSON, the character raw) a YAML reader took for "% ".
        for s in ["%\u{85}", "a\u{2028}b", "\u{2029}"] {
            let v = Value::String(s.into());
            let bytes = to_bytes(&v);
            assert_eq!(parse_json_or_yaml(&bytes), Ok(v), "{bytes:?}");
        }
        assert_eq!(
            parse_json_or_yaml(b"\"%\\N\""),
            Ok(Value::String("%\u{85}".into()))
        );
        // Still YAML where it is not JSON.
        assert_eq!(parse_json_or_yaml(b"a: 1"), Ok(json!({"a": 1})));
    }

    #[test]
    fn file_names_are_portable_and_distinct() {
        assert_eq!(file_name("orders-get"), "orders-get");
        assert_eq!(file_name("a/b"), "a%2Fb");
        assert_eq!(file_name(".hidden"), "%2Ehidden");
        assert_eq!(file_name("50%"), "50%25");
        assert_eq!(file_name(""), "%00");
        assert_eq!(file_name("\0"), "%00%");
        assert_ne!(file_name("a b"), file_name("a_b"));
        for k in [
            "orders-get",
            "a/b",
            ".hidden",
            "50%",
            "",
            "\0",
            "\0\0",
            "ü x",
            "up@10.0.0.1:80",
        ] {
            assert_eq!(key_of_file_name(&file_name(k)).as_deref(), Some(k));
        }
        assert_eq!(key_of_file_name("%G1"), None);
    }

    #[test]
    fn field_pointers_find_fields_at_any_depth() {
        let v =
            json!({"a": [{"password": "x"}, {"b": {"password": "y", "p/w": 1}}], "password": null});
        assert_eq!(
            field_pointers(&v, &["password", "p/w"]),
            vec!["/a/0/password", "/a/1/b/p~1w", "/a/1/b/password"]
        );
    }

    #[test]
    fn strip_removes_volatile_fields_at_every_depth() {
        let mut v = json!({"created_at": 1, "a": [{"updated_at": 2, "b": 3}]});
        strip(&mut v, VOLATILE);
        assert_eq!(v, json!({"a": [{"b": 3}]}));
    }

    #[test]
    fn yaml_and_json_parse_to_the_same_value() {
        let y = parse_json_or_yaml(b"a: 1\nb: [x, y]\n").unwrap();
        let j = parse_json_or_yaml(br#"{"b": ["x", "y"], "a": 1}"#).unwrap();
        assert_eq!(y, j);
        assert!(parse_json_or_yaml(b"a: [1,\n").is_err());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_bytes_are_a_fixed_point(v in arb_json()) {
            let once = to_bytes(&v);
            let again: Value = serde_json::from_slice(&once).unwrap();
            prop_assert_eq!(to_bytes(&again), once);
        }
    }
}
