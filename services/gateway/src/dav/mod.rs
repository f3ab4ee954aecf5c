//! The CalDAV server (RFC 4791, with RFC 6578 sync) on the public port:
//! `/.well-known/caldav` and the tree under `/dav/`.
//!
//! ```text
//! /dav/                                  root (current-user-principal)
//! /dav/principals/{username}/            the person (calendar-home-set)
//! /dav/calendars/{username}/             their calendars
//! /dav/calendars/{username}/personal/    their own events
//! /dav/calendars/{username}/{group_id}/  a group's events (read-only)
//! /dav/calendars/{username}/{cal}/{name}.ics   one event
//! ```
//!
//! Clients authenticate with HTTP Basic and an app password. This module
//! only speaks WebDAV: every read and write is an [`Op::Dav`] to the users
//! service, where the same store and rules as the JSON API apply.
//!
//! Layout: [`xml`] parses request bodies and writes multistatus answers.

pub mod xml;

use std::sync::Arc;

use agenda_calendar::api::{DavOp, Op};
use agenda_calendar::ApiError;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::Value;

use crate::error::HttpError;
use crate::extract::Caller;
use crate::AppState;
use xml::{Multistatus, Prop, PropStat, APPLE, CALDAV, CS, DAV};

/// Characters escaped in a resource name inside an href.
const NAME: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The CalDAV routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", any(site_root))
        .route("/.well-known/caldav", any(well_known))
        .route("/dav", any(serve))
        .route("/dav/", any(serve))
        .route("/dav/{*path}", any(serve))
}

/// The site's root: WebDAV methods are the CalDAV root (clients given
/// just the host start there), the rest the web app.
async fn site_root(State(state): State<Arc<AppState>>, req: Request) -> Response {
    if matches!(req.method().as_str(), "PROPFIND" | "OPTIONS" | "REPORT") {
        return serve(State(state), req).await;
    }
    crate::web::fallback(state.web_dir.as_deref(), req).await
}

/// Discovery (RFC 6764): the tree starts at `/dav/`.
async fn well_known() -> Response {
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/dav/")]).into_response()
}

/// The person a request is from.
struct Me {
    caller: Caller,
    username: String,
    email: String,
}

/// Which resource a path names.
enum Target {
    Root,
    Principal(String),
    Home(String),
    Calendar(String, String),
    Object(String, String, String),
}

fn target(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/dav").unwrap_or(path);
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    Some(match s.as_slice() {
        [] => Target::Root,
        ["principals", u] => Target::Principal(u.to_string()),
        ["calendars", u] => Target::Home(u.to_string()),
        ["calendars", u, c] => Target::Calendar(u.to_string(), c.to_string()),
        ["calendars", u, c, n] => Target::Object(u.to_string(), c.to_string(), n.to_string()),
        _ => return None,
    })
}

fn principal_href(u: &str) -> String {
    format!("/dav/principals/{}/", utf8_percent_encode(u, NAME))
}
fn home_href(u: &str) -> String {
    format!("/dav/calendars/{}/", utf8_percent_encode(u, NAME))
}
fn calendar_href(u: &str, c: &str) -> String {
    format!("{}{}/", home_href(u), utf8_percent_encode(c, NAME))
}
fn object_href(u: &str, c: &str, n: &str) -> String {
    format!("{}{}", calendar_href(u, c), utf8_percent_encode(n, NAME))
}

/// The last segment of an href, decoded.
fn href_name(href: &str) -> String {
    let path = href
        .split_once("://")
        .map_or(href, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    percent_decode_str(last).decode_utf8_lossy().into_owned()
}

const ALLOW: &str = "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, REPORT";

fn options() -> Response {
    (
        StatusCode::OK,
        [("DAV", "1, 3, calendar-access"), ("Allow", ALLOW)],
    )
        .into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut resp = HttpError(ApiError::unauthenticated(message.to_string())).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Agenda CalDAV\", charset=\"UTF-8\""),
    );
    resp
}

