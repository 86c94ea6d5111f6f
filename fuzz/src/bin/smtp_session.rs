//! AFL++ entry point for `baton_fuzz::smtp_session` (see that module for input format and invariants).

fn main() {
    afl::fuzz!(|data: &[u8]| baton_fuzz::smtp_session::run(data));
}
