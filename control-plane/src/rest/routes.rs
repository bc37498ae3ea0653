//! Which endpoint a request names. QPS puts the virtual proxy after `/qps/` (`/qps/{prefix}/
//! ticket`), and the default proxy has an empty prefix (`/qps/ticket`), so a path is read as
//! both "prefix + endpoint" and "endpoint of the default proxy"; a configured non-empty prefix
//! wins where both fit (`/qps/user/session/x` with a proxy named `user`).

use http::Method;

/// An endpoint of the REST surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ticket {
        prefix: String,
    },
    CreateSession {
        prefix: String,
    },
    Session {
        prefix: String,
        id: String,
    },
    User {
        prefix: String,
        directory: String,
        user: String,
    },
    Error,
}

/// Why no endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    MethodNotAllowed(&'static str),
    BadEncoding,
}

/// `is_prefix` says whether a virtual proxy with that prefix is configured.
pub fn route(
    method: &Method,
    path: &str,
    is_prefix: impl Fn(&str) -> bool,
) -> Result<Route, NoRoute> {
    let rest = path.strip_prefix("/qps/").ok_or(NoRoute::NotFound)?;
    // Empty segments are skipped: `/qps//ticket` is the default proxy, as some modules
    // build it from `proxyRestUri` of the default proxy.
    let segments = rest
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(percent_decode)
        .collect::<Option<Vec<String>>>()
        .ok_or(NoRoute::BadEncoding)?;
    if segments == ["error"] {
        return allow(method, &[Method::POST], "POST", Route::Error);
    }
    let with_prefix = segments
        .split_first()
        .and_then(|(prefix, rest)| endpoint(prefix, rest));
    let default = endpoint("", &segments);
    let chosen = match (with_prefix, default) {
        (Some(route), _) if is_prefix(prefix_of(&route)) => route,
        (_, Some(route)) => route,
        (Some(route), None) => route,
        (None, None) => return Err(NoRoute::NotFound),
    };
    match chosen {
        Route::Ticket { .. } | Route::CreateSession { .. } => {
            allow(method, &[Method::POST], "POST", chosen)
        }
        Route::Session { .. } | Route::User { .. } => allow(
            method,
            &[Method::GET, Method::DELETE],
            "GET, DELETE",
            chosen,
        ),
        Route::Error => Ok(chosen),
    }
}

fn endpoint(prefix: &str, rest: &[String]) -> Option<Route> {
    let prefix = prefix.to_owned();
    match rest {
        [ticket] if ticket == "ticket" => Some(Route::Ticket { prefix }),
        [session] if session == "session" => Some(Route::CreateSession { prefix }),
        [session, id] if session == "session" => Some(Route::Session {
            prefix,
            id: id.clone(),
        }),
        [user, directory, id] if user == "user" => Some(Route::User {
            prefix,
            directory: directory.clone(),
            user: id.clone(),
        }),
        _ => None,
    }
}

fn prefix_of(route: &Route) -> &str {
    match route {
        Route::Ticket { prefix }
        | Route::CreateSession { prefix }
        | Route::Session { prefix, .. }
        | Route::User { prefix, .. } => prefix,
        Route::Error => "",
    }
}

fn allow(
    method: &Method,
    allowed: &[Method],
    header: &'static str,
    route: Route,
) -> Result<Route, NoRoute> {
    if allowed.contains(method) {
        Ok(route)
    } else {
        Err(NoRoute::MethodNotAllowed(header))
    }
}

/// `%XX` decoding of one path segment; `None` for a bad escape or text that is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            // Two hex digits exactly: `u8::from_str_radix` would also take a sign (`%+3`).
            let high = hex_digit(*bytes.get(index + 1)?)?;
            let low = hex_digit(*bytes.get(index + 2)?)?;
            out.push(high << 4 | low);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(method: Method, path: &str) -> Result<Route, NoRoute> {
        route(&method, path, |prefix| {
            ["", "app", "user"].contains(&prefix)
        })
    }

    #[test]
    fn prefixes_and_the_default_proxy() {
        let ticket = |prefix: &str| Route::Ticket {
            prefix: prefix.into(),
        };
        assert_eq!(at(Method::POST, "/qps/ticket"), Ok(ticket("")));
        assert_eq!(at(Method::POST, "/qps//ticket"), Ok(ticket("")));
        assert_eq!(at(Method::POST, "/qps/app/ticket"), Ok(ticket("app")));
        assert_eq!(
            at(Method::GET, "/qps/app/user/CORP/j%20doe"),
            Ok(Route::User {
                prefix: "app".into(),
                directory: "CORP".into(),
                user: "j doe".into()
            })
        );
        assert_eq!(
            at(Method::DELETE, "/qps/session/abc"),
            Ok(Route::Session {
                prefix: "".into(),
                id: "abc".into()
            })
        );
        // A configured prefix wins where both readings fit.
        assert_eq!(
            at(Method::GET, "/qps/user/session/abc"),
            Ok(Route::Session {
                prefix: "user".into(),
                id: "abc".into()
            })
        );
        assert_eq!(at(Method::POST, "/qps/error"), Ok(Route::Error));
    }

    #[test]
    fn unknown_paths_methods_and_escapes() {
        assert_eq!(at(Method::POST, "/qps/app/nothing"), Err(NoRoute::NotFound));
        assert_eq!(at(Method::POST, "/other"), Err(NoRoute::NotFound));
        assert_eq!(
            at(Method::GET, "/qps/app/ticket"),
            Err(NoRoute::MethodNotAllowed("POST"))
        );
        assert_eq!(
            at(Method::POST, "/qps/app/session/x"),
            Err(NoRoute::MethodNotAllowed("GET, DELETE"))
        );
        assert_eq!(
            at(Method::GET, "/qps/app/session/%zz"),
            Err(NoRoute::BadEncoding)
        );
        assert_eq!(
            at(Method::GET, "/qps/app/session/%ff"),
            Err(NoRoute::BadEncoding)
        );
        for signed in [
            "/qps/app/session/%+f",
            "/qps/app/session/%-1",
            "/qps/app/session/%4",
        ] {
            assert_eq!(
                at(Method::GET, signed),
                Err(NoRoute::BadEncoding),
                "{signed}"
            );
        }
    }
}
