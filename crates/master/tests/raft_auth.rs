//! Certificate identities and who may use the Raft service, on real certificates made by the
//! `taurus tls` generator (rcgen). The end-to-end TLS cluster is the TLS work's test; this
//! checks the decision every Raft RPC goes through.

use std::collections::BTreeSet;

use taurus_protocol::identity::CertIdentity;
use taurus_protocol::identity::CertRole;
use taurus_protocol::identity::cert_identity;
use taurus_protocol::tls::generate;
use taurus_store::network::raft_refusal;
use tonic::Code;

fn der(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    p.contents
}

fn identity(role: generate::Role, name: &str) -> CertIdentity {
    let ca = generate::ca("test-ca", 1).expect("ca");
    let leaf = generate::leaf(&ca, role, name, &[], 1).expect("leaf");
    cert_identity(&der(&leaf.cert)).expect("identity")
}

#[test]
fn certificates_name_their_holder_and_role() {
    assert_eq!(
        identity(generate::Role::Master, "m1"),
        CertIdentity {
            role: CertRole::Master,
            name: "m1".into()
        }
    );
    assert_eq!(identity(generate::Role::Agent, "w7").role, CertRole::Agent);
    assert_eq!(identity(generate::Role::Client, "alice").role, CertRole::Client);
    // A CA certificate (no OU) carries no identity; garbage neither.
    let ca = generate::ca("test-ca", 1).expect("ca");
    assert_eq!(cert_identity(&der(&ca.cert)), None);
    assert_eq!(cert_identity(b"not a certificate"), None);
}

#[test]
fn raft_accepts_only_master_certificates_when_tls_is_on() {
    let members: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let master = identity(generate::Role::Master, "m2");
    let client = identity(generate::Role::Client, "alice");
    let agent = identity(generate::Role::Agent, "w1");
    assert!(raft_refusal(true, Some(&master), Some(2), Some(&members)).is_none());
    for who in [&client, &agent] {
        let s = raft_refusal(true, Some(who), Some(2), Some(&members)).expect("refused");
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("OU=master"), "{s:?}");
    }
    let s = raft_refusal(true, None, Some(2), Some(&members)).expect("refused");
    assert_eq!(s.code(), Code::Unauthenticated);
    // Without TLS nothing is known about the peer: only the membership check applies.
    assert!(raft_refusal(false, None, Some(2), Some(&members)).is_none());
}

#[test]
fn a_vote_from_a_non_member_is_refused_even_with_a_valid_master_certificate() {
    let members: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let outsider = identity(generate::Role::Master, "m9");
    let s = raft_refusal(true, Some(&outsider), Some(9), Some(&members)).expect("refused");
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("node 9 is not a member"), "{s:?}");
    // A valid client certificate claiming a member's id is refused for its role.
    let client = identity(generate::Role::Client, "m2");
    assert!(raft_refusal(true, Some(&client), Some(2), Some(&members)).is_some());
    // A node that knows no membership yet (a learner being added) accepts its first leader.
    assert!(raft_refusal(true, Some(&outsider), Some(9), None).is_none());
    assert!(raft_refusal(true, Some(&outsider), Some(9), Some(&BTreeSet::new())).is_none());
}
