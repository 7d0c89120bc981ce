//! TLS for the `tls` and `wss` listeners: a rustls server configuration built from PEM files
//! (checked at start-up, each error naming the file), and the identity of a verified client
//! certificate; and the client configuration of jetmq's own TLS connection to NATS.
//!
//! Only the `ring` provider is used, named explicitly, so the server never depends on which
//! process-wide default provider other crates may have enabled.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::RootCertStore;

use crate::config_error::{invalid, ConfigError};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &str, path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        invalid(
            key,
            path.display(),
            &format!("a readable PEM file {what}; reading it failed: {e}"),
        )
    })
}

fn certificates(
    key: &str,
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(key, path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            invalid(
                key,
                path.display(),
                &format!("a PEM file {what}; it is not valid PEM: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            path.display(),
            &format!("a PEM file {what}; it holds no CERTIFICATE section"),
        ));
    }
    Ok(certs)
}

/// The private key in the PEM file `path` (`key` names the setting).
fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read(key, path, "holding the private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        invalid(
            key,
            path.display(),
            &format!("a PEM file holding a PKCS#8, PKCS#1 or SEC1 private key ({e})"),
        )
    })
}

/// A certificate chain (leaf first) from the PEM file `path`, its first certificate checked.
fn chain(key: &str, path: &Path, whose: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let chain = certificates(key, path, &format!("holding the {whose} certificate chain"))?;
    if let Err(e) = ParsedCertificate::try_from(&chain[0]) {
        return Err(invalid(
            key,
            path.display(),
            &format!("a PEM file whose first certificate is a valid X.509 certificate ({e})"),
        ));
    }
    Ok(chain)
}

/// The error for a key file (`key`, setting `key_key`) that does not belong to the
/// certificate in `cert`.
fn not_its_key(key_key: &str, key: &Path, cert: &Path, e: &rustls::Error) -> ConfigError {
    invalid(
        key_key,
        key.display(),
        &format!(
            "the private key of the certificate in {} ({e})",
            cert.display()
        ),
    )
}

/// The CA certificates of the PEM file `path` as trust anchors.
fn roots(key: &str, path: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for (i, der) in certificates(key, path, "of CA certificates")?
        .into_iter()
        .enumerate()
    {
        roots.add(der).map_err(|e| {
            invalid(
                key,
                path.display(),
                &format!("a PEM file of CA certificates; certificate {i} is unusable: {e}"),
            )
        })?;
    }
    Ok(roots)
}

/// Builds the server side of TLS from PEM files: `cert` (the certificate chain, leaf first),
/// `key` (its private key) and, when given, `client_ca` (CA certificates that every client
/// must present a certificate signed by). Error keys are `prefix` followed by `cert`, `key` or
/// `client_ca`.
pub(crate) fn server_config(
    prefix: &str,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let cert_key = format!("{prefix}cert");
    let key_key = format!("{prefix}key");
    let ca_key = format!("{prefix}client_ca");
    let chain = chain(&cert_key, cert, "server's")?;
    let private_key = private_key(&key_key, key)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| invalid(&cert_key, cert.display(), &format!("TLS 1.2 or 1.3 ({e})")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = roots(&ca_key, ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    invalid(
                        &ca_key,
                        ca.display(),
                        &format!("a PEM file of CA certificates ({e})"),
                    )
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| not_its_key(&key_key, key, cert, &e))?;
    Ok(Arc::new(config))
}

/// Builds the client side of TLS (jetmq connecting to NATS): the server's certificate is
/// verified against the CA certificates of `ca` or, without it, the system's trusted roots;
/// `client` is a certificate chain and its key, for servers that verify clients. Error keys
/// are `prefix` followed by `ca_file`, `cert_file` or `key_file`.
pub(crate) fn client_config(
    prefix: &str,
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let ca_key = format!("{prefix}ca_file");
    let roots = match ca {
        Some(ca) => roots(&ca_key, ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(invalid(
                    &ca_key,
                    "(not set)",
                    "the CA certificates that signed the NATS server's certificate: this \
                     machine has no system CA certificates to use instead",
                ));
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| invalid(&ca_key, "(TLS versions)", &format!("TLS 1.2 or 1.3 ({e})")))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let cert_key = format!("{prefix}cert_file");
            let key_key = format!("{prefix}key_file");
            let chain = chain(&cert_key, cert, "client's")?;
            let private_key = private_key(&key_key, key)?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|e| not_its_key(&key_key, key, cert, &e))?
        }
    };
    Ok(Arc::new(config))
}

