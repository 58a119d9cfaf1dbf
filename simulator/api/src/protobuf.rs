//! Protobuf request bodies of built-in kinds (`application/vnd.kubernetes.protobuf`),
//! read into the JSON object kube-apiserver would decode them to.
//!
//! client-go sends built-in objects as protobuf when it is configured to,
//! and kubectl does for `kubectl create namespace|configmap|secret|deployment`
//! and for its reviews. The body is kube-apiserver's envelope: the magic
//! `k8s\0`, then a `runtime.Unknown` message whose `typeMeta` names the
//! apiVersion and kind and whose `raw` holds the object's own message.
//!
//! How each kind's message is laid out comes from `protobuf.table`,
//! generated from the Go types' struct tags by
//! `integration-tests/controlplane/prototable` (field numbers, JSON names,
//! pointer or value, `omitempty`). The object is built as Go would: the
//! decoded struct, then written as `encoding/json` writes it, so a field a
//! Go client always sends (a non-pointer string, say) is left out when it
//! is empty and `omitempty`, and a pointer sent as zero (`replicas: 0`)
//! stays. Responses are JSON: client-go decodes an answer by its
//! Content-Type, so it reads them even when it accepted protobuf alone.
//!
//! No built-in type contains itself, so how deep a body can nest is bounded
//! by the types, not by the bytes a client sends.

use std::{collections::HashMap, sync::OnceLock};

use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// Whether a request's Content-Type is Kubernetes' protobuf.
pub(crate) fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim() == "application/vnd.kubernetes.protobuf")
}

