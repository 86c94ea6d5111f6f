//! AFL++ entry point for `baton_fuzz::reply_reader` (see that module for input format and invariants).

fn main() {
    afl::fuzz!(|data: &[u8]| baton_fuzz::reply_reader::run(data));
}
