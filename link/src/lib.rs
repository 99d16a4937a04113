//! Enrollment links (`relais://enroll?v=1&server=…&user=…&code=…&pin=sha256:…`): what an
//! operator's `relaisd admin user add --link` or another device of the user (`relais
//! devices link`) gives a new device, so that it enrolls with nothing else to type or copy.
//! The pin replaces the CA file: the new device accepts the relay only if the chain it
//! presents holds the certificate with that SHA-256 and leads up to it.
//!
//! The format is `docs/reference/enroll-link.md`. Parsing is strict: one version, each
//! field once, nothing unknown, every value checked, so a link cut short or altered is
//! refused with what is wrong ([`LinkError`]) rather than half understood. The code is a
//! secret: [`EnrollLink`]'s `Debug` leaves it out and it is zeroed when the link is dropped.
//!
//! relaisd and the client share this crate, the link's one definition and its QR codes
//! ([`qr`]): it does no network and no MLS, and reads no file; it writes only the PNG file
//! it is given.

pub mod qr;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Longest link accepted, surrounding white space included: a link with a 253-character
/// host name and a 64-character user name is under 500 bytes.
pub const LINK_BYTES_MAX: usize = 1024;

/// What every link starts with.
const PREFIX: &str = "relais://enroll?";
/// The one version of the format.
const VERSION: &str = "1";
/// Characters of an enrollment code: Crockford's base32, uppercase, without dashes.
const CODE_ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in an enrollment code (80 bits).
const CODE_CHARS: usize = 16;
/// What a pin starts with: the digest it is.
const PIN_PREFIX: &str = "sha256:";
/// Unpadded base64url characters of a SHA-256 digest.
const PIN_CHARS: usize = 43;
/// Longest user name and domain name, as the relay allows them.
const NAME_CHARS_MAX: usize = 64;
const DOMAIN_CHARS_MAX: usize = 253;

/// A parsed enrollment link: the relay's address, the user, the one-time code and the pin
/// of a certificate of the relay's chain.
pub struct EnrollLink {
    server: String,
    user: String,
    code: Zeroizing<String>,
    pin: [u8; 32],
    expires_at_ms: Option<i64>,
}

/// A field of a link, for messages and for the app to translate [`LinkError`] by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkField {
    Version,
    Server,
    User,
    Code,
    Pin,
}

/// Why a text is not a usable enrollment link. The messages say what to do; the app
/// translates by variant (and [`LinkField`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error(
        "this is not a Relais enrollment link (one starts with relais://enroll?); copy the \
         whole link again, or ask for a new one"
    )]
    NotALink,
    #[error(
        "the enrollment link is longer than any real one ({LINK_BYTES_MAX} bytes at most); \
         copy the link alone, or ask for a new one"
    )]
    TooLong,
    #[error(
        "the enrollment link is of version {version}, which this version of Relais does not \
         read; update Relais, or ask for a link of version 1"
    )]
    UnsupportedVersion { version: String },
    #[error("the enrollment link has no {field}; it was cut short: copy the whole link again")]
    Missing { field: LinkField },
    #[error("the enrollment link gives its {field} twice; it was altered: ask for a new one")]
    Duplicate { field: LinkField },
    #[error(
        "the enrollment link has a field {name:?} that no link has; it was altered: ask for a \
         new one"
    )]
    Unknown { name: String },
    #[error(
        "the enrollment link's {field} is not valid ({reason}); copy the whole link again, or \
         ask for a new one"
    )]
    Invalid {
        field: LinkField,
        reason: &'static str,
    },
    #[error(
        "the enrollment link holds characters no link has ({reason}); copy the link alone, \
         or ask for a new one"
    )]
    Malformed { reason: &'static str },
}

impl std::fmt::Display for LinkField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkField::Version => "version (v)",
            LinkField::Server => "relay address (server)",
            LinkField::User => "user",
            LinkField::Code => "enrollment code (code)",
            LinkField::Pin => "certificate pin (pin)",
        })
    }
}

impl LinkField {
    /// The field's name in a link.
    fn key(self) -> &'static str {
        match self {
            LinkField::Version => "v",
            LinkField::Server => "server",
            LinkField::User => "user",
            LinkField::Code => "code",
            LinkField::Pin => "pin",
        }
    }

    const ALL: [LinkField; 5] = [
        LinkField::Version,
        LinkField::Server,
        LinkField::User,
        LinkField::Code,
        LinkField::Pin,
    ];
}

