//! Shell completions and man pages, generated from the clap definitions so they never
//! disagree with `--help`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
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
pub fn man(cli: clap::Command, out_dir: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = out_dir else {
        // Prepared as `generate_to` prepares it, so both print the same `baton.1`.
        let mut cli = cli.disable_help_subcommand(true);
        cli.build();
        let mut out = std::io::stdout().lock();
        return crate::output::quiet_on_closed_pipe(clap_mangen::Man::new(cli).render(&mut out));
    };
    // Pages are for every user of the machine, whatever the umask baton runs with (a
    // directory that was there keeps its mode).
    let existed = dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    if !existed {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} readable", dir.display()))?;
    }
    clap_mangen::generate_to(cli.clone(), dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    // Only our own pages: the directory may be a shared man1/.
    for name in page_names(&cli) {
        let page = dir.join(name);
        std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("making {} readable", page.display()))?;
    }
    Ok(())
}

/// The files `generate_to` writes: `baton.1`, then `baton-<sub>-<subsub>.1` for every command.
fn page_names(cli: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        out.push(format!("{prefix}.1"));
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{prefix}-{}", sub.get_name()), out);
        }
    }
    let mut out = Vec::new();
    walk(cli, cli.get_name(), &mut out);
    out
}
