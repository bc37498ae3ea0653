//! `[virtual_proxies.saml]`: SAML 2.0 login (Web Browser SSO, SP-initiated) through one
//! identity provider. See AUTH-SAML.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gatehouse_proto::origin::PublicOrigin;
use serde::Deserialize;

/// Longest IdP metadata file read (Entra ID's and ADFS's are well under 100 KiB).
const MAX_METADATA_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// The identity provider's metadata (entity id, signing certificates, SSO endpoint), from
    /// a file or from a URL (exactly one of the two).
    #[serde(default)]
    pub idp_metadata_file: Option<PathBuf>,
    /// Where the identity provider publishes its metadata; re-read every `metadata_refresh`.
    #[serde(default)]
    pub idp_metadata_url: Option<String>,
    /// How often the URL is read again, or the file looked at (and read again if changed).
    #[serde(default = "default_metadata_refresh", with = "humantime_serde")]
    pub metadata_refresh: Duration,
    /// This service provider's entity id, as registered at the identity provider; the
    /// assertion's `Audience` must name it.
    pub entity_id: String,
    /// Where the identity provider posts the Response: `/{prefix}/saml/acs` on this site.
    /// Default: on the first of `public_origins`.
    #[serde(default)]
    pub acs_url: Option<String>,
    /// `NameIDPolicy` format asked for in the AuthnRequest; none: the provider's choice.
    #[serde(default)]
    pub name_id_format: Option<String>,
    /// Attribute holding the user id; none: the `NameID`.
    #[serde(default)]
    pub user_id_attribute: Option<String>,
    /// Attribute holding the user directory (wins when present).
    #[serde(default)]
    pub user_directory_attribute: Option<String>,
    /// Fixed user directory otherwise.
    #[serde(default)]
    pub user_directory: Option<String>,
    /// User attribute name → SAML attribute (`Name`, or `FriendlyName`); one user attribute
    /// per value.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// SAML attribute whose values become `Group` user attributes.
    #[serde(default)]
    pub groups_attribute: Option<String>,
    /// Clock skew allowed on `NotBefore`, `NotOnOrAfter` and `IssueInstant`.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How long a browser may take at the identity provider.
    #[serde(default = "default_login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Accept Responses the identity provider sends without an AuthnRequest of ours.
    #[serde(default)]
    pub allow_idp_initiated: bool,
    /// Single Logout with the identity provider (its metadata's SingleLogoutService): our
    /// LogoutRequest when a browser logs out here, and its LogoutRequests at `/saml/slo`.
    #[serde(default)]
    pub single_logout: bool,
    /// Where a browser lands after a logout at the identity provider: a path on this site.
    /// Default: `/{prefix}/`.
    #[serde(default)]
    pub logout_redirect: Option<String>,
    /// This service provider's RSA private key (PEM): decrypts encrypted assertions and
    /// signs AuthnRequests. Stays in the control plane.
    #[serde(default)]
    pub sp_key_file: Option<PathBuf>,
    /// The certificate of `sp_key_file` (PEM), announced in the SP metadata.
    #[serde(default)]
    pub sp_certificate_file: Option<PathBuf>,
    /// Refuse a Response whose assertion is not encrypted (needs the key pair).
    #[serde(default)]
    pub require_encrypted_assertions: bool,
    /// Sign the HTTP-Redirect AuthnRequest with the key pair (RSA-SHA256).
    #[serde(default)]
    pub sign_authn_requests: bool,
    /// Sign our LogoutRequests and LogoutResponses with the key pair; none: whenever there
    /// is one (the profile wants logout messages through the browser signed, and ADFS
    /// refuses unsigned LogoutRequests).
    #[serde(default)]
    pub sign_logout_messages: Option<bool>,
    /// The metadata file's text, read when the configuration is loaded, so a changed file
    /// is a changed configuration on reload (between reloads `SamlSource` reads it again).
    #[serde(skip)]
    pub idp_metadata: String,
    /// The key pair's PEM text, read with the configuration like the metadata file.
    #[serde(skip)]
    pub sp_key_pair: SpKeyPair,
}

