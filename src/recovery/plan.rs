//! Restore plans: what must change on a live gateway for it to match a snapshot, entity by entity,
//! in the order the gateway needs (deletes bottom-up, then creates and updates top-down).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::stored::{field_changes, line_changes, FieldChange};
use crate::gateway::{Capture, Entity};

/// What a step does to one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Remove an entity the snapshot does not have.
    Delete,
    /// Add an entity the gateway lacks.
    Create,
    /// Change an entity that differs.
    Update,
}

impl Op {
    /// `create`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// One entity to change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// What to do.
    pub op: Op,
    /// Document path of the entity (`kong/services/orders.json`).
    pub path: String,
    /// Entity kind (`service`).
    pub kind: String,
    /// Natural key.
    pub key: String,
    /// For an update of a JSON entity: the fields that change (secrets masked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// For an update of a text entity: lines only in the live and only in the snapshot version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<(usize, usize)>,
}

impl Step {
    /// `create service orders`.
    pub fn describe(&self) -> String {
        format!("{} {} {}", self.op.as_str(), self.kind, self.key)
    }
}

/// A value of the snapshot replaced for the target (an account id, a region, an admin address).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rewrite {
    /// What was rewritten (`AWS account id`).
    pub what: String,
    /// The snapshot's value.
    pub from: String,
    /// The target's value.
    pub to: String,
    /// How many places held it.
    pub count: usize,
}

/// Everything a restore would change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The steps, in the order they are applied.
    pub steps: Vec<Step>,
    /// Values rewritten because the target differs from the captured gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<Rewrite>,
}

impl Plan {
    /// Whether the gateway already matches.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Counts of creates, updates and deletes.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |op| self.steps.iter().filter(|s| s.op == op).count();
        (n(Op::Create), n(Op::Update), n(Op::Delete))
    }
}

/// The stored form of an entity: its canonical JSON or its verbatim text.
pub fn document(e: &Entity) -> Vec<u8> {
    match &e.text {
        Some(t) => t.clone(),
        None => crate::gateway::canonical::to_bytes(&e.value),
    }
}

/// The steps that turn `live` into `desired`, ordered by `rank` (lower ranks are created first and
/// deleted last; within a rank, by path). Secret values are masked unless `show_secrets`.
pub fn plan(
    live: &Capture,
    desired: &Capture,
    rank: &dyn Fn(&str) -> u32,
    show_secrets: bool,
) -> Vec<Step> {
    let index = |c: &Capture| -> BTreeMap<String, usize> {
        c.entities
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.clone(), i))
            .collect()
    };
    let (li, di) = (index(live), index(desired));
    let paths: BTreeSet<&String> = li.keys().chain(di.keys()).collect();
    let mut steps = vec![];
    for path in paths {
        let (l, d) = (
            li.get(path).map(|i| &live.entities[*i]),
            di.get(path).map(|i| &desired.entities[*i]),
        );
        let step = |op, e: &Entity| Step {
            op,
            path: path.clone(),
            kind: e.kind.clone(),
            key: e.key.clone(),
            fields: vec![],
            lines: None,
        };
        match (l, d) {
            (None, Some(d)) => steps.push(step(Op::Create, d)),
            (Some(l), None) => steps.push(step(Op::Delete, l)),
            (Some(l), Some(d)) => {
                let (lb, db) = (document(l), document(d));
                if lb == db {
                    continue;
                }
                let mut s = step(Op::Update, d);
                if l.text.is_none() && d.text.is_none() {
                    s.fields =
                        field_changes(&l.value, &d.value, &l.secrets, &d.secrets, show_secrets);
                } else {
                    s.lines = Some(line_changes(&lb, &db));
                }
                steps.push(s);
            }
            (None, None) => {}
        }
    }
    order(&mut steps, rank);
    steps
}

/// Deletes first, children before parents (highest rank first); then creates and updates, parents
/// first. A rename is a delete and a create, so the old name is gone before the new one appears.
pub fn order(steps: &mut [Step], rank: &dyn Fn(&str) -> u32) {
    steps.sort_by(|a, b| {
        let key = |s: &Step| match s.op {
            Op::Delete => (0u8, u32::MAX - rank(&s.kind)),
            _ => (1u8, rank(&s.kind)),
        };
        key(a).cmp(&key(b)).then_with(|| a.path.cmp(&b.path))
    });
}

