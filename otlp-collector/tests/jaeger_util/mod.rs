//! A Thrift encoder (binary and compact protocols) and Jaeger's Thrift
//! structs, written from the Thrift and Jaeger IDL specifications for the
//! tests, independently of the collector's decoder: the ingest, fuzz and
//! decode-memory tests build their datagrams and bodies with it.
#![allow(dead_code)]

/// Which Thrift protocol to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Binary,
    Compact,
}

// Binary protocol type ids.
const T_BOOL: u8 = 2;
const T_DOUBLE: u8 = 4;
const T_I32: u8 = 8;
const T_I64: u8 = 10;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;
const T_LIST: u8 = 15;

/// Compact type id of a binary type id (bool fields carry their value).
fn compact_type(t: u8) -> u8 {
    match t {
        T_BOOL => 1,
        3 => 3,
        T_DOUBLE => 7,
        6 => 4,
        T_I32 => 5,
        T_I64 => 6,
        T_STRING => 8,
        T_STRUCT => 12,
        T_LIST => 9,
        other => panic!("type {other} not used here"),
    }
}

/// Writes Thrift values into a buffer.
pub struct Writer {
    pub buf: Vec<u8>,
    proto: Proto,
    last: Vec<i16>,
    last_id: i16,
}

impl Writer {
    pub fn new(proto: Proto) -> Writer {
        Writer {
            buf: Vec::new(),
            proto,
            last: Vec::new(),
            last_id: 0,
        }
    }

    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(b);
                return;
            }
            self.buf.push(b | 0x80);
        }
    }

    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    pub fn message(&mut self, name: &str, kind: u8, seq: i32) {
        match self.proto {
            Proto::Binary => {
                self.buf
                    .extend_from_slice(&(0x8001_0000u32 | u32::from(kind)).to_be_bytes());
                self.string(name);
                self.buf.extend_from_slice(&seq.to_be_bytes());
            }
            Proto::Compact => {
                self.buf.push(0x82);
                self.buf.push(1 | (kind << 5));
                self.varint(seq as u32 as u64);
                self.string(name);
            }
        }
    }

    pub fn struct_begin(&mut self) {
        self.last.push(self.last_id);
        self.last_id = 0;
    }

    pub fn struct_end(&mut self) {
        self.buf.push(0);
        self.last_id = self.last.pop().unwrap_or(0);
    }

    /// A field header; for a bool field in compact, `bool_value` is its value.
    fn field(&mut self, t: u8, id: i16, bool_value: Option<bool>) {
        match self.proto {
            Proto::Binary => {
                self.buf.push(t);
                self.buf.extend_from_slice(&id.to_be_bytes());
            }
            Proto::Compact => {
                let ct = match bool_value {
                    Some(true) => 1,
                    Some(false) => 2,
                    None => compact_type(t),
                };
                let delta = id - self.last_id;
                if (1..=15).contains(&delta) {
                    self.buf.push(((delta as u8) << 4) | ct);
                } else {
                    self.buf.push(ct);
                    self.varint(Self::zigzag(i64::from(id)));
                }
                self.last_id = id;
            }
        }
    }

    pub fn i32(&mut self, v: i32) {
        match self.proto {
            Proto::Binary => self.buf.extend_from_slice(&v.to_be_bytes()),
            Proto::Compact => self.varint(Self::zigzag(i64::from(v))),
        }
    }

    pub fn i64(&mut self, v: i64) {
        match self.proto {
            Proto::Binary => self.buf.extend_from_slice(&v.to_be_bytes()),
            Proto::Compact => self.varint(Self::zigzag(v)),
        }
    }

    pub fn double(&mut self, v: f64) {
        match self.proto {
            Proto::Binary => self.buf.extend_from_slice(&v.to_be_bytes()),
            Proto::Compact => self.buf.extend_from_slice(&v.to_le_bytes()),
        }
    }

    pub fn binary(&mut self, b: &[u8]) {
        match self.proto {
            Proto::Binary => self.buf.extend_from_slice(&(b.len() as i32).to_be_bytes()),
            Proto::Compact => self.varint(b.len() as u64),
        }
        self.buf.extend_from_slice(b);
    }

    pub fn string(&mut self, s: &str) {
        self.binary(s.as_bytes());
    }

    pub fn list_begin(&mut self, t: u8, n: usize) {
        match self.proto {
            Proto::Binary => {
                self.buf.push(t);
                self.buf.extend_from_slice(&(n as i32).to_be_bytes());
            }
            Proto::Compact => {
                let ct = compact_type(t);
                if n < 15 {
                    self.buf.push(((n as u8) << 4) | ct);
                } else {
                    self.buf.push(0xf0 | ct);
                    self.varint(n as u64);
                }
            }
        }
    }

    pub fn i32_field(&mut self, id: i16, v: i32) {
        self.field(T_I32, id, None);
        self.i32(v);
    }

    pub fn i64_field(&mut self, id: i16, v: i64) {
        self.field(T_I64, id, None);
        self.i64(v);
    }

    pub fn string_field(&mut self, id: i16, s: &str) {
        self.field(T_STRING, id, None);
        self.string(s);
    }

    pub fn binary_field(&mut self, id: i16, b: &[u8]) {
        self.field(T_STRING, id, None);
        self.binary(b);
    }

    pub fn double_field(&mut self, id: i16, v: f64) {
        self.field(T_DOUBLE, id, None);
        self.double(v);
    }

    pub fn bool_field(&mut self, id: i16, v: bool) {
        self.field(T_BOOL, id, Some(v));
        if self.proto == Proto::Binary {
            self.buf.push(u8::from(v));
        }
    }

    pub fn struct_field(&mut self, id: i16) {
        self.field(T_STRUCT, id, None);
    }

    pub fn list_field(&mut self, id: i16, elem: u8, n: usize) {
        self.field(T_LIST, id, None);
        self.list_begin(elem, n);
    }
}

