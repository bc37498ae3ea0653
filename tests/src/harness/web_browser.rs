//! A browser for login flows that cross sites (a node, an identity provider): it keeps cookies
//! per host and port, honouring `Path`, `Max-Age` and `Expires`, and follows redirects only
//! when asked, so a test can look at any step. It also knows the two pages of the test OpenID
//! provider ([`oidc_provider`](super::oidc_provider)): the login form and the sign-out
//! confirmation. Requests go through [`client::request`], one connection each.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Uri};

use super::client::{self, HttpResponse, encode};

/// More redirects than any login flow takes.
const MAX_REDIRECTS: usize = 20;

/// One stored cookie.
#[derive(Debug, Clone)]
struct Cookie {
    name: String,
    value: String,
    path: String,
    /// `None`: until the browser is dropped.
    expires: Option<SystemTime>,
}

/// Where a [`WebBrowser::follow`] ended.
#[derive(Debug)]
pub enum Followed {
    /// A redirect pointed at a URL the `stop` test chose; that URL was not requested.
    Stopped(String),
    /// A response that is not a redirect, and the URL that gave it.
    Arrived { url: String, response: HttpResponse },
}

impl Followed {
    /// The URL the walk stopped before; panics when it arrived somewhere instead.
    pub fn stopped_at(self) -> String {
        match self {
            Self::Stopped(url) => url,
            Self::Arrived { url, response } => panic!(
                "expected a redirect to stop at, arrived at {url} ({}): {}",
                response.status,
                response.text()
            ),
        }
    }

    /// The final URL and response; panics when the walk stopped at a redirect instead.
    pub fn arrived(self) -> (String, HttpResponse) {
        match self {
            Self::Arrived { url, response } => (url, response),
            Self::Stopped(url) => panic!("expected to arrive at a page, stopped before {url}"),
        }
    }
}

/// A browser with a cookie jar; each test makes its own, and a second browser shares nothing
/// with the first.
#[derive(Debug, Default)]
pub struct WebBrowser {
    /// `scheme://host:port` → the cookies that site set.
    jar: BTreeMap<String, Vec<Cookie>>,
}

