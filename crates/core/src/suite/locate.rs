//! Where each node of a suite file is: a path → source-location index.
//!
//! The typed model does not remember where its values came from, so semantic validation
//! needs another way to point at `scenarios[2].expect[0].on`. The suite text is
//! deserialized a second time into a small generic tree whose every key and value is a
//! [`serde_saphyr::Spanned`], and the tree is flattened into a map from [`YamlPath`] to
//! the key's and the value's locations. Aliases and merges resolve to where the value
//! is used, which is where a user looks.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A location in the suite text: 1-based line and column (in characters), and how many
/// characters the node spans (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Loc {
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
    /// Length in characters; may run past the end of the line.
    pub len: u64,
}

impl Loc {
    /// The start of the file, for problems that belong to no node.
    pub const START: Loc = Loc {
        line: 1,
        column: 1,
        len: 0,
    };

    pub(crate) fn from_saphyr(l: serde_saphyr::Location) -> Option<Loc> {
        (l.line() > 0).then(|| Loc {
            line: l.line(),
            column: l.column().max(1),
            len: l.span().len(),
        })
    }
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index (0-based).
    Index(usize),
}

/// A path into the document, like `scenarios[2].expect[0].on`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    /// The document root.
    pub fn root() -> YamlPath {
        YamlPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, k: &str) -> YamlPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }

    /// This path extended by a sequence index.
    pub fn index(&self, i: usize) -> YamlPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(the document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// What kind of node a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `~`, `null` or nothing.
    Null,
    /// A string, number or boolean.
    Scalar,
    /// A sequence.
    Seq,
    /// A mapping.
    Map,
}

impl Kind {
    /// How a user would name this kind.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Null => "nothing",
            Kind::Scalar => "a single value",
            Kind::Seq => "a list",
            Kind::Map => "a mapping",
        }
    }
}

/// Where one node is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeSpans {
    /// The key that introduces it, when its parent is a mapping.
    pub key: Option<Loc>,
    /// The value itself.
    pub value: Loc,
    /// The value's kind.
    pub kind: Kind,
}

/// Path → location of every node in one suite file.
#[derive(Debug, Default)]
pub(crate) struct SpanIndex {
    nodes: HashMap<YamlPath, NodeSpans>,
}

impl SpanIndex {
    /// Indexes `text`. Fails like the YAML parser does (the caller reports syntax errors
    /// from the typed pass, so this error is rarely shown).
    pub fn build(text: &str) -> Result<SpanIndex, serde_saphyr::Error> {
        let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, super::yaml_options())?;
        let mut index = SpanIndex::default();
        index.add(YamlPath::root(), None, root);
        Ok(index)
    }

    fn add(&mut self, path: YamlPath, key: Option<Loc>, node: Spanned<Node>) {
        let mut value = Loc::from_saphyr(node.referenced).unwrap_or(Loc::START);
        let kind = match &node.value {
            Node::Null => Kind::Null,
            Node::Scalar => Kind::Scalar,
            Node::Seq(_) => Kind::Seq,
            Node::Map(_) => Kind::Map,
        };
        if matches!(kind, Kind::Seq | Kind::Map) {
            // A container's span is its first token; "unknown" underlines the rest of
            // its first line instead.
            value.len = 0;
        }
        match node.value {
            Node::Null | Node::Scalar => {}
            Node::Seq(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    self.add(path.index(i), None, item);
                }
            }
            Node::Map(entries) => {
                for (k, v) in entries {
                    let key_loc = Loc::from_saphyr(k.referenced);
                    self.add(path.key(&k.value.0), key_loc, v);
                }
            }
        }
        self.nodes.insert(path, NodeSpans { key, value, kind });
    }

    /// The spans of the node at `path`, if it is in the document.
    pub fn get(&self, path: &YamlPath) -> Option<NodeSpans> {
        self.nodes.get(path).copied()
    }

    /// The location of the value at `path`, or of its nearest ancestor present.
    pub fn value(&self, path: &YamlPath) -> Loc {
        self.nearest(path).value
    }

    /// The location of the key introducing `path` (its value when it has no key, e.g. a
    /// sequence item), or of its nearest ancestor present.
    pub fn key(&self, path: &YamlPath) -> Loc {
        let spans = self.nearest(path);
        spans.key.unwrap_or(spans.value)
    }

    fn nearest(&self, path: &YamlPath) -> NodeSpans {
        let mut p = path.0.as_slice();
        loop {
            if let Some(spans) = self.nodes.get(&YamlPath(p.to_vec())) {
                return *spans;
            }
            match p.split_last() {
                Some((_, parent)) => p = parent,
                None => {
                    return NodeSpans {
                        key: None,
                        value: Loc::START,
                        kind: Kind::Null,
                    };
                }
            }
        }
    }

    /// The deepest node whose key or value starts at `line:column`, preferring a key.
    pub fn path_at(&self, line: u64, column: u64) -> Option<(YamlPath, bool)> {
        let at = |l: Option<Loc>| l.is_some_and(|l| l.line == line && l.column == column);
        let mut best: Option<(YamlPath, bool)> = None;
        for (path, spans) in &self.nodes {
            let hit = if at(spans.key) {
                Some(true)
            } else if at(Some(spans.value)) {
                Some(false)
            } else {
                None
            };
            if let Some(is_key) = hit {
                let better = match &best {
                    None => true,
                    Some((b, b_key)) => {
                        (is_key && !b_key) || (is_key == *b_key && path.0.len() > b.0.len())
                    }
                };
                if better {
                    best = Some((path.clone(), is_key));
                }
            }
        }
        best
    }
}

