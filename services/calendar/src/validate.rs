//! Field rules of docs/API.md, each failure a 422 naming the field.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::model::{AddMe, AttendeeStatus, GroupKind, Visibility};

/// Longest event (a single occurrence).
pub const MAX_EVENT_LENGTH: Duration = Duration::days(31);
/// Longest query window.
pub const MAX_WINDOW: Duration = Duration::days(366);

/// Trims and checks a text field's length in characters.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> ApiResult<String> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min {
        return Err(ApiError::invalid_field(
            field,
            if min == 1 {
                format!("{field} must not be empty")
            } else {
                format!("{field} must be at least {min} characters")
            },
        ));
    }
    if n > max {
        return Err(ApiError::invalid_field(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(v.to_string())
}

/// 3..=32 of `[A-Za-z0-9_.-]`.
pub fn username(value: &str) -> ApiResult<String> {
    let v = text("username", value, 3, 32)?;
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(ApiError::invalid_field(
            "username",
            "username may only contain letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(v)
}

/// One `@` with something on both sides.
pub fn email(value: &str) -> ApiResult<String> {
    let v = text("email", value, 3, 254)?;
    let mut parts = v.split('@');
    let ok = matches!((parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() && !v.contains(' '));
    if !ok {
        return Err(ApiError::invalid_field(
            "email",
            "email must look like name@example.org",
        ));
    }
    Ok(v)
}

/// 8..=128 characters, not one of the common passwords every attacker
/// tries first (`common-passwords.txt`); not trimmed.
pub fn password(value: &str) -> ApiResult<String> {
    let n = value.chars().count();
    if !(8..=128).contains(&n) {
        return Err(ApiError::invalid_field(
            "password",
            "password must be 8 to 128 characters",
        ));
    }
    if is_common_password(value) {
        return Err(ApiError::invalid_field(
            "password",
            "this password is one of the most common ones, tried first by anyone guessing; choose another",
        ));
    }
    Ok(value.to_string())
}

fn is_common_password(value: &str) -> bool {
    static COMMON: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    COMMON
        .get_or_init(|| {
            include_str!("common-passwords.txt")
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .collect()
        })
        .contains(value.to_lowercase().as_str())
}

/// An IANA time zone name.
pub fn time_zone(field: &str, value: &str) -> ApiResult<chrono_tz::Tz> {
    value.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        ApiError::invalid_field(
            field,
            format!("unknown time zone {value:?}; use an IANA name such as Europe/Madrid"),
        )
    })
}

/// An event's id in a path, or the id of one occurrence of a series
/// (`{id}_{YYYYMMDDTHHMMSSZ}`, the start its rule gives it, in UTC):
/// the event and the occurrence's start. Anything else is 404.
pub fn event_ref(value: &str) -> ApiResult<(Uuid, Option<DateTime<Utc>>)> {
    let (id, occurrence) = match value.split_once('_') {
        Some((id, stamp)) => {
            let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
                .map_err(|_| ApiError::not_found("event"))?;
            (id, Some(t.and_utc()))
        }
        None => (value, None),
    };
    Ok((self::id("event", id)?, occurrence))
}

/// The `scope` of a change or deletion of one occurrence: false for
/// `this` (the default), true for `following` (it and every one after).
pub fn scope(value: Option<&str>) -> ApiResult<bool> {
    match value.map(str::trim) {
        None | Some("this") => Ok(false),
        Some("following") => Ok(true),
        Some(_) => Err(ApiError::invalid_field(
            "scope",
            "scope is this (the occurrence) or following (it and every one after)",
        )),
    }
}

/// A calendar date, `YYYY-MM-DD`.
pub fn date(field: &str, value: &str) -> ApiResult<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d")
        .ok()
        .filter(|d| (1..=9999).contains(&chrono::Datelike::year(d)))
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!("{field} must be a date such as 2026-03-01 (an all-day event)"),
            )
        })
}

/// An RFC 3339 instant.
pub fn instant(field: &str, value: &str) -> ApiResult<DateTime<Utc>> {
    use chrono::Datelike;
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .ok()
        // In UTC it must still be a year RFC 3339 can write (0000-9999),
        // or the API could not read back what it answers.
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!("{field} must be an RFC 3339 time such as 2026-03-01T09:00:00+01:00"),
            )
        })
}

/// Start and end of one event occurrence.
pub fn span(start: DateTime<Utc>, end: DateTime<Utc>) -> ApiResult<()> {
    if end <= start {
        return Err(ApiError::invalid_field("end", "end must be after start"));
    }
    if end - start > MAX_EVENT_LENGTH {
        return Err(ApiError::invalid_field(
            "end",
            "an event may last at most 31 days (use rrule to repeat it)",
        ));
    }
    Ok(())
}

/// A required query window.
pub fn window(from: Option<&str>, to: Option<&str>) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let from = from.ok_or_else(|| ApiError::invalid_field("from", "from is required"))?;
    let to = to.ok_or_else(|| ApiError::invalid_field("to", "to is required"))?;
    let (from, to) = (instant("from", from)?, instant("to", to)?);
    if to <= from {
        return Err(ApiError::invalid_field("to", "to must be after from"));
    }
    if to - from > MAX_WINDOW {
        return Err(ApiError::invalid_field(
            "to",
            "the window may span at most 366 days",
        ));
    }
    Ok((from, to))
}

