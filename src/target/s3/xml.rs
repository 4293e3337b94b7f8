//! Minimal, tolerant XML extraction for the few S3 responses walship reads.
//!
//! This is not an XML parser: it finds elements by local name (namespace
//! prefixes ignored), returns their raw content, and decodes the text of
//! leaf elements (the five named entities, numeric character references and
//! CDATA sections). Attributes are skipped, unknown elements ignored, and any
//! input — truncated, binary, hostile — gives a value or `None`, never a
//! panic: every slice is taken with `str::get` at ASCII delimiters, and the
//! scan only moves forward, so the work is linear in the input.
//!
//! The typed extractors below cover ListObjectsV2, CreateMultipartUpload,
//! CompleteMultipartUpload, ListMultipartUploads, DeleteObjects and error
//! bodies; [`escape`] builds request bodies. [`check_parse`] is the fuzz
//! target's property (fuzz/fuzz_targets/s3_xml.rs).

/// One piece of markup found by the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkupKind {
    Start,
    End,
    SelfClosing,
    /// Comment, CDATA, processing instruction, declaration.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Markup<'a> {
    kind: MarkupKind,
    /// Local name (after any `prefix:`), empty for `Other`.
    name: &'a str,
    /// Byte index of the `<`.
    start: usize,
    /// Byte index just after the closing `>`.
    end: usize,
}

/// The next markup at or after `from`, or `None` at the end of input or when
/// the remaining markup is unterminated.
fn next_markup(xml: &str, from: usize) -> Option<Markup<'_>> {
    let bytes = xml.as_bytes();
    let start = from + find_byte(bytes.get(from..)?, b'<')?;
    let rest = xml.get(start..)?;
    let other = |terminator: &str, skip: usize| {
        let end = start + skip + rest.get(skip..)?.find(terminator)? + terminator.len();
        Some(Markup { kind: MarkupKind::Other, name: "", start, end })
    };
    if rest.starts_with("<!--") {
        return other("-->", 4);
    }
    if rest.starts_with("<![CDATA[") {
        return other("]]>", 9);
    }
    if rest.starts_with("<?") {
        return other("?>", 2);
    }
    if rest.starts_with("<!") {
        return other(">", 2);
    }
    let (kind, name_start) =
        if rest.starts_with("</") { (MarkupKind::End, start + 2) } else { (MarkupKind::Start, start + 1) };
    let name_end = name_start
        + bytes.get(name_start..)?.iter().position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')?;
    let close = tag_close(bytes, name_end)?;
    let kind = if kind == MarkupKind::Start && close > 0 && bytes.get(close - 1) == Some(&b'/') {
        MarkupKind::SelfClosing
    } else {
        kind
    };
    let qualified = xml.get(name_start..name_end)?;
    let name = qualified.rsplit(':').next().unwrap_or(qualified);
    Some(Markup { kind, name, start, end: close + 1 })
}

/// Index of the `>` closing a tag whose name ends at `from`, skipping quoted
/// attribute values.
fn tag_close(bytes: &[u8], from: usize) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (offset, &byte) in bytes.get(from..)?.iter().enumerate() {
        match (quote, byte) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(byte),
            (None, b'>') => return Some(from + offset),
            (None, _) => {}
        }
    }
    None
}

fn find_byte(bytes: &[u8], wanted: u8) -> Option<usize> {
    bytes.iter().position(|&b| b == wanted)
}

/// Raw content of every element named `tag` (local name), in document order.
/// An element nested in another of the same name belongs to its parent's
/// content. A self-closing element has empty content; an unclosed one at the
/// end of a truncated document is left out.
pub fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut position = 0;
    while let Some(markup) = next_markup(xml, position) {
        position = markup.end;
        if markup.name != tag {
            continue;
        }
        match markup.kind {
            MarkupKind::SelfClosing => found.push(""),
            MarkupKind::Start => match matching_end(xml, tag, markup.end) {
                Some((content_end, after)) => {
                    found.push(xml.get(markup.end..content_end).unwrap_or(""));
                    position = after;
                }
                None => break,
            },
            _ => {}
        }
    }
    found
}

