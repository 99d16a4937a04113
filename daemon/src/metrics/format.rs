//! Which exposition format a scrape gets: OpenMetrics 1.0 when its `Accept` header prefers
//! it, as Prometheus's does by default, and the Prometheus text format (0.0.4) otherwise,
//! which is also what a scraper that names neither, or no `Accept` at all, gets.

/// Media ranges of one `Accept` header read at most; the rest are ignored. Prometheus sends
/// four or five.
const RANGES_MAX: usize = 16;

/// An exposition format relaisd serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Text,
    /// OpenMetrics text, version 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: among the media ranges relaisd can serve
    /// (`application/openmetrics-text` with version 1.0.0 or none, and `text/plain` with
    /// version 0.0.4 or none, `text/*` or `*/*`), the one with the highest `q`, the first
    /// listed on a tie. Anything else, an unreadable header included, gets the default.
    pub fn negotiate(accept: Option<&[u8]>) -> Format {
        let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
            return Format::Text;
        };
        let mut best: Option<(Format, f32)> = None;
        for range in accept.split(',').take(RANGES_MAX) {
            let Some((format, quality)) = media_range(range) else {
                continue;
            };
            if quality > 0.0 && best.is_none_or(|(_, q)| quality > q) {
                best = Some((format, quality));
            }
        }
        best.map_or(Format::Text, |(format, _)| format)
    }

    /// The response's `content-type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            // The OpenMetrics specification's own wording, which its parsers match.
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The format and quality of one media range, or `None` when relaisd cannot serve it or it
/// is malformed.
fn media_range(range: &str) -> Option<(Format, f32)> {
    let mut parts = range.split(';');
    let media_type = parts.next()?.trim().to_ascii_lowercase();
    let mut version = None;
    let mut quality = 1.0;
    for parameter in parts {
        let (key, value) = parameter.split_once('=')?;
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "q" => {
                quality = value
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))?;
            }
            "version" => version = Some(value.to_owned()),
            _ => {}
        }
    }
    let format = match (media_type.as_str(), version.as_deref()) {
        ("application/openmetrics-text", None | Some("1.0.0")) => Format::OpenMetrics,
        ("text/plain", None | Some("0.0.4")) | ("text/*" | "*/*", None) => Format::Text,
        _ => return None,
    };
    Some((format, quality))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Debian's Prometheus 2.42 sends by default.
    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,\
        text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// What Prometheus 3 sends by default.
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;\
        escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,\
        text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
        text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

    #[test]
    fn each_accept_header_gets_its_format() {
        let cases: &[(Option<&str>, Format)] = &[
            (None, Format::Text),
            (Some(PROMETHEUS_2), Format::OpenMetrics),
            (Some(PROMETHEUS_3), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; Version=\"1.0.0\""),
                Format::OpenMetrics,
            ),
            (Some("text/plain;version=0.0.4"), Format::Text),
            (Some("*/*"), Format::Text),
            // The Prometheus text format preferred over OpenMetrics.
            (
                Some("application/openmetrics-text;q=0.4,text/plain;q=0.9"),
                Format::Text,
            ),
            // Refused, or a version relaisd does not write: the default.
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (
                Some("application/openmetrics-text;version=0.0.1"),
                Format::Text,
            ),
            (
                Some("application/openmetrics-text;version=2.0.0"),
                Format::Text,
            ),
            (Some("application/json"), Format::Text),
            // Malformed ranges are skipped, not fatal.
            (Some("application/openmetrics-text;q=2"), Format::Text),
            (Some("application/openmetrics-text;q"), Format::Text),
            (Some(";;,=,"), Format::Text),
            (Some(""), Format::Text),
        ];
        for (accept, expected) in cases {
            assert_eq!(
                Format::negotiate(accept.map(str::as_bytes)),
                *expected,
                "Accept: {accept:?}"
            );
        }
    }

    #[test]
    fn hostile_headers_get_the_default() {
        assert_eq!(Format::negotiate(Some(b"\xff\xfe")), Format::Text);
        // Only the first ranges are read.
        let long = format!("{}application/openmetrics-text", "x/y,".repeat(RANGES_MAX));
        assert_eq!(Format::negotiate(Some(long.as_bytes())), Format::Text);
    }
}