impl WebBrowser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends one request with the cookies for `url`, stores the cookies the answer sets, and
    /// returns it; redirects are not followed.
    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> HttpResponse {
        let mut all = headers.to_vec();
        let cookies = self.cookie_header(url);
        if let Some(cookies) = &cookies {
            all.push(("cookie", cookies));
        }
        let response = client::request(method, url, &all, body).await;
        for header in response.set_cookies() {
            self.store(url, &header);
        }
        response
    }

    pub async fn get(&mut self, url: &str) -> HttpResponse {
        self.get_with(url, &[]).await
    }

    pub async fn get_with(&mut self, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    /// POSTs `fields` as `application/x-www-form-urlencoded`.
    pub async fn post_form(
        &mut self,
        url: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let mut all = headers.to_vec();
        all.push(("content-type", "application/x-www-form-urlencoded"));
        self.send(Method::POST, url, &all, form_body(fields)).await
    }

    /// GETs `url` and follows redirects (301, 302, 303, 307, 308) until an answer that is not
    /// one, or until a redirect points at a URL for which `stop` is true: that URL is returned
    /// without being requested.
    pub async fn follow(&mut self, url: &str, stop: impl Fn(&str) -> bool) -> Followed {
        self.walk(Method::GET, url, &[], Bytes::new(), stop).await
    }

    /// As [`follow`](Self::follow), starting with a form POST; a 301, 302 or 303 after it is
    /// followed with a GET, as browsers do.
    pub async fn post_form_and_follow(
        &mut self,
        url: &str,
        fields: &[(&str, &str)],
        stop: impl Fn(&str) -> bool,
    ) -> Followed {
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        self.walk(Method::POST, url, &headers, form_body(fields), stop)
            .await
    }

    async fn walk(
        &mut self,
        mut method: Method,
        url: &str,
        headers: &[(&str, &str)],
        mut body: Bytes,
        stop: impl Fn(&str) -> bool,
    ) -> Followed {
        let mut url = url.to_owned();
        let mut headers = headers.to_vec();
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .send(method.clone(), &url, &headers, body.clone())
                .await;
            let status = response.status.as_u16();
            let next = match (status, response.location()) {
                (301 | 302 | 303 | 307 | 308, Some(location)) => resolve(&url, location),
                _ => return Followed::Arrived { url, response },
            };
            if stop(&next) {
                return Followed::Stopped(next);
            }
            if matches!(status, 301..=303) && method != Method::HEAD {
                method = Method::GET;
                body = Bytes::new();
                headers.clear();
            }
            url = next;
        }
        panic!("more than {MAX_REDIRECTS} redirects, the last to {url}")
    }

    /// Signs in as `login` at the test OpenID provider: GETs `authorize_url` (the provider's
    /// authorization endpoint with a client's parameters), follows to the login page, submits
    /// the form and follows until a redirect leaves the provider. Returns that URL, the
    /// client's `redirect_uri` with `code` and `state`, or with `error` when the provider
    /// refused. A browser already signed in at the provider skips the login page.
    pub async fn login_at_provider(&mut self, authorize_url: &str, login: &str) -> String {
        let provider = site(authorize_url);
        let leaves = |url: &str| site(url) != provider;
        let (page_url, page) = match self.follow(authorize_url, leaves).await {
            Followed::Stopped(url) => return url,
            Followed::Arrived { url, response } => (url, response),
        };
        let html = page.text();
        assert_eq!(
            page.status, 200,
            "the provider's login page {page_url}: {html}"
        );
        let action = form_action(&html)
            .unwrap_or_else(|| panic!("no form on the provider's page {page_url}: {html}"));
        self.post_form_and_follow(&resolve(&page_url, &action), &[("login", login)], leaves)
            .await
            .stopped_at()
    }

    /// Ends the session at the test OpenID provider: GETs `end_session_url` (its end-session
    /// endpoint with the client's parameters), confirms the sign-out with the page's `xsrf`
    /// and `logout=yes`, and follows the redirects, stopping before one that leaves the
    /// provider (the client's `post_logout_redirect_uri`).
    pub async fn end_session_at_provider(&mut self, end_session_url: &str) -> Followed {
        let provider = site(end_session_url);
        let leaves = |url: &str| site(url) != provider;
        let (page_url, page) = self.follow(end_session_url, leaves).await.arrived();
        let html = page.text();
        assert_eq!(
            page.status, 200,
            "the provider's sign-out page {page_url}: {html}"
        );
        let action = form_action(&html)
            .unwrap_or_else(|| panic!("no form on the provider's page {page_url}: {html}"));
        let xsrf = input_value(&html, "xsrf")
            .unwrap_or_else(|| panic!("no xsrf input on the provider's page {page_url}: {html}"));
        self.post_form_and_follow(
            &resolve(&page_url, &action),
            &[("xsrf", &xsrf), ("logout", "yes")],
            leaves,
        )
        .await
    }

    /// The value of cookie `name` as it would be sent to `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.matching(url)
            .into_iter()
            .find(|cookie| cookie.name == name)
            .map(|cookie| cookie.value.clone())
    }

    /// `name=value` of cookie `name` for `url`, ready for a `Cookie` header.
    pub fn cookie_pair(&self, url: &str, name: &str) -> Option<String> {
        self.cookie(url, name)
            .map(|value| format!("{name}={value}"))
    }

    /// Forgets every cookie named `name` of `url`'s site, as a user deleting it would.
    pub fn forget(&mut self, url: &str, name: &str) {
        if let Some(cookies) = self.jar.get_mut(&site(url)) {
            cookies.retain(|cookie| cookie.name != name);
        }
    }

    /// The `Cookie` header for `url`: longer paths first, as browsers send them.
    pub fn cookie_header(&self, url: &str) -> Option<String> {
        let mut cookies = self.matching(url);
        if cookies.is_empty() {
            return None;
        }
        cookies.sort_by_key(|cookie| std::cmp::Reverse(cookie.path.len()));
        let pairs: Vec<String> = cookies
            .iter()
            .map(|cookie| format!("{}={}", cookie.name, cookie.value))
            .collect();
        Some(pairs.join("; "))
    }

    fn matching(&self, url: &str) -> Vec<&Cookie> {
        let path = path_of(url);
        let now = SystemTime::now();
        self.jar
            .get(&site(url))
            .map(|cookies| {
                cookies
                    .iter()
                    .filter(|cookie| cookie.expires.is_none_or(|at| at > now))
                    .filter(|cookie| path_matches(&cookie.path, &path))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stores (or, when it is expired, deletes) the cookie of one `Set-Cookie` header.
    fn store(&mut self, url: &str, header: &str) {
        let mut parts = header.split(';');
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return;
        }
        let mut path = None;
        let mut max_age = None;
        let mut expires = None;
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            let val = val.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "path" if val.starts_with('/') => path = Some(val.to_owned()),
                "max-age" => max_age = val.parse::<i64>().ok(),
                "expires" => expires = parse_http_date(val),
                _ => {}
            }
        }
        let now = SystemTime::now();
        // Max-Age wins over Expires (RFC 6265, 5.3).
        let expires = match max_age {
            Some(seconds) if seconds <= 0 => Some(UNIX_EPOCH),
            Some(seconds) => Some(now + Duration::from_secs(seconds.unsigned_abs())),
            None => expires,
        };
        let path = path.unwrap_or_else(|| default_path(&path_of(url)));
        let cookies = self.jar.entry(site(url)).or_default();
        cookies.retain(|cookie| !(cookie.name == name && cookie.path == path));
        if expires.is_none_or(|at| at > now) {
            cookies.push(Cookie {
                name: name.to_owned(),
                value: value.to_owned(),
                path,
                expires,
            });
        }
    }
}

