//! Test certificates: a CA, a server and client certificate it signs, and a rogue pair.
#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Certificates for one test, as PEM files in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

pub fn make_ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = p.self_signed(&key).unwrap().pem();
    (p, key, pem)
}

pub fn make_leaf(
    cn: &str,
    sans: &[&str],
    ca: &(CertificateParams, KeyPair, String),
) -> (String, String) {
    make_leaf_with(cn, sans, ca, |_| {})
}

/// [`make_leaf`] with its parameters changed by `adjust` (validity, usages) before signing.
pub fn make_leaf_with(
    cn: &str,
    sans: &[&str],
    ca: &(CertificateParams, KeyPair, String),
    adjust: impl FnOnce(&mut CertificateParams),
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    adjust(&mut p);
    let issuer = Issuer::from_params(&ca.0, &ca.1);
    (
        p.signed_by(&key, &issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca("edgerelay test CA");
        let other = make_ca("some other CA");
        let (server, server_key) = make_leaf("127.0.0.1", &["127.0.0.1", "localhost"], &ca);
        let (client, client_key) = make_leaf("edgerelay-test", &[], &ca);
        let (rogue, rogue_key) = make_leaf("edgerelay-test", &[], &other);
        let (expired, expired_key) = make_leaf_with("edgerelay-test", &[], &ca, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        });
        for (name, text) in [
            ("ca.pem", &ca.2),
            ("other-ca.pem", &other.2),
            ("server.pem", &server),
            ("server.key", &server_key),
            ("client.pem", &client),
            ("client.key", &client_key),
            ("rogue.pem", &rogue),
            ("rogue.key", &rogue_key),
            ("expired.pem", &expired),
            ("expired.key", &expired_key),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The text of one of the PEM files.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }
}
