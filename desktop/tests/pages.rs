//! The trust and management pages, drawn headlessly from a model filled by hand (no relay:
//! the end-to-end tests against a real relay are in `tests/ui/`), and found through the
//! accessibility tree by the names a screen reader reads: the contact page, the new-device
//! banner and the confirmation before sending, my devices, the group page, search and
//! settings.

use egui::Key;
use egui::accesskit::{Role, Toggled};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use relais_client::{Event, GroupMember, Member, OwnDevice, ReceivedMessage, SafetyNumber};
use relais_desktop::backend::{
    Backend, DROPPED_BYTES_MAX, DeviceLink, GroupChange, Request, Target, Update,
};
use relais_desktop::i18n::{I18n, Lang};
use relais_desktop::model::{Conversation, Kind, Loaded, Model, Page, Screen, SendCheck};
use relais_desktop::views::{self, Cx};
use relais_desktop::{App, Options};
use zeroize::Zeroizing;

const ME: &str = "alice@interieur.gouv.fr";
const BOB: &str = "bob@interieur.gouv.fr";
const DIRECT: &str = "0d0d0d0d";
const GROUP: &str = "6e6e6e6e";

/// What a page is drawn with: the model, the catalogue, and a backend on an empty home
/// (the requests a page makes go to it and are never answered here).
struct Window {
    model: Model,
    tr: I18n,
    backend: Backend,
    _home: tempfile::TempDir,
}

type View = fn(&mut egui::Ui, &mut Cx<'_>);

fn window(model: Model) -> Window {
    let home = tempfile::tempdir().expect("a temporary home");
    Window {
        tr: I18n::new(model.lang),
        backend: Backend::start(home.path().join("home")),
        model,
        _home: home,
    }
}

fn harness(model: Model, view: View) -> Harness<'static, Window> {
    let mut harness = drawn(model, view);
    harness.run();
    harness
}

/// The page drawn twice, for a page that keeps repainting (a spinner).
fn drawn(model: Model, view: View) -> Harness<'static, Window> {
    let mut harness = Harness::builder()
        .with_size(egui::vec2(900.0, 800.0))
        .build_ui_state(
            move |ui, window: &mut Window| {
                let mut cx = Cx {
                    model: &mut window.model,
                    tr: &window.tr,
                    backend: &window.backend,
                };
                view(ui, &mut cx);
            },
            window(model),
        );
    harness.run_steps(2);
    harness
}

/// A model with this user, a direct conversation with Bob and a group, open on the direct
/// one.
fn model() -> Model {
    let mut model = Model::new(Lang::Fr, 0);
    model.user = Some(ME.into());
    let conversation = |group_id: &str, name: &str, kind| Conversation {
        group_id: group_id.into(),
        name: name.into(),
        kind,
        unread: 0,
        last: None,
        left: false,
    };
    model.conversations = vec![
        conversation(DIRECT, BOB, Kind::Direct),
        conversation(GROUP, "Cellule de crise", Kind::Group),
    ];
    model.selected = Some(DIRECT.into());
    model
}

fn safety_number(verified: bool, changed: bool) -> SafetyNumber {
    let number: String = (0..60)
        .map(|i| char::from(b'0' + (i * 7 % 10) as u8))
        .collect();
    SafetyNumber {
        contact: BOB.into(),
        qr_payload: format!("relais-safety:1:{ME}:{BOB}:{number}"),
        number,
        devices: vec!["d2df8e7f00112233".into(), "3f2a1b2c44556677".into()],
        verified,
        changed_since_verified: changed,
    }
}

/// Types `text` into the text box named `label`, as the keyboard does once it has focus.
fn type_into(harness: &mut Harness<'_, Window>, label: &str, text: &str) {
    harness.get_by_label(label).focus();
    harness.run_steps(1);
    harness.get_by_label(label).type_text(text);
    harness.run_steps(2);
}

fn disabled(harness: &Harness<'_, Window>, label: &str) -> bool {
    harness.get_by_label(label).accesskit_node().is_disabled()
}