fn form_body(fields: &[(&str, &str)]) -> Bytes {
    let pairs: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect();
    Bytes::from(pairs.join("&"))
}

fn parse_url(url: &str) -> Uri {
    url.parse()
        .unwrap_or_else(|error| panic!("not a URL ({error}): {url}"))
}

/// `scheme://host:port` of `url`, the port always written: the key of the cookie jar, and
/// what "the same site" means here.
pub fn site(url: &str) -> String {
    let uri = parse_url(url);
    let scheme = uri.scheme_str().unwrap_or("http");
    let default_port = if scheme == "https" { 443 } else { 80 };
    format!(
        "{scheme}://{}:{}",
        uri.host().unwrap_or_default(),
        uri.port_u16().unwrap_or(default_port)
    )
}

fn path_of(url: &str) -> String {
    let path = parse_url(url).path().to_owned();
    if path.is_empty() {
        "/".to_owned()
    } else {
        path
    }
}

/// RFC 6265, 5.1.4: the directory of the request path.
fn default_path(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(end) => path[..end].to_owned(),
    }
}

/// RFC 6265, 5.1.4: whether a cookie of `cookie_path` goes with a request for `path`.
fn path_matches(cookie_path: &str, path: &str) -> bool {
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || path[cookie_path.len()..].starts_with('/')))
}

/// The absolute URL `location` points to, seen from `base`: absolute, scheme-relative,
/// path-absolute, query-only or path-relative. Dot segments are kept (no flow here makes them).
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let uri = parse_url(base);
    let scheme = uri.scheme_str().unwrap_or("http");
    if location.starts_with("//") {
        return format!("{scheme}:{location}");
    }
    let origin = format!(
        "{scheme}://{}",
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = uri.path();
    if location.starts_with('?') {
        return format!("{origin}{path}{location}");
    }
    let directory = &path[..path.rfind('/').map_or(0, |end| end + 1)];
    format!("{origin}{directory}{location}")
}