/// A tag value of each Jaeger `TagType`.
#[derive(Clone, Debug, PartialEq)]
pub enum TVal {
    Str(String),
    Double(f64),
    Bool(bool),
    Long(i64),
    Binary(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct TTag {
    pub key: String,
    pub value: TVal,
}

pub fn tag(key: &str, value: TVal) -> TTag {
    TTag {
        key: key.into(),
        value,
    }
}

#[derive(Clone, Debug)]
pub struct TLog {
    pub ts: i64,
    pub fields: Vec<TTag>,
}

#[derive(Clone, Debug)]
pub struct TRef {
    pub kind: i32,
    pub low: i64,
    pub high: i64,
    pub span: i64,
}

#[derive(Clone, Debug, Default)]
pub struct TSpan {
    pub low: i64,
    pub high: i64,
    pub span_id: i64,
    pub parent: i64,
    pub name: String,
    pub refs: Option<Vec<TRef>>,
    pub flags: i32,
    pub start: i64,
    pub duration: i64,
    pub tags: Option<Vec<TTag>>,
    pub logs: Option<Vec<TLog>>,
}

#[derive(Clone, Debug, Default)]
pub struct TProcess {
    pub service: String,
    pub tags: Option<Vec<TTag>>,
}

#[derive(Clone, Debug, Default)]
pub struct TBatch {
    pub process: TProcess,
    pub spans: Vec<TSpan>,
    pub seq_no: Option<i64>,
}

fn write_tag(w: &mut Writer, t: &TTag) {
    w.struct_begin();
    w.string_field(1, &t.key);
    match &t.value {
        TVal::Str(s) => {
            w.i32_field(2, 0);
            w.string_field(3, s);
        }
        TVal::Double(d) => {
            w.i32_field(2, 1);
            w.double_field(4, *d);
        }
        TVal::Bool(b) => {
            w.i32_field(2, 2);
            w.bool_field(5, *b);
        }
        TVal::Long(l) => {
            w.i32_field(2, 3);
            w.i64_field(6, *l);
        }
        TVal::Binary(b) => {
            w.i32_field(2, 4);
            w.binary_field(7, b);
        }
    }
    w.struct_end();
}

fn write_tags(w: &mut Writer, id: i16, tags: &[TTag]) {
    w.list_field(id, T_STRUCT, tags.len());
    for t in tags {
        write_tag(w, t);
    }
}

fn write_span(w: &mut Writer, s: &TSpan) {
    w.struct_begin();
    w.i64_field(1, s.low);
    w.i64_field(2, s.high);
    w.i64_field(3, s.span_id);
    w.i64_field(4, s.parent);
    w.string_field(5, &s.name);
    if let Some(refs) = &s.refs {
        w.list_field(6, T_STRUCT, refs.len());
        for r in refs {
            w.struct_begin();
            w.i32_field(1, r.kind);
            w.i64_field(2, r.low);
            w.i64_field(3, r.high);
            w.i64_field(4, r.span);
            w.struct_end();
        }
    }
    w.i32_field(7, s.flags);
    w.i64_field(8, s.start);
    w.i64_field(9, s.duration);
    if let Some(tags) = &s.tags {
        write_tags(w, 10, tags);
    }
    if let Some(logs) = &s.logs {
        w.list_field(11, T_STRUCT, logs.len());
        for l in logs {
            w.struct_begin();
            w.i64_field(1, l.ts);
            write_tags(w, 2, &l.fields);
            w.struct_end();
        }
    }
    w.struct_end();
}

/// Writes a `Batch` struct.
pub fn write_batch(w: &mut Writer, b: &TBatch) {
    w.struct_begin();
    w.struct_field(1);
    w.struct_begin();
    w.string_field(1, &b.process.service);
    if let Some(tags) = &b.process.tags {
        write_tags(w, 2, tags);
    }
    w.struct_end();
    w.list_field(2, T_STRUCT, b.spans.len());
    for s in &b.spans {
        write_span(w, s);
    }
    if let Some(n) = b.seq_no {
        w.i64_field(3, n);
    }
    w.struct_end();
}

/// A `Batch` alone (the body of `POST /api/traces`: binary protocol).
pub fn encode_batch(b: &TBatch, proto: Proto) -> Vec<u8> {
    let mut w = Writer::new(proto);
    write_batch(&mut w, b);
    w.buf
}

/// An agent datagram: the oneway call `emitBatch(1: batch)`.
pub fn encode_emit_batch(b: &TBatch, proto: Proto) -> Vec<u8> {
    let mut w = Writer::new(proto);
    w.message("emitBatch", 4, 1);
    w.struct_begin();
    w.struct_field(1);
    write_batch(&mut w, b);
    w.struct_end();
    w.buf
}

/// A span with the given ids, start (µs) and duration (µs).
pub fn simple_span(high: i64, low: i64, id: i64, start_us: i64, dur_us: i64, name: &str) -> TSpan {
    TSpan {
        low,
        high,
        span_id: id,
        name: name.into(),
        flags: 1,
        start: start_us,
        duration: dur_us,
        ..TSpan::default()
    }
}
