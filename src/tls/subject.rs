//! The subject of an X.509 certificate as one line (`CN=alice,O=example`),
//! read straight from its DER: the one field the log and the service need,
//! where a whole X.509 parser would be a large dependency for it.

/// One DER element: its tag, its contents, and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0]`: the version, present in every v3 certificate.
const VERSION: u8 = 0xa0;

/// The subject of the certificate `der`, attributes in the order the
/// certificate gives them; `"(unreadable subject)"` if it cannot be read
/// (the chain was verified, so that would be an encoding this reader does
/// not know, never a forgery).
pub(crate) fn of_certificate(der: &[u8]) -> String {
    subject(der).unwrap_or_else(|| "(unreadable subject)".to_owned())
}

fn subject(der: &[u8]) -> Option<String> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut fields = tbs;
    if fields.first() == Some(&VERSION) {
        fields = element(fields)?.2;
    }
    // serialNumber, signature, issuer, validity, then the subject.
    for _ in 0..4 {
        fields = element(fields)?.2;
    }
    let (SEQUENCE, mut name, _) = element(fields)? else {
        return None;
    };
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (SET, mut set, rest) = element(name)? else {
            return None;
        };
        name = rest;
        while !set.is_empty() {
            let (SEQUENCE, attribute, rest) = element(set)? else {
                return None;
            };
            set = rest;
            let (OID, oid, value) = element(attribute)? else {
                return None;
            };
            let (_, value, _) = element(value)?;
            parts.push(format!(
                "{}={}",
                attribute_name(oid),
                String::from_utf8_lossy(value)
            ));
        }
    }
    Some(parts.join(","))
}

/// The short name of an attribute type (RFC 4514), else its dotted OID.
fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".to_owned(),
        [0x55, 0x04, 0x06] => "C".to_owned(),
        [0x55, 0x04, 0x07] => "L".to_owned(),
        [0x55, 0x04, 0x08] => "ST".to_owned(),
        [0x55, 0x04, 0x0a] => "O".to_owned(),
        [0x55, 0x04, 0x0b] => "OU".to_owned(),
        _ => dotted(oid),
    }
}

fn dotted(oid: &[u8]) -> String {
    let Some((&first, rest)) = oid.split_first() else {
        return String::new();
    };
    let mut parts = vec![(first / 40).to_string(), (first % 40).to_string()];
    let mut value: u64 = 0;
    for &byte in rest {
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            parts.push(value.to_string());
            value = 0;
        }
    }
    parts.join(".")
}
