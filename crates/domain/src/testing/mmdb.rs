//! Minimal MaxMind DB (.mmdb) writer, for tests only.
//!
//! Writes a GeoLite2-Country-shaped database (`{"country": {"iso_code": ".."}}`)
//! so tests never need the licensed GeoLite2 file. Hand-written because no maintained
//! writer crate fits a test helper (the one full writer on crates.io has a single release
//! and a proc-macro stack); it is checked against the `maxminddb` reader ingest-api uses. Format reference:
//! <https://maxmind.github.io/MaxMind-DB/> (binary format 2.0).
//!
//! Deliberate limits (fine for fixtures, wrong for production data):
//! IPv6 tree only, 24-bit records (< ~16M nodes), one record per country code.

use ipnet::IpNet;
use std::collections::HashMap;
use std::io;
use std::path::Path;

/// Marks the start of the metadata; readers scan backwards for it.
const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
/// The spec puts 16 zero bytes between tree and data; data pointers skip them.
const SEPARATOR_LEN: usize = 16;
/// 24-bit records: the smallest size readers accept and plenty for fixtures.
const RECORD_MAX: usize = (1 << 24) - 1;

/// Writes `networks` (IPv4 and/or IPv6) to `path` as a GeoLite2-Country-style DB.
///
/// Overlapping networks resolve by longest prefix, like the real databases:
/// `10.0.0.0/8 → "US"` plus `10.1.0.0/16 → "CA"` makes 10.1.x.x "CA".
/// IPv4 is stored at `::/96` (where readers look for it) and, as in real
/// GeoLite2 files, also reachable as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
pub fn write_country_mmdb(path: &Path, networks: &[(IpNet, &str)]) -> io::Result<()> {
    // Data section first: tree records need the offsets of the values.
    let mut data = Vec::new();
    let mut offsets: HashMap<&str, usize> = HashMap::new();
    for &(_, code) in networks {
        offsets.entry(code).or_insert_with(|| {
            let at = data.len();
            let country = Value::Map(vec![("iso_code", Value::Str(code))]);
            Value::Map(vec![("country", country)]).encode(&mut data);
            at
        });
    }

    // Insert less specific networks first, so a more specific one later only
    // carves out its part instead of being overwritten by its supernet.
    let mut sorted: Vec<(u128, u32, usize)> = networks
        .iter()
        .map(|&(net, code)| {
            let (bits, len) = match net {
                IpNet::V4(n) => (u32::from(n.network()) as u128, n.prefix_len() as u32 + 96),
                IpNet::V6(n) => (u128::from(n.network()), n.prefix_len() as u32),
            };
            (bits, len, offsets[code])
        })
        .collect();
    sorted.sort_by_key(|&(_, len, _)| len); // stable: a later duplicate wins

    let mut tree = Tree {
        nodes: vec![[Rec::Empty; 2]],
    };
    for &(bits, len, off) in &sorted {
        tree.set(bits, len, Rec::Data(off));
    }
    // Readers find the IPv4 tree by walking 96 zero bits, so a node must
    // exist there even if no IPv4 network was given.
    let ipv4_root = tree.node_at(0, 96);
    // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d; GeoLite2
    // aliases that range to the IPv4 tree, and so do we. Readers recognise
    // the alias (it points at the IPv4 root) and skip it when iterating.
    tree.set(0xffff << 32, 96, Rec::Node(ipv4_root));

    let node_count = tree.nodes.len();
    let record = |r: Rec| match r {
        Rec::Node(n) => n,
        Rec::Empty => node_count, // the spec's "no data" value
        Rec::Data(off) => node_count + SEPARATOR_LEN + off,
    };
    if node_count + SEPARATOR_LEN + data.len() > RECORD_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too big for 24-bit records",
        ));
    }

    let mut out = Vec::with_capacity(node_count * 6 + SEPARATOR_LEN + data.len() + 256);
    for pair in &tree.nodes {
        for &r in pair {
            out.extend_from_slice(&(record(r) as u32).to_be_bytes()[1..]); // 3 bytes
        }
    }
    out.extend_from_slice(&[0; SEPARATOR_LEN]);
    out.extend_from_slice(&data);
    out.extend_from_slice(METADATA_MARKER);

    // A real timestamp: code that rejects stale databases keeps working.
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The spec fixes these types (uint16/uint32/uint64); stricter readers than
    // maxminddb-rust check them, so match it exactly.
    Value::Map(vec![
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(epoch)),
        ("database_type", Value::Str("GeoLite2-Country")),
        (
            "description",
            Value::Map(vec![("en", Value::Str("Tally test fixture"))]),
        ),
        ("ip_version", Value::U16(6)),
        ("languages", Value::Array(vec![Value::Str("en")])),
        ("node_count", Value::U32(node_count as u32)),
        ("record_size", Value::U16(24)),
    ])
    .encode(&mut out);

    std::fs::write(path, out)
}