#[test]
fn the_contact_page_shows_the_number_its_code_and_marks_it_verified() {
    let mut model = model();
    model.pages.contact = BOB.into();
    model.pages.safety_number = Loaded::Ready(safety_number(false, true));
    let mut harness = harness(model, views::contact::show);

    // Unverified again since a device came: said as such.
    harness.get_by_label("N'est plus vérifié");
    harness.get_by_label_contains("a ajouté ou retiré un appareil depuis votre vérification");
    // The digits are named by their heading and read as their value, on one line.
    let number = harness.get_by_label("Numéro de sécurité partagé avec bob@interieur.gouv.fr");
    let spoken = number.accesskit_node().value().unwrap_or_default();
    assert!(spoken.starts_with("07418 52963 07418"), "{spoken}");
    assert_eq!(spoken.split(' ').count(), 12, "{spoken}");
    harness.get_by_role_and_label(
        Role::Image,
        "Code QR du numéro de sécurité partagé avec bob@interieur.gouv.fr",
    );
    harness.get_by_label("Appareil d2df8e7f00112233");
    harness.get_by_label_contains("en personne ou au cours d'un appel");

    harness.get_by_label("Marquer comme vérifié").click();
    harness.run_steps(2);
    let pages = &harness.state().model.pages;
    assert!(pages.confirming, "the confirmation is on its way");

    // The answer comes: verified, with the badge, and the button has nothing left to do.
    let number = safety_number(true, false);
    let model = &mut harness.state_mut().model;
    let requests = model.apply(Update::SafetyNumber {
        contact: BOB.into(),
        confirmed: true,
        result: Ok(number),
    });
    assert!(requests.is_empty());
    harness.run_steps(2);
    harness.get_by_label("Vérifié");
    harness.get_by_label("bob@interieur.gouv.fr est marqué comme vérifié.");
    assert!(disabled(&harness, "Marquer comme vérifié"));
}

#[test]
fn a_number_that_changed_while_compared_is_shown_anew() {
    let mut model = model();
    model.pages.contact = BOB.into();
    model.pages.confirming = true;
    let changed = relais_desktop::backend::Problem::new("contact-error-changed");
    let requests = model.apply(Update::SafetyNumber {
        contact: BOB.into(),
        confirmed: true,
        result: Err(changed.clone()),
    });
    assert!(matches!(
        requests.as_slice(),
        [Request::SafetyNumber { contact, confirm: None }] if contact == BOB
    ));
    assert_eq!(model.pages.safety_number, Loaded::Loading);
    assert_eq!(model.problems, [changed]);
}

#[test]
fn a_verified_contacts_new_device_shows_a_banner_that_leads_to_their_page() {
    let mut model = model();
    model.pages.unverified_for = DIRECT.into();
    model.pages.unverified = Loaded::Ready(vec![BOB.into()]);
    model.trust_events.push_back(Event::Membership {
        conversation: BOB.into(),
        group_id: DIRECT.into(),
        actor: BOB.into(),
        epoch: 4,
        added: vec![Member {
            user: BOB.into(),
            device_key: "3f2a1b2c".repeat(8),
        }],
        removed: Vec::new(),
    });
    let mut harness = harness(model, views::banner::show);
    harness.get_by_label_contains(
        "bob@interieur.gouv.fr a un nouvel appareil. Vérifiez son numéro de sécurité.",
    );
    harness
        .get_by_label("Vérifier bob@interieur.gouv.fr")
        .click();
    harness.run_steps(2);
    let model = &harness.state().model;
    assert_eq!(model.page, Page::Contact);
    assert_eq!(model.pages.contact, BOB);
}

#[test]
fn a_verification_or_membership_change_reloads_the_banner() {
    let mut model = model();
    model.pages.unverified_for = DIRECT.into();
    model.pages.unverified = Loaded::Ready(Vec::new());
    model.apply(Update::Event(Event::Verification {
        contact: BOB.into(),
        verified: false,
    }));
    assert_eq!(model.pages.unverified, Loaded::Nothing);
    // Drawn again, the banner asks for the list.
    let harness = harness(model, views::banner::show);
    assert_eq!(harness.state().model.pages.unverified_for, DIRECT);
    assert_eq!(harness.state().model.pages.unverified, Loaded::Loading);
}

#[test]
fn with_require_verified_a_draft_waits_for_the_check_and_goes_when_nobody_changed() {
    let mut model = model();
    model.pages.require_verified = Loaded::Ready(true);
    model.drafts.insert(DIRECT.into(), "Bonjour Bob".into());
    model.pages.send_check = Some(SendCheck::Checking {
        group_id: DIRECT.into(),
    });
    let requests = model.apply(Update::Unverified {
        group_id: DIRECT.into(),
        then_send: true,
        result: Ok(Vec::new()),
    });
    assert!(matches!(
        requests.as_slice(),
        [Request::Send { target: Target::Direct(bob), text, .. }] if bob == BOB && text == "Bonjour Bob"
    ));
    assert_eq!(model.pages.send_check, None);
    assert!(model.drafts.get(DIRECT).is_none_or(String::is_empty));
}

