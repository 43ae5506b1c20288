//! QUIC beneath the session: quinn, with rustls on ring.
//!
//! - **Identity.** A node's TLS certificate is self-signed with its own
//!   ed25519 key, so the key TLS 1.3 proves possession of (the
//!   CertificateVerify signature, checked here against the key in the
//!   certificate) is the peer id itself. Both sides present one; the
//!   dialling side also requires it to be the id it dialled. No CA, names
//!   or dates are involved ([`peerlink_proto::tlscert`]).
//! - **Version.** ALPN names the protocol (`peerlink/1`); a peer that
//!   speaks another fails the handshake.
//! - **Streams.** One bidirectional stream per connection carries the
//!   session's frames — the same records as over TCP, with a length header
//!   and no second encryption. Many small messages share a frame, and a
//!   frame shares packets, as over TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peerlink_proto::{Keypair, PeerId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::NetError;

/// The protocol and its version, as ALPN names it.
pub(crate) const ALPN: &[u8] = b"peerlink/1";
/// The name a dialler asks for: certificates carry no meaningful names.
const SERVER_NAME: &str = "peerlink";

/// An ed25519 private key as PKCS#8 v1 (RFC 8410): a fixed prefix, then
/// the 32-byte seed.
fn pkcs8(secret: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(secret);
    der
}

fn tls_error(e: impl std::fmt::Display) -> NetError {
    NetError::Tls(e.to_string())
}

/// A node's QUIC identity and settings, from which every endpoint
/// configuration is made.
pub(crate) struct QuicTls {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    provider: Arc<CryptoProvider>,
    transport: Arc<quinn::TransportConfig>,
}

impl QuicTls {
    pub fn new(keypair: &Keypair, idle_timeout: Duration) -> Result<Self, NetError> {
        let key = PrivatePkcs8KeyDer::from(pkcs8(&keypair.secret()));
        let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
            .map_err(tls_error)?;
        let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(tls_error)?
            .self_signed(&signer)
            .map_err(tls_error)?;
        let mut transport = quinn::TransportConfig::default();
        // The session keeps the connection alive and times it out itself;
        // QUIC's idle timeout only backs it up.
        let idle = quinn::IdleTimeout::try_from(idle_timeout).map_err(tls_error)?;
        transport
            .max_idle_timeout(Some(idle))
            // One stream each way is all a connection uses.
            .max_concurrent_bidi_streams(1u32.into())
            .max_concurrent_uni_streams(0u32.into())
            // Room for a busy stream between two reads (~ the TCP buffers).
            .stream_receive_window((8u32 << 20).into())
            .receive_window((16u32 << 20).into())
            .send_window(16 << 20);
        Ok(QuicTls {
            cert: cert.der().clone(),
            key,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            transport: Arc::new(transport),
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// What a listening endpoint accepts with: any peer whose certificate
    /// proves an ed25519 key.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, NetError> {
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(Arc::new(PeerVerifier::new(None)))
            .with_single_cert(vec![self.cert.clone()], self.key())
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(tls_error)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(self.transport.clone());
        Ok(config)
    }

    /// What a dial to `expected` connects with: the server must prove it.
    pub fn client_config(&self, expected: PeerId) -> Result<quinn::ClientConfig, NetError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(Some(expected))))
            .with_client_auth_cert(vec![self.cert.clone()], self.key())
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(tls_error)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.transport.clone());
        Ok(config)
    }
}

/// The endpoint of a node: listening on `addr`, or (no listen address)
/// bound to an ephemeral port of `addr`'s family for dialling only.
pub(crate) fn endpoint(
    tls: &QuicTls,
    addr: SocketAddr,
    listen: bool,
) -> Result<quinn::Endpoint, NetError> {
    let server = match listen {
        true => Some(tls.server_config()?),
        false => None,
    };
    let socket = std::net::UdpSocket::bind(addr)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| NetError::Tls("no async runtime for QUIC".to_string()))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        runtime,
    )?)
}

/// Dials `addr`, expecting `expected` there.
pub(crate) async fn connect(
    endpoint: &quinn::Endpoint,
    tls: &QuicTls,
    addr: SocketAddr,
    expected: PeerId,
) -> Result<quinn::Connection, NetError> {
    let config = tls.client_config(expected)?;
    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(tls_error)?;
    Ok(connecting.await?)
}

/// The peer id a connection's peer proved in its handshake.
pub(crate) fn peer_of(conn: &quinn::Connection) -> Result<PeerId, NetError> {
    let certs = conn
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| NetError::Tls("peer presented no certificate".to_string()))?;
    let cert = certs
        .first()
        .ok_or_else(|| NetError::Tls("peer presented no certificate".to_string()))?;
    Ok(peerlink_proto::tlscert::peer_id_of(cert)?)
}

/// Checks a peer's certificate chain (one self-signed certificate) and its
/// handshake signature, on either side.
#[derive(Debug)]
struct PeerVerifier {
    /// The id the dialling side expects; `None` on the listening side.
    expected: Option<PeerId>,
    schemes: Vec<SignatureScheme>,
}

impl PeerVerifier {
    fn new(expected: Option<PeerId>) -> Self {
        PeerVerifier {
            expected,
            schemes: vec![SignatureScheme::ED25519],
        }
    }

    fn check_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a peer presents one certificate".into(),
            ));
        }
        let id = peerlink_proto::tlscert::peer_id_of(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        match self.expected {
            Some(expected) if expected != id => Err(rustls::Error::General(format!(
                "peer is {id}, not the {expected} dialled"
            ))),
            _ => Ok(()),
        }
    }

    fn check_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::General("peers sign with ed25519".into()));
        }
        let id = peerlink_proto::tlscert::peer_id_of(cert)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        id.verify(message, dss.signature())
            .map_err(|_| rustls::Error::General("handshake signature is invalid".into()))?;
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_chain(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_chain(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}
