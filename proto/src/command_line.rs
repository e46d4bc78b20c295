//! The command line of weave's binaries: a usage error is one line, as
//! every other error they print.

use clap::error::ErrorKind;

/// Parses the command line of `P`. Help and version print as clap prints
/// them; any other error (an unknown flag, a bad value, a missing argument)
/// is one line on stderr, `<name>: <what clap said> (see --help)`, and exit 2.
pub fn parse_or_exit<P: clap::Parser>(name: &str) -> P {
    match P::try_parse() {
        Ok(p) => p,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                eprintln!("{name}: {} (see --help)", printable(&one_line(&e.render().to_string())));
                std::process::exit(2)
            }
        },
    }
}

/// clap's message without its "error: " and the usage and hint after it,
/// its lines (a list of missing arguments) joined.
/// `s` for a terminal, on one line: `\n` and `\r` as spaces, any other
/// control character escaped (`\u{1b}`). An argument's ESC sequences,
/// quoted back in an error (by clap, the coordinator, the agent), reached
/// the terminal raw, and a newline in one made an error two lines (found by
/// a review, 2026-12-08).
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' => " ".to_string(),
            c if c.is_control() || is_invisible_format(c) => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Unicode format characters that reorder or hide text on a terminal:
/// bidirectional overrides and isolates, zero-width characters.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

fn one_line(rendered: &str) -> String {
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let text = lines.join(" ");
    text.strip_prefix("error: ").unwrap_or(&text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_is_one_line_without_control_characters() {
        assert_eq!(printable("a\nb\r\x1b[2J\tc ü"), "a b \\u{1b}[2J\\u{9}c ü");
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\u{202e}b\u{200b}"), "a\\u{202e}b\\u{200b}");
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[arg(long)]
        uses: u32,
        cidr: String,
    }

    fn said(args: &[&str]) -> String {
        use clap::Parser;
        one_line(&Cli::try_parse_from(args).unwrap_err().render().to_string())
    }

    #[test]
    fn a_usage_error_is_one_line() {
        let bad = said(&["x", "--uses", "many", "10.0.0.0/8"]);
        assert!(bad.starts_with("invalid value 'many' for '--uses <USES>'") && !bad.contains('\n'), "{bad}");
        let missing = said(&["x", "--uses", "1"]);
        assert_eq!(missing, "the following required arguments were not provided: <CIDR>");
        let unknown = said(&["x", "--nope"]);
        assert!(unknown.starts_with("unexpected argument '--nope' found"), "{unknown}");
    }
}