impl EnrollLink {
    /// Reads a link, as pasted, dropped or scanned (white space around it is ignored).
    pub fn parse(text: &str) -> Result<EnrollLink, LinkError> {
        if text.len() > LINK_BYTES_MAX {
            return Err(LinkError::TooLong);
        }
        let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
        let query = text.strip_prefix(PREFIX).ok_or(LinkError::NotALink)?;
        if !query.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(LinkError::Malformed {
                reason: "spaces, line breaks or letters outside ASCII",
            });
        }
        if query.contains('#') {
            return Err(LinkError::Malformed {
                reason: "a # and what follows it",
            });
        }
        let fields = fields(query)?;
        let [version, server, user, code, pin] = fields;
        let version = version.ok_or(LinkError::Missing {
            field: LinkField::Version,
        })?;
        if version.as_str() != VERSION {
            return Err(LinkError::UnsupportedVersion {
                version: printable(&version),
            });
        }
        let missing = |field| LinkError::Missing { field };
        let code = code.ok_or(missing(LinkField::Code))?;
        if code.contains('-') {
            // The relay prints codes with dashes for people to type; a link never holds one.
            return Err(LinkError::Invalid {
                field: LinkField::Code,
                reason: "a link writes the code without dashes",
            });
        }
        EnrollLink::new(
            server.ok_or(missing(LinkField::Server))?.as_str(),
            user.ok_or(missing(LinkField::User))?.as_str(),
            code.as_str(),
            pin.ok_or(missing(LinkField::Pin))?.as_str(),
        )
    }

    /// A link from its fields as a link writes them, each checked as [`EnrollLink::parse`]
    /// checks it; the code may keep the dashes the relay prints it with.
    pub fn new(server: &str, user: &str, code: &str, pin: &str) -> Result<EnrollLink, LinkError> {
        let invalid = |field, reason| LinkError::Invalid { field, reason };
        check_server(server).map_err(|r| invalid(LinkField::Server, r))?;
        check_user(user).map_err(|r| invalid(LinkField::User, r))?;
        let code = Zeroizing::new(code.chars().filter(|c| *c != '-').collect::<String>());
        check_code(&code).map_err(|r| invalid(LinkField::Code, r))?;
        let pin = parse_pin(pin).map_err(|r| invalid(LinkField::Pin, r))?;
        Ok(EnrollLink {
            server: server.to_owned(),
            user: user.to_owned(),
            code,
            pin,
            expires_at_ms: None,
        })
    }

    /// The link as text, as [`EnrollLink::parse`] reads it. It holds the code: show it to
    /// its user only, never log it.
    pub fn to_uri(&self) -> Zeroizing<String> {
        let server = self.server.replace('[', "%5B").replace(']', "%5D");
        Zeroizing::new(format!(
            "{PREFIX}v={VERSION}&server={server}&user={}&code={}&pin={}",
            self.user,
            self.code.as_str(),
            pin_text(&self.pin)
        ))
    }

    /// The relay's address, `HOST:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The user the code is for, `name@domain`.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The one-time code: a secret until it is used.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The SHA-256 of the certificate the relay's chain must hold.
    pub fn pin(&self) -> &[u8; 32] {
        &self.pin
    }

    /// The link with when its code expires (milliseconds since the Unix epoch), as the relay
    /// said when it issued the code.
    pub fn expiring_at(mut self, expires_at_ms: i64) -> EnrollLink {
        self.expires_at_ms = Some(expires_at_ms);
        self
    }

    /// When the code expires (milliseconds since the Unix epoch), for a link made when the
    /// code was issued ([`EnrollLink::expiring_at`]); a link read from text does not say.
    pub fn expires_at_ms(&self) -> Option<i64> {
        self.expires_at_ms
    }
}

