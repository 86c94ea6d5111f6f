//! Shell completions and man pages, generated from the clap definitions so they never
//! disagree with `--help`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

pub fn completions(shell: clap_complete::Shell, cli: &mut clap::Command) -> anyhow::Result<()> {
    let name = cli.get_name().to_string();
    // Into a buffer first: clap_complete panics when its writer fails (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, cli, name, &mut script);
    crate::output::quiet_on_closed_pipe(std::io::stdout().lock().write_all(&script))
}

/// `baton.1` on standard output, or a page per command (`baton-message-list.1`) in `out_dir`.
pub fn man(mut cli: clap::Command, out_dir: Option<&Path>) -> anyhow::Result<()> {
    // As `generate_to` does: the built command includes clap's own `help` subcommand.
    cli.build();
    let Some(dir) = out_dir else {
        let mut out = std::io::stdout().lock();
        return crate::output::quiet_on_closed_pipe(clap_mangen::Man::new(cli).render(&mut out));
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(cli, dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    // Pages are for every user of the machine, whatever the umask baton runs with.
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "1") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}
