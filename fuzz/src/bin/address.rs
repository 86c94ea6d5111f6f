//! AFL++ entry point for `baton_fuzz::address` (see that module for input format and invariants).

fn main() {
    afl::fuzz!(|data: &[u8]| baton_fuzz::address::run(data));
}