/// A generic YAML node, remembering only structure (values are re-read from the model).
enum Node {
    Null,
    Scalar,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<KeyText>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text (`1`, `true` and `~` keys become `"1"`, `"true"`, `"null"`).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyText, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_owned()))
            }
            fn visit_none<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_owned()))
            }
        }
        // Not `deserialize_any`: YAML 1.1 would read the key `on` as `true`.
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
name: demo
channels:
  in: { http: { url: 'http://x' } }
  out:
    webhook:
      listen: 127.0.0.1:0
scenarios:
  - name: one
    send:
      - to: in
    expect:
      - { on: out, within: 2s }
";

    #[test]
    fn locates_keys_and_values_by_path() {
        let idx = SpanIndex::build(DOC).expect("valid yaml");
        let root = YamlPath::root();
        let name = root.key("name");
        assert_eq!(
            idx.key(&name),
            Loc {
                line: 1,
                column: 1,
                len: 4
            }
        );
        assert_eq!((idx.value(&name).line, idx.value(&name).column), (1, 7));

        let listen = root.key("channels").key("out").key("webhook").key("listen");
        assert_eq!((idx.key(&listen).line, idx.key(&listen).column), (6, 7));

        let url = root.key("channels").key("in").key("http").key("url");
        assert_eq!((idx.value(&url).line, idx.value(&url).column), (3, 22));

        let on = root
            .key("scenarios")
            .index(0)
            .key("expect")
            .index(0)
            .key("on");
        assert_eq!((idx.key(&on).line, idx.key(&on).column), (12, 11));
        assert_eq!((idx.value(&on).line, idx.value(&on).column), (12, 15));

        let to = root
            .key("scenarios")
            .index(0)
            .key("send")
            .index(0)
            .key("to");
        assert_eq!((idx.value(&to).line, idx.value(&to).column), (10, 13));
        assert_eq!(idx.get(&to).map(|s| s.kind), Some(Kind::Scalar));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let idx = SpanIndex::build(DOC).expect("valid yaml");
        let within = YamlPath::root()
            .key("scenarios")
            .index(0)
            .key("send")
            .index(0)
            .key("within");
        let to_item = YamlPath::root()
            .key("scenarios")
            .index(0)
            .key("send")
            .index(0);
        assert_eq!(idx.key(&within), idx.value(&to_item));
    }

    #[test]
    fn reverse_lookup_prefers_keys_and_depth() {
        let idx = SpanIndex::build(DOC).expect("valid yaml");
        let (path, is_key) = idx.path_at(12, 11).expect("a node there");
        assert_eq!(path.to_string(), "scenarios[0].expect[0].on");
        assert!(is_key);
    }

    #[test]
    fn paths_display_like_accessors() {
        let p = YamlPath::root().key("channels").key("a.b").key("http");
        assert_eq!(p.to_string(), "channels[\"a.b\"].http");
        assert_eq!(
            YamlPath::root().key("scenarios").index(3).to_string(),
            "scenarios[3]"
        );
    }
}
