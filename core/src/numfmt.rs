//! Number and string spellings that the wire formats depend on.
//!
//! The reference agents sign a JSON text written by Python, so the signing payload must spell
//! floats exactly as Python's `repr` does and round them exactly as Python's
//! `Decimal.quantize(ROUND_HALF_UP)` does (spec §3.2, §16.1, §16.2). The verify answer keeps the
//! Go server's spelling of numbers (`1`, not `1.0`) so existing clients see the same bytes.
//! No crate formats floats the Python way, hence this small module.

use core::fmt::Write;

/// A small text buffer on the stack (float spellings are at most a few dozen bytes): no heap
/// allocation on the signing path. Writes past its end fail instead of growing.
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        StackText {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    fn push(&mut self, b: u8) -> bool {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Shortest round-trip decimal digits of `|x|` (no leading or trailing zeros) and the decimal
/// exponent of the first digit, i.e. `|x| = 0.d1d2d3… × 10^(exp+1)`. `x` must be finite and non-zero.
struct Digits {
    digits: StackText,
    exp: i32,
}

impl Digits {
    fn of(x: f64) -> Digits {
        // Rust's `{:e}` prints the shortest round-trip digits, e.g. `5.28320834e-1`.
        let mut e = StackText::new();
        let _ = write!(e, "{:e}", x.abs());
        let s = e.as_str();
        let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let mut digits = StackText::new();
        for b in mantissa.bytes().filter(u8::is_ascii_digit) {
            digits.push(b);
        }
        while digits.len > 1 && digits.as_bytes().last() == Some(&b'0') {
            digits.len -= 1;
        }
        Digits { digits, exp }
    }

    fn as_str(&self) -> &str {
        self.digits.as_str()
    }

    /// Digits after the decimal point in the plain spelling.
    fn frac_digits(&self) -> i32 {
        self.digits.len as i32 - (self.exp + 1)
    }
}

/// Formats a float exactly like Python's `repr(float)` (spec §16.1): `1.0`, `0.0001`, `1e-05`,
/// `1e+16`, `1000000000000000.0`, `-0.0`. Non-finite values are spelled `inf`, `-inf`, `nan`.
pub fn py_repr(x: f64) -> String {
    let mut out = String::with_capacity(24);
    write_py_repr(&mut out, x);
    out
}

/// [`py_repr`] appended to `out`.
pub fn write_py_repr(out: &mut String, x: f64) {
    if !x.is_finite() || x == 0.0 {
        return write_special(out, x);
    }
    write_repr_digits(out, x.is_sign_negative(), &Digits::of(x));
}

/// `py_repr(round9_py(x))` appended to `out`, the signing payload's spelling of a float: the
/// shortest digits are computed once when no rounding is needed (the usual case).
pub fn write_py_repr_round9(out: &mut String, x: f64) {
    if x.is_finite() && x != 0.0 {
        let d = Digits::of(x);
        if d.frac_digits() <= 9 {
            // round9_py(x) == x: same digits.
            return write_repr_digits(out, x.is_sign_negative(), &d);
        }
    }
    write_py_repr(out, round9_py(x))
}

/// `nan`, `inf`, `-inf`, `0.0`, `-0.0`.
fn write_special(out: &mut String, x: f64) {
    out.push_str(if x.is_nan() {
        "nan"
    } else if x.is_infinite() {
        if x > 0.0 {
            "inf"
        } else {
            "-inf"
        }
    } else if x.is_sign_negative() {
        "-0.0"
    } else {
        "0.0"
    });
}

/// Python's `repr` layout of the shortest digits `d` of a finite, non-zero float.
fn write_repr_digits(out: &mut String, negative: bool, d: &Digits) {
    if negative {
        out.push('-');
    }
    let (digits, exp) = (d.as_str(), d.exp);
    let decpt = exp + 1;
    let n = digits.len() as i32;
    let zeros = |out: &mut String, k: i32| {
        for _ in 0..k {
            out.push('0');
        }
    };
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            zeros(out, -decpt);
            out.push_str(digits);
        } else if decpt >= n {
            out.push_str(digits);
            zeros(out, decpt - n);
            out.push_str(".0");
        } else {
            let (a, b) = digits
                .split_at_checked(decpt as usize)
                .unwrap_or((digits, ""));
            out.push_str(a);
            out.push('.');
            out.push_str(b);
        }
    } else {
        let (first, rest) = digits.split_at_checked(1).unwrap_or((digits, ""));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{esign}{:02}", exp.abs());
    }
}

