//! Number and string spellings that the wire formats depend on.
//!
//! The reference agents sign a JSON text written by Python, so the signing payload must spell
//! floats exactly as Python's `repr` does and round them exactly as Python's
//! `Decimal.quantize(ROUND_HALF_UP)` does (spec §3.2, §16.1, §16.2). The verify answer keeps the
//! Go server's spelling of numbers (`1`, not `1.0`) so existing clients see the same bytes.
//! No crate formats floats the Python way, hence this small module.

use core::fmt::Write;

/// Shortest round-trip decimal digits of `|x|` (no leading or trailing zeros) and the decimal
/// exponent of the first digit, i.e. `|x| = 0.d1d2d3… × 10^(exp+1)`. `x` must be finite and non-zero.
fn shortest_digits(x: f64) -> (String, i32) {
    // Rust's `{:e}` prints the shortest round-trip digits, e.g. `5.28320834e-1`.
    let s = format!("{:e}", x.abs());
    let (mantissa, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, exp)
}

/// Formats a float exactly like Python's `repr(float)` (spec §16.1): `1.0`, `0.0001`, `1e-05`,
/// `1e+16`, `1000000000000000.0`, `-0.0`. Non-finite values are spelled `inf`, `-inf`, `nan`.
pub fn py_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    let (d, exp) = shortest_digits(x);
    let decpt = exp + 1;
    let n = d.len() as i32;
    let body = if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            format!("0.{}{}", "0".repeat((-decpt) as usize), d)
        } else if decpt >= n {
            format!("{}{}.0", d, "0".repeat((decpt - n) as usize))
        } else {
            let (a, b) = d.split_at(decpt as usize);
            format!("{a}.{b}")
        }
    } else {
        let (first, rest) = d.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{first}{frac}e{esign}{:02}", exp.abs())
    };
    format!("{sign}{body}")
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
    let (d, exp) = shortest_digits(x);
    let int_digits = exp + 1; // digits before the decimal point (may be <= 0)
    let frac_digits = d.len() as i32 - int_digits;
    if frac_digits <= 9 {
        return x;
    }
    let keep = int_digits + 9; // digits of `d` that survive
    let bytes = d.as_bytes();
    let mut kept: Vec<u8> = if keep > 0 {
        bytes
            .get(..keep as usize)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let round_up = keep >= 0 && bytes.get(keep as usize).is_some_and(|b| *b >= b'5');
    if round_up {
        // Add one in the last kept position, carrying to the left.
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, b'1');
                break;
            }
            i -= 1;
            let Some(digit) = kept.get_mut(i) else { break };
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                break;
            }
        }
    }
    if kept.is_empty() {
        return 0.0_f64.copysign(x);
    }
    let mantissa = String::from_utf8_lossy(&kept);
    let text = format!("{}{}e-9", if x < 0.0 { "-" } else { "" }, mantissa);
    text.parse().unwrap_or(x)
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

/// Writes `s` as a JSON string literal (with quotes) into `out`.
pub fn write_json_string(out: &mut String, s: &str, mode: JsonEscape) {
    out.push('"');
    for c in s.chars() {
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
    out.push('"');
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
