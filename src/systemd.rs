//! systemd units for the configured jobs (`gatevault systemd`): for users who let systemd's timers
//! schedule the jobs instead of `gatevault daemon`.
//!
//! Each job becomes a `gatevault-<job>.service` (`Type=oneshot`, running the job once) and a
//! `gatevault-<job>.timer` whose `OnCalendar=` is the job's cron schedule translated to systemd's
//! calendar syntax (`man systemd.time`), in the job's time zone. A cron expression systemd cannot
//! express with the same meaning is refused with the reason, never approximated.

use std::fmt::Write as _;
use std::time::Duration;

use crate::error::{Error, Result};

/// What the units of one job need.
#[derive(Clone, Debug)]
pub struct UnitJob {
    /// The job's name (`[jobs.NAME]`).
    pub name: String,
    /// Its cron expression (5 fields, or 6 with seconds first; `@daily` and the like).
    pub schedule: String,
    /// Its time zone (`UTC`, `Europe/Berlin`).
    pub timezone: String,
    /// The command that runs the job once, program first.
    pub command: Vec<String>,
    /// A human description.
    pub description: String,
    /// The job's `max_duration`: systemd stops the service after it.
    pub max_duration: Option<Duration>,
    /// The random delay before each start.
    pub jitter: Option<Duration>,
}

/// A unit file: its name and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// `gatevault-<job>.service` or `.timer`.
    pub file_name: String,
    /// The content.
    pub text: String,
}

/// The service and timer of every job, in order.
///
/// # Errors
/// [`Error::InvalidInput`] naming the job when its schedule cannot be written as a systemd calendar
/// or its name cannot be a unit name.
pub fn units(jobs: &[UnitJob]) -> Result<Vec<Unit>> {
    let mut out = Vec::new();
    for j in jobs {
        if j.name.is_empty()
            || !j
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(Error::InvalidInput(format!(
                "job {:?}: a systemd unit name may hold only letters, digits, '-', '_' and '.'",
                j.name
            )));
        }
        let calendar = on_calendar(&j.schedule, &j.timezone).map_err(|why| {
            Error::InvalidInput(format!(
                "job {:?}: schedule {:?}: {why}",
                j.name, j.schedule
            ))
        })?;
        let base = format!("gatevault-{}", j.name);
        let mut service = format!(
            "[Unit]\nDescription=gatevault job {}: {}\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\nType=oneshot\nExecStart={}\n",
            j.name,
            j.description,
            exec_line(&j.command)
        );
        if let Some(d) = j.max_duration {
            // SIGTERM first (gatevault stops at a safe point), SIGKILL after a grace.
            let _ = writeln!(service, "TimeoutStartSec={}s", d.as_secs().max(1));
            service.push_str("KillSignal=SIGTERM\nTimeoutStopSec=60s\n");
        }
        service.push_str("Nice=10\nIOSchedulingClass=idle\n");
        let mut timer = format!(
            "[Unit]\nDescription=Schedule of gatevault job {}\n\n[Timer]\nOnCalendar={calendar}\nPersistent=true\nUnit={base}.service\n",
            j.name
        );
        if let Some(d) = j.jitter.filter(|d| !d.is_zero()) {
            let _ = writeln!(timer, "RandomizedDelaySec={}s", d.as_secs().max(1));
        }
        timer.push_str("\n[Install]\nWantedBy=timers.target\n");
        out.push(Unit {
            file_name: format!("{base}.service"),
            text: service,
        });
        out.push(Unit {
            file_name: format!("{base}.timer"),
            text: timer,
        });
    }
    Ok(out)
}

