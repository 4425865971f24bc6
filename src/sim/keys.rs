//! Fixed RSA test keys, embedded in the binary. SIMULATOR ONLY: they are committed to the
//! repository and protect nothing (see `keys/README.md`).
//!
//! One key pair belongs to the service-account key file the simulator writes (the client signs
//! its JWT-bearer assertion with it, the simulator verifies); four belong to the simulated Auth0
//! tenant's signing keys (current, next, previous, revoked, in the order the world lists them).

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// The private key of the service-account key file (PKCS#8 PEM), simulator only.
pub const GOOGLE_SA_KEY_PEM: &str = include_str!("keys/google-sa.key.pem");

const AUTH0_KEYS: [(&str, &str, &str); 4] = [
    (
        include_str!("keys/auth0-1.key.pem"),
        include_str!("keys/auth0-1.cert.pem"),
        "88:15:7D:FA:92:41:FF:FC:55:FD:E7:5E:28:99:AB:9C:9D:C2:21:3B",
    ),
    (
        include_str!("keys/auth0-2.key.pem"),
        include_str!("keys/auth0-2.cert.pem"),
        "38:C3:E6:E5:32:BC:B0:FE:93:8E:3A:C5:00:50:AE:97:9B:CF:39:61",
    ),
    (
        include_str!("keys/auth0-3.key.pem"),
        include_str!("keys/auth0-3.cert.pem"),
        "E1:AD:52:61:54:D8:29:8C:80:6A:39:A5:49:75:81:CD:8D:03:B8:E9",
    ),
    (
        include_str!("keys/auth0-4.key.pem"),
        include_str!("keys/auth0-4.cert.pem"),
        "54:65:09:F9:FA:98:E6:AF:26:CA:D9:8A:91:B0:04:C2:CE:38:E1:D2",
    ),
];

/// How many Auth0 signing keys the simulator can serve.
pub const AUTH0_KEY_COUNT: usize = AUTH0_KEYS.len();

/// One RSA key pair, ready to sign and verify.
pub struct KeyPair {
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public key as a JWK (no `kid`; callers add it).
    pub jwk: Jwk,
    pub cert_pem: &'static str,
    pub fingerprint: &'static str,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn load(pem: &str, cert_pem: &'static str, fingerprint: &'static str) -> KeyPair {
    // The embedded keys are checked by the tests; a failure here is a build defect.
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("embedded test key parses");
    let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("RSA key has a JWK");
    let decoding = DecodingKey::from_jwk(&jwk).expect("a JWK we built is usable");
    KeyPair {
        encoding,
        decoding,
        jwk,
        cert_pem,
        fingerprint,
    }
}

/// Every embedded key, loaded once per simulator.
#[derive(Debug)]
pub struct Keys {
    pub google_sa: KeyPair,
    pub auth0: Vec<KeyPair>,
}

impl Keys {
    pub fn load() -> Keys {
        Keys {
            google_sa: load(GOOGLE_SA_KEY_PEM, "", ""),
            auth0: AUTH0_KEYS.iter().map(|(k, c, f)| load(k, c, f)).collect(),
        }
    }
}