/// The PEM text of `sp_key_file` and `sp_certificate_file`; the key never shows in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SpKeyPair {
    pub key_pem: String,
    pub certificate_pem: String,
}

impl std::fmt::Debug for SpKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpKeyPair")
            .field("present", &!self.key_pem.is_empty())
            .finish_non_exhaustive()
    }
}

/// Longest key or certificate file read.
const MAX_PEM_BYTES: u64 = 64 * 1024;

impl SamlConfig {
    /// The Assertion Consumer Service path on a virtual proxy with this prefix.
    pub fn acs_path(prefix: &str) -> String {
        if prefix.is_empty() {
            "/saml/acs".to_owned()
        } else {
            format!("/{prefix}/saml/acs")
        }
    }

    /// The ACS URL: configured, or on the first public origin (validated by [`load`]).
    ///
    /// [`load`]: Self::load
    pub fn acs_url(&self) -> &str {
        self.acs_url.as_deref().unwrap_or_default()
    }

    /// The Single Logout URL: the ACS URL's origin with `/{prefix}/saml/slo`.
    pub fn slo_url(&self) -> String {
        let acs = self.acs_url();
        acs.strip_suffix("/saml/acs")
            .map_or_else(String::new, |base| format!("{base}/saml/slo"))
    }

    /// Where a browser lands after a logout at the identity provider.
    pub fn logout_landing(&self, prefix: &str) -> String {
        self.logout_redirect.clone().unwrap_or_else(|| {
            if prefix.is_empty() {
                "/".to_owned()
            } else {
                format!("/{prefix}/")
            }
        })
    }