/// The JSON object a protobuf body carries, with its `apiVersion` and `kind`.
/// An error says what could not be read, for a 400.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not begin with the protobuf envelope's prefix \"k8s\\x00\"")?;
    let (mut api_version, mut kind, mut raw, mut encoding) =
        (String::new(), String::new(), &[][..], String::new());
    let mut fields = Reader::new(envelope);
    while let Some((number, wire)) = fields.tag()? {
        match (number, wire) {
            (1, LEN) => {
                let mut meta = Reader::new(fields.bytes()?);
                while let Some((n, w)) = meta.tag()? {
                    match (n, w) {
                        (1, LEN) => api_version = meta.string()?,
                        (2, LEN) => kind = meta.string()?,
                        _ => meta.skip(w)?,
                    }
                }
            }
            (2, LEN) => raw = fields.bytes()?,
            (3, LEN) => encoding = fields.string()?,
            _ => fields.skip(wire)?,
        }
    }
    if !encoding.is_empty() {
        return Err(format!(
            "the protobuf envelope's contentEncoding {encoding:?} is not supported"
        ));
    }
    let table = table()?;
    // DeleteOptions is one type whatever group a client names with it.
    let key = if kind == "DeleteOptions" {
        ("v1".to_owned(), kind.clone())
    } else {
        (api_version.clone(), kind.clone())
    };
    let Some(&message) = table.kinds.get(&key) else {
        return Err(format!(
            "no protobuf form is known for kind {kind:?} of apiVersion {api_version:?}"
        ));
    };
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    match table.decode(message, raw)? {
        Value::Object(fields) => object.extend(fields),
        _ => return Err(format!("{kind} is not an object")),
    }
    Ok(Value::Object(object))
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .bytes
                .split_first()
                .ok_or("a varint runs past the end")?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint is longer than ten bytes".into())
    }

    /// The next field's number and wire type, or None at the end.
    fn tag(&mut self) -> Result<Option<(u64, u8)>, String> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return Err("a field numbered 0".into());
        }
        Ok(Some((number, wire)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!(
                "a field of {n} bytes runs past the end ({} left)",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "a length past usize")?)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            other => Err(format!("wire type {other} is not supported")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Float64,
    Time,
    MicroTime,
    Duration,
    Quantity,
    IntOrString,
    Raw,
    FieldsV1,
    Message(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Card {
    One,
    Repeated,
    Map(Kind),
}

#[derive(Debug)]
struct Field {
    number: u64,
    /// None for an inline struct (its fields join the parent's).
    json: Option<String>,
    pointer: bool,
    omitempty: bool,
    omitzero: bool,
    card: Card,
    kind: Kind,
}

#[derive(Debug, Default)]
struct Message {
    /// A named slice type (Verbs, ExtraValue): JSON is its `items`.
    slice: bool,
    fields: Vec<Field>,
}

#[derive(Debug, Default)]
struct Table {
    kinds: HashMap<(String, String), usize>,
    messages: Vec<Message>,
}

fn table() -> Result<&'static Table, String> {
    static TABLE: OnceLock<Result<Table, String>> = OnceLock::new();
    TABLE
        .get_or_init(|| Table::parse(include_str!("protobuf.table")))
        .as_ref()
        .map_err(|e| format!("the simulator's protobuf table is broken: {e}"))
}

impl Table {
    fn parse(text: &str) -> Result<Self, String> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("M ") {
                let name = rest.split(' ').next().unwrap_or_default();
                let next = index.len();
                index.entry(name).or_insert(next);
            }
        }
        let kind_of = |word: &str| -> Result<Kind, String> {
            Ok(match word {
                "string" => Kind::String,
                "bytes" => Kind::Bytes,
                "bool" => Kind::Bool,
                "int32" => Kind::Int32,
                "int64" => Kind::Int64,
                "uint32" => Kind::Uint32,
                "uint64" => Kind::Uint64,
                "float64" => Kind::Float64,
                "time" => Kind::Time,
                "microtime" => Kind::MicroTime,
                "duration" => Kind::Duration,
                "quantity" => Kind::Quantity,
                "intorstring" => Kind::IntOrString,
                "raw" => Kind::Raw,
                "fieldsv1" => Kind::FieldsV1,
                name => Kind::Message(
                    *index
                        .get(name)
                        .ok_or_else(|| format!("no message {name}"))?,
                ),
            })
        };
        let mut table = Table {
            kinds: HashMap::new(),
            messages: (0..index.len()).map(|_| Message::default()).collect(),
        };
        let mut current = None;
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["K", api_version, kind, message] => {
                    let Kind::Message(m) = kind_of(message)? else {
                        return Err(format!("kind {kind} is not a message"));
                    };
                    table
                        .kinds
                        .insert(((*api_version).to_owned(), (*kind).to_owned()), m);
                }
                ["M", name, rest @ ..] => {
                    let m = index[name];
                    table.messages[m].slice = rest == ["slice"];
                    current = Some(m);
                }
                ["F", number, json, flags, card, value, map_value @ ..] => {
                    let m = current.ok_or("a field before any message")?;
                    let (card, kind) = match (*card, map_value) {
                        ("one", []) => (Card::One, kind_of(value)?),
                        ("rep", []) => (Card::Repeated, kind_of(value)?),
                        // Keys are strings in every built-in kind.
                        ("map", [value]) => (Card::Map(Kind::String), kind_of(value)?),
                        _ => return Err(format!("bad field line {line:?}")),
                    };
                    table.messages[m].fields.push(Field {
                        number: number
                            .parse()
                            .map_err(|_| format!("bad number in {line:?}"))?,
                        json: (*json != "-").then(|| (*json).to_owned()),
                        pointer: flags.contains('p'),
                        omitempty: flags.contains('o'),
                        omitzero: flags.contains('z'),
                        card,
                        kind,
                    });
                }
                _ if line.starts_with('#') || line.is_empty() => {}
                _ => return Err(format!("bad line {line:?}")),
            }
        }
        Ok(table)
    }

    /// One message's bytes as JSON, written as Go's `encoding/json` writes
    /// the struct they decode to.
    fn decode(&self, message: usize, bytes: &[u8]) -> Result<Value, String> {
        let message = &self.messages[message];
        let mut values: Vec<Option<Value>> = vec![None; message.fields.len()];
        let mut reader = Reader::new(bytes);
        while let Some((number, wire)) = reader.tag()? {
            let Some(at) = message.fields.iter().position(|f| f.number == number) else {
                // Go's generated code skips a field it does not know.
                reader.skip(wire)?;
                continue;
            };
            let field = &message.fields[at];
            match field.card {
                Card::One => values[at] = Some(self.value(field.kind, wire, &mut reader)?),
                Card::Repeated => {
                    if !matches!(values[at], Some(Value::Array(_))) {
                        values[at] = Some(json!([]));
                    }
                    let Some(Value::Array(list)) = &mut values[at] else {
                        return Err("a list is not a list".into());
                    };
                    if wire == LEN && is_scalar(field.kind) && field.kind != Kind::String {
                        // A packed list of numbers or booleans.
                        let mut packed = Reader::new(reader.bytes()?);
                        while !packed.bytes.is_empty() {
                            list.push(self.value(
                                field.kind,
                                scalar_wire(field.kind),
                                &mut packed,
                            )?);
                        }
                    } else {
                        list.push(self.value(field.kind, wire, &mut reader)?);
                    }
                }
                Card::Map(key_kind) => {
                    expect(wire, LEN)?;
                    let mut entry = Reader::new(reader.bytes()?);
                    let (mut key, mut value) = (None, None);
                    while let Some((n, w)) = entry.tag()? {
                        match n {
                            1 => key = Some(self.value(key_kind, w, &mut entry)?),
                            2 => value = Some(self.value(field.kind, w, &mut entry)?),
                            _ => entry.skip(w)?,
                        }
                    }
                    let key = match key {
                        Some(Value::String(k)) => k,
                        _ => String::new(),
                    };
                    let value = match value {
                        Some(v) => v,
                        None => self.zero(field.kind)?,
                    };
                    if !matches!(values[at], Some(Value::Object(_))) {
                        values[at] = Some(json!({}));
                    }
                    if let Some(Value::Object(map)) = &mut values[at] {
                        map.insert(key, value);
                    }
                }
            }
        }
        if message.slice {
            return Ok(values
                .into_iter()
                .next()
                .flatten()
                .unwrap_or_else(|| json!([])));
        }
        let mut object = Map::new();
        for (field, value) in message.fields.iter().zip(values) {
            let present = value.is_some();
            let value = match value {
                Some(v) => v,
                // A nil pointer, slice or map is left out (Go writes null
                // without omitempty, which reads back as absent).
                None if field.pointer || field.card != Card::One => continue,
                None => self.zero(field.kind)?,
            };
            let Some(name) = &field.json else {
                // An inline struct: its fields are the parent's.
                if let Value::Object(inner) = value {
                    object.extend(inner);
                }
                continue;
            };
            let empty = is_empty(&value, field.kind);
            if !field.pointer
                && ((field.omitempty && empty) || (field.omitzero && (!present || empty)))
            {
                continue;
            }
            if value.is_null() && !present {
                continue;
            }
            object.insert(name.clone(), value);
        }
        Ok(Value::Object(object))
    }

    /// What a struct field holds when the wire did not carry it.
    fn zero(&self, kind: Kind) -> Result<Value, String> {
        Ok(match kind {
            Kind::String | Kind::Bytes => json!(""),
            Kind::Bool => json!(false),
            Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::IntOrString => {
                json!(0)
            }
            Kind::Float64 => json!(0.0),
            Kind::Quantity => json!("0"),
            Kind::Duration => json!("0s"),
            Kind::Time | Kind::MicroTime | Kind::Raw | Kind::FieldsV1 => Value::Null,
            Kind::Message(m) => self.decode(m, &[])?,
        })
    }

    fn value(&self, kind: Kind, wire: u8, reader: &mut Reader) -> Result<Value, String> {
        let want = scalar_wire(kind);
        expect(wire, want)?;
        Ok(match kind {
            Kind::String => json!(reader.string()?),
            Kind::Bytes => serde_json::to_value(k8s_openapi::ByteString(reader.bytes()?.to_vec()))
                .map_err(|e| e.to_string())?,
            Kind::Bool => json!(reader.varint()? != 0),
            // Go writes a negative int32 as its 64-bit two's complement.
            Kind::Int32 => json!(reader.varint()? as i64 as i32),
            Kind::Int64 => json!(reader.varint()? as i64),
            Kind::Uint32 => json!(reader.varint()? as u32),
            Kind::Uint64 => json!(reader.varint()?),
            Kind::Float64 => {
                let bytes: [u8; 8] = reader.take(8)?.try_into().map_err(|_| "short double")?;
                json!(f64::from_le_bytes(bytes))
            }
            Kind::Message(m) => self.decode(m, reader.bytes()?)?,
            special => special_value(special, reader.bytes()?)?,
        })
    }
}

