//! The service provider's own key pair (`sp_key_file`, `sp_certificate_file`): it decrypts
//! encrypted assertions and signs AuthnRequests and logout messages. It stays in the
//! control plane: nodes are never sent it.

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// Smallest RSA key taken: 2048 bits, as NIST SP 800-131A asks of RSA since 2014.
const MIN_RSA_BITS: u32 = 2048;

/// A private key and the certificate announced for it in the SP metadata.
#[derive(Clone)]
pub struct SpKeys {
    key: PKey<Private>,
    certificate_der: Vec<u8>,
}

impl std::fmt::Debug for SpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpKeys").finish_non_exhaustive()
    }
}

impl SpKeys {
    /// Reads a PEM private key (PKCS#8 or PKCS#1, unencrypted) and a PEM certificate, which
    /// must be for that key. RSA only: identity providers encrypt the assertion's key with
    /// RSA-OAEP, and the AuthnRequest is signed with RSA-SHA256.
    pub fn parse(key_pem: &str, certificate_pem: &str) -> Result<Self, String> {
        let key = PKey::private_key_from_pem(key_pem.as_bytes())
            .map_err(|_| "sp_key_file holds no unencrypted PEM private key".to_owned())?;
        let rsa = key
            .rsa()
            .map_err(|_| "sp_key_file must hold an RSA key".to_owned())?;
        if rsa.size() * 8 < MIN_RSA_BITS {
            return Err(format!(
                "sp_key_file: the RSA key must have at least {MIN_RSA_BITS} bits"
            ));
        }
        let certificate = X509::from_pem(certificate_pem.as_bytes())
            .map_err(|_| "sp_certificate_file holds no PEM certificate".to_owned())?;
        let matches = certificate
            .public_key()
            .is_ok_and(|public| public.public_eq(&key));
        if !matches {
            return Err("sp_certificate_file is not the certificate of sp_key_file".to_owned());
        }
        let certificate_der = certificate
            .to_der()
            .map_err(|_| "sp_certificate_file cannot be encoded".to_owned())?;
        Ok(Self {
            key,
            certificate_der,
        })
    }

    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    /// The certificate's DER, as an XML signature's `KeyInfo` names it.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The certificate, base64 of its DER, as metadata's `X509Certificate` holds it.
    pub fn certificate_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.certificate_der)
    }
}
