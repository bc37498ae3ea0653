//! Encrypted assertions (XML Encryption 1.1): the `EncryptedAssertion` of a Response is
//! decrypted with the service provider's key and the plaintext `Assertion` put where it
//! stood, so that the signature checks then see the document the identity provider signed
//! (the assertion inside, or the Response around the `EncryptedAssertion`). The primitives
//! are OpenSSL's; nothing here canonicalises or verifies XML.
//!
//! Taken: the assertion's key wrapped with RSA-OAEP (`xmlenc#rsa-oaep-mgf1p`, or
//! `xmlenc11#rsa-oaep` with MGF1-SHA1), digest SHA-1 (the default) or SHA-256/-384/-512; the
//! assertion encrypted with AES-GCM or AES-CBC (128, 192 or 256 bits). Refused: RSA
//! PKCS#1 v1.5 key transport (Bleichenbacher's oracle) and Triple DES.

use std::ops::Range;

use base64::Engine as _;
use openssl::encrypt::Decrypter;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::symm::Cipher;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use super::ASSERTION_NS;
use crate::error::Error;

const XENC: &[u8] = b"http://www.w3.org/2001/04/xmlenc#";
const XENC11: &[u8] = b"http://www.w3.org/2009/xmlenc11#";
const DSIG: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";

/// Why an assertion was not decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecryptable {
    /// Encrypted with an algorithm not taken: decided by the algorithm names alone, before
    /// any secret is used, so it may be told.
    Algorithm,
    /// Any other failure. One value for every way: which step failed is no business of
    /// the sender (telling them apart is what padding and Bleichenbacher oracles feed on).
    Failed,
}

impl From<Undecryptable> for Error {
    fn from(reason: Undecryptable) -> Self {
        Error::Unauthenticated(match reason {
            Undecryptable::Algorithm => {
                "the SAML assertion is encrypted with an algorithm this site does not accept"
            }
            Undecryptable::Failed => {
                "the encrypted SAML assertion cannot be decrypted for this site"
            }
        })
    }
}

impl std::fmt::Display for Undecryptable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Algorithm => "algorithm not taken",
            Self::Failed => "cannot be decrypted",
        })
    }
}

fn not_decrypted() -> Undecryptable {
    Undecryptable::Failed
}

/// The algorithms and ciphertexts of one `EncryptedAssertion`.
#[derive(Debug, Default)]
struct Encrypted {
    data_algorithm: String,
    data_cipher: String,
    keys: Vec<WrappedKey>,
}

/// An `EncryptedKey`: the assertion's content key, encrypted for the service provider.
#[derive(Debug, Default)]
struct WrappedKey {
    algorithm: String,
    digest: Option<String>,
    mgf: Option<String>,
    cipher: String,
}

/// `xml` (a Response holding one `EncryptedAssertion`) with the assertion decrypted in its
/// place.
pub fn decrypt_in_place(xml: &str, key: &PKey<Private>) -> Result<String, Undecryptable> {
    let (span, encrypted) = find_encrypted(xml).ok_or_else(not_decrypted)?;
    let plaintext = decrypt(&encrypted, key)?;
    let assertion = plaintext.trim();
    if !starts_with_an_assertion(assertion) {
        return Err(not_decrypted());
    }
    Ok(format!(
        "{}{assertion}{}",
        &xml[..span.start],
        &xml[span.end..]
    ))
}