#[test]
fn with_require_verified_a_draft_to_a_changed_contact_goes_only_once_confirmed() {
    let mut model = model();
    model.pages.require_verified = Loaded::Ready(true);
    model
        .drafts
        .insert(DIRECT.into(), "Le point de 15 h".into());
    model.pages.send_check = Some(SendCheck::Checking {
        group_id: DIRECT.into(),
    });
    let requests = model.apply(Update::Unverified {
        group_id: DIRECT.into(),
        then_send: true,
        result: Ok(vec![BOB.into()]),
    });
    assert!(
        requests.is_empty(),
        "nothing is sent before the user says so"
    );
    let mut harness = harness(model, views::banner::show);
    harness.get_by_label("Envoyer quand même ?");
    harness.get_by_label_contains(
        "bob@interieur.gouv.fr a changé d'appareils depuis que vous l'avez vérifié",
    );

    // Escape keeps the draft and sends nothing.
    harness.key_press(Key::Escape);
    harness.run_steps(2);
    assert!(harness.query_by_label("Envoyer quand même ?").is_none());
    let model = &mut harness.state_mut().model;
    assert_eq!(model.pages.send_check, None);
    assert!(model.pending.is_empty());
    assert_eq!(model.drafts[DIRECT], "Le point de 15 h");

    // Asked again, and confirmed: the text goes.
    model.pages.send_check = Some(SendCheck::Confirm {
        group_id: DIRECT.into(),
        contacts: vec![BOB.into()],
    });
    harness.run_steps(2);
    harness.get_by_label("Envoyer quand même").click();
    harness.run_steps(2);
    let model = &harness.state().model;
    assert_eq!(model.pages.send_check, None);
    assert_eq!(model.pending.len(), 1);
    assert_eq!(model.pending[0].text, "Le point de 15 h");
}

#[test]
fn my_devices_are_listed_and_revoking_one_is_confirmed_first() {
    let mut model = model();
    model.pages.devices = Loaded::Ready(vec![
        OwnDevice {
            device_id: "D1".into(),
            public_key: vec![0xd2; 32],
            enrolled_at_ms: 1_796_630_400_000,
            last_seen_ms: Some(1_796_716_800_000),
            this_device: true,
        },
        OwnDevice {
            device_id: "D2".into(),
            public_key: vec![0x3f; 32],
            enrolled_at_ms: 1_796_630_400_000,
            last_seen_ms: None,
            this_device: false,
        },
    ]);
    let mut harness = harness(model, views::devices::show);
    harness.get_by_label("Cet appareil");
    harness.get_by_label("Clé d2d2d2d2d2d2d2d2");
    harness.get_by_label("Pas connecté depuis son inscription");
    assert!(
        harness.query_by_label("Révoquer l'appareil D1").is_none(),
        "not this one"
    );

    harness.get_by_label("Révoquer l'appareil D2").click();
    harness.run_steps(2);
    harness.get_by_label("Révoquer l'appareil D2 ?");
    harness.get_by_label("Annuler").click();
    harness.run_steps(2);
    assert!(harness.query_by_label("Révoquer l'appareil D2 ?").is_none());
    assert_eq!(harness.state().model.pages.revoking, None);

    harness.get_by_label("Révoquer l'appareil D2").click();
    harness.run_steps(2);
    harness.get_by_label("Révoquer").click();
    harness.run_steps(2);
    assert_eq!(harness.state().model.pages.revoking.as_deref(), Some("D2"));
}

#[test]
fn a_link_for_a_new_device_shows_as_a_code_and_text_and_is_dropped_when_hidden() {
    let link = "relais://enroll?v=1&server=relais.interieur.gouv.fr:443&user=alice@interieur.gouv.fr&code=ABCD-EFGH-JKMN-PQRS&pin=sha256:AAAA";
    let mut model = model();
    model.pages.devices = Loaded::Ready(Vec::new());
    model.pages.device_link = Loaded::Ready(DeviceLink(Zeroizing::new(link.into())));
    let mut harness = harness(model, views::devices::show);
    harness.get_by_role_and_label(
        Role::Image,
        "Code QR du lien pour relier un nouvel appareil",
    );
    let field = harness.get_by_label("Lien pour relier un nouvel appareil");
    assert_eq!(field.accesskit_node().value().as_deref(), Some(link));
    harness.get_by_label_contains("ne sert qu'une fois");
    harness.get_by_label_contains("recevra ensuite l'historique");
    harness.get_by_label("Copier le lien").click();
    harness.run_steps(2);
    harness.get_by_label("Lien copié dans le presse-papiers.");
    harness.get_by_label("Masquer le lien").click();
    harness.run_steps(2);
    assert_eq!(harness.state().model.pages.device_link, Loaded::Nothing);
    assert!(
        harness
            .query_by_label("Lien pour relier un nouvel appareil")
            .is_none()
    );
    harness.get_by_label("Relier un nouvel appareil");
}

