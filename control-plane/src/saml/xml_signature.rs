//! The enveloped XML signature of a message we send over the HTTP-POST binding (SAML
//! bindings 3.5.4): a LogoutRequest or a LogoutResponse. The message is written with a
//! `ds:Signature` template after its `Issuer` (where the schema puts it); libxmlsec1, through
//! `samael`, canonicalises the element (exclusive c14n), fills in the SHA-256 digest and the
//! RSA-SHA256 signature value. No canonicalisation of our own.

use samael::crypto::{CertificateDer, Crypto, CryptoProvider as _};
use samael::signature::{DigestAlgorithm, Signature};
use samael::traits::ToXml as _;

use super::SpKeys;
use super::provider::libxml_lock;

/// The `ds:Signature` template for the element whose `ID` is `id`: an enveloped signature,
/// RSA-SHA256 over a SHA-256 digest, with the SP certificate in `KeyInfo`.
pub fn template(id: &str, keys: &SpKeys) -> Result<String, String> {
    let certificate = CertificateDer::from(keys.certificate_der().to_vec());
    let mut signature = Signature::template(id, &certificate);
    // samael's template digests with SHA-1, whose collisions are practical.
    for reference in &mut signature.signed_info.reference {
        reference.digest_method.algorithm = DigestAlgorithm::Sha256;
    }
    signature.to_string().map_err(|error| format!("{error:?}"))
}

/// `xml` (holding one [`template`]) signed by the SP key. Blocking (libxml2, under the same
/// lock as every other document): call it off the async threads.
pub fn sign(xml: &str, keys: &SpKeys) -> Result<String, String> {
    let key = keys
        .key()
        .private_key_to_der()
        .map_err(|error| error.to_string())?;
    let _one_at_a_time = libxml_lock();
    Crypto::sign_xml(xml, &key).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use samael::crypto::ReduceMode;

    fn keys() -> SpKeys {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap_or_else(|e| panic!("{e}"));
        let key = openssl::pkey::PKey::from_rsa(rsa).unwrap_or_else(|e| panic!("{e}"));
        let mut name = openssl::x509::X509NameBuilder::new().unwrap_or_else(|e| panic!("{e}"));
        name.append_entry_by_text("CN", "sp")
            .unwrap_or_else(|e| panic!("{e}"));
        let name = name.build();
        let mut builder = openssl::x509::X509::builder().unwrap_or_else(|e| panic!("{e}"));
        builder
            .set_subject_name(&name)
            .and_then(|()| builder.set_issuer_name(&name))
            .and_then(|()| builder.set_pubkey(&key))
            .unwrap_or_else(|e| panic!("{e}"));
        let not_before =
            openssl::asn1::Asn1Time::days_from_now(0).unwrap_or_else(|e| panic!("{e}"));
        let not_after = openssl::asn1::Asn1Time::days_from_now(1).unwrap_or_else(|e| panic!("{e}"));
        builder
            .set_not_before(&not_before)
            .and_then(|()| builder.set_not_after(&not_after))
            .and_then(|()| builder.sign(&key, openssl::hash::MessageDigest::sha256()))
            .unwrap_or_else(|e| panic!("{e}"));
        let certificate = builder.build().to_pem().unwrap_or_else(|e| panic!("{e}"));
        let key = key
            .private_key_to_pem_pkcs8()
            .unwrap_or_else(|e| panic!("{e}"));
        SpKeys::parse(
            &String::from_utf8_lossy(&key),
            &String::from_utf8_lossy(&certificate),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_signed_message_verifies_with_the_sp_certificate_and_not_once_altered() {
        let keys = keys();
        let template = template("_m1", &keys).unwrap_or_else(|e| panic!("{e}"));
        assert!(template.contains("xmldsig-more#rsa-sha256"), "{template}");
        assert!(template.contains("xmlenc#sha256"), "{template}");
        let xml = format!(
            "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
             xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_m1\" Version=\"2.0\">\
             <saml:Issuer>urn:sp</saml:Issuer>{template}<saml:NameID>alice</saml:NameID>\
             </samlp:LogoutRequest>"
        );
        let signed = sign(&xml, &keys).unwrap_or_else(|e| panic!("{e}"));
        let certificate = CertificateDer::from(keys.certificate_der().to_vec());
        let verify = |xml: &str| {
            let _one_at_a_time = libxml_lock();
            Crypto::reduce_xml_to_signed(
                xml,
                std::slice::from_ref(&certificate),
                ReduceMode::default(),
            )
        };
        let reduced = verify(&signed).unwrap_or_else(|e| panic!("{e}: {signed}"));
        assert!(reduced.contains("alice"));
        assert!(verify(&signed.replace(">alice<", ">mallory<")).is_err());
    }
}