/// The identity of a client certificate: its subject as an RFC 4514 string (`CN=device-1,O=Acme`),
/// or its first DNS name when the subject is empty. `None` if neither can be read.
pub(crate) fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    let tbs = der::tbs_certificate(cert.as_ref())?;
    let subject = der::subject_string(tbs.subject);
    if !subject.is_empty() {
        return Some(subject);
    }
    tbs.extensions.and_then(der::first_dns_name)
}

/// Just enough DER to read a certificate's subject and DNS names. The certificate was already
/// verified by rustls; malformed input still only yields `None`, never a panic.
mod der {
    use std::fmt::Write as _;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const OCTET_STRING: u8 = 0x04;
    const BOOLEAN: u8 = 0x01;
    const VERSION: u8 = 0xa0;
    const EXTENSIONS: u8 = 0xa3;
    const DNS_NAME: u8 = 0x82;
    /// 2.5.29.17, subjectAltName.
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

    /// Splits one element off `input`: its tag, its contents and the rest.
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // High tag numbers appear nowhere we look.
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (bytes, after) = rest.split_at(count);
            rest = after;
            bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        Some((tag, contents, rest))
    }

    /// Like [`element`], but the tag must be `want`.
    fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
        let (tag, contents, rest) = element(input)?;
        (tag == want).then_some((contents, rest))
    }

    /// The parts of a TBSCertificate read here.
    pub(super) struct Tbs<'a> {
        /// The subject Name's contents (a sequence of RDN sets).
        pub(super) subject: &'a [u8],
        /// The contents of the Extensions sequence, if present.
        pub(super) extensions: Option<&'a [u8]>,
    }

    pub(super) fn tbs_certificate(cert: &[u8]) -> Option<Tbs<'_>> {
        let (certificate, _) = expect(cert, SEQUENCE)?;
        let (tbs, _) = expect(certificate, SEQUENCE)?;
        let mut rest = tbs;
        let (tag, _, after) = element(rest)?;
        if tag == VERSION {
            rest = after;
        }
        // serialNumber, signature, issuer, validity, then subject.
        for _ in 0..4 {
            rest = element(rest)?.2;
        }
        let (subject, mut rest) = expect(rest, SEQUENCE)?;
        let mut extensions = None;
        while !rest.is_empty() {
            let (tag, contents, after) = element(rest)?;
            if tag == EXTENSIONS {
                extensions = Some(expect(contents, SEQUENCE)?.0);
            }
            rest = after;
        }
        Some(Tbs {
            subject,
            extensions,
        })
    }

    fn oid_text(oid: &[u8]) -> String {
        let short = match oid {
            [0x55, 0x04, 0x03] => "CN",
            [0x55, 0x04, 0x06] => "C",
            [0x55, 0x04, 0x07] => "L",
            [0x55, 0x04, 0x08] => "ST",
            [0x55, 0x04, 0x09] => "STREET",
            [0x55, 0x04, 0x0a] => "O",
            [0x55, 0x04, 0x0b] => "OU",
            [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
            [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
            _ => "",
        };
        if !short.is_empty() {
            return short.to_string();
        }
        // Dotted decimal: base-128 numbers, the first of which holds two arcs.
        let mut text = String::new();
        let mut value: u64 = 0;
        for &b in oid {
            value = (value << 7) | u64::from(b & 0x7f);
            if b & 0x80 != 0 {
                continue;
            }
            if text.is_empty() {
                let (first, second) = match value {
                    0..=39 => (0, value),
                    40..=79 => (1, value - 40),
                    _ => (2, value - 80),
                };
                let _ = write!(text, "{first}.{second}");
            } else {
                let _ = write!(text, ".{value}");
            }
            value = 0;
        }
        text
    }

    fn value_text(tag: u8, contents: &[u8], out: &mut String) {
        let text = match tag {
            // UTF8String, PrintableString, IA5String, TeletexString, VisibleString.
            0x0c | 0x13 | 0x16 | 0x14 | 0x1a => String::from_utf8_lossy(contents).into_owned(),
            // BMPString: UTF-16 big-endian.
            0x1e => {
                let units: Vec<u16> = contents
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            }
            _ => {
                // Anything else as RFC 4514's `#` and the hex of its BER encoding.
                out.push('#');
                let _ = write!(out, "{tag:02x}");
                let len = contents.len();
                if len < 0x80 {
                    let _ = write!(out, "{len:02x}");
                } else {
                    let bytes = len.to_be_bytes();
                    let skip = bytes.iter().take_while(|&&b| b == 0).count();
                    let _ = write!(out, "{:02x}", 0x80 | (bytes.len() - skip));
                    for b in &bytes[skip..] {
                        let _ = write!(out, "{b:02x}");
                    }
                }
                for b in contents {
                    let _ = write!(out, "{b:02x}");
                }
                return;
            }
        };
        let last = text.chars().count().saturating_sub(1);
        for (i, c) in text.chars().enumerate() {
            let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
                || (i == 0 && matches!(c, ' ' | '#'))
                || (i == last && c == ' ');
            if special {
                out.push('\\');
            }
            if c == '\0' {
                out.push_str("\\00");
            } else {
                out.push(c);
            }
        }
    }

    /// A Name's contents as an RFC 4514 string: the last RDN first, `,` between RDNs and `+`
    /// between the attributes of one RDN. Empty when the name is empty or malformed.
    pub(super) fn subject_string(name: &[u8]) -> String {
        let mut rdns = Vec::new();
        let mut rest = name;
        while !rest.is_empty() {
            let Some((set, after)) = expect(rest, SET) else {
                return String::new();
            };
            let mut rdn = String::new();
            let mut attrs = set;
            while !attrs.is_empty() {
                let Some((attr, after)) = expect(attrs, SEQUENCE) else {
                    return String::new();
                };
                let Some((oid, value)) = expect(attr, OID) else {
                    return String::new();
                };
                let Some((tag, contents, _)) = element(value) else {
                    return String::new();
                };
                if !rdn.is_empty() {
                    rdn.push('+');
                }
                rdn.push_str(&oid_text(oid));
                rdn.push('=');
                value_text(tag, contents, &mut rdn);
                attrs = after;
            }
            rdns.push(rdn);
            rest = after;
        }
        rdns.reverse();
        rdns.join(",")
    }

    /// The first dNSName of the subjectAltName extension, from the Extensions' contents.
    pub(super) fn first_dns_name(extensions: &[u8]) -> Option<String> {
        let mut rest = extensions;
        while !rest.is_empty() {
            let (extension, after) = expect(rest, SEQUENCE)?;
            rest = after;
            let (oid, mut fields) = expect(extension, OID)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            if let Some((BOOLEAN, _, after)) = element(fields) {
                fields = after;
            }
            let (value, _) = expect(fields, OCTET_STRING)?;
            let (mut names, _) = expect(value, SEQUENCE)?;
            while !names.is_empty() {
                let (tag, contents, after) = element(names)?;
                if tag == DNS_NAME {
                    return Some(String::from_utf8_lossy(contents).into_owned());
                }
                names = after;
            }
            return None;
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn oids_print_as_short_names_or_dotted_decimal() {
            assert_eq!(oid_text(&[0x55, 0x04, 0x03]), "CN");
            // 1.2.840.113549.1.9.1 (emailAddress).
            assert_eq!(
                oid_text(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
                "1.2.840.113549.1.9.1"
            );
            // 2.999.3
            assert_eq!(oid_text(&[0x88, 0x37, 0x03]), "2.999.3");
        }

        #[test]
        fn malformed_input_yields_nothing() {
            assert!(tbs_certificate(&[]).is_none());
            assert!(tbs_certificate(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_none());
            assert!(tbs_certificate(&[0x30, 0x03, 0x30, 0x05, 0x00]).is_none());
            assert_eq!(subject_string(&[0x31, 0x02, 0x30]), "");
            assert!(first_dns_name(&[0x30, 0x01]).is_none());
        }

        #[test]
        fn special_characters_are_escaped() {
            let mut out = String::new();
            value_text(0x0c, b" a,b+c#", &mut out);
            assert_eq!(out, "\\ a\\,b\\+c#");
            let mut out = String::new();
            value_text(0x02, &[0x01], &mut out);
            assert_eq!(out, "#020101");
        }
    }
}

/// The identity of the client certificate rustls verified, if it asked for one.
pub fn client_identity(tls: &rustls::ServerConnection) -> Option<String> {
    tls.peer_certificates()
        .and_then(<[_]>::first)
        .and_then(crate::tls::identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert_with(params: CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn the_identity_is_the_subject_in_rfc_4514_order() {
        let mut params = CertificateParams::new(vec!["device-1.example".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "NL");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme, Inc.");
        params
            .distinguished_name
            .push(DnType::CommonName, "device-1");
        assert_eq!(
            identity(&cert_with(params)).as_deref(),
            Some("CN=device-1,O=Acme\\, Inc.,C=NL")
        );
    }

    #[test]
    fn an_empty_subject_falls_back_to_the_first_dns_name() {
        let mut params =
            CertificateParams::new(vec!["a.example".into(), "b.example".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        assert_eq!(identity(&cert_with(params)).as_deref(), Some("a.example"));
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        assert_eq!(identity(&cert_with(params)), None);
    }

    #[test]
    fn garbage_has_no_identity() {
        assert_eq!(identity(&CertificateDer::from(vec![0x30, 0x00])), None);
    }
}