/// The (first) `EncryptedAssertion` of `xml`: where it is, from its `<` to past its `>`,
/// and what it holds: its `EncryptedData` and every `EncryptedKey` in it (inside the data's
/// `KeyInfo`, or beside the data). Read in the whole document, whose root may declare the
/// prefixes the element uses.
fn find_encrypted(xml: &str) -> Option<(Range<usize>, Encrypted)> {
    let mut reader = quick_xml::NsReader::from_str(xml);
    // The open elements inside the EncryptedAssertion (itself first): namespace, local name.
    let mut path: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut start = None;
    let mut encrypted = Encrypted::default();
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        let (namespace, event) = reader.read_resolved_event().ok()?;
        let namespace = match namespace {
            ResolveResult::Bound(ns) => ns.as_ref().to_vec(),
            _ => Vec::new(),
        };
        match event {
            Event::Start(element) => {
                let local = element.local_name().as_ref().to_vec();
                if start.is_none() {
                    if namespace == ASSERTION_NS && local == b"EncryptedAssertion" {
                        start = Some(before);
                        path.push((namespace, local));
                    }
                    continue;
                }
                path.push((namespace, local));
                note_element(&path, &element, &mut encrypted);
            }
            Event::Empty(element) if start.is_some() => {
                let local = element.local_name().as_ref().to_vec();
                path.push((namespace, local));
                note_element(&path, &element, &mut encrypted);
                path.pop();
            }
            Event::End(_) if start.is_some() => {
                path.pop();
                if path.is_empty() {
                    let end = usize::try_from(reader.buffer_position()).ok()?;
                    return Some((start?..end, encrypted));
                }
            }
            Event::Text(text) if start.is_some() => {
                let text = text.decode().ok()?;
                if is_at(&path, &[(XENC, b"CipherData"), (XENC, b"CipherValue")]) {
                    let cipher = if is_within(&path, b"EncryptedKey") {
                        &mut encrypted.keys.last_mut()?.cipher
                    } else {
                        &mut encrypted.data_cipher
                    };
                    cipher.extend(text.chars().filter(|c| !c.is_ascii_whitespace()));
                }
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Records what an opening element says: an algorithm, or the start of an `EncryptedKey`.
fn note_element(path: &[(Vec<u8>, Vec<u8>)], element: &BytesStart<'_>, into: &mut Encrypted) {
    let algorithm = || {
        element
            .attributes()
            .flatten()
            .find(|attribute| attribute.key.as_ref() == b"Algorithm")
            .map(|attribute| String::from_utf8_lossy(&attribute.value).into_owned())
            .unwrap_or_default()
    };
    let Some((namespace, local)) = path.last() else {
        return;
    };
    let parent = path.len().checked_sub(2).and_then(|at| path.get(at));
    let parent_is = |name: &[u8]| parent.is_some_and(|(_, parent)| parent == name);
    match (namespace.as_slice(), local.as_slice()) {
        (XENC, b"EncryptedKey") => into.keys.push(WrappedKey::default()),
        (XENC, b"EncryptionMethod") if parent_is(b"EncryptedKey") => {
            if let Some(key) = into.keys.last_mut() {
                key.algorithm = algorithm();
            }
        }
        (XENC, b"EncryptionMethod") if parent_is(b"EncryptedData") => {
            into.data_algorithm = algorithm();
        }
        (DSIG, b"DigestMethod") if is_within(path, b"EncryptedKey") => {
            if let Some(key) = into.keys.last_mut() {
                key.digest = Some(algorithm());
            }
        }
        (XENC11, b"MGF") if is_within(path, b"EncryptedKey") => {
            if let Some(key) = into.keys.last_mut() {
                key.mgf = Some(algorithm());
            }
        }
        _ => {}
    }
}

/// The path ends with these elements.
fn is_at(path: &[(Vec<u8>, Vec<u8>)], tail: &[(&[u8], &[u8])]) -> bool {
    path.len() >= tail.len()
        && path[path.len() - tail.len()..]
            .iter()
            .zip(tail)
            .all(|((ns, local), (want_ns, want_local))| ns == want_ns && local == want_local)
}

fn is_within(path: &[(Vec<u8>, Vec<u8>)], local: &[u8]) -> bool {
    path.iter().any(|(_, name)| name == local)
}

/// The plaintext: the content key unwrapped with the first `EncryptedKey` that opens with
/// this key, then the data decrypted with it.
fn decrypt(encrypted: &Encrypted, key: &PKey<Private>) -> Result<String, Undecryptable> {
    let cipher = content_cipher(&encrypted.data_algorithm).ok_or_else(|| {
        tracing::info!(
            algorithm = %encrypted.data_algorithm,
            "SAML assertion encrypted with an algorithm not taken"
        );
        Undecryptable::Algorithm
    })?;
    let data = base64_decode(&encrypted.data_cipher).ok_or_else(not_decrypted)?;
    for wrapped in &encrypted.keys {
        let Some(content_key) = unwrap_key(wrapped, key)? else {
            continue;
        };
        if content_key.len() != cipher.key_len() {
            continue;
        }
        let plaintext = decrypt_content(&data, cipher, &content_key).ok_or_else(not_decrypted)?;
        return String::from_utf8(plaintext).map_err(|_| not_decrypted());
    }
    Err(not_decrypted())
}

/// The content key, or `None` when this `EncryptedKey` is not for this key.
fn unwrap_key(wrapped: &WrappedKey, key: &PKey<Private>) -> Result<Option<Vec<u8>>, Undecryptable> {
    let refused = || {
        tracing::info!(
            algorithm = %wrapped.algorithm,
            "SAML assertion key wrapped with an algorithm not taken"
        );
        Undecryptable::Algorithm
    };
    let oaep = matches!(
        wrapped.algorithm.as_str(),
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
            | "http://www.w3.org/2009/xmlenc11#rsa-oaep"
    );
    if !oaep {
        return Err(refused());
    }
    let digest = match wrapped.digest.as_deref() {
        None | Some("http://www.w3.org/2000/09/xmldsig#sha1") => MessageDigest::sha1(),
        Some("http://www.w3.org/2001/04/xmlenc#sha256") => MessageDigest::sha256(),
        Some("http://www.w3.org/2001/04/xmldsig-more#sha384") => MessageDigest::sha384(),
        Some("http://www.w3.org/2001/04/xmlenc#sha512") => MessageDigest::sha512(),
        Some(_) => return Err(refused()),
    };
    match wrapped.mgf.as_deref() {
        None | Some("http://www.w3.org/2009/xmlenc11#mgf1sha1") => {}
        Some(_) => return Err(refused()),
    }
    let Some(input) = base64_decode(&wrapped.cipher) else {
        return Ok(None);
    };
    let unwrapped = (|| {
        let mut decrypter = Decrypter::new(key).ok()?;
        decrypter.set_rsa_padding(Padding::PKCS1_OAEP).ok()?;
        decrypter.set_rsa_oaep_md(digest).ok()?;
        decrypter.set_rsa_mgf1_md(MessageDigest::sha1()).ok()?;
        let mut out = vec![0; decrypter.decrypt_len(&input).ok()?];
        let len = decrypter.decrypt(&input, &mut out).ok()?;
        out.truncate(len);
        Some(out)
    })();
    Ok(unwrapped)
}

fn content_cipher(algorithm: &str) -> Option<Cipher> {
    Some(match algorithm {
        "http://www.w3.org/2009/xmlenc11#aes128-gcm" => Cipher::aes_128_gcm(),
        "http://www.w3.org/2009/xmlenc11#aes192-gcm" => Cipher::aes_192_gcm(),
        "http://www.w3.org/2009/xmlenc11#aes256-gcm" => Cipher::aes_256_gcm(),
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => Cipher::aes_128_cbc(),
        "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => Cipher::aes_192_cbc(),
        "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => Cipher::aes_256_cbc(),
        _ => return None,
    })
}

/// Length of a GCM authentication tag (XML Encryption 1.1 uses 128 bits).
const GCM_TAG_LEN: usize = 16;
/// Length of a GCM nonce in XML Encryption 1.1 (96 bits).
const GCM_IV_LEN: usize = 12;

/// The data decrypted: the IV first, then the ciphertext (and, for GCM, the tag last).
fn decrypt_content(data: &[u8], cipher: Cipher, key: &[u8]) -> Option<Vec<u8>> {
    let gcm = cipher.nid() == Cipher::aes_128_gcm().nid()
        || cipher.nid() == Cipher::aes_192_gcm().nid()
        || cipher.nid() == Cipher::aes_256_gcm().nid();
    if gcm {
        let (iv, rest) = data.split_at_checked(GCM_IV_LEN)?;
        let (ciphertext, tag) = rest.split_at_checked(rest.len().checked_sub(GCM_TAG_LEN)?)?;
        return openssl::symm::decrypt_aead(cipher, key, Some(iv), &[], ciphertext, tag).ok();
    }
    let block = cipher.block_size();
    let (iv, ciphertext) = data.split_at_checked(cipher.iv_len()?)?;
    if ciphertext.is_empty() || ciphertext.len() % block != 0 {
        return None;
    }
    // XML Encryption's padding is not PKCS#7 (only the last byte, the pad length, is
    // defined), so OpenSSL's padding check is off and the pad is removed here.
    let mut crypter =
        openssl::symm::Crypter::new(cipher, openssl::symm::Mode::Decrypt, key, Some(iv)).ok()?;
    crypter.pad(false);
    let mut out = vec![0; ciphertext.len() + block];
    let mut len = crypter.update(ciphertext, &mut out).ok()?;
    len += crypter.finalize(&mut out[len..]).ok()?;
    out.truncate(len);
    let pad = usize::from(*out.last()?);
    if pad == 0 || pad > block || pad > out.len() {
        return None;
    }
    out.truncate(out.len() - pad);
    Some(out)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// The plaintext begins with an `Assertion` element (its prefix may be declared by the
/// Response around it, so only the local name is looked at here; the document is checked
/// whole afterwards).
fn starts_with_an_assertion(plaintext: &str) -> bool {
    let mut reader = quick_xml::Reader::from_str(plaintext);
    loop {
        match reader.read_event() {
            Ok(Event::Start(element)) => return element.local_name().as_ref() == b"Assertion",
            Ok(Event::Text(text)) if text.iter().all(u8::is_ascii_whitespace) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The prefixes declared on the root, as the signature check leaves them.
    const FORM: &str = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"><saml:Issuer>idp</saml:Issuer><saml:EncryptedAssertion><xenc:EncryptedData Type="http://www.w3.org/2001/04/xmlenc#Element"><xenc:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes128-gcm"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/></xenc:EncryptionMethod><xenc:CipherData><xenc:CipherValue>a2V5
ZA==</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>ZGF0YQ==</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion></samlp:Response>"#;

    #[test]
    fn the_encrypted_assertion_is_found_and_read() {
        let (span, encrypted) = find_encrypted(FORM).unwrap_or_else(|| panic!("not found"));
        let element = &FORM[span];
        assert!(element.starts_with("<saml:EncryptedAssertion>"));
        assert!(element.ends_with("</saml:EncryptedAssertion>"));
        assert_eq!(
            encrypted.data_algorithm,
            "http://www.w3.org/2009/xmlenc11#aes128-gcm"
        );
        assert_eq!(encrypted.data_cipher, "ZGF0YQ==");
        assert_eq!(encrypted.keys.len(), 1);
        assert_eq!(
            encrypted.keys[0].algorithm,
            "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
        );
        assert_eq!(
            encrypted.keys[0].digest.as_deref(),
            Some("http://www.w3.org/2001/04/xmlenc#sha256")
        );
        assert_eq!(encrypted.keys[0].cipher, "a2V5ZA==");
    }

    #[test]
    fn triple_des_and_rsa_pkcs1_v1_5_are_refused() {
        assert!(content_cipher("http://www.w3.org/2001/04/xmlenc#tripledes-cbc").is_none());
        let key = PKey::from_rsa(
            openssl::rsa::Rsa::generate(2048).unwrap_or_else(|error| panic!("{error}")),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let wrapped = WrappedKey {
            algorithm: "http://www.w3.org/2001/04/xmlenc#rsa-1_5".to_owned(),
            cipher: "a2V5ZA==".to_owned(),
            ..WrappedKey::default()
        };
        assert!(unwrap_key(&wrapped, &key).is_err());
    }

    #[test]
    fn cbc_padding_is_removed_as_xml_encryption_defines_it() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        // "abc" and 13 bytes of padding whose last byte says 13 (the others are arbitrary).
        let mut block = b"abc".to_vec();
        block.extend([0xAA; 12]);
        block.push(13);
        let mut crypter = openssl::symm::Crypter::new(
            Cipher::aes_128_cbc(),
            openssl::symm::Mode::Encrypt,
            &key,
            Some(&iv),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        crypter.pad(false);
        let mut out = vec![0; 32];
        let len = crypter
            .update(&block, &mut out)
            .unwrap_or_else(|error| panic!("{error}"));
        out.truncate(len);
        let data = [iv.to_vec(), out].concat();
        assert_eq!(
            decrypt_content(&data, Cipher::aes_128_cbc(), &key).as_deref(),
            Some(&b"abc"[..])
        );
        assert!(decrypt_content(&data[..20], Cipher::aes_128_cbc(), &key).is_none());
    }
}