fn expect(wire: u8, want: u8) -> Result<(), String> {
    if wire == want {
        Ok(())
    } else {
        Err(format!("wire type {wire} where {want} was expected"))
    }
}

fn is_scalar(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::String
            | Kind::Bool
            | Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Float64
    )
}

fn scalar_wire(kind: Kind) -> u8 {
    match kind {
        Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 => VARINT,
        Kind::Float64 => FIXED64,
        _ => LEN,
    }
}

/// Whether `omitempty` leaves the value out: Go's empty values (false, 0,
/// "", an empty map or slice); a struct is never empty to it.
fn is_empty(value: &Value, kind: Kind) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => is_scalar(kind) && n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() && matches!(kind, Kind::String | Kind::Bytes),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() && !matches!(kind, Kind::Message(_)),
    }
}

/// The types apimachinery writes to JSON in a form of their own.
fn special_value(kind: Kind, bytes: &[u8]) -> Result<Value, String> {
    let mut reader = Reader::new(bytes);
    let (mut ints, mut text, mut raw) = ([0i64; 3], String::new(), Vec::new());
    while let Some((n, w)) = reader.tag()? {
        match (kind, n, w) {
            (Kind::Quantity, 1, LEN) => text = reader.string()?,
            (Kind::IntOrString, 3, LEN) => text = reader.string()?,
            (Kind::Raw | Kind::FieldsV1, 1, LEN) => raw = reader.bytes()?.to_vec(),
            (_, 1..=3, VARINT) => ints[n as usize - 1] = reader.varint()? as i64,
            _ => reader.skip(w)?,
        }
    }
    Ok(match kind {
        Kind::Quantity => json!(text),
        // type 0 is an int, 1 a string.
        Kind::IntOrString if ints[0] == 1 => json!(text),
        Kind::IntOrString => json!(ints[1] as i32),
        // apimachinery writes a zero time as no bytes at all.
        Kind::Time | Kind::MicroTime if bytes.is_empty() => Value::Null,
        Kind::Time | Kind::MicroTime => {
            let (seconds, nanos) = (ints[0], ints[1]);
            let at = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(seconds.max(0) as u64)
                + std::time::Duration::from_nanos(nanos.max(0) as u64);
            if kind == Kind::Time {
                json!(super::time::rfc3339(at))
            } else {
                json!(super::time::rfc3339_micro(at))
            }
        }
        Kind::Duration => json!(go_duration(ints[0])),
        Kind::Raw | Kind::FieldsV1 if raw.is_empty() => Value::Null,
        Kind::Raw | Kind::FieldsV1 => serde_json::from_slice(&raw)
            .map_err(|e| format!("an embedded object is not JSON: {e}"))?,
        _ => Value::Null,
    })
}

