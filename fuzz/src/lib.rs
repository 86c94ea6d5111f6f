//! Fuzz targets for Baton, as plain functions: each takes the fuzzer's bytes and panics when
//! an invariant breaks (a panic is what AFL++ records as a crash). The binaries in `src/bin`
//! hand them to `afl::fuzz!`; the unit tests below run every seed through them without AFL.

pub mod address;
pub mod bounce_parse;
pub mod config;
pub mod meter;
pub mod reply_reader;
pub mod smtp_session;

/// Counts live heap bytes so the session target can assert that memory stays bounded.
#[global_allocator]
static ALLOC: meter::Meter = meter::Meter;

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn each_seed(target: &str, run: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus dir") {
            let path = entry.expect("entry").path();
            let data = std::fs::read(&path).expect("seed");
            eprintln!("{}", path.display());
            run(&data);
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn smtp_session_seeds_hold_the_invariants() {
        each_seed("smtp_session", crate::smtp_session::run);
    }

    #[test]
    fn address_seeds_hold_the_invariants() {
        each_seed("address", crate::address::run);
    }

    #[test]
    fn config_seeds_hold_the_invariants() {
        each_seed("config", crate::config::run);
    }

    #[test]
    fn reply_reader_seeds_hold_the_invariants() {
        each_seed("reply_reader", crate::reply_reader::run);
    }

    #[test]
    fn bounce_parse_seeds_hold_the_invariants() {
        each_seed("bounce_parse", crate::bounce_parse::run);
    }
}
