//! BODY[section] extraction from raw message bytes by MIME offsets.

use imap_types::fetch::{Part, Section};

use super::mime_tree::MimeNode;

/// The bytes of `section` of the message `raw` (whose tree is `root`);
/// `None` if the part does not exist.
pub(crate) fn extract(raw: &[u8], root: &MimeNode, section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    let path = |p: &Part| -> Vec<u32> { p.0.as_ref().iter().map(|n| n.get()).collect() };
    // For HEADER/TEXT with a part number, the part must be a message/rfc822.
    let message_of = |p: Option<&Part>| -> Option<&MimeNode> {
        match p {
            None => Some(root),
            Some(p) => root.part(&path(p))?.encapsulated.as_deref(),
        }
    };
    match section {
        None => Some(raw.to_vec()),
        Some(Section::Part(p)) => {
            let node = root.part(&path(p))?;
            Some(raw[node.body.clone()].to_vec())
        }
        Some(Section::Header(p)) => {
            let m = message_of(p.as_ref())?;
            Some(raw[m.header.clone()].to_vec())
        }
        Some(Section::Text(p)) => {
            let m = message_of(p.as_ref())?;
            Some(raw[m.body.clone()].to_vec())
        }
        Some(Section::Mime(p)) => {
            let node = root.part(&path(p))?;
            Some(raw[node.header.clone()].to_vec())
        }
        Some(Section::HeaderFields(p, names)) => {
            let m = message_of(p.as_ref())?;
            let names: Vec<&[u8]> = names.as_ref().iter().map(AsRef::as_ref).collect();
            Some(filter_header(&raw[m.header.clone()], &names, true))
        }
        Some(Section::HeaderFieldsNot(p, names)) => {
            let m = message_of(p.as_ref())?;
            let names: Vec<&[u8]> = names.as_ref().iter().map(AsRef::as_ref).collect();
            Some(filter_header(&raw[m.header.clone()], &names, false))
        }
    }
}

/// Keeps (or drops) header fields by name; always ends with the empty line.
pub(crate) fn filter_header(header: &[u8], names: &[&[u8]], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut current_keep = false;
    while i < header.len() {
        let end = header[i..].iter().position(|&b| b == b'\n').map_or(header.len(), |p| i + p + 1);
        let line = &header[i..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if current_keep {
                out.extend_from_slice(line);
            }
        } else {
            let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
            let name = trim(&line[..name_end]);
            let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
            current_keep = listed == keep;
            if current_keep {
                out.extend_from_slice(line);
            }
        }
        i = end;
    }
    if out.last().is_some_and(|&b| b != b'\n') {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |p| p + 1);
    &b[s..e]
}

/// The section spec as echoed in the FETCH response, e.g. `1.2.HEADER.FIELDS (FROM)`.
pub(crate) fn section_name(section: Option<&Section<'_>>) -> String {
    let part = |p: &Part| p.0.as_ref().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(".");
    let with = |p: &Option<Part>, s: &str| match p {
        Some(p) => format!("{}.{s}", part(p)),
        None => s.to_string(),
    };
    let list = |names: &imap_types::core::Vec1<imap_types::core::AString<'_>>| {
        names
            .as_ref()
            .iter()
            .map(|n| {
                let mut v = Vec::new();
                crate::session::response::astring(&mut v, &n.as_ref().to_ascii_uppercase());
                String::from_utf8_lossy(&v).into_owned()
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    match section {
        None => String::new(),
        Some(Section::Part(p)) => part(p),
        Some(Section::Header(p)) => with(p, "HEADER"),
        Some(Section::Text(p)) => with(p, "TEXT"),
        Some(Section::Mime(p)) => format!("{}.MIME", part(p)),
        Some(Section::HeaderFields(p, n)) => format!("{} ({})", with(p, "HEADER.FIELDS"), list(n)),
        Some(Section::HeaderFieldsNot(p, n)) => format!("{} ({})", with(p, "HEADER.FIELDS.NOT"), list(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_filter() {
        let h = b"From: a\r\nTo: b\r\n c\r\nSubject: x\r\n\r\n";
        assert_eq!(filter_header(h, &[b"to"], true), b"To: b\r\n c\r\n\r\n");
        assert_eq!(filter_header(h, &[b"to"], false), b"From: a\r\nSubject: x\r\n\r\n");
    }
}
