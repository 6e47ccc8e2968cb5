//! Finding a data subject's values in bytes, and removing them from documents.
//!
//! A value is found where it stands as a whole token: the bytes around it are not letters, digits or
//! one of `_ - . +`, so `alice` is found in `"alice"`, `/alice/`, `alice:$apr1$…` and `alice@id` (Kong
//! names credentials `consumer@id`), but not in `malice`, `alice-2` or `alice.smith`. Each value is also searched in its JSON-escaped forms
//! (once and twice escaped: a document inlined in a tree is JSON inside JSON), and as the file name of
//! an entity document (`alice.json`).
//!
//! Removal works on structure where the document has one: in JSON and YAML, the smallest list item
//! that mentions a value goes (a consumer in a list of consumers, an account in a list of accounts, a
//! name in an allow list), or the whole document when no list item encloses the mention; an object key
//! that is a value goes with its value. Other text loses the lines that mention a value.

use serde_json::Value;

/// Values shorter than this are not searched for (they would match unrelated text).
pub const MIN_VALUE_LEN: usize = 3;

/// What stands in for an erased value in names and messages.
pub const ERASED: &str = "<erased>";

/// The values of one data subject, in every form they are searched for.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    values: Vec<String>,
    forms: Vec<Vec<u8>>,
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+')
}

fn escaped(s: &str) -> String {
    let q = serde_json::to_string(s).expect("a string serializes");
    q[1..q.len() - 1].to_string()
}

impl Tokens {
    /// Tokens for `values` (those shorter than [`MIN_VALUE_LEN`] are left out: see [`Tokens::too_short`]).
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.chars().count() >= MIN_VALUE_LEN)
            .collect();
        values.sort();
        values.dedup();
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for v in &values {
            let once = escaped(v);
            let twice = escaped(&once);
            // As the name of an entity document (`alice.json`): `.` would otherwise continue the token.
            let file = format!("{}.json", crate::gateway::canonical::file_name(v));
            for f in [v.clone(), once, twice, file] {
                if !forms.contains(&f.clone().into_bytes()) {
                    forms.push(f.into_bytes());
                }
            }
        }
        Self { values, forms }
    }

    /// The values searched for.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether there is nothing to search for.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values among `values` too short to search for.
    pub fn too_short(values: &[String]) -> Vec<String> {
        values
            .iter()
            .filter(|v| v.chars().count() < MIN_VALUE_LEN)
            .cloned()
            .collect()
    }

    /// Whether `hay` holds one of the values as a whole token.
    pub fn found(&self, hay: &[u8]) -> bool {
        self.forms.iter().any(|f| find_token(hay, f).is_some())
    }

    /// `s` with every token occurrence of a value replaced by [`ERASED`].
    pub fn mask(&self, s: &str) -> String {
        let mut out = s.to_string();
        for f in &self.forms {
            while let Some(i) = find_token(out.as_bytes(), f) {
                out.replace_range(i..i + f.len(), ERASED);
            }
        }
        out
    }
}

