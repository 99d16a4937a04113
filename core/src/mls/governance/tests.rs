//! The rule as a table over plain data, the extension's encoding against a fixed vector
//! (the one `docs/reference/protocol.md` gives, for other implementations), and the
//! relay's checks on real openmls groups: a non-admin's removal, a forged role change, a
//! departure and what the relay carries on.

use std::collections::BTreeSet;

use openmls::prelude::{
    BasicCredential, CredentialWithKey, KeyPackage, LeafNodeIndex, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, OpenMlsCrypto as _,
    OpenMlsProvider as _, PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent,
    SignatureScheme, StagedWelcome, tls_codec::Deserialize as _, tls_codec::Serialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{OpenMlsRustCrypto, RustCrypto};
use relais_protocol::pb::ErrorCode;

use super::*;
use crate::mls::{CIPHERSUITE, CheckError, Checker, Handshake, Identity, ParsedCommit};

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";

fn users(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|u| (*u).to_owned()).collect()
}

fn entry(user: &str, admin: bool) -> Entry {
    Entry {
        user: user.into(),
        admin,
    }
}

/// The extension of "crisis cell": alice admin, then bob and carol.
fn crisis_cell() -> Governance {
    Governance {
        name: "crisis cell".into(),
        users: vec![entry(ALICE, true), entry(BOB, false), entry(CAROL, false)],
    }
}

/// A change to crisis cell by `committer` that touches nothing yet.
fn change(committer: &str) -> Change {
    Change {
        committer: committer.into(),
        before: Some(crisis_cell()),
        after: Some(crisis_cell()),
        present_before: users(&[ALICE, BOB, CAROL]),
        present_after: users(&[ALICE, BOB, CAROL]),
        added: BTreeSet::new(),
        removed: Vec::new(),
        other_extensions_changed: false,
    }
}

fn removal(change: &mut Change, user: &str, by: RemovedBy) {
    change.removed.push(Removed {
        user: user.into(),
        key: user.as_bytes().to_vec(),
        by,
    });
    change.present_after.remove(user);
}

#[test]
fn the_encoding_is_the_documented_one_and_round_trips() {
    let governance = Governance {
        name: "ops".into(),
        users: vec![entry("a@x", true), entry("b@x", false)],
    };
    // version 1; name: length 3, "ops"; users: length 10, ("a@x", admin), ("b@x", member).
    let expected = [
        0x01, 0x03, b'o', b'p', b's', 0x0a, 0x03, b'a', b'@', b'x', 0x01, 0x03, b'b', b'@', b'x',
        0x00,
    ];
    assert_eq!(governance.encode(), expected);
    assert_eq!(Governance::decode(&expected), Ok(governance));

    // A long list takes a two-byte length prefix, and still round-trips.
    let many = Governance {
        name: "n".repeat(NAME_BYTES_MAX),
        users: (0..50)
            .map(|i| entry(&format!("user{i}@example.org"), i % 7 == 0))
            .collect(),
    };
    let bytes = many.encode();
    assert_eq!(bytes[1] >> 6, 1, "the name's length takes two bytes");
    assert_eq!(Governance::decode(&bytes), Ok(many));
}