/// The person whose app password the request carries (HTTP Basic).
async fn authenticate(
    state: &Arc<AppState>,
    parts: &axum::http::request::Parts,
) -> Result<Me, Response> {
    let Some(value) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return Err(unauthorized(
            "CalDAV needs HTTP Basic with your username and an app password",
        ));
    };
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(|| unauthorized("use HTTP Basic with an app password"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unauthorized("malformed HTTP Basic credentials"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized("malformed HTTP Basic credentials"))?;
    let public = Caller::public(state.clone(), parts);
    let (status, body) = public
        .call_json(Op::CheckAppPassword {
            username: username.to_string(),
            password: password.to_string(),
        })
        .await
        .map_err(|e| HttpError(e).into_response())?;
    if status == 401 {
        return Err(unauthorized("unknown user or wrong app password"));
    }
    if status != 200 {
        return Err(relayed(status, body));
    }
    let user = body["user_id"]
        .as_str()
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
        .ok_or_else(|| HttpError(ApiError::internal("a check answered no user")).into_response())?;
    Ok(Me {
        caller: public.as_user(user),
        username: body["username"].as_str().unwrap_or_default().to_string(),
        email: body["email"].as_str().unwrap_or_default().to_string(),
    })
}

/// A service's error answer as sent (JSON error shape).
fn relayed(status: u16, body: Value) -> Response {
    crate::error::value_response(status, &body)
}

/// Calls a CalDAV operation; a refusal becomes the answer.
async fn call(me: &Me, op: DavOp) -> Result<Value, Response> {
    let (status, body) = me
        .caller
        .call_json(Op::Dav(op))
        .await
        .map_err(|e| HttpError(e).into_response())?;
    if status < 300 {
        return Ok(body);
    }
    if status == 403 && body["error"]["details"]["dav"] == "valid-sync-token" {
        return Err(xml_response(
            StatusCode::FORBIDDEN,
            xml::error("d", "valid-sync-token"),
        ));
    }
    Err(relayed(status, body))
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn multistatus(body: String) -> Response {
    xml_response(StatusCode::MULTI_STATUS, body)
}

/// Every WebDAV request under `/dav/`.
async fn serve(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if parts.method == Method::OPTIONS {
        return options();
    }
    let body = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return HttpError(ApiError::payload_too_large("the body is too large")).into_response()
        }
    };
    let me = match authenticate(&state, &parts).await {
        Ok(me) => me,
        Err(resp) => return resp,
    };
    let Some(target) = target(parts.uri.path()) else {
        return HttpError(ApiError::not_found("resource")).into_response();
    };
    let owner = match &target {
        Target::Root => None,
        Target::Principal(u)
        | Target::Home(u)
        | Target::Calendar(u, _)
        | Target::Object(u, _, _) => Some(u.clone()),
    };
    if owner.is_some_and(|u| !u.eq_ignore_ascii_case(&me.username)) {
        // Other people's trees are not shared over CalDAV.
        return HttpError(ApiError::not_found("resource")).into_response();
    }
    let depth = parts
        .headers
        .get("depth")
        .and_then(|d| d.to_str().ok())
        .map_or(1, |d| if d.trim() == "0" { 0 } else { 1 });
    let result = match (parts.method.as_str(), target) {
        ("PROPFIND", t) => propfind(&me, t, depth, &body).await,
        ("REPORT", Target::Calendar(_, c)) => report(&me, &c, &body).await,
        ("GET" | "HEAD", Target::Object(_, c, n)) => get(&me, &c, &n).await,
        ("PUT", Target::Object(_, c, n)) => put(&me, &c, &n, &parts.headers, body).await,
        ("DELETE", Target::Object(_, c, n)) => delete(&me, &c, &n, &parts.headers).await,
        ("GET" | "HEAD", _) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Agenda CalDAV: point a calendar app at this server's /dav/ with your username and an app password.\n",
        )
            .into_response()),
        _ => Err(HttpError(ApiError::method_not_allowed()).into_response()),
    };
    result.unwrap_or_else(|r| r)
}