/// The first whole-token occurrence of `needle` in `hay`.
fn find_token(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|b| *b == first)
        {
            None => return None,
            Some(p) => i += p,
        }
        if &hay[i..i + needle.len()] == needle {
            let before = i == 0 || !word(hay[i - 1]) || !word(needle[0]);
            let end = i + needle.len();
            let after = end == hay.len() || !word(hay[end]) || !word(needle[needle.len() - 1]);
            if before && after {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// Where something was removed from a document, in the original document's coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Item `index` of the list at this JSON pointer (for text: line `index`, list pointer `""`).
    Item(String, usize),
    /// Key `key` of the object at this JSON pointer.
    Key(String, String),
}

/// The result of scrubbing one value.
enum Verdict {
    Clean,
    /// Mentions a value and no list item below encloses the mention: the enclosing item goes.
    Hit,
    Changed(Value),
}

fn seg(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn walk(v: &Value, at: &str, t: &Tokens, out: &mut Vec<Removal>) -> Verdict {
    match v {
        Value::String(s) if t.found(s.as_bytes()) => Verdict::Hit,
        Value::Number(n) if t.found(n.to_string().as_bytes()) => Verdict::Hit,
        Value::Array(items) => {
            let mut changed = false;
            let mut kept = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match walk(item, &format!("{at}/{i}"), t, out) {
                    Verdict::Clean => kept.push(item.clone()),
                    Verdict::Hit => {
                        out.push(Removal::Item(at.to_string(), i));
                        changed = true;
                    }
                    Verdict::Changed(x) => {
                        kept.push(x);
                        changed = true;
                    }
                }
            }
            if changed {
                Verdict::Changed(Value::Array(kept))
            } else {
                Verdict::Clean
            }
        }
        Value::Object(map) => {
            let mut changed = false;
            let mut kept = serde_json::Map::new();
            let mut inner = Vec::new();
            for (k, x) in map {
                if t.found(k.as_bytes()) {
                    inner.push(Removal::Key(at.to_string(), k.clone()));
                    changed = true;
                    continue;
                }
                match walk(x, &format!("{at}/{}", seg(k)), t, &mut inner) {
                    Verdict::Clean => {
                        kept.insert(k.clone(), x.clone());
                    }
                    // A mention in a field: the whole object is about the subject.
                    Verdict::Hit => return Verdict::Hit,
                    Verdict::Changed(y) => {
                        kept.insert(k.clone(), y);
                        changed = true;
                    }
                }
            }
            out.extend(inner);
            if changed {
                Verdict::Changed(Value::Object(kept))
            } else {
                Verdict::Clean
            }
        }
        _ => Verdict::Clean,
    }
}

/// What scrubbing did to one document.
#[derive(Clone, Debug, PartialEq)]
pub enum Scrubbed {
    /// It does not mention any value.
    Clean,
    /// It goes as a whole.
    Removed,
    /// Its new bytes, and what was removed (for moving its field marks).
    Changed(Vec<u8>, Vec<Removal>),
}

/// Scrubs a JSON value; `None` when the whole value goes.
pub fn scrub_value(v: &Value, t: &Tokens) -> (Option<Value>, Vec<Removal>) {
    let mut out = Vec::new();
    match walk(v, "", t, &mut out) {
        Verdict::Clean => (Some(v.clone()), out),
        Verdict::Hit => (None, vec![]),
        Verdict::Changed(x) => (Some(x), out),
    }
}

/// Scrubs one document: JSON stays JSON (in gatevault's canonical form when `canonical`, else pretty),
/// YAML stays YAML, other text loses the lines mentioning a value.
pub fn scrub_document(bytes: &[u8], canonical: bool, t: &Tokens) -> Scrubbed {
    if !t.found(bytes) {
        return Scrubbed::Clean;
    }
    let structured = serde_json::from_slice::<Value>(bytes)
        .map(|v| (v, true))
        .ok()
        .or_else(|| {
            serde_yaml_ng::from_slice::<Value>(bytes)
                .ok()
                .filter(|v| v.is_object() || v.is_array())
                .map(|v| (v, false))
        });
    if let Some((v, json)) = structured {
        let (new, removals) = scrub_value(&v, t);
        let Some(new) = new else {
            return Scrubbed::Removed;
        };
        // YAML that cannot be written back (it never should) falls through to the line rule below,
        // rather than becoming an empty document.
        let out = if !json {
            serde_yaml_ng::to_string(&new).ok().map(String::into_bytes)
        } else if canonical {
            Some(crate::gateway::canonical::to_bytes(&new))
        } else {
            let mut b = serde_json::to_vec_pretty(&new).expect("a value serializes");
            b.push(b'\n');
            Some(b)
        };
        // Structure removed every mention (a value may also sit in a YAML comment: then lines go too).
        if let Some(out) = out.filter(|o| !t.found(o)) {
            return Scrubbed::Changed(out, removals);
        }
    }
    let mut removals = Vec::new();
    let mut out = Vec::with_capacity(bytes.len());
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        if t.found(line) {
            removals.push(Removal::Item(String::new(), i));
        } else {
            out.extend_from_slice(line);
        }
    }
    if out.iter().all(u8::is_ascii_whitespace) {
        Scrubbed::Removed
    } else {
        Scrubbed::Changed(out, removals)
    }
}

