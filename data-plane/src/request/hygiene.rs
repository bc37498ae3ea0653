//! Request hygiene, the first phase of every request: what reaches routing, the login methods
//! and the upstream is one request that every server on the way reads the same way. Headers
//! whose names hold `_` are dropped (nginx's default), and the request must name exactly one
//! well-formed authority.

use http::{Request, Version};

use super::authority::{self, AuthorityError};
use crate::proxy::headers;

/// Drops the headers no one may read and checks the request's authority; a refusal is a 400
/// with the error's text.
pub fn before_routing<B>(request: &mut Request<B>) -> Result<(), AuthorityError> {
    headers::drop_underscored(request.headers_mut());
    match authority::request_authority(request.version(), request.uri(), request.headers()) {
        Ok(_) => Ok(()),
        // HTTP/1.0 has no Host requirement; what needs a host answers without one itself.
        Err(AuthorityError::Missing) if request.version() <= Version::HTTP_10 => Ok(()),
        Err(refusal) => Err(refusal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, hosts: &[&'static str]) -> Request<()> {
        let mut request = Request::builder().uri("/app/hub").version(version);
        for host in hosts {
            request = request.header(http::header::HOST, *host);
        }
        request.header("X_Remote_User", "admin").body(()).unwrap()
    }

    #[test]
    fn one_authority_is_required_from_http_1_1_on() {
        let mut good = request(Version::HTTP_11, &["sense.example"]);
        assert_eq!(before_routing(&mut good), Ok(()));
        assert!(good.headers().get("x_remote_user").is_none());
        assert_eq!(
            before_routing(&mut request(Version::HTTP_11, &[])),
            Err(AuthorityError::Missing)
        );
        assert_eq!(before_routing(&mut request(Version::HTTP_10, &[])), Ok(()));
        assert_eq!(
            before_routing(&mut request(Version::HTTP_10, &["a", "b"])),
            Err(AuthorityError::Repeated)
        );
        assert_eq!(
            before_routing(&mut request(Version::HTTP_10, &["a@b"])),
            Err(AuthorityError::UserInfo)
        );
    }
}