/// `anyone` | `shared_group` | `nobody`.
pub fn add_me(value: &str) -> ApiResult<AddMe> {
    match value {
        "anyone" => Ok(AddMe::Anyone),
        "shared_group" => Ok(AddMe::SharedGroup),
        "nobody" => Ok(AddMe::Nobody),
        _ => Err(ApiError::invalid_field(
            "add_me",
            "add_me must be \"anyone\", \"shared_group\" or \"nobody\"",
        )),
    }
}

/// `hierarchical` | `flat`.
pub fn group_kind(value: &str) -> ApiResult<GroupKind> {
    match value {
        "hierarchical" => Ok(GroupKind::Hierarchical),
        "flat" => Ok(GroupKind::Flat),
        _ => Err(ApiError::invalid_field(
            "kind",
            "kind must be \"hierarchical\" or \"flat\"",
        )),
    }
}

/// `default` | `private`.
pub fn visibility(value: &str) -> ApiResult<Visibility> {
    match value {
        "default" => Ok(Visibility::Default),
        "private" => Ok(Visibility::Private),
        _ => Err(ApiError::invalid_field(
            "visibility",
            "visibility must be \"default\" or \"private\"",
        )),
    }
}

/// An RSVP answer.
pub fn rsvp(value: &str) -> ApiResult<AttendeeStatus> {
    match value {
        "accepted" => Ok(AttendeeStatus::Accepted),
        "declined" => Ok(AttendeeStatus::Declined),
        "tentative" => Ok(AttendeeStatus::Tentative),
        _ => Err(ApiError::invalid_field(
            "status",
            "status must be accepted, declined or tentative",
        )),
    }
}

/// `?on_conflict=`: true for reject.
pub fn on_conflict(value: Option<&str>) -> ApiResult<bool> {
    match value {
        None | Some("allow") => Ok(false),
        Some("reject") => Ok(true),
        Some(_) => Err(ApiError::invalid_field(
            "on_conflict",
            "on_conflict must be \"reject\" or \"allow\"",
        )),
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn idempotency_key(value: &[u8]) -> ApiResult<String> {
    let ok = (1..=255).contains(&value.len()) && value.iter().all(|b| b.is_ascii_graphic());
    match std::str::from_utf8(value) {
        Ok(key) if ok => Ok(key.to_string()),
        _ => Err(ApiError::bad_request(
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// A path id: anything that is not a UUID names nothing.
pub fn id(what: &str, value: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(value).map_err(|_| ApiError::not_found(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ApiError) -> String {
        assert_eq!(e.status, 422, "{e:?}");
        e.details["field"].as_str().unwrap().to_string()
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for p in [
            "password1",
            "Password1",
            "QWERTYUIOP",
            "iloveyou1",
            "12345678",
        ] {
            assert_eq!(field(password(p).unwrap_err()), "password", "{p}");
        }
        assert!(password("correct-horse-1").is_ok());
        assert_eq!(field(password("short").unwrap_err()), "password");
    }

    #[test]
    fn text_rules() {
        assert_eq!(text("title", "  hi ", 1, 5).unwrap(), "hi");
        assert_eq!(field(text("title", "   ", 1, 5).unwrap_err()), "title");
        assert_eq!(field(text("title", "abcdef", 1, 5).unwrap_err()), "title");
        assert!(text("title", "a\u{0}b", 1, 5).is_err());
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(idempotency_key(b"order-42").unwrap(), "order-42");
        assert!(idempotency_key(&[b'k'; 255]).is_ok());
        for bad in [
            &b""[..],
            &[b'k'; 256],
            b"two words",
            b"tab\t",
            "ñ".as_bytes(),
        ] {
            assert_eq!(idempotency_key(bad).unwrap_err().status, 400, "{bad:?}");
        }
    }

    #[test]
    fn account_fields() {
        assert!(username("alice_1.x").is_ok());
        assert!(username("al").is_err());
        assert!(username("al ice").is_err());
        assert!(email("a@b.org").is_ok());
        assert!(email("a@@b").is_err());
        assert!(email("nope").is_err());
        assert!(password("short").is_err());
        assert!(password("long enough").is_ok());
    }

    #[test]
    fn times_and_zones() {
        assert!(time_zone("time_zone", "Europe/Madrid").is_ok());
        assert_eq!(
            field(time_zone("time_zone", "Mars/Olympus").unwrap_err()),
            "time_zone"
        );
        let a = instant("start", "2026-03-01T09:00:00+01:00").unwrap();
        assert_eq!(a.to_rfc3339(), "2026-03-01T08:00:00+00:00");
        assert_eq!(field(instant("start", "yesterday").unwrap_err()), "start");
        assert_eq!(field(span(a, a).unwrap_err()), "end");
        assert!(span(a, a + Duration::days(40)).is_err());
        assert!(window(Some("2026-01-01T00:00:00Z"), None).is_err());
        assert!(window(Some("2026-01-01T00:00:00Z"), Some("2028-01-01T00:00:00Z")).is_err());
        assert!(window(Some("2026-01-01T00:00:00Z"), Some("2026-02-01T00:00:00Z")).is_ok());
    }

    #[test]
    fn ids_are_not_found_when_malformed() {
        assert_eq!(id("event", "../etc").unwrap_err().status, 404);
    }
}