/// Formats a float the way Go's `encoding/json` does: shortest digits, no `.0` on integral values,
/// exponent form (`1e-7`, `1e+21`) outside `[1e-6, 1e21)`.
pub fn go_json_float(x: f64) -> String {
    if !x.is_finite() {
        // JSON has no spelling for these; the verify path never produces them from valid input.
        return "null".into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// `round9_py` (spec §16.2): quantise the shortest decimal spelling of `x` to 9 fractional digits,
/// ties away from zero, and parse it back. This is what the Python agent signs.
pub fn round9_py(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let d = Digits::of(x);
    if d.frac_digits() <= 9 {
        return x;
    }
    let keep = d.exp + 1 + 9; // digits of `d` that survive
    let bytes = d.digits.as_bytes();
    // The mantissa: [carry digit] + the kept digits, then `e-9`.
    let mut kept = StackText::new();
    if x < 0.0 {
        kept.push(b'-');
    }
    let start = kept.len;
    kept.push(b'0'); // room for a carry out of the first digit
    if keep > 0 {
        for &b in bytes.get(..keep as usize).unwrap_or_default() {
            kept.push(b);
        }
    }
    let round_up = keep >= 0 && bytes.get(keep as usize).is_some_and(|b| *b >= b'5');
    if round_up {
        // Add one in the last kept position, carrying to the left (into the spare `0`).
        let mut i = kept.len;
        while i > start {
            i -= 1;
            let Some(digit) = kept.buf.get_mut(i) else {
                break;
            };
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                break;
            }
        }
    }
    if kept.len == start + 1 && !round_up {
        // Nothing kept, nothing carried: rounds to zero.
        return 0.0_f64.copysign(x);
    }
    let _ = kept.write_str("e-9");
    kept.as_str().parse().unwrap_or(x)
}

/// `round9_api` (spec §4.1): `trunc(x·1e9 + 0.5) / 1e9`, the Go server's rounding of recomputed
/// values. Kept as is (including its upward bias on negative values) for byte compatibility.
pub fn round9_api(x: f64) -> f64 {
    (x * 1e9 + 0.5).trunc() / 1e9
}

/// How a JSON string literal escapes characters beyond the mandatory ones.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum JsonEscape {
    /// Python `json.dumps(ensure_ascii=True)`: every non-ASCII code point as `\uXXXX`.
    PythonAscii,
    /// Go `encoding/json` with HTML escaping, plus non-ASCII as `\uXXXX` so the text is safe to
    /// carry in an HTTP header.
    GoHtmlAscii,
}

/// True for an ASCII byte that `mode` writes as itself (the common case, copied in runs).
#[inline]
fn is_plain(b: u8, mode: JsonEscape) -> bool {
    match b {
        b'"' | b'\\' => false,
        b'<' | b'>' | b'&' => mode != JsonEscape::GoHtmlAscii,
        0x7f => mode != JsonEscape::GoHtmlAscii,
        _ => (0x20..0x80).contains(&b),
    }
}

/// Writes `s` as a JSON string literal (with quotes) into `out`.
pub fn write_json_string(out: &mut String, s: &str, mode: JsonEscape) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut rest = s;
    while !rest.is_empty() {
        // Runs of bytes written as themselves are copied at once; the rest one char at a time.
        let run = rest
            .bytes()
            .position(|b| !is_plain(b, mode))
            .unwrap_or(rest.len());
        let (plain, tail) = rest.split_at_checked(run).unwrap_or((rest, ""));
        out.push_str(plain);
        let mut chars = tail.chars();
        let Some(c) = chars.next() else { break };
        write_escaped_char(out, c, mode);
        rest = chars.as_str();
    }
    out.push('"');
}