/// One side (left = bit 0, right = bit 1) of a search-tree node.
#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize), // offset into the data section
}

struct Tree {
    nodes: Vec<[Rec; 2]>, // nodes[0] is the root, as the spec requires
}

impl Tree {
    /// Node reached after the first `depth` bits of `bits`, creating the path.
    /// A record that already holds data is pushed down into both children, so
    /// the covering network keeps its data around the carved-out subnet.
    fn node_at(&mut self, bits: u128, depth: u32) -> usize {
        let mut node = 0;
        for i in 0..depth {
            let side = (bits >> (127 - i)) as usize & 1;
            node = match self.nodes[node][side] {
                Rec::Node(next) => next,
                inherited => {
                    self.nodes.push([inherited; 2]);
                    let next = self.nodes.len() - 1;
                    self.nodes[node][side] = Rec::Node(next);
                    next
                }
            };
        }
        node
    }

    /// Points the record for the `len`-bit prefix of `bits` at `rec`.
    fn set(&mut self, bits: u128, len: u32, rec: Rec) {
        if len == 0 {
            self.nodes[0] = [rec; 2]; // ::/0 has no parent record
            return;
        }
        let parent = self.node_at(bits, len - 1);
        self.nodes[parent][(bits >> (128 - len)) as usize & 1] = rec;
    }
}

/// The subset of MaxMind DB data types the country layout needs.
enum Value<'a> {
    Str(&'a str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'a str, Value<'a>)>),
    Array(Vec<Value<'a>>),
}

impl Value<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        // Unsigned ints are stored big-endian without leading zero bytes; the
        // byte count goes in the control byte's size field.
        let mut uint = |ty: u8, v: u64, width: usize| {
            let bytes = &v.to_be_bytes()[8 - width..];
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            control(out, ty, width - skip);
            out.extend_from_slice(&bytes[skip..]);
        };
        match self {
            Value::U16(v) => uint(5, *v as u64, 2),
            Value::U32(v) => uint(6, *v as u64, 4),
            Value::U64(v) => uint(9, *v, 8),
            Value::Str(s) => {
                control(out, 2, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Map(entries) => {
                control(out, 7, entries.len());
                for (key, value) in entries {
                    Value::Str(key).encode(out);
                    value.encode(out);
                }
            }
            Value::Array(items) => {
                control(out, 11, items.len());
                items.iter().for_each(|v| v.encode(out));
            }
        }
    }
}

/// Writes a control byte: type in the top 3 bits, size in the low 5.
fn control(out: &mut Vec<u8>, ty: u8, size: usize) {
    // Types above 7 don't fit in 3 bits: they are written as type 0 plus an
    // extra byte holding `type - 7`, placed before any size bytes.
    let ty_bits = if ty > 7 { 0 } else { ty << 5 };
    let ext = (ty > 7).then(|| ty - 7);
    // Sizes 0..=28 fit directly; 29/30/31 announce 1/2/3 size bytes that
    // hold the remainder above 29, 285 and 65821 respectively.
    let (tag, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65821) as u32).to_be_bytes()[1..].to_vec()),
    };
    out.push(ty_bits | tag);
    out.extend(ext);
    out.extend(extra);
}
