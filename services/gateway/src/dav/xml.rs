//! WebDAV XML: what a PROPFIND or REPORT body asks (parsed with
//! quick-xml, by namespace) and the multistatus answers.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

pub const DAV: &str = "DAV:";
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
pub const CS: &str = "http://calendarserver.org/ns/";
pub const APPLE: &str = "http://apple.com/ns/ical/";

/// A property name: namespace and local name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop {
    pub ns: String,
    pub name: String,
}

impl Prop {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }
}

/// What a request body asks.
#[derive(Debug, Default)]
pub struct Body {
    /// The root element's local name (`propfind`, `calendar-query`...).
    pub root: String,
    /// Properties asked under `<prop>` (empty: all of them).
    pub props: Vec<Prop>,
    /// `<href>`s (a multiget).
    pub hrefs: Vec<String>,
    /// `<sync-token>` text.
    pub sync_token: Option<String>,
    /// The `<time-range>`'s start and end (iCalendar UTC times).
    pub time_range: Option<(Option<String>, Option<String>)>,
}

/// Parses a WebDAV request body; an empty one asks for everything.
pub fn parse(body: &[u8]) -> Result<Body, String> {
    let mut out = Body::default();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(out);
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<(String, String)> = Vec::new();
    loop {
        let (ns, ev) = reader
            .read_resolved_event()
            .map_err(|e| format!("malformed XML: {e}"))?;
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            _ => String::new(),
        };
        match ev {
            Event::Start(e) => {
                let name = element(&mut out, &stack, &ns, &e);
                stack.push((ns, name));
            }
            Event::Empty(e) => {
                element(&mut out, &stack, &ns, &e);
            }
            Event::Text(t) => {
                let value = t.decode().map(|v| v.trim().to_string()).unwrap_or_default();
                match stack.last().map(|(_, n)| n.as_str()) {
                    Some("href") => out.hrefs.push(value),
                    Some("sync-token") => out.sync_token = Some(value),
                    _ => {}
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Takes what `e` (in namespace `ns`, under `stack`) says into `out`;
/// answers its local name.
fn element(
    out: &mut Body,
    stack: &[(String, String)],
    ns: &str,
    e: &quick_xml::events::BytesStart,
) -> String {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    if out.root.is_empty() {
        out.root = name.clone();
    }
    if stack.last().map(|(_, n)| n.as_str()) == Some("prop") {
        out.props.push(Prop {
            ns: ns.to_string(),
            name: name.clone(),
        });
    }
    if name == "time-range" {
        let mut start = None;
        let mut end = None;
        for a in e.attributes().flatten() {
            let v = a
                .unescape_value()
                .map(|v| v.into_owned())
                .unwrap_or_default();
            match a.key.local_name().as_ref() {
                b"start" => start = Some(v),
                b"end" => end = Some(v),
                _ => {}
            }
        }
        out.time_range = Some((start, end));
    }
    name
}

/// Escapes text for XML content or attribute values.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// A multistatus answer being written.
pub struct Multistatus {
    out: String,
}

/// One `<response>`'s properties: those found (as XML) and those not.
#[derive(Default)]
pub struct PropStat {
    pub found: Vec<String>,
    pub missing: Vec<Prop>,
}

impl PropStat {
    /// The `known` properties (namespace, name, XML; None: it has none)
    /// a request `asked` for, or all of them when it named none but those
    /// in `only_when_asked`; and those asked for that are not known.
    pub fn select(
        known: Vec<(&str, &str, Option<String>)>,
        asked: &[Prop],
        only_when_asked: &[&str],
    ) -> PropStat {
        let mut out = PropStat::default();
        for (ns, name, xml) in &known {
            let named = asked.iter().any(|p| p.is(ns, name));
            let by_default = asked.is_empty() && !only_when_asked.contains(name);
            if let (true, Some(x)) = (named || by_default, xml) {
                out.found.push(x.clone());
            }
        }
        out.missing = asked
            .iter()
            .filter(|p| !known.iter().any(|(ns, n, _)| p.is(ns, n)))
            .cloned()
            .collect();
        out
    }
}

impl Default for Multistatus {
    fn default() -> Self {
        Self::new()
    }
}

impl Multistatus {
    pub fn new() -> Self {
        Multistatus {
            out: format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:multistatus xmlns:d=\"{DAV}\" xmlns:c=\"{CALDAV}\" xmlns:cs=\"{CS}\" xmlns:a=\"{APPLE}\">"
            ),
        }
    }

    /// A resource and its properties.
    pub fn response(&mut self, href: &str, p: PropStat) {
        self.out
            .push_str(&format!("<d:response><d:href>{}</d:href>", escape(href)));
        if !p.found.is_empty() || p.missing.is_empty() {
            self.out.push_str("<d:propstat><d:prop>");
            for f in &p.found {
                self.out.push_str(f);
            }
            self.out
                .push_str("</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>");
        }
        if !p.missing.is_empty() {
            self.out.push_str("<d:propstat><d:prop>");
            for m in &p.missing {
                self.out
                    .push_str(&format!("<x:{} xmlns:x=\"{}\"/>", m.name, escape(&m.ns)));
            }
            self.out
                .push_str("</d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>");
        }
        self.out.push_str("</d:response>");
    }

    /// A resource that is gone (sync-collection) or not found (multiget).
    pub fn gone(&mut self, href: &str) {
        self.out.push_str(&format!(
            "<d:response><d:href>{}</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>",
            escape(href)
        ));
    }

    /// Ends it, with a sync token when given.
    pub fn finish(mut self, sync_token: Option<&str>) -> String {
        if let Some(t) = sync_token {
            self.out
                .push_str(&format!("<d:sync-token>{}</d:sync-token>", escape(t)));
        }
        self.out.push_str("</d:multistatus>");
        self.out
    }
}

/// An RFC 4918 error body naming a precondition (`d:valid-sync-token`).
pub fn error(ns_prefix: &str, condition: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error xmlns:d=\"{DAV}\" xmlns:c=\"{CALDAV}\"><{ns_prefix}:{condition}/></d:error>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_propfind_names_its_properties() {
        let b = parse(br#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:getetag/><cs:getctag/><d:resourcetype></d:resourcetype></d:prop></d:propfind>"#).unwrap();
        assert_eq!(b.root, "propfind");
        assert_eq!(b.props.len(), 3);
        assert!(b.props[0].is(DAV, "getetag"));
        assert!(b.props[1].is(CS, "getctag"));
        assert!(b.props[2].is(DAV, "resourcetype"));
    }

    #[test]
    fn reports_give_hrefs_tokens_and_ranges() {
        let b = parse(br#"<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><D:href>/dav/calendars/ana/personal/a%40b.ics</D:href><D:href>/x/2.ics</D:href></C:calendar-multiget>"#).unwrap();
        assert_eq!(b.root, "calendar-multiget");
        assert_eq!(
            b.hrefs,
            ["/dav/calendars/ana/personal/a%40b.ics", "/x/2.ics"]
        );
        assert!(b.props[1].is(CALDAV, "calendar-data"));
        let b = parse(br#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>urn:agenda:sync:12</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#).unwrap();
        assert_eq!(b.sync_token.as_deref(), Some("urn:agenda:sync:12"));
        let b = parse(br#"<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/></d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"><c:time-range start="20300101T000000Z" end="20300201T000000Z"/></c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"#).unwrap();
        assert_eq!(
            b.time_range,
            Some((
                Some("20300101T000000Z".into()),
                Some("20300201T000000Z".into())
            ))
        );
        assert_eq!(b.props.len(), 1);
        assert!(parse(b"<a><b></a>").is_err());
        assert_eq!(parse(b"").unwrap().root, "");
    }
}