    /// Checks the table, reads the metadata file and settles the ACS URL. `prefix` and
    /// `public_origins` are the virtual proxy's.
    pub fn load(&mut self, prefix: &str, public_origins: &[PublicOrigin]) -> Result<(), String> {
        if self.entity_id.trim().is_empty() || self.entity_id.trim() != self.entity_id {
            return Err("saml.entity_id must not be empty or padded".to_owned());
        }
        let acs_path = Self::acs_path(prefix);
        let acs_url = match (&self.acs_url, public_origins.first()) {
            (Some(url), _) => url.clone(),
            (None, Some(origin)) => origin.url(&acs_path),
            (None, None) => {
                return Err("saml needs acs_url, or public_origins to derive it from".to_owned());
            }
        };
        let fits = acs_url.parse::<http::Uri>().is_ok_and(|parsed| {
            matches!(parsed.scheme_str(), Some("http" | "https"))
                && parsed.host().is_some_and(|host| !host.is_empty())
                && parsed.path() == acs_path
                && parsed.query().is_none()
                && !acs_url.contains('@')
        });
        if !fits {
            return Err(format!(
                "saml.acs_url must be an absolute http(s) URL with the path {acs_path} and no query"
            ));
        }
        if !public_origins.is_empty()
            && !gatehouse_proto::origin::url_is_admitted(&acs_url, public_origins, &[])
        {
            return Err(format!(
                "saml.acs_url {acs_url:?} is on none of public_origins"
            ));
        }
        self.acs_url = Some(acs_url);
        if let Some(landing) = &self.logout_redirect {
            let local = landing.starts_with('/')
                && !landing.starts_with("//")
                && !landing.starts_with("/\\")
                && !landing.chars().any(char::is_control);
            if !local {
                return Err("saml.logout_redirect must be a path on this site".to_owned());
            }
        }
        if self.user_directory.is_none() && self.user_directory_attribute.is_none() {
            return Err("saml needs user_directory or user_directory_attribute".to_owned());
        }
        if self
            .user_directory
            .as_ref()
            .is_some_and(|directory| directory.trim().is_empty() || directory.contains('\\'))
        {
            return Err("saml.user_directory must not be blank or contain a backslash".to_owned());
        }
        let named = |name: &Option<String>| name.as_ref().is_some_and(|name| name.is_empty());
        if named(&self.user_id_attribute)
            || named(&self.user_directory_attribute)
            || named(&self.groups_attribute)
            || self
                .attributes
                .iter()
                .any(|(name, from)| name.is_empty() || from.is_empty())
        {
            return Err("saml: attribute names must not be empty".to_owned());
        }
        if self.clock_skew > Duration::from_secs(600) {
            return Err("saml.clock_skew must be at most 10m".to_owned());
        }
        if self.login_timeout < Duration::from_secs(10)
            || self.login_timeout > Duration::from_secs(3600)
        {
            return Err("saml.login_timeout must be between 10s and 1h".to_owned());
        }
        // A URL is asked at most once a minute; a file costs one look at its modification
        // time, so it may be looked at every second.
        let shortest = if self.idp_metadata_file.is_some() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(60)
        };
        if self.metadata_refresh < shortest
            || self.metadata_refresh > Duration::from_secs(7 * 24 * 3600)
        {
            return Err(
                "saml.metadata_refresh must be between 1m (1s with idp_metadata_file) and 7d"
                    .to_owned(),
            );
        }
        self.load_key_pair()?;
        match (&self.idp_metadata_file, &self.idp_metadata_url) {
            (Some(file), None) => {
                self.idp_metadata = read_idp_metadata(file)
                    .map_err(|error| format!("saml.idp_metadata_file: {error}"))?;
                let metadata = crate::saml::IdpMetadata::parse(&self.idp_metadata)
                    .map_err(|error| format!("saml.idp_metadata_file: {error}"))?;
                if self.single_logout && !metadata.has_single_logout() {
                    return Err(
                        "saml.single_logout: the identity provider's metadata has no SingleLogoutService"
                            .to_owned(),
                    );
                }
            }
            // Read at the first login, as OpenID discovery is: a provider down at start
            // delays nothing but logins.
            (None, Some(url)) => {
                if !url
                    .parse::<http::Uri>()
                    .is_ok_and(|uri| super::is_https_or_loopback(&uri))
                {
                    return Err(
                        "saml.idp_metadata_url must be an https URL (http only on a loopback host)"
                            .to_owned(),
                    );
                }
            }
            _ => {
                return Err(
                    "saml needs exactly one of idp_metadata_file and idp_metadata_url".to_owned(),
                );
            }
        }
        Ok(())
    }
}

impl SamlConfig {
    /// Whether this service provider has a key pair (`sp_key_file`).
    pub fn has_key_pair(&self) -> bool {
        !self.sp_key_pair.key_pem.is_empty()
    }

    /// Whether our logout messages are signed: as configured, else whenever there is a key.
    pub fn signs_logout_messages(&self) -> bool {
        self.has_key_pair() && self.sign_logout_messages.unwrap_or(true)
    }

    /// Whether the key pair signs anything, so the SP metadata announces it for signing.
    pub fn signs_messages(&self) -> bool {
        self.has_key_pair()
            && (self.sign_authn_requests || (self.single_logout && self.signs_logout_messages()))
    }