/// An HTTP date in the IMF-fixdate form (`Thu, 01 Jan 1970 00:00:00 GMT`) or the obsolete
/// RFC 850 one (`Thursday, 01-Jan-70 00:00:00 GMT`); `None` for anything else, which a browser
/// ignores.
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let (_, rest) = text.split_once(',')?;
    let rest = rest.replace('-', " ");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, ..] = fields.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok()?;
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|name| month.eq_ignore_ascii_case(name))?;
    let mut year: i64 = year.parse().ok()?;
    if year < 100 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    let clock: Vec<u64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [hours, minutes, seconds] = clock.as_slice() else {
        return None;
    };
    let days = days_from_civil(year, u32::try_from(month).ok()? + 1, day);
    let seconds = days * 86_400 + i64::try_from(hours * 3600 + minutes * 60 + seconds).ok()?;
    Some(if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        UNIX_EPOCH
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The `action` of the first form in `html`.
pub fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let end = start + html[start..].find('>')?;
    attribute(&html[start..end], "action")
}

/// The `value` of the `<input>` named `name` in `html` (empty when it has none).
pub fn input_value(html: &str, name: &str) -> Option<String> {
    html.match_indices("<input").find_map(|(start, _)| {
        let end = start + html[start..].find('>')?;
        let tag = &html[start..end];
        (attribute(tag, "name")? == name).then(|| attribute(tag, "value").unwrap_or_default())
    })
}

/// A double-quoted attribute of one HTML tag, entities decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(unescape_html(&tag[start..end]))
}

fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').and_then(|end| {
            let entity = &rest[1..end];
            let character = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((character, end + 1))
        });
        match decoded {
            Some((character, length)) => {
                out.push(character);
                rest = &rest[length..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_http_date("soon"), None);
    }

    #[test]
    fn cookies_follow_path_and_expiry() {
        let mut browser = WebBrowser::new();
        let site = "http://127.0.0.1:8080";
        browser.store(&format!("{site}/app/x"), "a=1; Path=/; HttpOnly");
        browser.store(&format!("{site}/app/x"), "b=2; Path=/app");
        browser.store(&format!("{site}/app/x/y"), "c=3");
        assert_eq!(
            browser.cookie_header(&format!("{site}/app/x/z")).as_deref(),
            Some("c=3; b=2; a=1")
        );
        assert_eq!(
            browser.cookie_header(&format!("{site}/apple")).as_deref(),
            Some("a=1")
        );
        assert_eq!(browser.cookie_header("http://127.0.0.1:8081/"), None);
        browser.store(&format!("{site}/"), "a=; Path=/; Max-Age=0");
        browser.store(
            &format!("{site}/"),
            "b=; Path=/app; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        );
        assert_eq!(
            browser.cookie_header(&format!("{site}/app/x/z")).as_deref(),
            Some("c=3")
        );
    }

    #[test]
    fn locations_resolve_against_the_page() {
        let base = "http://127.0.0.1:1/a/b?q=1";
        assert_eq!(resolve(base, "http://x.test/y"), "http://x.test/y");
        assert_eq!(resolve(base, "//x.test/y"), "http://x.test/y");
        assert_eq!(resolve(base, "/c"), "http://127.0.0.1:1/c");
        assert_eq!(resolve(base, "?r=2"), "http://127.0.0.1:1/a/b?r=2");
        assert_eq!(resolve(base, "c"), "http://127.0.0.1:1/a/c");
    }

    #[test]
    fn forms_are_read() {
        let html = r#"<form id="op.logoutForm" method="post" action="/session/end/confirm?a=1&amp;b=2"><input type="hidden" name="xsrf" value="ab&#39;c"/></form>"#;
        assert_eq!(
            form_action(html).as_deref(),
            Some("/session/end/confirm?a=1&b=2")
        );
        assert_eq!(input_value(html, "xsrf").as_deref(), Some("ab'c"));
        assert_eq!(input_value(html, "logout"), None);
    }
}
