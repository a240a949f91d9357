//! Type errors rephrased in the words of the configuration file: what kind of value a
//! key takes, instead of the deserializer's Rust type names.

/// Rephrases a deserializer's message (`invalid type: string "x", expected u64`) in
/// the words of the configuration file: what kind of value the key takes.
pub(super) fn user_words(message: &str) -> String {
    if message.contains("socket address") {
        return format!(
            "expected an IP address and port such as 127.0.0.1:8080 or 0.0.0.0:8080 \
             (host names such as localhost are not resolved: write the address); {message}"
        );
    }
    let Some((found, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let words = match expected.trim() {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number (such as 1 or 2.5)",
        "a boolean" => "true or false",
        "a string" => "a text in quotes",
        "a sequence" => "a list such as [\"a\", \"b\"]",
        _ => return message.to_owned(),
    };
    let found = found
        .trim_start_matches("invalid type: ")
        .trim_start_matches("invalid value: ");
    format!("expected {words}, found {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_in_user_words() {
        let words = user_words("invalid type: string \"soon\", expected u64");
        assert_eq!(
            words,
            "expected a whole number, 0 or more, found string \"soon\""
        );
        let words = user_words("invalid value: integer `300`, expected u8");
        assert!(words.contains("from 0 to 255"), "{words}");
        let words = user_words("invalid socket address syntax");
        assert!(words.contains("127.0.0.1:8080"), "{words}");
        let unknown = "unknown variant `xml`, expected `pretty` or `json`";
        assert_eq!(user_words(unknown), unknown);
    }
}