    /// Reads and checks `sp_key_file` and `sp_certificate_file` (both or neither), which
    /// `require_encrypted_assertions` and `sign_authn_requests` need.
    fn load_key_pair(&mut self) -> Result<(), String> {
        match (&self.sp_key_file, &self.sp_certificate_file) {
            (Some(key), Some(certificate)) => {
                let read = |path: &std::path::Path, name: &str| {
                    read_bounded(path, MAX_PEM_BYTES)
                        .map_err(|error| format!("saml.{name}: {error}"))
                };
                let pair = SpKeyPair {
                    key_pem: read(key, "sp_key_file")?,
                    certificate_pem: read(certificate, "sp_certificate_file")?,
                };
                crate::saml::SpKeys::parse(&pair.key_pem, &pair.certificate_pem)
                    .map_err(|error| format!("saml.{error}"))?;
                self.sp_key_pair = pair;
            }
            (None, None) => {
                self.sp_key_pair = SpKeyPair::default();
                if self.require_encrypted_assertions
                    || self.sign_authn_requests
                    || self.sign_logout_messages == Some(true)
                {
                    return Err(
                        "saml.require_encrypted_assertions, saml.sign_authn_requests and \
                         saml.sign_logout_messages need sp_key_file and sp_certificate_file"
                            .to_owned(),
                    );
                }
            }
            _ => {
                return Err(
                    "saml needs both of sp_key_file and sp_certificate_file, or neither".to_owned(),
                );
            }
        }
        Ok(())
    }
}

/// The text of an identity provider's metadata file (at most 1 MiB).
pub fn read_idp_metadata(path: &std::path::Path) -> Result<String, String> {
    read_bounded(path, MAX_METADATA_BYTES)
}

fn read_bounded(path: &std::path::Path, max: u64) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?
        .len();
    if size > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn default_metadata_refresh() -> Duration {
    Duration::from_secs(3600)
}

fn default_clock_skew() -> Duration {
    Duration::from_secs(60)
}

