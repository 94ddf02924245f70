//! A throwaway CA, the emulator's server certificate signed by it, more certificates on request
//! (for other local servers the tests run), and an impostor of it all for
//! [`ConnectionFault::UntrustedCertificate`](crate::ConnectionFault::UntrustedCertificate).

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

pub(crate) struct TlsMaterial {
    pub(crate) ca_pem: String,
    pub(crate) server_config: Arc<ServerConfig>,
    /// The same names, under a CA that nobody trusts.
    pub(crate) untrusted_config: Arc<ServerConfig>,
    /// Kept so that other local servers (Azurite in the tests) can get certificates that clients
    /// trusting only the emulator's CA accept.
    pub(crate) issuer: CertIssuer,
}

/// A CA key with the validity window of the certificates it signs.
pub(crate) struct CertIssuer {
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl CertIssuer {
    /// A new self-signed CA named `name`, and its certificate.
    fn new_ca(
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> io::Result<(CertIssuer, rcgen::Certificate)> {
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let mut params = CertificateParams::new(Vec::new()).map_err(io::Error::other)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "azure_pipelines_emulator");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key).map_err(io::Error::other)?;
        let issuer = CertIssuer {
            issuer: Issuer::new(params, key),
            not_before,
            not_after,
        };
        Ok((issuer, cert))
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by the CA, and its
    /// private key: both PEM (the key PKCS#8).
    pub(crate) fn issue(&self, names: &[&str]) -> io::Result<(String, String)> {
        let (cert, key) = self.leaf(names)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn leaf(&self, names: &[&str]) -> io::Result<(rcgen::Certificate, KeyPair)> {
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let common_name = names
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".to_owned());
        let mut params = CertificateParams::new(names).map_err(io::Error::other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(io::Error::other)?;
        Ok((cert, key))
    }

    /// A server configuration presenting a certificate for `names` signed by this CA.
    fn server_config(
        &self,
        ca_cert: &rcgen::Certificate,
        names: &[&str],
    ) -> io::Result<Arc<ServerConfig>> {
        let (leaf_cert, leaf_key) = self.leaf(names)?;
        let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        // An explicit provider, because the process-wide default may be unset
        // or may have been installed by another crate.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io::Error::other)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl TlsMaterial {
    /// A new CA and the server configuration of a certificate for `names` signed by it; and the
    /// same again under another CA, for the impostor.
    pub(crate) fn generate(names: &[&str]) -> io::Result<TlsMaterial> {
        // Backdated so that a client whose clock is a little behind still
        // accepts the certificates; a year covers long standalone runs.
        let now = OffsetDateTime::now_utc();
        let not_before = now - Duration::days(1);
        let not_after = now + Duration::days(365);

        let (issuer, ca_cert) =
            CertIssuer::new_ca("Azure Pipelines Emulator CA", not_before, not_after)?;
        let server_config = issuer.server_config(&ca_cert, names)?;
        let (impostor, impostor_cert) =
            CertIssuer::new_ca("Untrusted Emulator CA", not_before, not_after)?;
        let untrusted_config = impostor.server_config(&impostor_cert, names)?;

        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            server_config,
            untrusted_config,
            issuer,
        })
    }
}