/// The entities of `c` by path.
pub fn by_path(c: &Capture) -> BTreeMap<&str, &Entity> {
    c.entities.iter().map(|e| (e.path.as_str(), e)).collect()
}

/// Replaces every occurrence of `from` by `to` in the strings of `v` (keys included); returns how many
/// strings changed.
pub fn replace_in(v: &mut Value, from: &str, to: &str) -> usize {
    if from.is_empty() || from == to {
        return 0;
    }
    match v {
        Value::String(s) if s.contains(from) => {
            *s = s.replace(from, to);
            1
        }
        Value::Array(items) => items.iter_mut().map(|x| replace_in(x, from, to)).sum(),
        Value::Object(m) => {
            let mut n = 0;
            let keys: Vec<String> = m.keys().filter(|k| k.contains(from)).cloned().collect();
            for k in keys {
                if let Some(x) = m.remove(&k) {
                    m.insert(k.replace(from, to), x);
                    n += 1;
                }
            }
            n + m
                .values_mut()
                .map(|x| replace_in(x, from, to))
                .sum::<usize>()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::Source;
    use serde_json::json;

    fn cap(entities: Vec<Entity>) -> Capture {
        Capture {
            source: Source::new("kong", "x"),
            raw: BTreeMap::new(),
            entities,
        }
    }

    fn rank(kind: &str) -> u32 {
        match kind {
            "service" => 1,
            "route" => 2,
            _ => 3,
        }
    }

    #[test]
    fn plans_order_deletes_bottom_up_then_creates_top_down() {
        let live = cap(vec![
            Entity::new("kong/services", "service", "old", json!({"name": "old"})),
            Entity::new("kong/routes", "route", "old-r", json!({"name": "old-r"})),
            Entity::new(
                "kong/services",
                "service",
                "same",
                json!({"name": "same", "port": 1}),
            ),
            Entity::new("kong/plugins", "plugin", "p", json!({"k": "s1"})).secret(&["/k"]),
        ]);
        let desired = cap(vec![
            Entity::new("kong/services", "service", "new", json!({"name": "new"})),
            Entity::new("kong/routes", "route", "new-r", json!({"name": "new-r"})),
            Entity::new(
                "kong/services",
                "service",
                "same",
                json!({"name": "same", "port": 2}),
            ),
            Entity::new("kong/plugins", "plugin", "p", json!({"k": "s2"})).secret(&["/k"]),
        ]);
        let steps = plan(&live, &desired, &rank, false);
        let got: Vec<String> = steps.iter().map(Step::describe).collect();
        assert_eq!(
            got,
            [
                "delete route old-r",
                "delete service old",
                "create service new",
                "update service same",
                "create route new-r",
                "update plugin p",
            ]
        );
        assert_eq!(steps[3].fields[0].pointer, "/port");
        let secret = &steps[5].fields[0];
        assert_eq!(secret.new, Some(json!(crate::gateway::SECRET_PLACEHOLDER)));
        assert!(plan(&desired, &desired, &rank, false).is_empty());
    }

    #[test]
    fn text_entities_report_lines() {
        let live = cap(vec![Entity::verbatim(
            "nginx/a.conf",
            "file",
            "a",
            b"x\ny".to_vec(),
        )]);
        let desired = cap(vec![Entity::verbatim(
            "nginx/a.conf",
            "file",
            "a",
            b"x\nz\nw".to_vec(),
        )]);
        let steps = plan(&live, &desired, &rank, false);
        assert_eq!(steps[0].lines, Some((1, 2)));
    }

    #[test]
    fn replace_in_rewrites_keys_and_values() {
        let mut v = json!({"arn:aws:x:111": ["arn:aws:x:111/y", "z"], "n": 111});
        assert_eq!(replace_in(&mut v, "111", "222"), 2);
        assert_eq!(
            v,
            json!({"arn:aws:x:222": ["arn:aws:x:222/y", "z"], "n": 111})
        );
    }
}