/// For an element `tag` whose content starts at `from`: the index where its
/// content ends and the index just after its end tag.
fn matching_end(xml: &str, tag: &str, from: usize) -> Option<(usize, usize)> {
    let mut depth = 1usize;
    let mut position = from;
    while let Some(markup) = next_markup(xml, position) {
        position = markup.end;
        if markup.name != tag {
            continue;
        }
        match markup.kind {
            MarkupKind::Start => depth += 1,
            MarkupKind::End => {
                depth -= 1;
                if depth == 0 {
                    return Some((markup.start, markup.end));
                }
            }
            _ => {}
        }
    }
    None
}

/// Decoded text of the first element named `tag`, if any.
pub fn text(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|raw| decode_text(raw))
}

/// Local name of the document's root element.
pub fn root_name(xml: &str) -> Option<&str> {
    let mut position = 0;
    while let Some(markup) = next_markup(xml, position) {
        match markup.kind {
            MarkupKind::Start | MarkupKind::SelfClosing => return Some(markup.name),
            MarkupKind::End => return None,
            MarkupKind::Other => position = markup.end,
        }
    }
    None
}

/// Text content with CDATA sections kept literally and entities decoded
/// elsewhere. Whitespace is kept: it is part of a key (readers of numbers
/// and booleans trim for themselves).
pub fn decode_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("<![CDATA[") {
        out.push_str(&decode_entities(rest.get(..start).unwrap_or("")));
        let after = rest.get(start + 9..).unwrap_or("");
        match after.find("]]>") {
            Some(end) => {
                out.push_str(after.get(..end).unwrap_or(""));
                rest = after.get(end + 3..).unwrap_or("");
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(&decode_entities(rest));
    out
}

/// Replace `&amp; &lt; &gt; &quot; &apos; &#NN; &#xNN;`; anything else that
/// starts with `&` (unknown or malformed) is kept as written.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let after = rest.get(amp + 1..).unwrap_or("");
        let decoded = after
            .bytes()
            .take(11)
            .position(|b| b == b';')
            .and_then(|semi| Some((entity_char(after.get(..semi)?)?, semi)));
        match decoded {
            Some((ch, semi)) => {
                out.push(ch);
                rest = after.get(semi + 1..).unwrap_or("");
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity_char(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse::<u32>().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Escape text for an XML element body.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Decoded text of the first element named `tag`, trimmed, when not empty:
/// for codes, messages, checksums and dates, never for keys or tokens.
fn trimmed(xml: &str, tag: &str) -> Option<String> {
    text(xml, tag).map(|value| value.trim().to_string()).filter(|value| !value.is_empty())
}

fn is_true(xml: &str, tag: &str) -> bool {
    text(xml, tag).is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// One page of a ListObjectsV2 response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListObjectsPage {
    /// `(key, size)` of each object, in response order.
    pub objects: Vec<(String, u64)>,
    /// Each object's `LastModified` text, in the same order as `objects`.
    pub last_modified: Vec<Option<String>>,
    /// Each object's `ETag` text (quotes kept), in the same order.
    pub etags: Vec<Option<String>>,
    /// The `CommonPrefixes` of a listing with a delimiter, in order.
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    pub next_continuation_token: Option<String>,
}

/// Parse ListObjectsV2's `ListBucketResult`; an entry without a key or with a
/// size that is not a number is an error (a listing must not silently skip).
pub fn parse_list_objects(xml: &str) -> Result<ListObjectsPage, String> {
    let mut objects = Vec::new();
    let mut last_modified = Vec::new();
    let mut etags = Vec::new();
    for entry in elements(xml, "Contents") {
        let key = text(entry, "Key").ok_or("a Contents entry has no Key")?;
        let size = text(entry, "Size")
            .and_then(|size| size.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("object {key} has no valid Size"))?;
        objects.push((key, size));
        last_modified.push(trimmed(entry, "LastModified"));
        etags.push(trimmed(entry, "ETag"));
    }
    let common_prefixes =
        elements(xml, "CommonPrefixes").into_iter().filter_map(|entry| text(entry, "Prefix")).collect();
    Ok(ListObjectsPage {
        objects,
        last_modified,
        etags,
        common_prefixes,
        is_truncated: is_true(xml, "IsTruncated"),
        next_continuation_token: text(xml, "NextContinuationToken").filter(|t| !t.is_empty()),
    })
}

/// The `UploadId` of a CreateMultipartUpload response.
pub fn parse_upload_id(xml: &str) -> Option<String> {
    text(xml, "UploadId").filter(|id| !id.is_empty())
}

/// What a CompleteMultipartUpload response says about the new object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompletedUpload {
    pub etag: Option<String>,
    /// Base64 CRC32, with a `-N` suffix when composite.
    pub checksum_crc32: Option<String>,
    /// `FULL_OBJECT` or `COMPOSITE` when the server says.
    pub checksum_type: Option<String>,
}

/// Parse a `CompleteMultipartUploadResult`.
pub fn parse_complete_multipart(xml: &str) -> CompletedUpload {
    CompletedUpload {
        etag: trimmed(xml, "ETag"),
        checksum_crc32: trimmed(xml, "ChecksumCRC32"),
        checksum_type: trimmed(xml, "ChecksumType"),
    }
}

/// An unfinished multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    /// As the server wrote it (ISO 8601), for logs.
    pub initiated: Option<String>,
}

/// One page of a ListMultipartUploads response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UploadsPage {
    pub uploads: Vec<PendingUpload>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

/// Parse a `ListMultipartUploadsResult`; entries missing a key or an id are
/// skipped (nothing could be done with them).
pub fn parse_list_uploads(xml: &str) -> UploadsPage {
    let uploads = elements(xml, "Upload")
        .into_iter()
        .filter_map(|entry| {
            Some(PendingUpload {
                key: text(entry, "Key")?,
                upload_id: text(entry, "UploadId").filter(|id| !id.is_empty())?,
                initiated: trimmed(entry, "Initiated"),
            })
        })
        .collect();
    UploadsPage {
        uploads,
        is_truncated: is_true(xml, "IsTruncated"),
        next_key_marker: text(xml, "NextKeyMarker").filter(|m| !m.is_empty()),
        next_upload_id_marker: text(xml, "NextUploadIdMarker").filter(|m| !m.is_empty()),
    }
}

/// A key DeleteObjects could not delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFailure {
    pub key: String,
    pub code: String,
    pub message: String,
}

/// The per-key errors of a `DeleteResult`.
pub fn parse_delete_failures(xml: &str) -> Vec<DeleteFailure> {
    elements(xml, "Error")
        .into_iter()
        .map(|entry| DeleteFailure {
            key: text(entry, "Key").unwrap_or_default(),
            code: trimmed(entry, "Code").unwrap_or_default(),
            message: trimmed(entry, "Message").unwrap_or_default(),
        })
        .collect()
}

/// The fields of an S3 `<Error>` document that walship uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
    /// The region the server expects (AuthorizationHeaderMalformed, Garage).
    pub region: Option<String>,
    pub bucket_name: Option<String>,
    pub request_id: Option<String>,
}

/// Parse an error document; `None` unless the root element is `Error`.
pub fn parse_error(xml: &str) -> Option<ErrorBody> {
    if root_name(xml)? != "Error" {
        return None;
    }
    let field = |tag| trimmed(xml, tag);
    Some(ErrorBody {
        code: field("Code"),
        message: field("Message"),
        region: field("Region"),
        bucket_name: field("BucketName"),
        request_id: field("RequestId"),
    })
}

/// For the fuzzer: whatever `data` is (any server or proxy may send it),
/// every reader gives a value or an error without panicking; and the text
/// of `data`, escaped as a key in a listing, reads back exactly. Panics
/// otherwise.
pub fn check_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = parse_list_objects(&text);
    let _ = parse_upload_id(&text);
    let _ = parse_complete_multipart(&text);
    let _ = parse_list_uploads(&text);
    let _ = parse_delete_failures(&text);
    let _ = parse_error(&text);
    let _ = root_name(&text);
    let escaped = escape(&text);
    assert_eq!(decode_entities(&escaped), text, "escape does not round-trip");
    let listing = format!(
        "<ListBucketResult><Contents><Key>{escaped}</Key><Size>7</Size></Contents>\
         <NextContinuationToken>{escaped}</NextContinuationToken></ListBucketResult>"
    );
    let page = parse_list_objects(&listing).expect("a listing built from an escaped key parses");
    assert_eq!(page.objects, vec![(text.to_string(), 7)], "the key does not read back");
    let token = page.next_continuation_token.unwrap_or_default();
    assert!(token == text || text.is_empty(), "the token does not read back");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_objects_page() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents><Key>p/a&amp;b</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>
    <ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>p/&#233;&#x4e2d;</Key><Size>0</Size></Contents>
  <NextContinuationToken>tok/en+=</NextContinuationToken>
</ListBucketResult>"#;
        let page = parse_list_objects(xml).unwrap();
        assert_eq!(page.objects, vec![("p/a&b".to_string(), 12), ("p/é中".to_string(), 0)]);
        assert_eq!(page.last_modified, vec![Some("2024-01-01T00:00:00.000Z".to_string()), None]);
        assert_eq!(page.etags, vec![Some("\"abc\"".to_string()), None]);
        assert!(page.is_truncated);
        assert_eq!(page.next_continuation_token.as_deref(), Some("tok/en+="));
    }

    #[test]
    fn reads_the_common_prefixes_of_a_delimited_listing() {
        let xml = "<ListBucketResult><Prefix>p/</Prefix><Delimiter>/</Delimiter>\
                   <CommonPrefixes><Prefix>p/a&amp;b/</Prefix></CommonPrefixes>\
                   <CommonPrefixes><Prefix>p/c/</Prefix></CommonPrefixes></ListBucketResult>";
        let page = parse_list_objects(xml).unwrap();
        assert_eq!(page.common_prefixes, ["p/a&b/", "p/c/"]);
        assert!(page.objects.is_empty());
    }

    #[test]
    fn an_empty_listing_is_not_truncated() {
        let xml = "<ListBucketResult><Name>b</Name><IsTruncated>false</IsTruncated></ListBucketResult>";
        let page = parse_list_objects(xml).unwrap();
        assert!(page.objects.is_empty());
        assert!(!page.is_truncated);
        assert_eq!(page.next_continuation_token, None);
    }

    #[test]
    fn a_listing_entry_without_size_is_an_error() {
        let xml = "<ListBucketResult><Contents><Key>k</Key><Size>x</Size></Contents></ListBucketResult>";
        assert!(parse_list_objects(xml).is_err());
    }

    #[test]
    fn namespace_prefixes_and_attributes_are_ignored() {
        let xml = r#"<s3:Result xmlns:s3="x"><s3:UploadId a=">" b='/>'>ID-1</s3:UploadId></s3:Result>"#;
        assert_eq!(parse_upload_id(xml).as_deref(), Some("ID-1"));
    }

    #[test]
    fn parses_complete_multipart_upload_results() {
        let xml = r#"<CompleteMultipartUploadResult><Location>http://x/b/k</Location>
<Bucket>b</Bucket><Key>k</Key><ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag>
<ChecksumCRC32>AAAAAA==-3</ChecksumCRC32><ChecksumType>COMPOSITE</ChecksumType>
</CompleteMultipartUploadResult>"#;
        let result = parse_complete_multipart(xml);
        assert_eq!(result.etag.as_deref(), Some("\"3858f62230ac3c915f300c664312c11f-9\""));
        assert_eq!(result.checksum_crc32.as_deref(), Some("AAAAAA==-3"));
        assert_eq!(result.checksum_type.as_deref(), Some("COMPOSITE"));
    }

    #[test]
    fn parses_list_multipart_uploads() {
        let xml = r#"<ListMultipartUploadsResult><Bucket>b</Bucket>
<NextKeyMarker>s/k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
<IsTruncated>true</IsTruncated>
<Upload><Key>s/k1</Key><UploadId>u1</UploadId><Initiator><ID>x</ID></Initiator>
<Initiated>2024-01-01T00:00:00Z</Initiated></Upload>
<Upload><Key>s/k2</Key><UploadId>u2</UploadId></Upload>
<Upload><Key>s/broken</Key></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_list_uploads(xml);
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "s/k1");
        assert_eq!(page.uploads[0].initiated.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(page.uploads[1].upload_id, "u2");
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("s/k2"));
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("u2"));
    }

    #[test]
    fn parses_delete_failures() {
        let xml = r#"<DeleteResult><Deleted><Key>a</Key></Deleted>
<Error><Key>b&lt;1&gt;</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>
</DeleteResult>"#;
        let failures = parse_delete_failures(xml);
        assert_eq!(
            failures,
            vec![DeleteFailure {
                key: "b<1>".into(),
                code: "AccessDenied".into(),
                message: "Access Denied".into()
            }]
        );
        assert!(parse_delete_failures("<DeleteResult/>").is_empty());
    }

    #[test]
    fn parses_error_documents_only() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment with <Code>Fake</Code> -->