impl std::fmt::Debug for EnrollLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollLink")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("code", &"(secret)")
            .field("pin", &pin_text(&self.pin))
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The query's fields in [`LinkField::ALL`]'s order, each percent-decoded; the version is
/// read first, so that a newer link is reported as such rather than for its new fields.
fn fields(query: &str) -> Result<[Option<Zeroizing<String>>; 5], LinkError> {
    let mut pairs = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').ok_or(LinkError::Malformed {
            reason: "a field without =",
        })?;
        pairs.push((name, value));
    }
    if let Some((_, version)) = pairs.iter().find(|(name, _)| *name == "v")
        && !version.is_empty()
        && *version != VERSION
    {
        return Err(LinkError::UnsupportedVersion {
            version: printable(version),
        });
    }
    let mut fields: [Option<Zeroizing<String>>; 5] = Default::default();
    for (name, value) in pairs {
        let Some(index) = LinkField::ALL.iter().position(|f| f.key() == name) else {
            return Err(LinkError::Unknown {
                name: printable(name),
            });
        };
        let field = LinkField::ALL[index];
        if fields[index].is_some() {
            return Err(LinkError::Duplicate { field });
        }
        if value.is_empty() {
            return Err(LinkError::Missing { field });
        }
        let decoded = percent_decode(value).ok_or(LinkError::Invalid {
            field,
            reason: "a % not followed by two hexadecimal digits of a visible character",
        })?;
        fields[index] = Some(decoded);
    }
    Ok(fields)
}

/// `%XX` escapes decoded; `None` for a broken escape, or one of something no field holds
/// (a control character, a space, a byte outside ASCII).
fn percent_decode(value: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(value.len()));
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(char::from(b));
            continue;
        }
        let hex = [bytes.next()?, bytes.next()?];
        let byte = u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?;
        if !byte.is_ascii_graphic() {
            return None;
        }
        out.push(char::from(byte));
    }
    Some(out)
}

/// The pin of a certificate (DER): its SHA-256, what a link's `pin` holds.
pub fn pin_of(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// A pin as a link writes it: `sha256:` and the digest in unpadded base64url.
pub fn pin_text(pin: &[u8; 32]) -> String {
    format!(
        "{PIN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pin)
    )
}

/// `HOST:PORT`: a lowercase DNS name, an IPv4 address or an IPv6 address in brackets, and
/// a port from 1 to 65535 without leading zeros; the relay's address as a link carries it,
/// and as relaisd's `[server] public_address` must be. The error says what is wrong.
pub fn check_server(server: &str) -> Result<(), &'static str> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or("it must be HOST:PORT, with a port")?;
    if port.starts_with('0') || !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err("the port must be a number from 1 to 65535");
    }
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        // A name whose last label is all digits would be a mistyped IPv4 address.
        None => {
            host.parse::<std::net::Ipv4Addr>().is_ok()
                || (domain(host)
                    && !host
                        .rsplit('.')
                        .next()
                        .is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit())))
        }
    };
    if valid {
        Ok(())
    } else {
        Err("the host must be a lowercase name, or an IP address with IPv6 in brackets")
    }
}

/// `name@domain` as the relay writes user names.
fn check_user(user: &str) -> Result<(), &'static str> {
    let (name, user_domain) = user.split_once('@').ok_or("it must be name@domain")?;
    let name_ok = !name.is_empty()
        && name.len() <= NAME_CHARS_MAX
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !name_ok {
        return Err("the name must be 1 to 64 of a-z, 0-9, '.', '_' and '-'");
    }
    if !domain(user_domain) {
        return Err("the domain must be a lowercase domain name");
    }
    Ok(())
}

/// A lowercase DNS name (or `localhost`): labels of 1 to 63 letters, digits and dashes.
fn domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DOMAIN_CHARS_MAX
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Sixteen characters of Crockford's base32, as the relay issues codes.
fn check_code(code: &str) -> Result<(), &'static str> {
    if code.len() != CODE_CHARS || !code.chars().all(|c| CODE_ALPHABET.contains(c)) {
        return Err("a code is 16 of the letters and digits 0-9 A-Z, without I, L, O and U");
    }
    Ok(())
}

/// `sha256:` and the digest in unpadded base64url, written the one way base64url writes it.
fn parse_pin(pin: &str) -> Result<[u8; 32], &'static str> {
    let encoded = pin
        .strip_prefix(PIN_PREFIX)
        .ok_or("a pin starts with sha256:")?;
    if encoded.len() != PIN_CHARS {
        return Err("a pin is sha256: and 43 characters");
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| "a pin's 43 characters are base64url (A-Z, a-z, 0-9, - and _)")?;
    bytes
        .try_into()
        .map_err(|_| "a pin is sha256: and 43 characters")
}