#[test]
fn hostile_encodings_are_refused_with_a_reason() {
    let good = crisis_cell().encode();
    for cut in 0..good.len() {
        assert!(Governance::decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    let mut version = good.clone();
    version[0] = 2;
    // Role byte of the last user.
    let mut role = good.clone();
    *role.last_mut().expect("bytes") = 7;
    // The name's length (11) written in two bytes instead of one.
    let mut long_length = vec![0x01, 0x40, 0x0b];
    long_length.extend_from_slice(&good[2..]);
    let cases: [(&str, Vec<u8>, &str); 9] = [
        ("trailing", trailing, "trailing"),
        ("version", version, "version 2"),
        ("role", role, "unknown role 7"),
        ("length", long_length, "more bytes than it needs"),
        ("reserved", vec![0x01, 0xc0], "reserved"),
        (
            "duplicate",
            encode(&[entry(ALICE, true), entry(ALICE, false)], "x"),
            "twice",
        ),
        (
            "not a user",
            encode(&[entry("Alice@x", true)], "x"),
            "not a user",
        ),
        ("at sign", encode(&[], "alice@x"), "@"),
        ("control", encode(&[], "a\nb"), "control"),
    ];
    for (what, bytes, reason) in cases {
        let refused = Governance::decode(&bytes).expect_err(what);
        assert!(refused.contains(reason), "{what}: {refused}");
    }
}

/// Encodes without validating, as a hostile member could.
fn encode(users: &[Entry], name: &str) -> Vec<u8> {
    Governance {
        name: name.into(),
        users: users.to_vec(),
    }
    .encode()
}

#[test]
fn roles_follow_the_extension_and_the_last_admin_leaving_promotes_the_next_in_line() {
    let cell = crisis_cell();
    let roles = Roles::of(Some(&cell), &users(&[ALICE, BOB, CAROL]));
    assert_eq!(roles.admins, [ALICE]);
    assert_eq!(roles.order, [ALICE, BOB, CAROL]);
    assert_eq!(roles.successor, None);

    // alice gone: bob, who came before carol, is admin.
    let roles = Roles::of(Some(&cell), &users(&[BOB, CAROL]));
    assert_eq!(
        (roles.admins, roles.successor),
        (vec![BOB.to_owned()], Some(BOB.to_owned()))
    );

    // A user the extension does not list comes after those it lists.
    let roles = Roles::of(Some(&cell), &users(&["aaron@example.org", CAROL]));
    assert_eq!(roles.order, [CAROL, "aaron@example.org"]);
    assert_eq!(roles.admins, [CAROL]);

    // A group from before roles: everyone is an admin.
    let roles = Roles::of(None, &users(&[BOB, CAROL]));
    assert!(!roles.governed && roles.is_admin(BOB) && roles.is_admin(CAROL));
}

/// What needs an admin, case by case: (what, the change, whether alice (admin) may, and
/// whether bob (not one) may).
#[test]
fn the_rule_as_a_table() {
    type Case = (&'static str, fn(&mut Change), bool);
    let cases: [Case; 12] = [
        ("nothing", |_| {}, true),
        (
            "remove another user",
            |c| removal(c, CAROL, RemovedBy::Committer),
            false,
        ),
        (
            "commit the relay's removal",
            |c| removal(c, CAROL, RemovedBy::Relay),
            true,
        ),
        (
            "commit a departure",
            |c| removal(c, CAROL, RemovedBy::Itself),
            true,
        ),
        (
            "commit a departure and record it",
            |c| {
                removal(c, CAROL, RemovedBy::Itself);
                c.after = Some(
                    c.before
                        .as_ref()
                        .expect("roles")
                        .recorded(&c.present_before, &c.present_after),
                );
            },
            true,
        ),
        (
            "drop one's own device",
            |c| removal(c, CAROL, RemovedBy::Sibling),
            true,
        ),
        (
            "rename",
            |c| c.after = Some(crisis_cell().with_name("cellule")),
            false,
        ),
        (
            "promote oneself",
            |c| c.after = Some(crisis_cell().with_admin(BOB)),
            false,
        ),
        (
            "add and record",
            |c| {
                c.added.insert("dave@example.org".into());
                c.present_after.insert("dave@example.org".into());
                c.after = Some(crisis_cell().recorded(&c.present_before, &c.present_after));
            },
            true,
        ),
        (
            "add without recording",
            |c| {
                c.added.insert("dave@example.org".into());
                c.present_after.insert("dave@example.org".into());
            },
            false,
        ),
        (
            "add as admin",
            |c| {
                c.added.insert("dave@example.org".into());
                c.present_after.insert("dave@example.org".into());
                c.after = Some(crisis_cell().with_admin("dave@example.org"));
            },
            false,
        ),
        (
            "change another extension",
            |c| c.other_extensions_changed = true,
            false,
        ),
    ];
    for (what, make, anyone) in cases {
        for committer in [ALICE, BOB] {
            let mut c = change(committer);
            make(&mut c);
            let got = c.authorize();
            let allowed = anyone || committer == ALICE;
            assert_eq!(got.is_ok(), allowed, "{what} by {committer}: {got:?}");
            if let Err(refused) = got {
                assert!(matches!(refused, Refused::NotAdmin(_)), "{what}: {refused}");
                let text = refused.to_string();
                assert!(text.contains("bob@example.org is not an admin"), "{text}");
                assert!(text.contains("ask alice@example.org"), "{text}");
            }
        }
    }
}

#[test]
fn what_nobody_may_do_and_groups_without_roles() {
    // Removing the roles, or writing malformed ones, is refused even from an admin.
    let mut dropped = change(ALICE);
    dropped.after = None;
    let mut malformed = change(ALICE);
    malformed.after = Some(Governance {
        name: "x".into(),
        users: vec![entry("not a user", true)],
    });
    for refused in [dropped.authorize(), malformed.authorize()] {
        assert!(matches!(refused, Err(Refused::Invalid(_))), "{refused:?}");
    }
    // A user who left and is brought back by a member comes back last and without the
    // role the roster still had.
    let mut back = change(BOB);
    back.present_before = users(&[BOB, CAROL]);
    back.added.insert(ALICE.into());
    let recorded = crisis_cell().recorded(&back.present_before, &back.present_after);
    assert_eq!(
        recorded.users,
        [entry(BOB, false), entry(CAROL, false), entry(ALICE, false)]
    );
    back.after = Some(recorded);
    assert_eq!(back.authorize(), Ok(()));
    // Without roles, everyone is an admin: what could be done before still can.
    let mut legacy = change(BOB);
    legacy.before = None;
    legacy.after = None;
    removal(&mut legacy, CAROL, RemovedBy::Committer);
    assert_eq!(legacy.authorize(), Ok(()));
}

/// A device's MLS side for these tests: its provider, signer and credential.
struct Device {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    user: &'static str,
}

impl Device {
    fn new(user: &'static str) -> Device {
        Device {
            provider: OpenMlsRustCrypto::default(),
            signer: SignatureKeyPair::new(SignatureScheme::ED25519).expect("key pair"),
            user,
        }
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            key: self.signer.public(),
            user: self.user,
        }
    }

    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.user.as_bytes().to_vec()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    fn key_package(&self) -> KeyPackage {
        KeyPackage::builder()
            .leaf_node_capabilities(leaf_capabilities())
            .build(CIPHERSUITE, &self.provider, &self.signer, self.credential())
            .expect("key package")
            .key_package()
            .clone()
    }
}

fn bytes(message: MlsMessageOut) -> Vec<u8> {
    message.tls_serialize_detached().expect("serialize")
}

/// alice's group "crisis cell" with bob and carol, registered with the relay's checker,
/// as each of them and the relay hold it.
struct Cell {
    checker: Checker,
    devices: [Device; 3],
    groups: Vec<MlsGroup>,
    epoch: u64,
    state: Vec<u8>,
}

const ALICE_AT: usize = 0;
const BOB_AT: usize = 1;
const CAROL_AT: usize = 2;

fn cell() -> Cell {
    let (private, public) = RustCrypto::default()
        .signature_key_gen(SignatureScheme::ED25519)
        .expect("relay key");
    let mut cell = Cell {
        checker: Checker::new("example.org", private, public),
        devices: [Device::new(ALICE), Device::new(BOB), Device::new(CAROL)],
        groups: Vec::new(),
        epoch: 0,
        state: Vec::new(),
    };
    let mut group = cell.register();
    let alice = &cell.devices[ALICE_AT];
    let current = Governance::of(group.extensions())
        .expect("roles")
        .expect("present");
    let recorded = current.recorded(&users(&[ALICE]), &users(&[ALICE, BOB, CAROL]));
    let key_packages = [
        cell.devices[BOB_AT].key_package(),
        cell.devices[CAROL_AT].key_package(),
    ];
    let extensions = with_governance(group.extensions(), &recorded).expect("extensions");
    let bundle = group
        .commit_builder()
        .propose_adds(key_packages)
        .propose_group_context_extensions(extensions)
        .expect("proposal")
        .load_psks(alice.provider.storage())
        .expect("psks")
        .build(
            alice.provider.rand(),
            alice.provider.crypto(),
            &alice.signer,
            |_| true,
        )
        .expect("build")
        .stage_commit(&alice.provider)
        .expect("stage");
    let welcome = bundle.to_welcome_msg().expect("welcome");
    let (commit, _, _) = bundle.into_contents();
    group.merge_pending_commit(&alice.provider).expect("merge");
    cell.submit(ALICE_AT, &bytes(commit))
        .expect("alice adds and records bob and carol");
    let joined = cell.join(&bytes(welcome));
    cell.groups = std::iter::once(group).chain(joined).collect();
    cell
}

impl Cell {
    /// alice creates "crisis cell" and the relay registers it.
    fn register(&mut self) -> MlsGroup {
        let alice = &self.devices[ALICE_AT];
        let extensions = group_extensions(
            self.checker.external_sender.clone(),
            &Governance::new("crisis cell", ALICE),
        )
        .expect("extensions");
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .capabilities(leaf_capabilities())
            .with_group_context_extensions(extensions)
            .build();
        let group = MlsGroup::new(&alice.provider, &alice.signer, &config, alice.credential())
            .expect("create");
        let info = group
            .export_group_info(alice.provider.crypto(), &alice.signer, true)
            .expect("group info");
        let tree = group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .expect("tree");
        self.state = self
            .checker
            .new_group(alice.identity(), &bytes(info), &tree)
            .expect("the relay registers a group with roles")
            .state;
        group
    }

    /// bob and carol join from the Welcome.
    fn join(&self, welcome: &[u8]) -> [MlsGroup; 2] {
        let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(welcome)
            .expect("welcome")
            .extract()
        else {
            panic!("a welcome");
        };
        [BOB_AT, CAROL_AT].map(|at| {
            let device = &self.devices[at];
            StagedWelcome::new_from_welcome(
                &device.provider,
                &MlsGroupJoinConfig::builder()
                    .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
                    .build(),
                welcome.clone(),
                None,
            )
            .and_then(|staged| staged.into_group(&device.provider))
            .expect("join")
        })
    }

    /// The relay verifies and merges a commit of the device at `who`.
    fn submit(&mut self, who: usize, commit: &[u8]) -> Result<(), CheckError> {
        let parsed = ParsedCommit::parse(commit).expect("a commit");
        let pending = self.checker.verify_commit(
            parsed,
            self.epoch,
            &self.state,
            self.devices[who].identity(),
        )?;
        self.state = pending.merge()?.state;
        self.epoch += 1;
        Ok(())
    }

    /// The relay verifies a commit of the device at `who` without merging it.
    fn verify(&self, who: usize, commit: &[u8]) -> Result<crate::mls::PendingCommit, CheckError> {
        self.checker.verify_commit(
            ParsedCommit::parse(commit).expect("a commit"),
            self.epoch,
            &self.state,
            self.devices[who].identity(),
        )
    }

    /// The relay checks a departure of the device at `who` against `state`.
    fn depart(
        &self,
        who: usize,
        state: &[u8],
        proposal: &[u8],
    ) -> Result<crate::mls::Departure, CheckError> {
        let Handshake::Departure(parsed) = Handshake::parse(proposal).expect("parses") else {
            panic!("a proposal");
        };
        self.checker
            .verify_departure(parsed, self.epoch, state, self.devices[who].identity())
    }

    /// What openmls lets the device at `who` build on its group.
    fn build(
        &mut self,
        who: usize,
        make: impl FnOnce(&mut MlsGroup, &Device) -> MlsMessageOut,
    ) -> Vec<u8> {
        bytes(make(&mut self.groups[who], &self.devices[who]))
    }
}

fn refusal(result: Result<(), CheckError>) -> crate::Refusal {
    match result {
        Err(CheckError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_relay_refuses_a_non_admins_removal_and_forged_roles_and_takes_an_admins() {
    let mut cell = cell();
    let carol_leaf = LeafNodeIndex::new(2);
    let commit = cell.build(BOB_AT, |group, bob| {
        group
            .remove_members(&bob.provider, &bob.signer, &[carol_leaf])
            .expect("openmls builds bob's removal of carol")
            .0
    });
    let refused = refusal(cell.submit(BOB_AT, &commit));
    assert_eq!(refused.code(), ErrorCode::NotGroupAdmin, "{refused}");
    assert!(
        refused.to_string().contains("removing carol@example.org"),
        "{refused}"
    );

    // A forged role change: bob makes himself an admin.
    let forged = cell.build(BOB_AT, |group, bob| {
        group
            .clear_pending_commit(bob.provider.storage())
            .expect("clear");
        let roles = Governance::of(group.extensions())
            .expect("roles")
            .expect("present");
        let forged = with_governance(group.extensions(), &roles.with_admin(BOB)).expect("ext");
        group
            .update_group_context_extensions(&bob.provider, forged, &bob.signer)
            .expect("openmls builds it")
            .0
    });
    let refused = refusal(cell.submit(BOB_AT, &forged));
    assert_eq!(refused.code(), ErrorCode::NotGroupAdmin, "{refused}");
    assert!(
        refused.to_string().contains("changing the group's roles"),
        "{refused}"
    );

    // alice's removal of carol goes through.
    let commit = cell.build(ALICE_AT, |group, alice| {
        group
            .remove_members(&alice.provider, &alice.signer, &[carol_leaf])
            .expect("alice removes carol")
            .0
    });
    cell.submit(ALICE_AT, &commit).expect("an admin removes");
    assert_eq!(cell.epoch, 2);
}

#[test]
fn a_departure_is_queued_once_and_carried_on_when_a_commit_leaves_it_out() {
    let mut cell = cell();
    // carol leaves: the Remove proposal of her own leaf, queued once.
    let proposal = cell.build(CAROL_AT, |group, carol| {
        group
            .leave_group(&carol.provider, &carol.signer)
            .expect("carol's departure")
    });
    let queued = cell
        .depart(CAROL_AT, &cell.state, &proposal)
        .expect("a member may leave")
        .state
        .expect("queued");
    let resubmitted = cell
        .depart(CAROL_AT, &queued, &proposal)
        .expect("the same departure again");
    assert!(resubmitted.state.is_none(), "nothing new to store");

    // bob's proposal to remove alice is refused: members propose only their own removal.
    let hostile = cell.build(BOB_AT, |group, bob| {
        group
            .propose_remove_member(&bob.provider, &bob.signer, LeafNodeIndex::new(0))
            .expect("openmls builds it")
            .0
    });
    let refused = match cell.depart(BOB_AT, &queued, &hostile) {
        Err(CheckError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(
        refused.to_string().contains("its own user's devices"),
        "{refused}"
    );
    cell.groups[BOB_AT]
        .clear_pending_proposals(cell.devices[BOB_AT].provider.storage())
        .expect("bob forgets his own proposal");
    cell.state = queued;
    alice_leaves_it_out_and_bob_takes_it_in(&mut cell, &proposal);
}

/// alice commits without carol's departure (she never received it): the relay carries it
/// on. bob, not an admin, takes it in: nothing is left to carry.
fn alice_leaves_it_out_and_bob_takes_it_in(cell: &mut Cell, proposal: &[u8]) {
    let update = cell.build(ALICE_AT, |group, alice| {
        group
            .self_update(&alice.provider, &alice.signer, Default::default())
            .expect("an update")
            .into_contents()
            .0
    });
    let pending = cell.verify(ALICE_AT, &update).expect("verifies");
    assert_eq!(
        pending.removals_to_carry().expect("carry"),
        [cell.devices[CAROL_AT].signer.public().to_vec()]
    );
    let commit = cell.build(BOB_AT, |group, bob| {
        let message = MlsMessageIn::tls_deserialize_exact(proposal)
            .expect("message")
            .try_into_protocol_message()
            .expect("protocol");
        let ProcessedMessageContent::ProposalMessage(stored) = group
            .process_message(&bob.provider, message)
            .expect("bob reads it")
            .into_content()
        else {
            panic!("a proposal");
        };
        group
            .store_pending_proposal(bob.provider.storage(), *stored)
            .expect("store");
        group
            .commit_to_pending_proposals(&bob.provider, &bob.signer)
            .expect("bob commits the departure")
            .0
    });
    let pending = cell
        .verify(BOB_AT, &commit)
        .expect("a non-admin commits a departure");
    assert!(pending.removals_to_carry().expect("carry").is_empty());
}

#[test]
fn user_names() {
    for (user, valid) in [
        ("alice@interieur.gouv.fr", true),
        ("a.b-c_d@x", true),
        ("alice", false),
        ("@x", false),
        ("Alice@x", false),
        ("alice@", false),
        ("al ice@x", false),
    ] {
        assert_eq!(valid_user(user), valid, "{user}");
    }
    let long = format!("{}@x", "a".repeat(65));
    assert!(!valid_user(&long));
}

/// The relay registers a group only with roles that make its creator an admin: a group
/// without them would be one where every member is an admin.
#[test]
fn a_new_group_must_carry_roles_that_make_its_creator_an_admin() {
    let (private, public) = RustCrypto::default()
        .signature_key_gen(SignatureScheme::ED25519)
        .expect("relay key");
    let checker = Checker::new("example.org", private, public);
    let alice = Device::new(ALICE);
    let register = |extensions: Extensions<GroupContext>| {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .capabilities(leaf_capabilities())
            .with_group_context_extensions(extensions)
            .build();
        let group = MlsGroup::new(&alice.provider, &alice.signer, &config, alice.credential())
            .expect("create");
        let info = group
            .export_group_info(alice.provider.crypto(), &alice.signer, true)
            .expect("group info");
        let tree = group
            .export_ratchet_tree()
            .tls_serialize_detached()
            .expect("tree");
        checker.new_group(alice.identity(), &bytes(info), &tree)
    };
    let relay = checker.external_sender.clone();
    let without =
        Extensions::single(Extension::ExternalSenders(vec![relay.clone()])).expect("extensions");
    let refused = register(without).expect_err("no roles");
    assert_eq!(refused.code(), ErrorCode::InvalidMessage);
    assert!(refused.to_string().contains("0xf5a1"), "{refused}");
    let bob_only = group_extensions(relay.clone(), &Governance::new("ops", BOB)).expect("ext");
    let refused = register(bob_only).expect_err("alice is no admin");
    assert!(
        refused.to_string().contains("creator an admin"),
        "{refused}"
    );
    let alice_admin = group_extensions(relay, &Governance::new("ops", ALICE)).expect("ext");
    assert!(register(alice_admin).is_ok());
}
