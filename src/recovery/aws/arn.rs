//! Moving a snapshot to another AWS account or region (a staging target): the account ids and regions
//! inside ARNs (`arn:aws:lambda:eu-west-1:111122223333:function:auth`, also where one ARN is nested
//! in another, as in Lambda integration and authorizer URIs) and in service URLs
//! (`https://sqs.eu-west-1.amazonaws.com/111122223333/queue`) are replaced by the target's.
//!
//! Only these two places are touched: an account id or a region name elsewhere in a string (a
//! description, a mapping template) is text, not an address, and stays as it is.

use serde_json::Value;

/// An account and region, from a capture's scope (`<account>/<region>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Scope {
    /// The account id; `None` where STS could not tell (`unknown`).
    pub account: Option<String>,
    /// The region.
    pub region: String,
}

impl Scope {
    /// Parses a capture's scope; `None` for a scope without a region.
    pub fn parse(scope: Option<&str>) -> Option<Self> {
        let (account, region) = scope?.split_once('/')?;
        if region.is_empty() {
            return None;
        }
        let account = (account != "unknown" && !account.is_empty()).then(|| account.to_string());
        Some(Self {
            account,
            region: region.to_string(),
        })
    }
}

/// How many region and account id occurrences a rewrite replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    /// Region occurrences.
    pub regions: usize,
    /// Account id occurrences.
    pub accounts: usize,
}

/// What to replace: each part is `None` where the source and the target agree (or one is unknown).
pub(super) struct Move<'a> {
    region: Option<(&'a str, &'a str)>,
    account: Option<(&'a str, &'a str)>,
}

impl<'a> Move<'a> {
    /// The move from `from` to `to`, or `None` when there is nothing to replace.
    pub fn new(from: &'a Scope, to: &'a Scope) -> Option<Self> {
        let region =
            (from.region != to.region).then_some((from.region.as_str(), to.region.as_str()));
        let account = match (&from.account, &to.account) {
            (Some(f), Some(t)) if f != t => Some((f.as_str(), t.as_str())),
            _ => None,
        };
        (region.is_some() || account.is_some()).then_some(Self { region, account })
    }

    /// Rewrites every string in `v` (object keys are names, not addresses, and stay).
    pub fn apply(&self, v: &mut Value, counts: &mut Counts) {
        match v {
            Value::String(s) => {
                if let Some(new) = self.rewrite(s, counts) {
                    *s = new;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|x| self.apply(x, counts)),
            Value::Object(m) => m.values_mut().for_each(|x| self.apply(x, counts)),
            _ => {}
        }
    }

    /// `s` rewritten, or `None` when it holds nothing to replace.
    pub fn rewrite(&self, s: &str, counts: &mut Counts) -> Option<String> {
        let mut found = Counts::default();
        let out = self.urls(&self.arns(s, &mut found), &mut found);
        if found == Counts::default() {
            return None;
        }
        counts.regions += found.regions;
        counts.accounts += found.accounts;
        Some(out)
    }

    /// Replaces the region and account fields of every ARN in `s`.
    fn arns(&self, s: &str, found: &mut Counts) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("arn:") {
            // `arn:` inside a word (`barn:`) does not start an ARN.
            let starts = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            let fields = starts.then(|| arn_fields(rest)).flatten();
            let Some((partition, service, region, account, len)) = fields else {
                out.push_str("arn:");
                rest = &rest[4..];
                continue;
            };
            let region = match self.region {
                Some((from, to)) if region == from => {
                    found.regions += 1;
                    to
                }
                _ => region,
            };
            let account = match self.account {
                Some((from, to)) if account == from => {
                    found.accounts += 1;
                    to
                }
                _ => account,
            };
            out.push_str(&format!("arn:{partition}:{service}:{region}:{account}:"));
            // The resource part is scanned on: it may hold another ARN.
            rest = &rest[len..];
        }
        out.push_str(rest);
        out
    }

    /// Replaces the region in `*.<region>.amazonaws.com` hosts, and the account id where it is a
    /// path segment of such a URL (SQS queue URLs).
    fn urls(&self, s: &str, found: &mut Counts) -> String {
        if !s.contains(".amazonaws.com") {
            return s.to_string();
        }
        let mut out = s.to_string();
        if let Some((from, to)) = self.region {
            for suffix in [".amazonaws.com.cn", ".amazonaws.com"] {
                let (old, new) = (format!(".{from}{suffix}"), format!(".{to}{suffix}"));
                let n = out.matches(&old).count();
                if n > 0 {
                    found.regions += n;
                    out = out.replace(&old, &new);
                }
            }
        }
        if let Some((from, to)) = self.account {
            let (old, new) = (format!("/{from}/"), format!("/{to}/"));
            let n = out.matches(&old).count();
            if n > 0 {
                found.accounts += n;
                out = out.replace(&old, &new);
            }
        }
        out
    }
}