<Error><Code>AuthorizationHeaderMalformed</Code>
<Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message>
<Region>eu-west-1</Region><RequestId>R1</RequestId></Error>"#;
        let error = parse_error(xml).unwrap();
        assert_eq!(error.code.as_deref(), Some("AuthorizationHeaderMalformed"));
        assert_eq!(error.region.as_deref(), Some("eu-west-1"));
        assert_eq!(error.request_id.as_deref(), Some("R1"));
        assert_eq!(parse_error("<DeleteResult><Error><Code>X</Code></Error></DeleteResult>"), None);
    }

    #[test]
    fn decodes_entities_and_keeps_malformed_ones() {
        assert_eq!(decode_entities("a&amp;b&lt;&gt;&quot;&apos;"), "a&b<>\"'");
        assert_eq!(decode_entities("&#65;&#x42;&#X43;"), "ABC");
        assert_eq!(decode_entities("&bogus; & &#xZZ; &#1114112; &amp"), "&bogus; & &#xZZ; &#1114112; &amp");
        assert_eq!(decode_entities("&#xD800;"), "&#xD800;");
        assert_eq!(decode_text("  <![CDATA[a<b&amp;]]>&amp;c "), "  a<b&amp;&c ");
    }

    #[test]
    fn escape_round_trips_through_decode() {
        let text = r#"a&b<c>d"e'f é"#;
        assert_eq!(decode_entities(&escape(text)), text);
    }

    #[test]
    fn nested_same_name_elements_stay_with_their_parent() {
        let xml = "<A><A>inner</A>tail</A><A/><A>x";
        assert_eq!(elements(xml, "A"), vec!["<A>inner</A>tail", ""]);
    }

    #[test]
    fn garbage_never_panics() {
        let samples: Vec<String> = vec![
            String::new(),
            "<".into(),
            "<<<>>>".into(),
            "</Key>".into(),
            "<Key".into(),
            "<Key>".into(),
            "<Key>abc".into(),
            "<!--".into(),
            "<![CDATA[".into(),
            "<?xml".into(),
            "<Key a=\"unterminated>".into(),
            "&&&;;;&#;&#x;&#99999999999999999999;".into(),
            "<Contents><Key>é</Key><Size>18446744073709551616</Size></Contents>".into(),
            "<Error><Code>\u{0}\u{ffff}</Code>".into(),
            "é<é>é</é>é".into(),
            "<a:b:c>x</a:b:c>".into(),
            "<>".into(),
            "</>".into(),
            "<///>".into(),
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"<>/!?[]-&#;x0aKeySizeContentsError\"' \n\xc3\xa9";
        let mut random = Vec::new();
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            random.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        for sample in samples.iter().chain(random.iter()) {
            let _ = parse_list_objects(sample);
            let _ = parse_upload_id(sample);
            let _ = parse_complete_multipart(sample);
            let _ = parse_list_uploads(sample);
            let _ = parse_delete_failures(sample);
            let _ = parse_error(sample);
            let _ = decode_text(sample);
            let _ = root_name(sample);
        }
    }
}
