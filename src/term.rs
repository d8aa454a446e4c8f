//! What the commands print. Much of it came from outside (an address or organization name from
//! the profile endpoint, a nickname, an upstream error message, a config value), and a terminal
//! obeys the control characters in what it is given: an address carrying `ESC [2J` would clear
//! the user's screen, one carrying `ESC ]52` write their clipboard. So every line a command
//! prints goes through `shown`, which writes each control character other than a newline or a
//! tab as a visible `\u{..}` escape; the macros below are the commands' `println!` and
//! `eprintln!`. `--json` output is JSON, whose strings escape control characters themselves.
//!
//! Must not: let a control character reach the terminal from a printed value (only the login
//! spinner writes `\r` and an erase of its own, in `oauth/login.rs`).

use std::borrow::Cow;

/// `s` with every control character but `\n` and `\t` written as `\u{XX}`.
pub fn shown(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `n` and its noun, which agree: `count(1, "account")` is "1 account", `count(2, "hop")` is
/// "2 hops" (every noun ccs counts takes an `s`).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// `println!` through `shown`.
#[macro_export]
macro_rules! outln {
    () => { println!() };
    ($($t:tt)*) => { println!("{}", $crate::term::shown(&format!($($t)*))) };
}

/// `print!` through `shown`.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { print!("{}", $crate::term::shown(&format!($($t)*))) };
}

/// `eprintln!` through `shown`.
#[macro_export]
macro_rules! errln {
    () => { eprintln!() };
    ($($t:tt)*) => { eprintln!("{}", $crate::term::shown(&format!($($t)*))) };
}

/// `eprint!` through `shown`.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { eprint!("{}", $crate::term::shown(&format!($($t)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_agrees_with_its_number() {
        assert_eq!(count(1u64, "account"), "1 account");
        assert_eq!(count(0u64, "account"), "0 accounts");
        assert_eq!(count(2u32, "hop"), "2 hops");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(shown("alice@example.com"), "alice@example.com");
        assert!(matches!(shown("a\tb\nc"), Cow::Borrowed(_)));
        assert_eq!(
            shown("ev\u{1b}[2Jil@x\u{7}\r\u{9b}"),
            "ev\\u{1b}[2Jil@x\\u{7}\\u{d}\\u{9b}"
        );
    }
}
