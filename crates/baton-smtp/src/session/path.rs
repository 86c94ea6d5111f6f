//! Splitting `MAIL FROM:<path> params` so the path is parsed by our strict parser and the
//! parameters by smtp-proto.

/// Returns the bracketed path (brackets included) and what follows it, or `None` when the
/// argument is not `<...>`. `prefix_len` is the length of `MAIL FROM:` or `RCPT TO:`.
pub(super) fn split_path(line: &str, prefix_len: usize) -> Option<(&str, &str)> {
    let arg = line.get(prefix_len..)?.trim_start_matches(' ');
    baton_domain::split_path_argument(arg)
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn splits_path_from_parameters() {
        assert_eq!(
            split_path("MAIL FROM:<a@b> SIZE=10\r\n", 10),
            Some(("<a@b>", " SIZE=10\r\n"))
        );
        assert_eq!(
            split_path("RCPT TO:<\"x>y\"@b>\r\n", 8),
            Some(("<\"x>y\"@b>", "\r\n"))
        );
        assert_eq!(split_path("MAIL FROM: <>\r\n", 10), Some(("<>", "\r\n")));
        assert_eq!(split_path("MAIL FROM:a@b\r\n", 10), None);
        assert_eq!(split_path("RCPT TO:<a@b\r\n", 8), None);
    }
}