/// The properties of a collection above the calendars.
fn tree_props(me: &Me, kind: &Target, asked: &[Prop]) -> PropStat {
    let u = &me.username;
    let mut known: Vec<(&str, &str, String)> = vec![
        (
            DAV,
            "current-user-principal",
            format!("<d:current-user-principal><d:href>{}</d:href></d:current-user-principal>", principal_href(u)),
        ),
        (
            CALDAV,
            "calendar-home-set",
            format!("<c:calendar-home-set><d:href>{}</d:href></c:calendar-home-set>", home_href(u)),
        ),
        (
            DAV,
            "principal-URL",
            format!("<d:principal-URL><d:href>{}</d:href></d:principal-URL>", principal_href(u)),
        ),
        (DAV, "displayname", format!("<d:displayname>{}</d:displayname>", xml::escape(u))),
        (
            DAV,
            "current-user-privilege-set",
            "<d:current-user-privilege-set><d:privilege><d:read/></d:privilege></d:current-user-privilege-set>".into(),
        ),
    ];
    let rt = match kind {
        Target::Principal(_) => "<d:resourcetype><d:collection/><d:principal/></d:resourcetype>",
        _ => "<d:resourcetype><d:collection/></d:resourcetype>",
    };
    known.push((DAV, "resourcetype", rt.into()));
    if matches!(kind, Target::Principal(_)) {
        known.push((
            CALDAV,
            "calendar-user-address-set",
            // How clients tell which ATTENDEE is this person: their email
            // (as their own calendar shows it) and their address here.
            format!(
                "<c:calendar-user-address-set><d:href>mailto:{}</d:href><d:href>mailto:{}</d:href><d:href>{}</d:href></c:calendar-user-address-set>",
                xml::escape(&me.email),
                xml::escape(&agenda_calendar::ical::address_of(u)),
                principal_href(u)
            ),
        ));
    }
    let known = known
        .into_iter()
        .map(|(ns, name, xml)| (ns, name, Some(xml)))
        .collect();
    PropStat::select(known, asked, &[])
}

/// The properties of one calendar (`c`: an item of `DavOp::Calendars`).
fn calendar_props(c: &Value, asked: &[Prop]) -> PropStat {
    let writable = c["writable"].as_bool().unwrap_or(false);
    let token = c["token"].as_str().unwrap_or_default();
    let privileges = if writable {
        "<d:privilege><d:read/></d:privilege><d:privilege><d:write/></d:privilege><d:privilege><d:write-content/></d:privilege><d:privilege><d:bind/></d:privilege><d:privilege><d:unbind/></d:privilege>"
    } else {
        "<d:privilege><d:read/></d:privilege>"
    };
    let known: Vec<(&str, &str, String)> = vec![
        (DAV, "resourcetype", "<d:resourcetype><d:collection/><c:calendar/></d:resourcetype>".into()),
        (DAV, "displayname", format!("<d:displayname>{}</d:displayname>", xml::escape(c["name"].as_str().unwrap_or_default()))),
        (CALDAV, "supported-calendar-component-set", "<c:supported-calendar-component-set><c:comp name=\"VEVENT\"/></c:supported-calendar-component-set>".into()),
        (CS, "getctag", format!("<cs:getctag>{}</cs:getctag>", xml::escape(token))),
        (DAV, "sync-token", format!("<d:sync-token>{}</d:sync-token>", xml::escape(token))),
        (DAV, "current-user-privilege-set", format!("<d:current-user-privilege-set>{privileges}</d:current-user-privilege-set>")),
        (DAV, "supported-report-set", "<d:supported-report-set><d:supported-report><d:report><c:calendar-query/></d:report></d:supported-report><d:supported-report><d:report><c:calendar-multiget/></d:report></d:supported-report><d:supported-report><d:report><d:sync-collection/></d:report></d:supported-report><d:supported-report><d:report><c:free-busy-query/></d:report></d:supported-report></d:supported-report-set>".into()),
        (APPLE, "calendar-color", format!("<a:calendar-color>{}</a:calendar-color>", if writable { "#2f6fdbff" } else { "#3a9a5bff" })),
        (CALDAV, "calendar-description", format!("<c:calendar-description>{}</c:calendar-description>", if writable { "Your Agenda events" } else { "A group's events (read-only here)" })),
    ];
    let known = known
        .into_iter()
        .map(|(ns, name, xml)| (ns, name, Some(xml)))
        .collect();
    PropStat::select(known, asked, &[])
}

