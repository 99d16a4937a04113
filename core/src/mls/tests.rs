//! The MLS checks on real openmls objects and on junk.

use openmls::prelude::{
    BasicCredential, CredentialWithKey, KeyPackage, MlsMessageOut, tls_codec::Serialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

use super::*;

const USER: &str = "alice@example.org";

/// A signer and a KeyPackage of `user`'s, serialized as sent.
fn key_package(user: &str) -> (SignatureKeyPair, Vec<u8>) {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).expect("key pair");
    let credential = CredentialWithKey {
        credential: BasicCredential::new(user.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let bundle = KeyPackage::builder()
        .build(CIPHERSUITE, &provider, &signer, credential)
        .expect("key package");
    let bytes = MlsMessageOut::from(bundle.key_package().clone())
        .tls_serialize_detached()
        .expect("serialize");
    (signer, bytes)
}

fn checker() -> Checker {
    use openmls::prelude::OpenMlsCrypto as _;
    let (private, public) = RustCrypto::default()
        .signature_key_gen(SignatureScheme::ED25519)
        .expect("key pair");
    Checker::new("example.org", private, public)
}

fn code(refusal: &Refusal) -> relais_protocol::pb::ErrorCode {
    refusal.code()
}

#[test]
fn a_key_package_must_be_the_devices_key_and_its_users_name() {
    let checker = checker();
    let (signer, bytes) = key_package(USER);
    let key = signer.public();
    let device = Identity { key, user: USER };
    assert_eq!(checker.key_package(device, &bytes), Ok(false));

    let other_user = Identity {
        key,
        user: "bob@example.org",
    };
    let refused = checker
        .key_package(other_user, &bytes)
        .expect_err("another user");
    assert!(
        refused.to_string().contains("alice@example.org"),
        "{refused}"
    );
    let (other, _) = key_package(USER);
    let other_key = Identity {
        key: other.public(),
        user: USER,
    };
    let refused = checker
        .key_package(other_key, &bytes)
        .expect_err("another key");
    assert_eq!(
        code(&refused),
        relais_protocol::pb::ErrorCode::InvalidKeyPackage
    );
}

#[test]
fn junk_is_refused_with_the_code_of_what_was_expected() {
    let checker = checker();
    let device = Identity {
        key: &[7; 32],
        user: USER,
    };
    use relais_protocol::pb::ErrorCode;
    let junk = b"not mls at all".as_slice();
    let cases: [(&str, Refusal, ErrorCode); 5] = [
        (
            "KeyPackage",
            checker.key_package(device, junk).expect_err("junk"),
            ErrorCode::InvalidKeyPackage,
        ),
        (
            "oversized KeyPackage",
            checker
                .key_package(device, &vec![0; KEY_PACKAGE_BYTES_MAX + 1])
                .expect_err("too large"),
            ErrorCode::LimitExceeded,
        ),
        (
            "new group",
            checker.new_group(device, junk, junk).expect_err("junk"),
            ErrorCode::InvalidMessage,
        ),
        (
            "commit",
            ParsedCommit::parse(junk).expect_err("junk"),
            ErrorCode::InvalidMessage,
        ),
        (
            "application message",
            application_header(junk).expect_err("junk"),
            ErrorCode::InvalidMessage,
        ),
    ];
    for (what, refusal, expected) in cases {
        assert_eq!(code(&refusal), expected, "{what}: {refusal}");
    }
    let (_, key_package) = key_package(USER);
    let refused = ParsedCommit::parse(&key_package).expect_err("not a commit");
    assert_eq!(code(&refused), ErrorCode::InvalidMessage);
    let refused = application_header(&key_package).expect_err("not a private message");
    assert_eq!(code(&refused), ErrorCode::InvalidMessage);
}

#[test]
fn a_welcome_comes_with_a_commit_that_adds_someone_and_only_then() {
    use relais_protocol::pb::ErrorCode;
    let (_, not_a_welcome) = key_package(USER);
    /// The Welcome sent, whether the commit adds anyone, and the refusal expected.
    type Case<'a> = (Option<&'a [u8]>, bool, Option<ErrorCode>);
    let cases: [Case<'_>; 5] = [
        (None, false, None),
        (None, true, Some(ErrorCode::InvalidCommit)),
        (Some(b"welcome"), false, Some(ErrorCode::InvalidCommit)),
        (Some(b"junk"), true, Some(ErrorCode::InvalidMessage)),
        (Some(&not_a_welcome), true, Some(ErrorCode::InvalidMessage)),
    ];
    for (welcome, adds, expected) in cases {
        let got = check_welcome(welcome, adds).err().map(|r| r.code());
        assert_eq!(
            got,
            expected,
            "welcome {:?}, adds {adds}",
            welcome.map(<[u8]>::len)
        );
    }
}
