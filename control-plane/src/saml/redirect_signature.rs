//! The signature of a message we send over the HTTP-Redirect binding (SAML bindings
//! 3.4.4.1): an AuthnRequest, a LogoutRequest or a LogoutResponse. RSA-SHA256 over
//! `SAMLRequest=…&RelayState=…&SigAlg=…` (or `SAMLResponse=…`) exactly as those parameters
//! stand, URL-encoded, in the query, then `Signature` appended. Only those three are
//! signed: other parameters the identity provider's URL carries (`?idpid=…`) are not part
//! of the message.

use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// What `application/x-www-form-urlencoded` leaves as it is (the `url` crate's encoding of
/// `SAMLRequest` and `RelayState`, and Python's `quote_plus` on every character these
/// values hold): identity providers that rebuild the signed text from the decoded values
/// (pysaml2 does) then get the same octets.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// `url` (the identity provider's URL with `SAMLRequest` or `SAMLResponse`, and
/// `RelayState`, in its query) with `SigAlg` and `Signature` by `key` added.
pub fn sign(url: &str, key: &PKey<Private>) -> Result<String, String> {
    let query = url
        .split_once('?')
        .map(|(_, query)| query.split('#').next().unwrap_or_default())
        .ok_or("the SAML message URL has no query")?;
    let raw = |name: &str| {
        query
            .split('&')
            .find(|pair| pair.split('=').next() == Some(name))
    };
    let request = raw("SAMLRequest")
        .or_else(|| raw("SAMLResponse"))
        .ok_or("the SAML message URL has no SAMLRequest or SAMLResponse")?;
    let sig_alg = format!("SigAlg={}", utf8_percent_encode(RSA_SHA256, FORM));
    let signed = match raw("RelayState") {
        Some(relay_state) => format!("{request}&{relay_state}&{sig_alg}"),
        None => format!("{request}&{sig_alg}"),
    };
    let mut signer =
        Signer::new(MessageDigest::sha256(), key).map_err(|error| error.to_string())?;
    signer
        .update(signed.as_bytes())
        .map_err(|error| error.to_string())?;
    let signature = signer.sign_to_vec().map_err(|error| error.to_string())?;
    let signature = base64::engine::general_purpose::STANDARD.encode(signature);
    Ok(format!(
        "{url}&{sig_alg}&Signature={}",
        utf8_percent_encode(&signature, FORM)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::sign::Verifier;

    fn key() -> PKey<Private> {
        PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_signature_covers_the_three_parameters_as_sent_and_nothing_else() {
        let key = key();
        let url =
            "https://idp.example.com/sso?idpid=C0ffee&SAMLRequest=fZBN%2Bw%3D%3D&RelayState=ab-c_d";
        let signed = sign(url, &key).unwrap_or_else(|e| panic!("{e}"));
        let sig_alg = "SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256";
        assert!(
            signed.starts_with(&format!("{url}&{sig_alg}&Signature=")),
            "{signed}"
        );
        let signature = signed.rsplit_once("Signature=").map(|(_, value)| value);
        let signature = percent_encoding::percent_decode_str(signature.unwrap_or_default())
            .decode_utf8()
            .unwrap_or_else(|e| panic!("{e}"));
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let verify = |text: &str| {
            let mut verifier =
                Verifier::new(MessageDigest::sha256(), &key).unwrap_or_else(|e| panic!("{e}"));
            verifier
                .update(text.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            verifier.verify(&signature).unwrap_or(false)
        };
        assert!(verify(&format!(
            "SAMLRequest=fZBN%2Bw%3D%3D&RelayState=ab-c_d&{sig_alg}"
        )));
        // The SSO URL's own parameter is not signed, and nothing else is.
        assert!(!verify(&format!(
            "idpid=C0ffee&SAMLRequest=fZBN%2Bw%3D%3D&RelayState=ab-c_d&{sig_alg}"
        )));
        assert!(sign("https://idp.example.com/sso", &key).is_err());
        assert!(sign("https://idp.example.com/sso?RelayState=a", &key).is_err());
        // A LogoutResponse is signed over its SAMLResponse the same way.
        let response = sign(
            "https://idp.example.com/slo?SAMLResponse=fZ&RelayState=r",
            &key,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            response.contains(&format!("RelayState=r&{sig_alg}&Signature=")),
            "{response}"
        );
    }
}