/// The properties of one event resource (`r`: a `Resource`).
fn object_props(r: &Value, asked: &[Prop]) -> PropStat {
    let known: Vec<(&str, &str, Option<String>)> = vec![
        (DAV, "getetag", Some(format!("<d:getetag>{}</d:getetag>", xml::escape(r["etag"].as_str().unwrap_or_default())))),
        (DAV, "getcontenttype", Some("<d:getcontenttype>text/calendar; charset=utf-8; component=vevent</d:getcontenttype>".into())),
        (DAV, "resourcetype", Some("<d:resourcetype/>".into())),
        (
            CALDAV,
            "calendar-data",
            r["ics"].as_str().map(|ics| format!("<c:calendar-data>{}</c:calendar-data>", xml::escape(ics))),
        ),
    ];
    // calendar-data only when asked: it is the whole event.
    PropStat::select(known, asked, &["calendar-data"])
}

fn wants_data(asked: &[Prop]) -> bool {
    asked.iter().any(|p| p.is(CALDAV, "calendar-data"))
}

fn bad_xml(e: String) -> Response {
    HttpError(ApiError::bad_request(e)).into_response()
}

async fn calendars(me: &Me) -> Result<Vec<Value>, Response> {
    let v = call(me, DavOp::Calendars).await?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

async fn propfind(me: &Me, t: Target, depth: u8, body: &Bytes) -> Result<Response, Response> {
    let asked = xml::parse(body).map_err(bad_xml)?.props;
    let u = me.username.clone();
    let mut ms = Multistatus::new();
    match t {
        Target::Root => ms.response("/dav/", tree_props(me, &Target::Root, &asked)),
        Target::Principal(_) => ms.response(
            &principal_href(&u),
            tree_props(me, &Target::Principal(u.clone()), &asked),
        ),
        Target::Home(_) => {
            ms.response(
                &home_href(&u),
                tree_props(me, &Target::Home(u.clone()), &asked),
            );
            if depth > 0 {
                for c in calendars(me).await? {
                    let id = c["id"].as_str().unwrap_or_default();
                    ms.response(&calendar_href(&u, id), calendar_props(&c, &asked));
                }
            }
        }
        Target::Calendar(_, cal) => {
            let all = calendars(me).await?;
            let c = all
                .iter()
                .find(|c| c["id"] == cal.as_str())
                .ok_or_else(|| HttpError(ApiError::not_found("calendar")).into_response())?;
            ms.response(&calendar_href(&u, &cal), calendar_props(c, &asked));
            if depth > 0 {
                let v = call(
                    me,
                    DavOp::Sync {
                        calendar: cal.clone(),
                        token: None,
                        data: wants_data(&asked),
                    },
                )
                .await?;
                for r in v["changed"].as_array().into_iter().flatten() {
                    let name = r["name"].as_str().unwrap_or_default();
                    ms.response(&object_href(&u, &cal, name), object_props(r, &asked));
                }
            }
        }
        Target::Object(_, cal, name) => {
            let r = one(me, &cal, &name, wants_data(&asked)).await?;
            ms.response(&object_href(&u, &cal, &name), object_props(&r, &asked));
        }
    }
    Ok(multistatus(ms.finish(None)))
}

/// One resource by name (404 when missing).
async fn one(me: &Me, cal: &str, name: &str, _data: bool) -> Result<Value, Response> {
    let v = call(
        me,
        DavOp::Get {
            calendar: cal.to_string(),
            names: vec![name.to_string()],
        },
    )
    .await?;
    v["items"]
        .as_array()
        .and_then(|a| a.first().cloned())
        .ok_or_else(|| HttpError(ApiError::not_found("resource")).into_response())
}

/// `20300101T000000Z` as RFC 3339.
fn caldav_time(t: &str) -> Option<String> {
    chrono::NaiveDateTime::parse_from_str(t.trim(), "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|n| n.and_utc().to_rfc3339())
}

async fn report(me: &Me, cal: &str, body: &Bytes) -> Result<Response, Response> {
    let b = xml::parse(body).map_err(bad_xml)?;
    let u = me.username.clone();
    let mut ms = Multistatus::new();
    let mut token = None;
    match b.root.as_str() {
        "calendar-multiget" => {
            let names: Vec<String> = b.hrefs.iter().map(|h| href_name(h)).collect();
            let v = call(
                me,
                DavOp::Get {
                    calendar: cal.to_string(),
                    names: names.clone(),
                },
            )
            .await?;
            let found: std::collections::HashMap<&str, &Value> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| Some((r["name"].as_str()?, r)))
                .collect();
            for (href, name) in b.hrefs.iter().zip(&names) {
                match found.get(name.as_str()) {
                    Some(r) => ms.response(href, object_props(r, &b.props)),
                    None => ms.gone(href),
                }
            }
        }
        "calendar-query" => {
            let (from, to) = b.time_range.clone().unwrap_or((None, None));
            let v = call(
                me,
                DavOp::Query {
                    calendar: cal.to_string(),
                    from: from.as_deref().and_then(caldav_time),
                    to: to.as_deref().and_then(caldav_time),
                },
            )
            .await?;
            for r in v["items"].as_array().into_iter().flatten() {
                let name = r["name"].as_str().unwrap_or_default();
                ms.response(&object_href(&u, cal, name), object_props(r, &b.props));
            }
        }
        "sync-collection" => {
            let v = call(
                me,
                DavOp::Sync {
                    calendar: cal.to_string(),
                    token: b.sync_token.clone().filter(|t| !t.is_empty()),
                    data: wants_data(&b.props),
                },
            )
            .await?;
            for r in v["changed"].as_array().into_iter().flatten() {
                let name = r["name"].as_str().unwrap_or_default();
                ms.response(&object_href(&u, cal, name), object_props(r, &b.props));
            }
            for n in v["removed"].as_array().into_iter().flatten() {
                ms.gone(&object_href(&u, cal, n.as_str().unwrap_or_default()));
            }
            token = v["token"].as_str().map(str::to_string);
        }
        "free-busy-query" => return free_busy(me, &b).await,
        other => {
            return Err(HttpError(ApiError::bad_request(format!(
                "REPORT {other:?} is not supported (calendar-query, calendar-multiget, sync-collection, free-busy-query are)"
            )))
            .into_response())
        }
    }
    Ok(multistatus(ms.finish(token.as_deref())))
}

/// RFC 4791 7.10: the caller's busy time as a VFREEBUSY.
async fn free_busy(me: &Me, b: &xml::Body) -> Result<Response, Response> {
    let (from, to) = b.time_range.clone().unwrap_or((None, None));
    let (Some(from), Some(to)) = (
        from.as_deref().and_then(caldav_time),
        to.as_deref().and_then(caldav_time),
    ) else {
        return Err(HttpError(ApiError::bad_request(
            "free-busy-query needs a time-range with start and end",
        ))
        .into_response());
    };
    let (status, body) = me
        .caller
        .call_json(Op::FreeBusy {
            users: me.username.clone(),
            window: agenda_calendar::api::Window {
                from: Some(from.clone()),
                to: Some(to.clone()),
            },
        })
        .await
        .map_err(|e| HttpError(e).into_response())?;
    if status >= 300 {
        return Err(relayed(status, body));
    }
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.to_utc())
    };
    let busy: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = body["users"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| Some((parse(i["start"].as_str()?)?, parse(i["end"].as_str()?)?)))
        .collect();
    let (Some(from), Some(to)) = (parse(&from), parse(&to)) else {
        return Err(HttpError(ApiError::bad_request("bad time-range")).into_response());
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/calendar; charset=utf-8")],
        agenda_calendar::ical::free_busy(from, to, &busy),
    )
        .into_response())
}

