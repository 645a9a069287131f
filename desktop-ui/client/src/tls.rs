//! Certificate pinning. A box serves a self-signed certificate, so no certificate authority
//! can vouch for it: the admin confirms its SHA-256 fingerprint once (the daemon prints it
//! next to the pairing code) and from then on only that exact certificate is accepted. The
//! handshake signatures are still checked with the crypto provider's algorithms, so a
//! server must hold the pinned certificate's private key, not merely send the certificate.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use sha2::{Digest as _, Sha256};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

use crate::Error;

/// A certificate's fingerprint as the daemon prints it (and `openssl x509 -fingerprint
/// -sha256`): upper-case hex pairs joined by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Validates a fingerprint the admin pasted (any case, with or without `:` or spaces) and
/// returns it in the daemon's form.
pub fn normalise_fingerprint(text: &str) -> Result<String, Error> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::InvalidFingerprint {
            fingerprint: text.to_string(),
        });
    }
    let pairs: Vec<&str> = (0..32).filter_map(|i| hex.get(2 * i..2 * i + 2)).collect();
    Ok(pairs.join(":"))
}

/// Accepts only the pinned certificate (or, with no pin, any certificate: used once, by
/// `probe`, to learn the fingerprint the admin then confirms). Remembers the last
/// certificate it saw so a refusal can say which fingerprint the server presented.
pub(crate) struct PinVerifier {
    /// The fingerprint to accept, in the daemon's form; `None` while probing.
    pinned: Option<String>,
    /// The fingerprint of the last certificate the server presented.
    seen: Mutex<Option<String>>,
    /// Signature algorithms of the crypto provider, for the handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinVerifier")
            .field("pinned", &self.pinned)
            .field("seen", &self.seen_fingerprint())
            .finish_non_exhaustive()
    }
}

impl PinVerifier {
    pub(crate) fn new(pinned: Option<String>, provider: &CryptoProvider) -> PinVerifier {
        PinVerifier {
            pinned,
            seen: Mutex::new(None),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    pub(crate) fn seen_fingerprint(&self) -> Option<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity.as_ref());
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(got.clone());
        match &self.pinned {
            None => Ok(ServerCertVerified::assertion()),
            Some(expected) if *expected == got => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls client configuration that trusts exactly what `verifier` accepts.
pub(crate) fn client_config(
    address: &str,
    verifier: Arc<PinVerifier>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>, Error> {
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            address: address.to_string(),
            message: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS step of ureq's connector chain, wrapping the TCP stream with our pinned
/// configuration (ureq's own rustls connector can only verify against root certificates).
#[derive(Debug)]
pub(crate) struct PinnedTlsConnector {
    pub(crate) config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for PinnedTlsConnector {
    type Out = Either<In, PinnedTlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Err(ureq::Error::ConnectionFailed);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::BadUri(format!("`{host}` is not a valid server name")))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        Ok(Some(Either::B(PinnedTlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// A TLS connection made by [`PinnedTlsConnector`].
pub(crate) struct PinnedTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for PinnedTlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedTlsTransport").finish_non_exhaustive()
    }
}

impl Transport for PinnedTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised() {
        let fp = fingerprint(b"x");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert_eq!(normalise_fingerprint(&fp.to_lowercase()).unwrap(), fp);
        assert_eq!(normalise_fingerprint(&fp.replace(':', "")).unwrap(), fp);
        assert!(normalise_fingerprint("AB:CD").is_err());
        assert!(normalise_fingerprint(&"ZZ".repeat(32)).is_err());
    }
}