/// `ExecStart=` quoting: every argument in double quotes, with `\`, `"`, `$` and `%` escaped as
/// systemd wants them.
fn exec_line(command: &[String]) -> String {
    command
        .iter()
        .map(|a| {
            let mut q = String::from("\"");
            for c in a.chars() {
                match c {
                    '\\' => q.push_str("\\\\"),
                    '"' => q.push_str("\\\""),
                    '$' => q.push_str("$$"),
                    '%' => q.push_str("%%"),
                    '\n' => q.push_str("\\n"),
                    c => q.push(c),
                }
            }
            q.push('"');
            q
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Translates a cron expression to a systemd calendar expression (`DOW Y-M-D H:M:S TZ`).
///
/// # Errors
/// Why it cannot be translated.
pub fn on_calendar(cron: &str, timezone: &str) -> std::result::Result<String, String> {
    let expanded = match cron.trim() {
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        "@monthly" => "0 0 0 1 * *",
        "@weekly" => "0 0 0 * * 0",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@hourly" => "0 0 * * * *",
        s if s.starts_with('@') => return Err(format!("unknown macro {s}")),
        s => s,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        n => {
            return Err(format!(
                "{n} fields; a cron expression has 5 (or 6 with seconds first)"
            ))
        }
    };
    let (min, hour, dom, month, dow) = (rest[0], rest[1], rest[2], rest[3], rest[4]);
    let any = |f: &str| f == "*" || f == "?";
    if !any(dom) && !any(dow) {
        // cron runs when either matches; systemd when both do.
        return Err(
            "day of month and day of week are both restricted: cron runs on either, systemd only on both; split it into two jobs"
                .into(),
        );
    }
    let sec = numeric(sec, 0, 59, 0, &[])?;
    let min = numeric(min, 0, 59, 0, &[])?;
    let hour = numeric(hour, 0, 23, 0, &[])?;
    let dom = numeric(dom, 1, 31, 1, &[])?;
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let month = numeric(month, 1, 12, 1, &MONTHS)?;
    let mut out = String::new();
    if !any(dow) {
        out.push_str(&weekdays(dow)?);
        out.push(' ');
    }
    let _ = write!(out, "*-{month}-{dom} {hour}:{min}:{sec}");
    if !timezone.is_empty() {
        out.push(' ');
        out.push_str(timezone);
    }
    Ok(out)
}

/// One numeric field: `*`, `N`, `A-B`, `*/S`, `A/S`, `A-B/S` and lists of them. Names (months) are
/// accepted in place of numbers.
fn numeric(
    field: &str,
    lo: u32,
    hi: u32,
    first: u32,
    names: &[&str],
) -> std::result::Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let value = |s: &str| -> std::result::Result<u32, String> {
        let n = match names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            Some(i) => i as u32 + 1,
            None => s
                .parse()
                .map_err(|_| format!("{s:?} is not a number (L, W and # have no systemd form)"))?,
        };
        if n < lo || n > hi {
            return Err(format!("{n} is outside {lo}-{hi}"));
        }
        Ok(n)
    };
    let mut parts = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| format!("bad step in {item:?}"))?;
                if s == 0 {
                    return Err(format!("a step of 0 in {item:?}"));
                }
                (r, Some(s))
            }
            None => (item, None),
        };
        let text = match range.split_once('-') {
            _ if range == "*" => format!("{first}"),
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(format!("the range {item:?} runs backwards"));
                }
                format!("{a:02}..{b:02}")
            }
            None => format!("{:02}", value(range)?),
        };
        parts.push(match step {
            Some(s) if range == "*" => format!("{text:0>2}/{s}"),
            Some(s) => format!("{text}/{s}"),
            None => text,
        });
    }
    Ok(parts.join(","))
}