/// Where JSON pointer `p` of the original document points after `removals`; `None` when what it
/// pointed to was removed.
pub fn remap(p: &str, removals: &[Removal]) -> Option<String> {
    let segs: Vec<&str> = if p.is_empty() {
        vec![]
    } else {
        p.trim_start_matches('/').split('/').collect()
    };
    let mut orig = String::new();
    let mut new = String::new();
    for s in segs {
        let here = orig.clone();
        orig = format!("{orig}/{s}");
        if removals
            .iter()
            .any(|r| matches!(r, Removal::Key(at, k) if *at == here && seg(k) == s))
        {
            return None;
        }
        let moved = match s.parse::<usize>() {
            Ok(i) => {
                let mut gone_before = 0;
                for r in removals {
                    if let Removal::Item(at, j) = r {
                        if *at == here {
                            if *j == i {
                                return None;
                            }
                            if *j < i {
                                gone_before += 1;
                            }
                        }
                    }
                }
                (i - gone_before).to_string()
            }
            Err(_) => s.to_string(),
        };
        new = format!("{new}/{moved}");
    }
    Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(v: &[&str]) -> Tokens {
        Tokens::new(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn values_are_found_as_whole_tokens_only() {
        let k = t(&["alice", "alice@example.com"]);
        for hit in [
            &b"{\"username\":\"alice\"}"[..],
            b"/alice/",
            b"alice:$apr1$x",
            b"mail alice@example.com.",
            b"kong/acls/alice@team-core.json",
            b"{\\\"username\\\":\\\"alice\\\"}",
        ] {
            assert!(k.found(hit), "{}", String::from_utf8_lossy(hit));
        }
        for miss in [
            &b"malice"[..],
            b"alice-2",
            b"alice.smith",
            b"bob@alice.com.au",
        ] {
            assert!(!k.found(miss), "{}", String::from_utf8_lossy(miss));
        }
        assert!(!t(&["al"]).found(b"al"), "too short to search");
        assert_eq!(Tokens::too_short(&["al".into(), "bob".into()]), vec!["al"]);
        assert_eq!(
            k.mask("kong/consumers/alice.json"),
            "kong/consumers/<erased>"
        );
        assert_eq!(
            k.mask("kong/acls/alice@team.json"),
            "kong/acls/<erased>@team.json"
        );
        assert!(
            k.found(b"{\"name\":\"alice.json\"}"),
            "a tree node naming the document"
        );
    }

    #[test]
    fn the_smallest_enclosing_list_item_goes() {
        let doc = json!({
            "consumers": [
                {"username": "alice", "keyauth_credentials": [{"key": "k1"}]},
                {"username": "bob"}
            ],
            "plugins": [
                {"name": "acl", "config": {"allow": ["alice", "bob"]}},
                {"name": "rate-limiting", "consumer": "alice"}
            ],
            "accounts": {"alice": {"password": "x"}, "carol": {"password": "y"}}
        });
        let (new, removals) = scrub_value(&doc, &t(&["alice"]));
        assert_eq!(
            new.unwrap(),
            json!({
                "consumers": [{"username": "bob"}],
                "plugins": [{"name": "acl", "config": {"allow": ["bob"]}}],
                "accounts": {"carol": {"password": "y"}}
            })
        );
        assert!(removals.contains(&Removal::Item("/consumers".into(), 0)));
        assert!(removals.contains(&Removal::Item("/plugins".into(), 1)));
        assert!(removals.contains(&Removal::Item("/plugins/0/config/allow".into(), 0)));
        assert!(removals.contains(&Removal::Key("/accounts".into(), "alice".into())));
        // Marks move with their items.
        assert_eq!(
            remap("/consumers/1/username", &removals).as_deref(),
            Some("/consumers/0/username")
        );
        assert_eq!(remap("/consumers/0/username", &removals), None);
        assert_eq!(
            remap("/accounts/carol/password", &removals).as_deref(),
            Some("/accounts/carol/password")
        );
        assert_eq!(remap("/accounts/alice/password", &removals), None);
        // A document that is about the subject goes whole.
        let (gone, _) = scrub_value(&json!({"username": "alice", "id": 1}), &t(&["alice"]));
        assert!(gone.is_none());
    }

    #[test]
    fn documents_keep_their_format() {
        let k = t(&["alice"]);
        let yaml = b"consumers:\n- username: alice\n- username: bob\n";
        match scrub_document(yaml, false, &k) {
            Scrubbed::Changed(b, _) => {
                let v: Value = serde_yaml_ng::from_slice(&b).unwrap();
                assert_eq!(v, json!({"consumers": [{"username": "bob"}]}));
            }
            other => panic!("{other:?}"),
        }
        let text = b"alice:$apr1$abc\nbob:$apr1$def\n";
        assert_eq!(
            scrub_document(text, false, &k),
            Scrubbed::Changed(
                b"bob:$apr1$def\n".to_vec(),
                vec![Removal::Item(String::new(), 0)]
            )
        );
        assert_eq!(scrub_document(b"alice\n", false, &k), Scrubbed::Removed);
        assert_eq!(scrub_document(b"bob\n", false, &k), Scrubbed::Clean);
    }
}