/// A duration in nanoseconds as Go's `time.Duration.String` writes it
/// (`1h2m3s`, `1.5s`, `300ms`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, per) = match n {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", fraction(n, per));
    }
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, s) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = format!("{}s", fraction(s, 1_000_000_000));
    match (h, m) {
        (0, 0) => format!("{sign}{seconds}"),
        (0, m) => format!("{sign}{m}m{seconds}"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}"),
    }
}

/// `value / per` with its fraction and no trailing zeros.
fn fraction(value: u64, per: u64) -> String {
    let (whole, part) = (value / per, value % per);
    if part == 0 {
        return whole.to_string();
    }
    let width = per.to_string().len() - 1;
    let digits = format!("{part:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny protobuf writer for the tests.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn varint(mut self, mut v: u64) -> Self {
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.0.push(byte);
                    return self;
                }
                self.0.push(byte | 0x80);
            }
        }
        fn int(self, n: u64, v: u64) -> Self {
            self.varint(n << 3).varint(v)
        }
        fn bytes(self, n: u64, b: &[u8]) -> Self {
            let mut w = self.varint((n << 3) | 2).varint(b.len() as u64);
            w.0.extend_from_slice(b);
            w
        }
        fn str(self, n: u64, s: &str) -> Self {
            self.bytes(n, s.as_bytes())
        }
        fn msg(self, n: u64, m: W) -> Self {
            self.bytes(n, &m.0)
        }
    }

    fn envelope(api_version: &str, kind: &str, raw: W) -> Vec<u8> {
        let meta = W::default().str(1, api_version).str(2, kind);
        let unknown = W::default().msg(1, meta).msg(2, raw);
        [MAGIC, &unknown.0].concat()
    }

    fn entry(k: &str, v: &str) -> W {
        W::default().str(1, k).str(2, v)
    }

    #[test]
    fn a_configmap_reads_as_its_json() {
        // What a Go client writes: every non-pointer string, empty or not.
        let meta = W::default()
            .str(1, "settings")
            .str(2, "")
            .str(3, "shop")
            .msg(11, entry("app", "web"));
        let raw = W::default()
            .msg(1, meta)
            .msg(2, entry("mode", "fast"))
            .msg(3, W::default().str(1, "blob").bytes(2, b"\x00\x01"));
        let object = decode(&envelope("v1", "ConfigMap", raw)).unwrap();
        assert_eq!(
            object,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": "shop", "labels": {"app": "web"}},
                "data": {"mode": "fast"},
                "binaryData": {"blob": "AAE="},
            })
        );
    }

    #[test]
    fn a_pointer_set_to_zero_stays_and_an_empty_value_is_left_out() {
        let container = W::default()
            .str(1, "web")
            .str(2, "nginx:1.27")
            .msg(6, W::default().str(1, "http").int(3, 8080).str(4, "TCP"));
        let pod = W::default().msg(2, container).int(4, 30);
        let template = W::default()
            .msg(1, W::default().msg(11, entry("app", "web")))
            .msg(2, pod);
        let selector = W::default().msg(1, entry("app", "web"));
        let strategy = W::default().str(1, "RollingUpdate").msg(
            2,
            W::default()
                .msg(1, W::default().int(1, 0).int(2, 1))
                .msg(2, W::default().int(1, 1).str(3, "25%")),
        );
        let spec = W::default()
            .int(1, 0)
            .msg(2, selector)
            .msg(3, template)
            .msg(4, strategy)
            .int(5, 0)
            .int(6, 0)
            .int(7, 0);
        let raw = W::default()
            .msg(1, W::default().str(1, "web"))
            .msg(2, spec)
            .msg(3, W::default());
        let object = decode(&envelope("apps/v1", "Deployment", raw)).unwrap();
        let spec = &object["spec"];
        assert_eq!(spec["replicas"], json!(0), "a pointer sent as 0 is kept");
        assert_eq!(spec["revisionHistoryLimit"], json!(0));
        assert!(spec.get("minReadySeconds").is_none(), "{spec}");
        assert!(spec.get("paused").is_none(), "{spec}");
        assert_eq!(spec["selector"], json!({"matchLabels": {"app": "web"}}));
        assert_eq!(
            spec["strategy"]["rollingUpdate"],
            json!({"maxUnavailable": 1, "maxSurge": "25%"})
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], json!(30));
        assert_eq!(
            pod["containers"][0]["ports"],
            json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
        );
        assert!(
            spec["template"]["metadata"]
                .get("creationTimestamp")
                .is_none()
        );
        assert_eq!(object["status"], json!({}));
    }

    #[test]
    fn an_inline_struct_joins_its_parent_and_specials_read_as_go_writes_them() {
        let volume = W::default().str(1, "cache").msg(
            2,
            W::default().msg(
                2,
                W::default()
                    .str(1, "Memory")
                    .msg(2, W::default().str(1, "64Mi")),
            ),
        );
        let pod = W::default().msg(1, volume);
        let meta = W::default().msg(8, W::default().int(1, 1_764_900_000).int(2, 5));
        let raw = W::default().msg(1, meta).msg(2, pod);
        let object = decode(&envelope("v1", "Pod", raw)).unwrap();
        assert_eq!(
            object["spec"]["volumes"],
            json!([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}])
        );
        assert_eq!(
            object["metadata"]["creationTimestamp"],
            json!("2025-12-05T02:00:00Z")
        );
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(-2_000), "-2µs");
    }

    #[test]
    fn a_negative_int32_and_a_named_slice() {
        let spec = W::default().int(1, (-1i64) as u64);
        let raw = W::default().msg(2, spec);
        let object = decode(&envelope("apps/v1", "Deployment", raw)).unwrap();
        assert_eq!(object["spec"]["replicas"], json!(-1));
        let extra = W::default()
            .str(1, "team")
            .msg(2, W::default().str(1, "a").str(1, "b"));
        let spec = W::default()
            .msg(1, W::default().str(2, "get"))
            .str(3, "alice")
            .msg(5, extra);
        let review = W::default().msg(2, spec);
        let object = decode(&envelope(
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            review,
        ))
        .unwrap();
        assert_eq!(object["spec"]["extra"], json!({"team": ["a", "b"]}));
        assert_eq!(object["spec"]["user"], json!("alice"));
        assert_eq!(object["spec"]["resourceAttributes"]["verb"], json!("get"));
    }

    #[test]
    fn the_table_reads() {
        let table = table().unwrap();
        assert!(
            table
                .kinds
                .contains_key(&("apps/v1".to_owned(), "Deployment".to_owned()))
        );
        assert!(table.messages.len() > 500);
    }

    #[test]
    fn a_broken_body_is_an_error_not_a_panic() {
        assert!(decode(b"{}").unwrap_err().contains("prefix"));
        let unknown_kind = envelope("v1", "Nonsense", W::default());
        assert!(decode(&unknown_kind).unwrap_err().contains("Nonsense"));
        let mut cut = envelope(
            "v1",
            "ConfigMap",
            W::default().msg(1, W::default().str(1, "x")),
        );
        cut.truncate(cut.len() - 1);
        assert!(decode(&cut).is_err());
        // Every prefix of a valid body either decodes or errs.
        let whole = envelope("v1", "Secret", W::default().msg(2, entry("k", "v")));
        for n in 0..whole.len() {
            let _ = decode(&whole[..n]);
        }
    }

    proptest::proptest! {
        /// Any bytes in a Deployment's place decode or are refused; never a
        /// panic, never a hang.
        #[test]
        fn any_bytes_decode_or_are_refused(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut body = envelope("apps/v1", "Deployment", W::default());
            body.extend_from_slice(&W::default().bytes(2, &raw).0);
            let _ = decode(&body);
        }
    }
}