/// Partition, service, region and account of the ARN at the start of `s`, and the length of that
/// prefix up to and including the colon after the account.
fn arn_fields(s: &str) -> Option<(&str, &str, &str, &str, usize)> {
    let body = s.strip_prefix("arn:")?;
    let mut parts = body.splitn(5, ':');
    let partition = parts.next()?;
    let service = parts.next()?;
    let region = parts.next()?;
    let account = parts.next()?;
    parts.next()?; // a resource part must follow
    let word = |x: &str| x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let ok = partition.starts_with("aws")
        && !service.is_empty()
        && word(partition)
        && word(service)
        && word(region)
        && word(account);
    let len = 4 + partition.len() + service.len() + region.len() + account.len() + 4;
    ok.then_some((partition, service, region, account, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope(a: &str, r: &str) -> Scope {
        Scope::parse(Some(&format!("{a}/{r}"))).unwrap()
    }

    #[test]
    fn scopes_parse_with_unknown_accounts() {
        assert_eq!(
            Scope::parse(Some("unknown/eu-west-1")),
            Some(Scope {
                account: None,
                region: "eu-west-1".into()
            })
        );
        assert_eq!(Scope::parse(Some("123")), None);
        assert_eq!(Scope::parse(None), None);
    }

    #[test]
    fn nested_arns_in_lambda_uris_get_the_target_region_and_account() {
        let (from, to) = (
            scope("111122223333", "us-east-1"),
            scope("444455556666", "eu-west-1"),
        );
        let m = Move::new(&from, &to).unwrap();
        let mut n = Counts::default();
        let uri = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:111122223333:function:auth/invocations";
        assert_eq!(
            m.rewrite(uri, &mut n).unwrap(),
            "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:444455556666:function:auth/invocations"
        );
        // `lambda` in the account field of the outer ARN is a service name, not an account.
        assert_eq!(
            n,
            Counts {
                regions: 2,
                accounts: 1
            }
        );
    }

    #[test]
    fn role_execute_api_and_url_forms_are_rewritten_and_text_is_not() {
        let (from, to) = (
            scope("111122223333", "us-east-1"),
            scope("444455556666", "us-west-2"),
        );
        let m = Move::new(&from, &to).unwrap();
        let mut v = json!({
            "credentials": "arn:aws:iam::111122223333:role/apigw",
            "policy": "{\"Resource\":\"arn:aws:execute-api:us-east-1:111122223333:abc/*\"}",
            "uri": "https://sqs.us-east-1.amazonaws.com/111122223333/orders",
            "description": "lives in us-east-1, account 111122223333",
            "barn": "barn:aws:x:us-east-1:111122223333:y",
            "us-east-1": 111122223333u64
        });
        let mut n = Counts::default();
        m.apply(&mut v, &mut n);
        assert_eq!(
            v,
            json!({
                "credentials": "arn:aws:iam::444455556666:role/apigw",
                "policy": "{\"Resource\":\"arn:aws:execute-api:us-west-2:444455556666:abc/*\"}",
                "uri": "https://sqs.us-west-2.amazonaws.com/444455556666/orders",
                "description": "lives in us-east-1, account 111122223333",
                "barn": "barn:aws:x:us-east-1:111122223333:y",
                "us-east-1": 111122223333u64
            })
        );
        assert_eq!(
            n,
            Counts {
                regions: 2,
                accounts: 3
            }
        );
    }

    #[test]
    fn same_scope_or_unknown_accounts_move_only_what_is_known() {
        let a = scope("111122223333", "us-east-1");
        assert!(Move::new(&a, &a).is_none());
        let unknown = scope("unknown", "us-east-1");
        assert!(Move::new(&a, &unknown).is_none());
        let other_region = scope("unknown", "eu-central-1");
        let m = Move::new(&a, &other_region).unwrap();
        let mut n = Counts::default();
        assert_eq!(
            m.rewrite("arn:aws:lambda:us-east-1:111122223333:function:f", &mut n)
                .unwrap(),
            "arn:aws:lambda:eu-central-1:111122223333:function:f"
        );
        assert_eq!(
            n,
            Counts {
                regions: 1,
                accounts: 0
            }
        );
        assert_eq!(m.rewrite("no address here", &mut n), None);
    }
}