/// One character as `mode` writes it (called for those that are not [`is_plain`]).
fn write_escaped_char(out: &mut String, c: char, mode: JsonEscape) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' if mode == JsonEscape::PythonAscii => out.push_str("\\b"),
        '\u{c}' if mode == JsonEscape::PythonAscii => out.push_str("\\f"),
        '<' | '>' | '&' if mode == JsonEscape::GoHtmlAscii => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c if (c as u32) < 0x20 || (c as u32) == 0x7f && mode == JsonEscape::GoHtmlAscii => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c if c.is_ascii() => out.push(c),
        c => {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{:04x}", unit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_vectors() {
        // spec §12.7
        assert_eq!(py_repr(1.0), "1.0");
        assert_eq!(py_repr(1e-05), "1e-05");
        assert_eq!(py_repr(0.0001), "0.0001");
        assert_eq!(py_repr(1e-09), "1e-09");
        assert_eq!(py_repr(1e16), "1e+16");
        assert_eq!(py_repr(1e15), "1000000000000000.0");
        assert_eq!(py_repr(-0.0), "-0.0");
        assert_eq!(py_repr(0.0), "0.0");
        assert_eq!(py_repr(0.528320834), "0.528320834");
        assert_eq!(py_repr(123.456), "123.456");
        assert_eq!(py_repr(1.5e-7), "1.5e-07");
        assert_eq!(py_repr(-2.5e100), "-2.5e+100");
    }

    #[test]
    fn round9_vectors() {
        // spec §12.7: x, round9_py, round9_api
        let cases: [(f64, f64, f64); 7] = [
            (1.2345678905, 1.234567891, 1.234567891),
            (-1.2345678905, -1.234567891, -1.23456789),
            (5e-10, 1e-09, 1e-09),
            (-5e-10, -1e-09, 0.0),
            (0.5064569695, 0.50645697, 0.506456969),
            (2.1278774995, 2.1278775, 2.127877499),
            (0.1 + 0.2, 0.3, 0.3),
        ];
        for (x, py, api) in cases {
            assert_eq!(round9_py(x), py, "round9_py({x})");
            assert_eq!(round9_api(x), api, "round9_api({x})");
        }
        // spec §13 (tests/test_signing.py)
        assert_eq!(round9_py(1.412345678901234), 1.412345679);
        assert_eq!(round9_py(0.734567890123456), 0.73456789);
        assert_eq!(round9_py(0.9999999996), 1.0);
        assert_eq!(round9_py(4e-10), 0.0);
    }

    #[test]
    fn go_float_spelling() {
        assert_eq!(go_json_float(1.0), "1");
        assert_eq!(go_json_float(0.528320834), "0.528320834");
        assert_eq!(go_json_float(1e-7), "1e-7");
        assert_eq!(go_json_float(-0.999999999), "-0.999999999");
        assert_eq!(go_json_float(0.0), "0");
    }

    /// The char-by-char writer `write_json_string` was before runs of plain bytes were copied
    /// at once ([`write_escaped_char`] writes plain characters as themselves too): the oracle of
    /// the property test below.
    fn json_string_by_char(s: &str, mode: JsonEscape) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            write_escaped_char(&mut out, c, mode);
        }
        out.push('"');
        out
    }

    proptest::proptest! {
        #[test]
        fn json_string_runs_equal_the_char_by_char_writer(s in "(?s).{0,64}", t in "[ -~\\x00-\\x1f\\x7f<>&\"\\\\é😀]{0,64}") {
            for mode in [JsonEscape::PythonAscii, JsonEscape::GoHtmlAscii] {
                for text in [&s, &t] {
                    let mut fast = String::new();
                    write_json_string(&mut fast, text, mode);
                    proptest::prop_assert_eq!(fast, json_string_by_char(text, mode));
                }
            }
        }
    }

    #[test]
    fn json_strings() {
        let mut s = String::new();
        write_json_string(&mut s, "a\"b\\c\n\u{1}é😀/<", JsonEscape::PythonAscii);
        assert_eq!(s, r#""a\"b\\c\n\u0001\u00e9\ud83d\ude00/<""#);
        let mut g = String::new();
        write_json_string(&mut g, "x > y & z", JsonEscape::GoHtmlAscii);
        assert_eq!(g, r#""x \u003e y \u0026 z""#);
    }
}