async fn get(me: &Me, cal: &str, name: &str) -> Result<Response, Response> {
    let r = one(me, cal, name, true).await?;
    let etag = r["etag"].as_str().unwrap_or_default().to_string();
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "text/calendar; charset=utf-8".to_string(),
            ),
            (header::ETAG, etag),
        ],
        r["ics"].as_str().unwrap_or_default().to_string(),
    )
        .into_response())
}

fn header_text(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn put(
    me: &Me,
    cal: &str,
    name: &str,
    h: &HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let ics = String::from_utf8(body.to_vec())
        .map_err(|_| HttpError(ApiError::bad_request("the body is not UTF-8")).into_response())?;
    let if_none_match = header_text(h, header::IF_NONE_MATCH).is_some_and(|v| v.trim() == "*");
    let v = call(
        me,
        DavOp::Put {
            calendar: cal.to_string(),
            name: name.to_string(),
            ics,
            if_match: header_text(h, header::IF_MATCH),
            if_none_match,
        },
    )
    .await?;
    let status = if v["created"].as_bool() == Some(true) {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    let mut resp = status.into_response();
    // RFC 4791 5.3.4: an ETag only when what is stored is what was sent
    // (here: every property and alarm kept, in Agenda's rendering; a
    // client that gets none reads the event back). Sync clients rely on
    // it: without one, vdirsyncer takes its own upload for a change on
    // the server and brings back an item deleted locally meanwhile.
    // The store sends an ETag only then.
    if let Some(Ok(tag)) = v["etag"].as_str().map(HeaderValue::from_str) {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    Ok(resp)
}

async fn delete(me: &Me, cal: &str, name: &str, h: &HeaderMap) -> Result<Response, Response> {
    call(
        me,
        DavOp::Delete {
            calendar: cal.to_string(),
            name: name.to_string(),
            if_match: header_text(h, header::IF_MATCH),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_resources() {
        assert!(matches!(target("/dav/"), Some(Target::Root)));
        assert!(matches!(target("/dav/principals/ana/"), Some(Target::Principal(u)) if u == "ana"));
        assert!(
            matches!(target("/dav/calendars/ana/personal"), Some(Target::Calendar(_, c)) if c == "personal")
        );
        assert!(
            matches!(target("/dav/calendars/ana/personal/a%40b.ics"), Some(Target::Object(_, _, n)) if n == "a@b.ics")
        );
        assert!(target("/dav/calendars/ana/x/y/z").is_none());
        assert_eq!(
            href_name("https://h:8443/dav/calendars/ana/personal/x%20y.ics"),
            "x y.ics"
        );
        assert_eq!(href_name("/dav/calendars/ana/personal/1.ics"), "1.ics");
        assert_eq!(
            object_href("ana", "personal", "a b/c.ics"),
            "/dav/calendars/ana/personal/a%20b%2Fc.ics"
        );
        assert_eq!(
            caldav_time("20300101T090000Z").as_deref(),
            Some("2030-01-01T09:00:00+00:00")
        );
    }
}
