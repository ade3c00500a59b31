//! TLS to the warehouse (rustls through `tokio-postgres-rustls`), with libpq's `sslmode`
//! meanings, so a connection string copied from `psql` means the same here:
//!
//! | sslmode | encrypted | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default, as libpq) | when the server offers TLS | not checked |
//! | `require` | always, else no connection | not checked |
//! | `verify-ca` | always | signed by a trusted root |
//! | `verify-full` | always | signed by a trusted root and issued for the host connected to |
//!
//! Trusted roots: `ssl_root_cert_pem` when given (libpq's `sslrootcert`), else the system's.
//! `prefer` and `require` protect against eavesdropping only, not against an impostor: use
//! `verify-full` wherever the network is not trusted.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// What the driver negotiates (it knows no verification levels: the connector does those).
    pub fn driver_mode(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match self {
            SslMode::Disable => Driver::Disable,
            SslMode::Prefer => Driver::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
        }
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Takes `sslmode` out of a connection string (URL `?sslmode=` or `key=value` form), since the
/// driver's parser knows only `disable`/`prefer`/`require`. Returns the rest and the value.
pub fn split_sslmode(connection: &str) -> (String, Option<String>) {
    if connection.contains("://") {
        let Some((base, query)) = connection.split_once('?') else {
            return (connection.to_string(), None);
        };
        let mut mode = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.strip_prefix("sslmode=") {
                Some(value) => {
                    mode = Some(value.to_string());
                    false
                }
                None => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, mode);
    }
    let mut mode = None;
    let kept: Vec<&str> = connection
        .split_whitespace()
        .filter(|pair| match pair.strip_prefix("sslmode=") {
            Some(value) => {
                mode = Some(value.trim_matches('\'').to_string());
                false
            }
            None => true,
        })
        .collect();
    (kept.join(" "), mode)
}

/// The roots of `ssl_root_cert_pem` (at least one certificate), or a message.
pub fn parse_roots(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("not PEM certificates: {error}"))?;
    if certificates.is_empty() {
        return Err("holds no `-----BEGIN CERTIFICATE-----` block".into());
    }
    Ok(certificates)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector for `mode`: every mode gets one (with `disable` the driver never uses it).
pub fn connector(mode: SslMode, root_pem: Option<&str>) -> Result<MakeRustlsConnect, String> {
    let provider = provider();
    let chain = if mode.verifies() {
        let mut roots = RootCertStore::empty();
        match root_pem {
            Some(pem) => {
                for certificate in parse_roots(pem)? {
                    roots
                        .add(certificate)
                        .map_err(|error| format!("ssl_root_cert_pem: {error}"))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|error| format!("cannot build the certificate verifier: {error}"))?;
        Some(webpki)
    } else {
        None
    };
    let verifier = Arc::new(Verifier {
        provider: provider.clone(),
        chain,
        check_name: mode == SslMode::VerifyFull,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot configure TLS: {error}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The server certificate check of a mode. `verify-ca`/`verify-full` (`chain`): the chain must
/// lead to a trusted root, the host name checked only for `verify-full`. `prefer`/`require` (no
/// chain): any certificate is accepted, as libpq does. The handshake's signatures are checked
/// against the certificate in every mode.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_both_connection_string_forms() {
        assert_eq!(
            split_sslmode("postgres://u@h/db?sslmode=verify-full"),
            ("postgres://u@h/db".to_string(), Some("verify-full".into()))
        );
        assert_eq!(
            split_sslmode("postgres://u@h/db?application_name=x&sslmode=require&connect_timeout=3"),
            (
                "postgres://u@h/db?application_name=x&connect_timeout=3".to_string(),
                Some("require".into())
            )
        );
        assert_eq!(
            split_sslmode("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
        assert_eq!(
            split_sslmode("host=h user=u sslmode=verify-ca dbname=d"),
            (
                "host=h user=u dbname=d".to_string(),
                Some("verify-ca".into())
            )
        );
    }

    #[test]
    fn modes_and_driver_modes() {
        use tokio_postgres::config::SslMode as Driver;
        assert_eq!(SslMode::parse("verify-full"), Some(SslMode::VerifyFull));
        assert_eq!(
            SslMode::parse("allow"),
            None,
            "libpq's allow is not offered"
        );
        assert_eq!(SslMode::default(), SslMode::Prefer, "libpq's default");
        assert_eq!(SslMode::VerifyCa.driver_mode(), Driver::Require);
        assert_eq!(SslMode::Disable.driver_mode(), Driver::Disable);
        assert!(parse_roots("not pem").is_err());
        assert!(connector(SslMode::VerifyFull, None).is_ok(), "system roots");
        assert!(connector(SslMode::VerifyCa, Some("garbage")).is_err());
    }
}