/// The day-of-week field as systemd weekday names (`Mon..Fri`, `Sat,Sun`).
fn weekdays(field: &str) -> std::result::Result<String, String> {
    const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let day = |s: &str| -> std::result::Result<usize, String> {
        if let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i);
        }
        match s.parse::<usize>() {
            Ok(n) if n <= 7 => Ok(n % 7),
            _ => Err(format!(
                "{s:?} is not a day of the week (0-7 or SUN-SAT; L and # have no systemd form)"
            )),
        }
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step in {item:?}"))?,
            ),
            None => (item, 1),
        };
        let (a, b) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((a, b)) => {
                let a = day(a)?;
                // `5-7` (Fri to Sun) ends on 7, Sunday again.
                let b = if b == "7" { 7 } else { day(b)? };
                (a, b)
            }
            None => {
                let a = day(range)?;
                (a, if step > 1 { 6 } else { a })
            }
        };
        if a > b {
            return Err(format!("the range {item:?} runs backwards"));
        }
        for d in (a..=b).step_by(step) {
            days[d % 7] = true;
        }
    }
    // Monday first, as systemd writes them.
    let order = [1, 2, 3, 4, 5, 6, 0];
    Ok(order
        .iter()
        .filter(|d| days[**d])
        .map(|d| NAMES[*d])
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fields_become_calendar_components() {
        let c = |s: &str| on_calendar(s, "UTC").unwrap();
        assert_eq!(c("*/15 * * * *"), "*-*-* *:00/15:00 UTC");
        assert_eq!(c("30 2 * * *"), "*-*-* 02:30:00 UTC");
        assert_eq!(c("0 */6 1 * *"), "*-*-01 00/6:00:00 UTC");
        assert_eq!(
            c("0 9-17/2 * * 1-5"),
            "Mon,Tue,Wed,Thu,Fri *-*-* 09..17/2:00:00 UTC"
        );
        assert_eq!(c("*/5 * * * * *"), "*-*-* *:*:00/5 UTC");
        assert_eq!(c("0 0 1,15 jan,jul *"), "*-01,07-01,15 00:00:00 UTC");
        assert_eq!(c("0 3 * * 0"), "Sun *-*-* 03:00:00 UTC");
        assert_eq!(c("0 3 * * 7"), "Sun *-*-* 03:00:00 UTC");
        assert_eq!(c("0 3 * * 5-7"), "Fri,Sat,Sun *-*-* 03:00:00 UTC");
        assert_eq!(c("0 3 * * sat,SUN"), "Sat,Sun *-*-* 03:00:00 UTC");
        assert_eq!(c("@daily"), "*-*-* 00:00:00 UTC");
        assert_eq!(c("@weekly"), "Sun *-*-* 00:00:00 UTC");
        assert_eq!(
            on_calendar("0 2 * * *", "Europe/Berlin").unwrap(),
            "*-*-* 02:00:00 Europe/Berlin"
        );
    }

    /// Every translation is a calendar expression systemd itself accepts (where systemd is installed).
    #[test]
    fn systemd_accepts_the_translations() {
        if std::process::Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: systemd-analyze is not installed");
            return;
        }
        for cron in [
            "*/15 * * * *",
            "0 9-17/2 * * 1-5",
            "*/5 * * * * *",
            "0 0 1,15 jan,jul *",
            "0 3 * * 5-7",
            "@monthly",
        ] {
            let cal = on_calendar(cron, "Europe/Berlin").unwrap();
            let out = std::process::Command::new("systemd-analyze")
                .args(["calendar", &cal])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{cron} -> {cal}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn what_systemd_cannot_say_is_refused_with_the_reason() {
        for (cron, why) in [
            ("0 0 1 * 1", "both restricted"),
            ("0 0 L * *", "no systemd form"),
            ("0 0 * * 1#2", "no systemd form"),
            ("0 0 * *", "4 fields"),
            ("61 * * * *", "outside 0-59"),
            ("0 5-3 * * *", "backwards"),
            ("*/0 * * * *", "step of 0"),
            ("@reboot", "unknown macro"),
        ] {
            let e = on_calendar(cron, "UTC").unwrap_err();
            assert!(e.contains(why), "{cron}: {e}");
        }
    }

    #[test]
    fn units_run_the_job_on_its_calendar() {
        let job = UnitJob {
            name: "kong-prod".into(),
            schedule: "0 */15 * * * *".into(),
            timezone: "UTC".into(),
            command: vec![
                "/usr/bin/gatevault".into(),
                "--config".into(),
                "/etc/gatevault/config.toml".into(),
                "jobs".into(),
                "run".into(),
                "50% \"quoted\" $HOME".into(),
            ],
            description: "backup".into(),
            max_duration: Some(Duration::from_secs(600)),
            jitter: Some(Duration::from_secs(30)),
        };
        let u = units(std::slice::from_ref(&job)).unwrap();
        assert_eq!(u[0].file_name, "gatevault-kong-prod.service");
        assert!(u[0].text.contains("Type=oneshot"));
        assert!(u[0].text.contains(
            "ExecStart=\"/usr/bin/gatevault\" \"--config\" \"/etc/gatevault/config.toml\" \"jobs\" \"run\" \"50%% \\\"quoted\\\" $$HOME\""
        ), "{}", u[0].text);
        assert!(u[0].text.contains("TimeoutStartSec=600s"));
        assert_eq!(u[1].file_name, "gatevault-kong-prod.timer");
        assert!(u[1].text.contains("OnCalendar=*-*-* *:00/15:00 UTC"));
        assert!(u[1].text.contains("RandomizedDelaySec=30s"));
        assert!(u[1].text.contains("Unit=gatevault-kong-prod.service"));
        let bad = UnitJob {
            name: "a/b".into(),
            ..job
        };
        assert!(units(&[bad]).unwrap_err().to_string().contains("unit name"));
    }
}
