//! AFL++ entry point for `baton_fuzz::bounce_parse` (see that module for the invariants).

fn main() {
    baton_fuzz::bounce_parse::warm_up();
    afl::fuzz!(|data: &[u8]| baton_fuzz::bounce_parse::run(data));
}