/// The whole app, on the main window, with a backend on an empty home (no session: the
/// requests it makes are never answered).
fn main_app(home: &std::path::Path) -> Harness<'static, App> {
    let app = App::new(Options {
        home: home.join("home"),
        link: None,
        lang: Lang::Fr,
        utc_offset_seconds: 0,
    });
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1100.0, 720.0))
        .build_ui_state(|ui, app: &mut App| app.show(ui), app);
    // The empty home's answer first (the welcome screen), then a session as if enrolled.
    let started = std::time::Instant::now();
    while harness.state().model().screen != Screen::Enroll {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        harness.run_steps(1);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    harness
        .state_mut()
        .model_mut()
        .apply(Update::Started { user: ME.into() });
    harness.run_steps(2);
    harness
}

#[test]
fn a_link_for_a_new_device_is_forgotten_as_soon_as_its_page_is_left() {
    let home = tempfile::tempdir().expect("a temporary home");
    let mut harness = main_app(home.path());
    let link = || DeviceLink(Zeroizing::new("relais://enroll?v=1&code=SECRET".into()));
    let model = harness.state_mut().model_mut();
    model.page = Page::Devices;
    model.pages.devices = Loaded::Ready(Vec::new());
    model.pages.device_link = Loaded::Loading;
    model.apply(Update::DeviceLink(Ok(link())));
    harness.run_steps(2);
    harness.get_by_label("Lien pour relier un nouvel appareil");

    // Another page by its shortcut: the link is gone at once, not on the next visit.
    harness.key_press_modifiers(egui::Modifiers::COMMAND, Key::Num1);
    harness.run_steps(2);
    let model = harness.state_mut().model_mut();
    assert_eq!(model.page, Page::Conversation);
    assert_eq!(model.pages.device_link, Loaded::Nothing);

    // Asked for, then left before it came: the link that arrives is not kept.
    model.page = Page::Devices;
    model.pages.device_link = Loaded::Loading;
    harness.run_steps(2);
    harness.state_mut().model_mut().page = Page::Settings;
    harness.run_steps(2);
    let model = harness.state_mut().model_mut();
    model.apply(Update::DeviceLink(Ok(link())));
    assert_eq!(model.pages.device_link, Loaded::Nothing);
    // Even if the page forgot to reset it: the model takes a link only on its page.
    model.pages.device_link = Loaded::Loading;
    model.apply(Update::DeviceLink(Ok(link())));
    assert_eq!(model.pages.device_link, Loaded::Loading);
    assert!(
        harness
            .query_by_label("Lien pour relier un nouvel appareil")
            .is_none()
    );
}