/// Part of a hostile text, fit for a message: at most 32 visible characters.
fn printable(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_graphic)
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
    const CODE: &str = "ABCD0123EFGH4567";

    fn link(server: &str, user: &str, code: &str, pin: &str) -> String {
        format!("relais://enroll?v=1&server={server}&user={user}&code={code}&pin={pin}")
    }

    fn good() -> String {
        link(
            "relais.interieur.gouv.fr:443",
            "alice@interieur.gouv.fr",
            CODE,
            PIN,
        )
    }

    #[test]
    fn a_link_reads_back_as_it_was_written() {
        let parsed = EnrollLink::parse(&good()).expect("valid");
        assert_eq!(parsed.server(), "relais.interieur.gouv.fr:443");
        assert_eq!(parsed.user(), "alice@interieur.gouv.fr");
        assert_eq!(parsed.code(), CODE);
        assert_eq!(parsed.pin(), &pin_of(b""));
        assert_eq!(pin_text(parsed.pin()), PIN);
        assert_eq!(parsed.expires_at_ms(), None);
        assert_eq!(parsed.to_uri().as_str(), good());
        // As pasted from a message or a file, and with the code as the relay prints it.
        let pasted = EnrollLink::parse(&format!("  {}\r\n", good())).expect("trimmed");
        assert_eq!(pasted.to_uri().as_str(), good());
        let dashed = EnrollLink::new(
            "127.0.0.1:8443",
            "bob@localhost",
            "ABCD-0123-EFGH-4567",
            PIN,
        )
        .expect("dashes");
        assert_eq!(dashed.code(), CODE);
        // An IPv6 relay: the brackets travel escaped, and come back.
        let v6 = EnrollLink::new("[2001:db8::1]:443", "bob@localhost", CODE, PIN).expect("v6");
        let uri = v6.to_uri();
        assert!(
            uri.contains("server=%5B2001:db8::1%5D:443"),
            "{}",
            uri.as_str()
        );
        assert_eq!(
            EnrollLink::parse(&uri).expect("v6 back").server(),
            "[2001:db8::1]:443"
        );
        // Escapes are read wherever they are, and the value checked once decoded.
        let escaped = EnrollLink::parse(&good().replace("alice@", "alice%40")).expect("%40");
        assert_eq!(escaped.user(), "alice@interieur.gouv.fr");
    }

    #[test]
    fn the_code_is_never_shown() {
        let parsed = EnrollLink::parse(&good()).expect("valid");
        let shown = format!("{parsed:?}");
        assert!(!shown.contains(CODE), "{shown}");
        assert!(shown.contains("alice@interieur.gouv.fr"), "{shown}");
        for e in [
            EnrollLink::parse(&good().replace(CODE, "ABCD0123EFGH456")),
            EnrollLink::parse(&good().replace(CODE, "abcd0123efgh4567")),
        ] {
            let error = e.expect_err("a bad code").to_string();
            assert!(!error.to_uppercase().contains("0123EFGH"), "{error}");
        }
    }

    /// What a refused link's error must be.
    type Expected = Box<dyn Fn(&LinkError) -> bool>;

    fn is(expected: LinkError) -> Expected {
        Box::new(move |e| *e == expected)
    }

    fn invalid(field: LinkField) -> Expected {
        Box::new(move |e| matches!(e, LinkError::Invalid { field: f, .. } if *f == field))
    }

    fn malformed() -> Expected {
        Box::new(|e| matches!(e, LinkError::Malformed { .. }))
    }

    /// Every way a link can be cut, altered or wrong, and the error each must get.
    fn refused_links() -> Vec<(String, Expected)> {
        use LinkField::*;
        let good = good();
        let unknown = |e: &LinkError| matches!(e, LinkError::Unknown { name } if name == "next");
        let version = |e: &LinkError| matches!(e, LinkError::UnsupportedVersion { .. });
        vec![
            (
                "https://relais.example/enroll".into(),
                is(LinkError::NotALink),
            ),
            ("garbage".into(), is(LinkError::NotALink)),
            (String::new(), is(LinkError::NotALink)),
            ("RELAIS://ENROLL?v=1".into(), is(LinkError::NotALink)),
            (format!("see {good}"), is(LinkError::NotALink)),
            (format!("{good} please"), malformed()),
            (format!("{good}#x"), malformed()),
            (format!("{good}&"), malformed()),
            (good.replace("v=1", "v=1 "), malformed()),
            (good.replace("alice", "alicé"), malformed()),
            ("x".repeat(LINK_BYTES_MAX + 1), is(LinkError::TooLong)),
            (
                good.replace("v=1", "v=2"),
                is(LinkError::UnsupportedVersion {
                    version: "2".into(),
                }),
            ),
            // A newer link's new fields are not what it is refused for.
            (good.replace("v=1", "v=7&colour=blue"), Box::new(version)),
            (
                good.replace("v=1&", ""),
                is(LinkError::Missing { field: Version }),
            ),
            (
                good[..good.find("&pin").expect("pin")].to_owned(),
                is(LinkError::Missing { field: Pin }),
            ),
            (good[..good.len() - 5].to_owned(), invalid(Pin)),
            (
                format!("{good}&user=mallory@localhost"),
                is(LinkError::Duplicate { field: User }),
            ),
            (
                format!("{good}&next=https://evil.example"),
                Box::new(unknown),
            ),
            (good.replace("gouv.fr:443", "gouv.fr"), invalid(Server)),
            (good.replace(":443", ":0443"), invalid(Server)),
            (good.replace(":443", ":70000"), invalid(Server)),
            (
                good.replace("relais.interieur", "Relais.interieur"),
                invalid(Server),
            ),
            (
                good.replace("relais.interieur", "relais_x.interieur"),
                invalid(Server),
            ),
            (
                good.replace("alice@interieur.gouv.fr", "alice"),
                invalid(User),
            ),
            (good.replace("alice", "Alice"), invalid(User)),
            (good.replace("alice", ".alice"), invalid(User)),
            (good.replace(CODE, "ABCD0123EFGH456I"), invalid(Code)),
            (
                good.replace(CODE, ""),
                is(LinkError::Missing { field: Code }),
            ),
            (good.replace(CODE, "%G1"), invalid(Code)),
            (good.replace("code=", "code=%0A"), invalid(Code)),
            (good.replace("sha256:", "sha1:"), invalid(Pin)),
            (good.replace("47DEQ", "47DE="), invalid(Pin)),
            // The last character carries two bits past the digest: only one spelling is
            // base64url's.
            (good.replace("uFU", "uFV"), invalid(Pin)),
            (format!("{good}AAAA"), invalid(Pin)),
        ]
    }

    /// What a hostile sender would try: oversized texts, escaped nulls and controls, a
    /// field repeated under another case or an escaped name, escaped separators, empty
    /// values, a code spelled with dashes, a host that is a mistyped address.
    fn hostile_links() -> Vec<(String, Expected)> {
        use LinkField::*;
        let good = good();
        let unknown = |name: &'static str| -> Expected {
            Box::new(move |e| matches!(e, LinkError::Unknown { name: n } if n == name))
        };
        let padded = format!("{good}{}", " ".repeat(LINK_BYTES_MAX - good.len() + 1));
        vec![
            (
                format!("{good}&x={}", "A".repeat(4096)),
                is(LinkError::TooLong),
            ),
            (padded, is(LinkError::TooLong)),
            ("%".repeat(LINK_BYTES_MAX * 4), is(LinkError::TooLong)),
            (good.replace("alice@", "alice%00@"), invalid(User)),
            (good.replace("code=", "code=%00"), invalid(Code)),
            (good.replace(":443", "%00:443"), invalid(Server)),
            (good.replace("pin=sha256:", "pin=sha256:%00"), invalid(Pin)),
            (
                good.replace("v=1", "v=1%00"),
                Box::new(|e| matches!(e, LinkError::UnsupportedVersion { .. })),
            ),
            (good.replace("alice@", "alice%7F@"), invalid(User)),
            (good.replace("alice@", "alice%0D%0A@"), invalid(User)),
            (format!("{good}&User=mallory@localhost"), unknown("User")),
            (format!("{good}&USER=mallory@localhost"), unknown("USER")),
            (
                format!("{good}&%75ser=mallory@localhost"),
                unknown("%75ser"),
            ),
            (
                format!("{good}&user%00=mallory@localhost"),
                unknown("user%00"),
            ),
            (format!("{good}&V=2"), unknown("V")),
            (
                good.replace("v=1", "v=1&v=1"),
                is(LinkError::Duplicate { field: Version }),
            ),
            (
                format!("{good}&pin=sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"),
                is(LinkError::Duplicate { field: Pin }),
            ),
            (good.replace("alice@", "alice%26code=X@"), invalid(User)),
            (good.replace("alice@", "alice%3D@"), invalid(User)),
            (
                good.replace("user=alice@interieur.gouv.fr", "user="),
                is(LinkError::Missing { field: User }),
            ),
            (
                good.replace("v=1", "v="),
                is(LinkError::Missing { field: Version }),
            ),
            (good.replace(CODE, "ABCD-0123-EFGH-4567"), invalid(Code)),
            (
                good.replace("relais.interieur.gouv.fr", "10.0.0.256"),
                invalid(Server),
            ),
            (
                good.replace("relais.interieur.gouv.fr", "relais.443"),
                invalid(Server),
            ),
            (
                good.replace("relais.interieur.gouv.fr", "[fe80::1%25eth0]"),
                invalid(Server),
            ),
            (
                good.replace("relais.interieur.gouv.fr", &"a".repeat(64)),
                invalid(Server),
            ),
            (good.replace("alice", &"a".repeat(65)), invalid(User)),
            (format!("\u{a0}{good}"), is(LinkError::NotALink)),
            (format!("{good}\u{200b}"), malformed()),
            (format!("{good}\0"), malformed()),
        ]
    }

    #[test]
    fn hostile_links_are_refused_without_echoing_what_they_carry() {
        for (text, expected) in hostile_links() {
            match EnrollLink::parse(&text) {
                Ok(parsed) => panic!("{text:?} was accepted as {parsed:?}"),
                Err(e) => {
                    assert!(expected(&e), "{text:?}: unexpected {e:?}");
                    let message = e.to_string();
                    assert!(message.len() < 300, "{text:?}: {message}");
                    assert!(!message.contains(CODE), "{text:?}: {message}");
                    assert!(!message.contains('\0'), "{text:?}: {message}");
                }
            }
        }
    }

    /// Every text one edit away from a link (each byte cut, replaced by a byte a hostile
    /// sender would choose, or doubled) is refused or read as a link that writes itself back
    /// the one way links are written; and every text cut short is refused. Nothing panics.
    #[test]
    fn every_edit_of_a_link_is_refused_or_read_back_exactly() {
        let good = good();
        let mut texts: Vec<String> = (0..good.len()).map(|end| good[..end].to_owned()).collect();
        let bytes = good.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [
                "", "%", "&", "=", "#", "-", "%00", "%25", "A", "a", "0", ".", ":",
            ] {
                texts.push(format!("{}{replacement}{}", &good[..i], &good[i + 1..]));
            }
            texts.push(format!("{}{}", &good[..=i], &good[i..]));
        }
        for (n, text) in texts.iter().enumerate() {
            let parsed = EnrollLink::parse(text);
            if n < good.len() {
                assert!(parsed.is_err(), "{text:?}, cut short, was accepted");
            }
            if let Ok(link) = parsed {
                let written = link.to_uri();
                let again = EnrollLink::parse(&written).expect("a link reads its own text");
                assert_eq!(again.to_uri(), written, "{text:?}");
                assert_eq!(
                    (again.server(), again.user(), again.code(), again.pin()),
                    (link.server(), link.user(), link.code(), link.pin())
                );
            }
        }
    }

    #[test]
    fn malformed_or_altered_links_are_refused_with_what_is_wrong() {
        for (text, expected) in refused_links() {
            match EnrollLink::parse(&text) {
                Ok(parsed) => panic!("{text:?} was accepted as {parsed:?}"),
                Err(e) => {
                    assert!(expected(&e), "{text:?}: unexpected {e:?}");
                    let message = e.to_string();
                    let what_to_do = message.contains("ask") || message.contains("copy");
                    assert!(
                        message.contains("link") && what_to_do,
                        "{text:?}: the message says what to do: {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn escapes_decode_only_to_what_fields_hold() {
        assert_eq!(
            percent_decode("a%40b").as_deref().map(String::as_str),
            Some("a@b")
        );
        assert_eq!(
            percent_decode("%5b%5D").as_deref().map(String::as_str),
            Some("[]")
        );
        assert!(percent_decode("%20").is_none());
        assert!(percent_decode("%C3%A9").is_none());
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%").is_none());
    }
}
