//! A message's MIME structure with absolute byte offsets, built from
//! mail-parser 0.11 and used for BODYSTRUCTURE and BODY[section].

use std::ops::Range;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

/// One MIME part.
#[derive(Debug, Clone)]
pub(crate) struct MimeNode {
    /// The part's header, including the empty line that ends it.
    pub header: Range<usize>,
    /// The part's body.
    pub body: Range<usize>,
    /// Media type and subtype as written (defaults `text`/`plain`).
    pub media_type: String,
    /// Subtype.
    pub subtype: String,
    /// Content-Type parameters.
    pub params: Vec<(String, String)>,
    /// Content-ID.
    pub id: Option<String>,
    /// Content-Description.
    pub description: Option<String>,
    /// Content-Transfer-Encoding.
    pub encoding: Option<String>,
    /// Content-MD5.
    pub md5: Option<String>,
    /// Content-Disposition value and parameters.
    pub disposition: Option<(String, Vec<(String, String)>)>,
    /// Content-Language.
    pub language: Vec<String>,
    /// Content-Location.
    pub location: Option<String>,
    /// Children of a multipart.
    pub children: Vec<MimeNode>,
    /// The encapsulated message of a message/rfc822 part.
    pub encapsulated: Option<Box<MimeNode>>,
}

impl MimeNode {
    /// True for multipart/*.
    pub(crate) fn is_multipart(&self) -> bool {
        self.media_type.eq_ignore_ascii_case("multipart")
    }

    /// Finds a part by its IMAP part number path (`1.2.3`); `self` is the
    /// top-level message.
    pub(crate) fn part(&self, path: &[u32]) -> Option<&MimeNode> {
        let mut cur = self;
        for (i, &n) in path.iter().enumerate() {
            let container: &MimeNode = if i == 0 || cur.is_multipart() {
                cur
            } else {
                cur.encapsulated.as_deref()?
            };
            cur = if container.is_multipart() {
                container.children.get((n as usize).checked_sub(1)?)?
            } else if n == 1 {
                // A non-multipart message's part 1 is its body.
                container
            } else {
                return None;
            };
        }
        Some(cur)
    }
}

/// Parses `raw` into a MIME tree. `None` only if mail-parser gives up
/// (it accepts almost anything); the caller then treats the message as one
/// text/plain part.
pub(crate) fn parse(raw: &[u8]) -> MimeNode {
    match MessageParser::default().parse(raw) {
        Some(msg) if !msg.parts.is_empty() => build(&msg, 0, 0, raw.len()),
        _ => fallback(raw),
    }
}

/// A whole message as one text/plain part (for unparsable input).
fn fallback(raw: &[u8]) -> MimeNode {
    let split = find_header_end(raw);
    MimeNode {
        header: 0..split,
        body: split..raw.len(),
        media_type: "text".into(),
        subtype: "plain".into(),
        params: vec![("charset".into(), "us-ascii".into())],
        id: None,
        description: None,
        encoding: None,
        md5: None,
        disposition: None,
        language: Vec::new(),
        location: None,
        children: Vec::new(),
        encapsulated: None,
    }
}

/// Offset just after the first empty line (or the end).
pub(crate) fn find_header_end(raw: &[u8]) -> usize {
    let mut i = 0;
    while i < raw.len() {
        let line_end = raw[i..].iter().position(|&b| b == b'\n').map_or(raw.len(), |p| i + p + 1);
        let line = &raw[i..line_end];
        if line == b"\r\n" || line == b"\n" {
            return line_end;
        }
        i = line_end;
    }
    raw.len()
}

fn clamp(r: Range<usize>, len: usize) -> Range<usize> {
    let s = r.start.min(len);
    let e = r.end.clamp(s, len);
    s..e
}

fn build(msg: &Message<'_>, id: usize, base: usize, limit: usize) -> MimeNode {
    let part = &msg.parts[id];
    let header = clamp(base + part.offset_header as usize..base + part.offset_body as usize, limit);
    let body = clamp(base + part.offset_body as usize..base + part.offset_end as usize, limit);
    let (media_type, subtype, params) = match part.content_type() {
        Some(ct) => (
            ct.c_type.to_string(),
            ct.c_subtype.as_deref().unwrap_or(if ct.c_type.eq_ignore_ascii_case("text") { "plain" } else { "" }).to_string(),
            ct.attributes
                .as_ref()
                .map(|a| a.iter().map(|at| (at.name.to_string(), at.value.to_string())).collect())
                .unwrap_or_default(),
        ),
        None => ("text".to_string(), "plain".to_string(), vec![("charset".to_string(), "us-ascii".to_string())]),
    };
    let mut params = params;
    if media_type.eq_ignore_ascii_case("text") && !params.iter().any(|(k, _)| k.eq_ignore_ascii_case("charset")) {
        // RFC 2045 default, reported explicitly like Dovecot does.
        params.insert(0, ("charset".to_string(), "us-ascii".to_string()));
    }
    let disposition = part.content_disposition().map(|d| {
        (
            d.c_type.to_string(),
            d.attributes
                .as_ref()
                .map(|a| a.iter().map(|at| (at.name.to_string(), at.value.to_string())).collect())
                .unwrap_or_default(),
        )
    });
    let language = part.content_language().as_text_list().map(|l| l.iter().map(|s| s.to_string()).collect()).unwrap_or_default();
    let raw_header = |name: &str| -> Option<String> {
        part.headers.iter().find(|h| h.name.as_str().eq_ignore_ascii_case(name)).map(|h| {
            let r = clamp(base + h.offset_start as usize..base + h.offset_end as usize, limit);
            let bytes = msg_raw_slice(msg, base, r);
            unfold(&bytes)
        })
    };
    let mut node = MimeNode {
        header,
        body,
        media_type,
        subtype,
        params,
        id: raw_header("Content-ID"),
        description: raw_header("Content-Description"),
        encoding: raw_header("Content-Transfer-Encoding"),
        md5: raw_header("Content-MD5"),
        disposition,
        language,
        location: raw_header("Content-Location"),
        children: Vec::new(),
        encapsulated: None,
    };
    match &part.body {
        PartType::Multipart(ids) => {
            node.children = ids.iter().map(|&c| build(msg, c as usize, base, limit)).collect();
        }
        PartType::Message(inner) if !inner.parts.is_empty() => {
            // mail-parser 0.11 gives the inner message's offsets relative to
            // the outermost raw message (its `raw_message` is the whole
            // outer message), so the base stays the same.
            let mut enc = build(inner, 0, base, node.body.end);
            // The encapsulated message is the whole part body: its text
            // runs to the part's end, epilogue after its closing boundary
            // included (mail-parser ends it at that boundary).
            enc.body.end = enc.body.end.max(node.body.end);
            node.encapsulated = Some(Box::new(enc));
        }
        _ => {}
    }
    node
}

/// The raw bytes of the top-level message for an absolute range.
fn msg_raw_slice(msg: &Message<'_>, base: usize, r: Range<usize>) -> Vec<u8> {
    let raw = msg.raw_message.as_ref();
    let s = r.start.saturating_sub(base).min(raw.len());
    let e = r.end.saturating_sub(base).clamp(s, raw.len());
    raw[s..e].to_vec()
}

/// Unfolds a header value and trims it.
pub(crate) fn unfold(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c != '\r' && c != '\n' {
            out.push(c);
        }
    }
    out.trim().to_string()
}
