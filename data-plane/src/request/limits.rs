//! The first phase, before routing: a request over the node's size limits, with ambiguous
//! framing or forwarding headers, or with a path that cannot be made safe is refused; the
//! path of every other request is normalised, so that routing and access rules see one
//! spelling.

use http::{Request, Uri};

use crate::config::LimitsConfig;
use crate::refusal::Refusal;
use crate::request::{hygiene, path};

/// Checks `request` against the limits and hygiene rules and normalises its path.
pub fn admit<B>(limits: &LimitsConfig, request: &mut Request<B>) -> Result<(), Refusal> {
    oversized(limits, request)?;
    hygiene::before_routing(request)
        .map_err(|refusal| Refusal::bad_request(refusal.to_string()))?;
    let normalized = canonical_uri(request.uri())
        .ok_or_else(|| Refusal::bad_request("the request path is not acceptable"))?;
    if let Some(uri) = normalized {
        *request.uri_mut() = uri;
    }
    Ok(())
}

/// 414 for an over-long request target, 431 for an over-long header line. (hyper already
/// answers 431 when all headers together exceed the read buffer.)
fn oversized<B>(limits: &LimitsConfig, request: &Request<B>) -> Result<(), Refusal> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_uri_bytes {
        return Err(Refusal::UriTooLong);
    }
    let longest_line = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len())
        .max()
        .unwrap_or(0);
    if longest_line > limits.max_header_line_bytes {
        return Err(Refusal::HeaderLineTooLong);
    }
    Ok(())
}

/// The request URI with its path normalised (`Some(None)`: it is already); `None` when the
/// path cannot be made safe.
fn canonical_uri(uri: &Uri) -> Option<Option<Uri>> {
    let normalized = path::normalize(uri.path())?;
    if *normalized == *uri.path() {
        return Some(None);
    }
    let mut parts = uri.clone().into_parts();
    let target = match uri.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized.into_owned(),
    };
    parts.path_and_query = Some(target.parse().ok()?);
    Uri::from_parts(parts).ok().map(Some)
}
