//! Seeded generators for the property tests (test builds only): a xorshift PRNG and
//! random JSON text with escapes, non-ASCII, odd whitespace and nesting. Seeded, so a
//! failure reproduces.

/// A xorshift64 generator.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Damages `bytes` once, at a random place: cuts the text there, sets that byte to
/// one below `flip_below`, inserts one of `inserts`, or deletes up to
/// `delete_below - 1` bytes from there.
pub(crate) fn damage_once(
    rng: &mut Rng,
    bytes: &mut Vec<u8>,
    flip_below: u64,
    inserts: &[u8],
    delete_below: u64,
) {
    let at = rng.below(bytes.len() as u64 + 1) as usize;
    match rng.below(4) {
        0 => bytes.truncate(at),
        1 if at < bytes.len() => bytes[at] = rng.below(flip_below) as u8,
        2 => bytes.insert(at, rng.pick(inserts)),
        _ if at < bytes.len() => {
            let end = (at + rng.below(delete_below) as usize).min(bytes.len());
            bytes.drain(at..end);
        }
        _ => {}
    }
}

/// Whitespace JSON allows between tokens.
fn whitespace(rng: &mut Rng) -> &'static str {
    rng.pick(&[" ", "", "\n", "\t "])
}

/// Appends a random JSON value; objects and arrays only up to a few levels deep.
pub(crate) fn json_value(rng: &mut Rng, depth: u32, out: &mut String) {
    let pick = rng.below(if depth > 3 { 5 } else { 7 });
    match pick {
        0 => out.push_str(rng.pick(&["null", "true", "false"])),
        1 => out.push_str(&format!("{}", rng.below(2000) as i64 - 1000)),
        2 => out.push_str(&format!(
            "{}e{}",
            rng.below(999) as f64 / 7.0,
            rng.below(30)
        )),
        3 | 4 => json_string(rng, out),
        5 => {
            out.push('[');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(whitespace(rng));
                json_value(rng, depth + 1, out);
            }
            out.push(']');
        }
        _ => json_object(rng, depth, out),
    }
}

/// Appends a random JSON object.
pub(crate) fn json_object(rng: &mut Rng, depth: u32, out: &mut String) {
    out.push('{');
    for i in 0..rng.below(5) {
        if i > 0 {
            out.push(',');
        }
        let key = rng.pick(&["a", "b", "é", "A", "\\u00e9", "ticker", "a b", "😀", "b"]);
        let (before, after) = (whitespace(rng), whitespace(rng));
        out.push_str(&format!("{before}\"{key}\"{after}:"));
        json_value(rng, depth + 1, out);
    }
    out.push('}');
}

/// Appends a random JSON string literal (with escapes and non-ASCII).
pub(crate) fn json_string(rng: &mut Rng, out: &mut String) {
    let pieces = [
        "a",
        "é",
        "\\n",
        "\\\"",
        "\\u0001",
        "\\u00e9",
        "😀",
        "\\/",
        " ",
        "x\\\\y",
        "\\ud83d\\ude00",
    ];
    out.push('"');
    for _ in 0..rng.below(5) {
        out.push_str(rng.pick(&pieces));
    }
    out.push('"');
}