/// A file dropped on the window, as the window system hands it over.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// Drops `path` on the welcome screen and steps until the backend's answer is in the model;
/// every frame must come back at once, whatever the file is.
fn drop_on_welcome(harness: &mut Harness<'_, Window>, path: &std::path::Path) {
    harness.state_mut().model.enroll.problem = None;
    harness.state_mut().model.enroll.link = Zeroizing::new(String::new());
    let file: egui::DroppedFileHandle = std::sync::Arc::new(Dropped(path.to_owned()));
    harness.input_mut().dropped_files.push(file);
    let started = std::time::Instant::now();
    loop {
        harness.run_steps(1);
        let window = harness.state_mut();
        for update in window.backend.poll() {
            window.model.apply(update);
        }
        let enroll = &window.model.enroll;
        if enroll.problem.is_some() || !enroll.link.is_empty() {
            harness.run_steps(1);
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no answer for {path:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_dropped_file_is_read_off_the_window_thread_and_only_if_small_and_ordinary() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut model = Model::new(Lang::Fr, 0);
    model.screen = Screen::Enroll;
    let mut harness = harness(model, views::enroll::show);
    let problem = |harness: &Harness<'_, Window>| {
        let problem = harness.state().model.enroll.problem.clone();
        problem.map(|p| p.id)
    };

    let mail = dir.path().join("lien.txt");
    let link = "relais://enroll?v=1&code=ABCD";
    std::fs::write(&mail, format!("Bonjour,\n\nvoici votre lien : {link}\n")).expect("written");
    drop_on_welcome(&mut harness, &mail);
    assert_eq!(problem(&harness), None);
    assert_eq!(harness.state().model.enroll.link.as_str(), link);

    // A FIFO would block whoever opens it until a writer comes: never the window.
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    drop_on_welcome(&mut harness, &fifo);
    assert_eq!(problem(&harness), Some("enroll-drop-not-a-file"));
    harness.get_by_label_contains("n'est pas un fichier ordinaire");

    let large = dir.path().join("large.txt");
    let mut text = format!("{link}\n");
    text.push_str(&"x".repeat(DROPPED_BYTES_MAX as usize));
    std::fs::write(&large, text).expect("written");
    drop_on_welcome(&mut harness, &large);
    assert_eq!(problem(&harness), Some("enroll-drop-too-large"));

    let none = dir.path().join("none.txt");
    std::fs::write(&none, "pas de lien ici").expect("written");
    drop_on_welcome(&mut harness, &none);
    assert_eq!(problem(&harness), Some("enroll-drop-no-link"));
    drop_on_welcome(&mut harness, &dir.path().join("gone.txt"));
    assert_eq!(problem(&harness), Some("enroll-drop-unreadable"));
}

fn members(alice_admin: bool) -> Vec<GroupMember> {
    let member = |user: &str, key: &str, admin| GroupMember {
        user: user.into(),
        device_key: key.into(),
        admin,
    };
    vec![
        member(ME, "01", alice_admin),
        member(BOB, "02", false),
        member(BOB, "03", false),
        member("carol@interieur.gouv.fr", "04", !alice_admin),
    ]
}

#[test]
fn an_admin_manages_the_group_and_removing_is_confirmed() {
    let mut model = model();
    model.page = Page::Group;
    model.pages.group = GROUP.into();
    model.pages.members = Loaded::Ready(members(true));
    let mut harness = harness(model, views::group::show);
    harness.get_by_label("alice@interieur.gouv.fr (vous) — administrateur");
    harness.get_by_label("bob@interieur.gouv.fr — membre — 2 appareils");
    assert!(!disabled(&harness, "Retirer bob@interieur.gouv.fr"));
    assert!(!disabled(
        &harness,
        "Nommer bob@interieur.gouv.fr administrateur"
    ));
    // Renaming needs a name first.
    assert!(disabled(&harness, "Renommer"));

    harness
        .get_by_label("Retirer bob@interieur.gouv.fr")
        .click();
    harness.run_steps(2);
    harness.get_by_label("Retirer bob@interieur.gouv.fr de Cellule de crise ?");
    harness.get_by_label("Retirer").click();
    harness.run_steps(2);
    assert_eq!(
        harness.state().model.pages.governing,
        Some(GroupChange::Remove(BOB.into()))
    );
}

#[test]
fn a_member_who_is_not_admin_may_add_and_leave_but_not_govern() {
    let mut model = model();
    model.page = Page::Group;
    model.pages.group = GROUP.into();
    model.pages.members = Loaded::Ready(members(false));
    let mut harness = harness(model, views::group::show);
    harness.get_by_label_contains("Demandez-le à : carol@interieur.gouv.fr");
    assert!(disabled(&harness, "Retirer bob@interieur.gouv.fr"));
    assert!(disabled(
        &harness,
        "Nommer bob@interieur.gouv.fr administrateur"
    ));
    assert!(disabled(&harness, "Renommer"));
    assert!(!disabled(&harness, "Quitter le groupe"));

    type_into(
        &mut harness,
        "Ajouter des membres",
        "dave@interieur.gouv.fr, erin",
    );
    harness.get_by_label("Ajouter").click();
    harness.run_steps(2);
    assert_eq!(
        harness.state().model.pages.governing,
        Some(GroupChange::Add(vec![
            "dave@interieur.gouv.fr".into(),
            "erin".into()
        ]))
    );

    // The relay refused (the roles changed meanwhile): the refusal names whom to ask.
    let model = &mut harness.state_mut().model;
    let refused = relais_desktop::backend::Problem::new("group-error-not-admin");
    model.apply(Update::Governed {
        group_id: GROUP.into(),
        change: GroupChange::Rename("Crise".into()),
        result: Err(refused),
    });
    let problem = model.problems.last().expect("shown");
    assert_eq!(problem.id, "group-error-not-admin");
    assert_eq!(
        problem.args,
        [("admins", "carol@interieur.gouv.fr".to_owned())]
    );
    assert_eq!(
        model.pages.members,
        Loaded::Nothing,
        "the roles are loaded again"
    );
}

#[test]
fn a_group_is_created_from_its_name_and_members() {
    let mut model = model();
    model.selected = None;
    let mut harness = harness(model, views::group::show);
    harness.get_by_label("Créer le groupe").click();
    harness.run_steps(2);
    harness.get_by_label("Donnez un nom au groupe.");
    type_into(&mut harness, "Nom du groupe", "Astreinte");
    type_into(&mut harness, "Membres", "bob, carol@interieur.gouv.fr");
    harness.get_by_label("Créer le groupe").click();
    harness.run_steps(2);
    assert_eq!(
        harness.state().model.pages.governing,
        Some(GroupChange::Create {
            name: "Astreinte".into(),
            members: vec!["bob".into(), "carol@interieur.gouv.fr".into()],
        })
    );
}

#[test]
fn search_results_name_their_conversation_and_open_it_at_the_entry() {
    let mut model = model();
    let found = |conversation: &str, sender: &str, text: &str| ReceivedMessage {
        conversation: conversation.into(),
        sender: sender.into(),
        sent_at_ms: 1_796_630_400_000,
        text: text.into(),
        event: false,
    };
    model.pages.search = Loaded::Ready((
        "crue".into(),
        vec![
            found("Cellule de crise", BOB, "La crue atteint le pont"),
            found(BOB, BOB, "Point crue à 15 h"),
        ],
    ));
    let mut harness = harness(model, views::search::show);
    harness.get_by_label("2 résultats");
    harness.get_by_label_contains("Cellule de crise — bob@interieur.gouv.fr, ");
    harness.get_by_label("La crue atteint le pont");
    harness
        .get_by_label("Ouvrir Cellule de crise à ce message")
        .click();
    harness.run_steps(2);

    // The backend found the entry: the conversation opens, and once the page holding the
    // entry is loaded the timeline shows it at the top.
    let model = &mut harness.state_mut().model;
    let requests = model.apply(Update::Located {
        group_id: GROUP.into(),
        position: Some(42),
    });
    assert_eq!(model.page, Page::Conversation);
    assert_eq!(model.selected.as_deref(), Some(GROUP));
    assert!(matches!(
        requests.as_slice(),
        [Request::History { group_id, before: None }] if group_id == GROUP
    ));
}

#[test]
fn settings_switch_the_language_live_and_keep_texts_out_of_notifications_by_default() {
    let mut harness = drawn(model(), views::settings::show);
    let text = harness.get_by_label("Montrer le texte des messages dans les notifications");
    assert_eq!(text.accesskit_node().toggled(), Some(Toggled::False));
    let notify =
        harness.get_by_label_contains("Afficher une notification pour chaque nouveau message");
    assert_eq!(notify.accesskit_node().toggled(), Some(Toggled::True));
    // "Require verified contacts" is the library's: read through the session first.
    assert_eq!(
        harness.state().model.pages.require_verified,
        Loaded::Loading
    );
    harness.get_by_label("Lecture du réglage…");
    let model = &mut harness.state_mut().model;
    model.apply(Update::RequireVerified(Ok(false)));
    harness.run_steps(2);
    let require = harness.get_by_label_contains("Ne pas envoyer de message à un contact");
    assert_eq!(require.accesskit_node().toggled(), Some(Toggled::False));
    require.click();
    harness.run_steps(2);
    // Changed through the session; the box shows what the library stored.
    let model = &mut harness.state_mut().model;
    assert_eq!(model.pages.require_verified, Loaded::Loading);
    assert!(!model.require_verified(), "not before the library says so");
    model.apply(Update::RequireVerified(Ok(true)));
    assert!(model.require_verified());
    harness.run_steps(2);
    let require = harness.get_by_label_contains("Ne pas envoyer de message à un contact");
    assert_eq!(require.accesskit_node().toggled(), Some(Toggled::True));

    harness.get_by_label("English").click();
    harness.run_steps(2);
    let model = &harness.state().model;
    assert_eq!(model.lang, Lang::En);
    assert_eq!(model.pages.settings.language, Some(Lang::En));
}