fn default_login_timeout() -> Duration {
    Duration::from_secs(600)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate whose private key was thrown away.
    pub(crate) const CERTIFICATE: &str = "\
MIIDHTCCAgWgAwIBAgIUOkheZyuR9LRvDxCDXXrrch0gv0cwDQYJKoZIhvcNAQELBQAwHTEbMBkG\
A1UEAwwSZ2F0ZWhvdXNlLWZ1enotaWRwMCAXDTI2MTIwNDE5MTA1NFoYDzIxMjYxMTEwMTkxMDU0\
WjAdMRswGQYDVQQDDBJnYXRlaG91c2UtZnV6ei1pZHAwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAw\
ggEKAoIBAQDKsu8iVu5nqH21BDeeokjRneui9/0629x5auw3G3F2IYnrP9SZHGbrNFTz/4MIjap8\
NF+c6y4BQea+qXu9bLkhWWFD27W9YT7OQISze5QsMIbAx4g6UM0Ounvi9hD23WQdp+naRYc3bp7J\
GRyt8ejIN+0HmvZfkGR6y5GsEIXrEQit/4DvFXjNeh4ju5iFq1JtIh4iTNjn1FChEolS0Gf/cnj8\
1VtJ0OOm4u1lSlDzQCBCKnGBquVW+3rUm+7zkObdbTDhxTxWq19vL/9EzuR7hkQVj9zei2kn4VOZ\
R3qvLEePJxhk8vnFW0AetfVYDGSPVMM33v6tvUvzGFsDlFRrAgMBAAGjUzBRMB0GA1UdDgQWBBQO\
7sSG3MLN0ey4p29C4nROSPCCmDAfBgNVHSMEGDAWgBQO7sSG3MLN0ey4p29C4nROSPCCmDAPBgNV\
HRMBAf8EBTADAQH/MA0GCSqGSIb3DQEBCwUAA4IBAQBNtT35hhMj9SPIB+Py4iGw8YiJtGQOzR0t\
JeTinVV62uBHhEYHfiTQe1JvQcJjcxHXaTy4hfUwrUG8ujt7GwUvS7IzBefu8N01p4jfFIkcZ6vW\
8yHZt7M42ZIlWyM+YLzKtHSjyvWqpMo2LyBdWBjza1q7fBN3W4X52aWFaNzNq0rTrAEov3+8mVxc\
lqy5JFR4W43+Ih0l+Vod/HzCw9ZtOvliSO/5AHX09oLeyCuEaDFzEOaF9FqSIEnj98wM2Fz86ht7\
wiP6coGxfyr4rbmzAfW51Uo5r8KUWWtneMnFqeOKZ8kgFRrswulE+S9ucs++qf2K6Mi2UGDnmwtm\
Z2Al";

    pub(crate) fn metadata(sso: &str, key: &str) -> String {
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.com/metadata"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{key}<md:SingleSignOnService Binding="{sso}" Location="https://idp.example.com/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
        )
    }

    /// Metadata a service provider accepts.
    pub(crate) fn good_metadata() -> String {
        metadata(REDIRECT, &signing_key())
    }

    fn signing_key() -> String {
        format!(
            r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{CERTIFICATE}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
        )
    }

    const REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";

    /// `[virtual_proxies.saml]` with `extra` lines, its metadata file holding `metadata`.
    fn load(extra: &str, metadata: &str, origins: &[&str]) -> Result<SamlConfig, String> {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file =
            std::env::temp_dir().join(format!("gatehouse-saml-{}-{n}.xml", std::process::id()));
        std::fs::write(&file, metadata).map_err(|error| error.to_string())?;
        let text = format!(
            "idp_metadata_file = {file:?}\nentity_id = \"https://gh.example.com/app\"\n{extra}"
        );
        let mut config: SamlConfig = toml::from_str(&text).map_err(|error| error.to_string())?;
        let origins: Vec<PublicOrigin> = origins
            .iter()
            .map(|origin| PublicOrigin::parse(origin).map_err(|error| error.to_string()))
            .collect::<Result<_, _>>()?;
        let loaded = config.load("app", &origins);
        let _ = std::fs::remove_file(&file);
        loaded.map(|()| config)
    }

    #[test]
    fn the_acs_url_is_derived_from_the_first_public_origin_or_configured_on_this_site() {
        let good = metadata(REDIRECT, &signing_key());
        let config = load(
            "user_directory = \"CORP\"",
            &good,
            &["https://gh.example.com"],
        );
        assert_eq!(
            config.as_ref().map(|config| config.acs_url()),
            Ok("https://gh.example.com/app/saml/acs")
        );
        assert!(config.is_ok_and(|config| config.idp_metadata == good));
        // A file may be looked at every second, a URL asked once a minute at most.
        let refresh = |every: &str| {
            load(
                &format!("user_directory = \"CORP\"\nmetadata_refresh = \"{every}\""),
                &good,
                &["https://gh.example.com"],
            )
        };
        assert!(refresh("1s").is_ok());
        assert!(
            refresh("500ms")
                .unwrap_err()
                .contains("1s with idp_metadata_file")
        );
        let refused = |extra: &str, origins: &[&str]| {
            load(
                &format!("user_directory = \"CORP\"\n{extra}"),
                &good,
                origins,
            )
            .unwrap_err()
        };
        assert!(refused("", &[]).contains("acs_url"));
        assert!(
            refused("acs_url = \"https://gh.example.com/other/saml/acs\"", &[])
                .contains("/app/saml/acs")
        );
        assert!(
            refused(
                "acs_url = \"https://evil.example.com/app/saml/acs\"",
                &["https://gh.example.com"]
            )
            .contains("public_origins")
        );
        assert!(
            refused("acs_url = \"https://gh.example.com/app/saml/acs?x=1\"", &[])
                .contains("no query")
        );
        assert!(
            refused("clock_skew = \"11m\"", &["https://gh.example.com"]).contains("clock_skew")
        );
        assert!(
            refused("login_timeout = \"5s\"", &["https://gh.example.com"])
                .contains("login_timeout")
        );
        assert!(refused("groups_attribute = \"\"", &["https://gh.example.com"]).contains("empty"));
    }

    #[test]
    fn the_metadata_comes_from_exactly_one_of_a_file_and_a_url() {
        let url = |url: &str, extra: &str| {
            let text = format!(
                "idp_metadata_url = \"{url}\"\nentity_id = \"urn:sp\"\nuser_directory = \"C\"\n{extra}"
            );
            let mut config: SamlConfig =
                toml::from_str(&text).map_err(|error| error.to_string())?;
            let origins =
                [PublicOrigin::parse("https://gh.example.com").map_err(|e| e.to_string())?];
            config.load("app", &origins).map(|()| config)
        };
        assert!(
            url("https://idp.example.com/metadata", "").is_ok_and(|c| c.idp_metadata.is_empty())
        );
        assert!(url("http://127.0.0.1:8080/metadata", "").is_ok());
        assert!(
            url("http://idp.example.com/metadata", "")
                .unwrap_err()
                .contains("https")
        );
        assert!(
            url("https://idp.example.com/m", "metadata_refresh = \"10s\"")
                .unwrap_err()
                .contains("metadata_refresh")
        );
        let both = url(
            "https://idp.example.com/m",
            "idp_metadata_file = \"/x.xml\"",
        );
        assert!(both.unwrap_err().contains("exactly one"));
        let mut neither: SamlConfig =
            toml::from_str("entity_id = \"urn:sp\"\nuser_directory = \"C\"")
                .unwrap_or_else(|e| panic!("{e}"));
        let origins =
            [PublicOrigin::parse("https://gh.example.com").unwrap_or_else(|e| panic!("{e}"))];
        assert!(
            neither
                .load("app", &origins)
                .unwrap_err()
                .contains("exactly one")
        );
    }

    #[test]
    fn a_user_directory_is_required_fixed_or_from_an_attribute() {
        let good = metadata(REDIRECT, &signing_key());
        let origins = ["https://gh.example.com"];
        assert!(
            load("", &good, &origins)
                .unwrap_err()
                .contains("user_directory")
        );
        assert!(load("user_directory_attribute = \"dir\"", &good, &origins).is_ok());
        assert!(load("user_directory = \"A\\\\B\"", &good, &origins).is_err());
    }

    #[test]
    fn the_metadata_needs_a_redirect_sso_endpoint_and_a_signing_certificate() {
        let origins = ["https://gh.example.com"];
        let directory = "user_directory = \"CORP\"";
        let post_only = metadata(
            "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
            &signing_key(),
        );
        assert!(
            load(directory, &post_only, &origins)
                .unwrap_err()
                .contains("HTTP-Redirect")
        );
        let keyless = metadata(REDIRECT, "");
        assert!(
            load(directory, &keyless, &origins)
                .unwrap_err()
                .contains("signing certificate")
        );
        let broken = signing_key().replace(&CERTIFICATE[..40], "!!!!");
        assert!(load(directory, &metadata(REDIRECT, &broken), &origins).is_err());
        assert!(load(directory, "<not-metadata/>", &origins).is_err());
        assert!(load(directory, "", &origins).is_err());
    }

    #[test]
    fn single_logout_needs_a_logout_service_in_the_metadata_and_lands_on_a_local_path() {
        let base = "user_directory = \"CORP\"\nsingle_logout = true";
        let origins = ["https://gh.example.com"];
        let without = load(base, &good_metadata(), &origins);
        assert!(
            without
                .as_ref()
                .is_err_and(|error| error.contains("SingleLogoutService")),
            "{without:?}"
        );
        let slo = r#"<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/slo"/>"#;
        let with = metadata(REDIRECT, &format!("{}{slo}", signing_key()));
        let config = load(base, &with, &origins);
        assert_eq!(
            config.as_ref().map(SamlConfig::slo_url).as_deref(),
            Ok("https://gh.example.com/app/saml/slo")
        );
        assert_eq!(
            config.map(|config| config.logout_landing("app")).as_deref(),
            Ok("/app/")
        );
        for landing in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
        ] {
            let extra = format!("{base}\nlogout_redirect = {landing:?}");
            assert!(load(&extra, &with, &origins).is_err(), "{landing}");
        }
        let extra = format!("{base}\nlogout_redirect = \"/app/bye\"");
        assert_eq!(
            load(&extra, &with, &origins)
                .map(|config| config.logout_landing("app"))
                .as_deref(),
            Ok("/app/bye")
        );
    }

    /// A fresh RSA key (PEM) and a self-signed certificate for it (PEM).
    #[cfg(feature = "saml")]
    fn key_pair(bits: u32) -> (String, String) {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
        let key = PKey::from_rsa(Rsa::generate(bits).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut builder = x509::X509::builder().unwrap_or_else(|e| panic!("{e}"));
        let validity = |days| Asn1Time::days_from_now(days).unwrap_or_else(|e| panic!("{e}"));
        builder.set_pubkey(&key).unwrap_or_else(|e| panic!("{e}"));
        builder
            .set_not_before(&validity(0))
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .set_not_after(&validity(2))
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .sign(&key, MessageDigest::sha256())
            .unwrap_or_else(|e| panic!("{e}"));
        let pem = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap_or_else(|e| panic!("{e}"));
        (
            pem(key
                .private_key_to_pem_pkcs8()
                .unwrap_or_else(|e| panic!("{e}"))),
            pem(builder.build().to_pem().unwrap_or_else(|e| panic!("{e}"))),
        )
    }

    #[cfg(feature = "saml")]
    #[test]
    fn the_key_pair_is_both_files_or_neither_rsa_and_matching() {
        let dir = std::env::temp_dir().join(format!("gatehouse-saml-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            path
        };
        let (key, certificate) = key_pair(2048);
        let (_, other_certificate) = key_pair(2048);
        let (small_key, small_certificate) = key_pair(1024);
        let key = write("sp.key", &key);
        let certificate = write("sp.crt", &certificate);
        let other = write("other.crt", &other_certificate);
        let small_key = write("small.key", &small_key);
        let small_certificate = write("small.crt", &small_certificate);
        let good = metadata(REDIRECT, &signing_key());
        let origins = ["https://gh.example.com"];
        let with = |lines: &str| load(&format!("user_directory = \"C\"\n{lines}"), &good, &origins);
        let pair = |key: &std::path::Path, certificate: &std::path::Path| {
            format!("sp_key_file = {key:?}\nsp_certificate_file = {certificate:?}")
        };
        let loaded = with(&format!(
            "{}\nrequire_encrypted_assertions = true",
            pair(&key, &certificate)
        ));
        assert!(
            loaded.as_ref().is_ok_and(SamlConfig::has_key_pair),
            "{loaded:?}"
        );
        assert!(
            !format!("{loaded:?}").contains("PRIVATE KEY"),
            "the key is not in Debug"
        );
        assert!(
            with(&pair(&key, &other))
                .unwrap_err()
                .contains("not the certificate")
        );
        assert!(
            with(&pair(&small_key, &small_certificate))
                .unwrap_err()
                .contains("2048")
        );
        assert!(
            with(&pair(&certificate, &certificate))
                .unwrap_err()
                .contains("private key")
        );
        assert!(
            with(&format!("sp_key_file = {key:?}"))
                .unwrap_err()
                .contains("both")
        );
        assert!(
            with("require_encrypted_assertions = true")
                .unwrap_err()
                .contains("need sp_key_file")
        );
        assert!(
            with("sign_logout_messages = true")
                .unwrap_err()
                .contains("need sp_key_file")
        );
        assert!(with("").is_ok_and(|config| !config.has_key_pair()
            && !config.signs_logout_messages()
            && !config.signs_messages()));
        // With a key, logout messages are signed unless turned off.
        let keyed = |extra: &str| with(&format!("{}\n{extra}", pair(&key, &certificate)));
        assert!(keyed("").is_ok_and(|config| config.signs_logout_messages()));
        assert!(
            keyed("sign_logout_messages = false")
                .is_ok_and(|config| !config.signs_logout_messages())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
