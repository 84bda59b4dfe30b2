//! `rrguard naming …`: the command-line face of [`super`]. Each command prints its result on stdout
//! (one name per line, so scripts can take it), logs on stderr, and exits with a documented code:
//! 0 done, 1 runtime failure, 2 lost a race or nothing free, 3 not registered, 64 bad usage or
//! configuration (`docs/naming.md`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::config::Style;
use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Naming, NamingError, Overrides, hosts};

/// `rrguard naming` options.
#[derive(Debug, Args)]
pub struct NamingArgs {
    /// Configuration file (its [naming] section).
    #[arg(short, long, env = "RRGUARD_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH, global = true)]
    pub config: PathBuf,
    /// Show what would be done; write nothing to DNS or files.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Service instead of [naming] service.
    #[arg(long, global = true)]
    pub service: Option<String>,
    /// Naming style instead of [naming] style: iterative or masterful.
    #[arg(long, global = true)]
    pub style: Option<Style>,
    /// Instance id instead of [naming] instance_id or /etc/machine-id.
    #[arg(long, global = true)]
    pub instance_id: Option<String>,
    /// An address of this node (repeat for several), instead of [naming] addresses.
    #[arg(long = "address", global = true)]
    pub addresses: Vec<IpAddr>,
    /// The command.
    #[command(subcommand)]
    pub command: NamingCommand,
}

/// The naming commands.
#[derive(Debug, Subcommand)]
pub enum NamingCommand {
    /// Take this node's name (or keep the one it holds) and print it.
    Register {
        /// Then keep renewing the lease until SIGTERM, as `renew --daemon`.
        #[arg(long)]
        daemon: bool,
        /// Also set the host name to the short name: [naming] hostname_file and sethostname(2).
        #[arg(long)]
        set_hostname: bool,
        /// The file --set-hostname writes, instead of [naming] hostname_file.
        #[arg(long, value_name = "PATH")]
        hostname_file: Option<PathBuf>,
        /// With --set-hostname: write the file only, do not call sethostname(2).
        #[arg(long)]
        no_sethostname: bool,
    },
    /// Renew this node's lease (and free stale names of its service); print its name.
    Renew {
        /// Renew every renew_interval until SIGTERM; register again if the name was taken away.
        #[arg(long)]
        daemon: bool,
    },
    /// Give this node's name back; print it.
    Release,
    /// Make this slave the master (masterful services): the old master takes this node's name.
    ChangeMaster,
    /// List the names of this node's service (every name with --all).
    List {
        /// Every name of the zone.
        #[arg(long)]
        all: bool,
    },
    /// Write every name of the zone into the hosts file's `# BEGIN rrguard-naming` section.
    HostsSync {
        /// Sync every hosts_interval until SIGTERM.
        #[arg(long)]
        daemon: bool,
        /// The hosts file instead of [naming] hosts_file.
        #[arg(long, value_name = "PATH")]
        hosts_file: Option<PathBuf>,
    },
}

/// Runs `args` (logging already set up) and returns the exit code.
pub fn run(args: NamingArgs) -> u8 {
    let config = match crate::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_USAGE;
        }
    };
    let Some(cfg) = config.naming else {
        eprintln!(
            "{}: no [naming] section; add one with writer = \"RFC2136 WRITER\" and zone = \"ZONE\" (see docs/naming.md)",
            args.config.display()
        );
        return EXIT_USAGE;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rrguard naming: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    match rt.block_on(execute(&cfg, &args)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("rrguard naming: {e}");
            e.exit_code()
        }
    }
}

fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn execute(cfg: &super::config::NamingConfig, args: &NamingArgs) -> Result<(), NamingError> {
    let naming = Naming::new(cfg)?;
    let overrides = Overrides {
        service: args.service.clone(),
        style: args.style,
        instance_id: args.instance_id.clone(),
        addresses: args.addresses.clone(),
    };
    let dry = args.dry_run;
    let would = if dry { "would " } else { "" };
    match &args.command {
        NamingCommand::Register {
            daemon,
            set_hostname,
            hostname_file,
            no_sethostname,
        } => {
            let node = super::node(cfg, &overrides)?;
            let hostname = |label: &str| -> Result<(), NamingError> {
                if *set_hostname && !dry {
                    let file = hostname_file
                        .clone()
                        .unwrap_or_else(|| cfg.hostname_file.clone());
                    super::set_hostname(label, &file, *no_sethostname)?;
                }
                Ok(())
            };
            if *daemon {
                return naming
                    .run_renewals(&node, dry, |label| {
                        say(label);
                        if let Err(e) = hostname(label) {
                            tracing::warn!("cannot set the host name: {e}");
                        }
                    })
                    .await;
            }
            let r = naming.register(&node, dry).await?;
            if dry {
                tracing::info!(
                    "{would}{} {}",
                    if r.existing { "keep" } else { "take" },
                    r.label
                );
            }
            say(&r.label);
            hostname(&r.label)
        }
        NamingCommand::Renew { daemon } => {
            let node = super::node(cfg, &overrides)?;
            if *daemon {
                return naming.run_renewals(&node, dry, say).await;
            }
            say(&naming.renew(&node, dry).await?);
            Ok(())
        }
        NamingCommand::Release => {
            let node = super::node(cfg, &overrides)?;
            let label = naming.release(&node, dry).await?;
            tracing::info!("{would}release {label}");
            say(&label);
            Ok(())
        }
        NamingCommand::ChangeMaster => {
            let node = super::node(cfg, &overrides)?;
            let (master, moved) = naming.change_master(&node, dry).await?;
            match (moved, dry) {
                (Some(old), true) => {
                    tracing::info!("would take {master}; the old master would move to {old}");
                }
                (Some(old), false) => {
                    tracing::info!("took {master}; the old master moved to {old}")
                }
                (None, _) => tracing::info!("{would}hold {master}"),
            }
            say(&master);
            Ok(())
        }
        NamingCommand::List { all } => {
            let identity = if *all {
                None
            } else {
                Some(
                    super::node(cfg, &overrides)
                        .map(|n| n.identity)
                        .or_else(|e| {
                            // `list` needs no instance id: only the service.
                            match (&overrides.service, &cfg.identity) {
                                (Some(s), base) => Ok(super::config::Identity {
                                    service: s.clone(),
                                    style: overrides
                                        .style
                                        .or(base.as_ref().map(|b| b.style))
                                        .unwrap_or(Style::Iterative),
                                    aliases: Vec::new(),
                                }),
                                (None, Some(i)) => Ok(super::config::Identity {
                                    style: overrides.style.unwrap_or(i.style),
                                    ..i.clone()
                                }),
                                _ => Err(e),
                            }
                        })?,
                )
            };
            for row in naming.list(identity.as_ref()).await? {
                let addrs: Vec<String> = row.addresses.iter().map(ToString::to_string).collect();
                let mut line = format!(
                    "{}\t{}",
                    row.label,
                    if addrs.is_empty() {
                        "-".into()
                    } else {
                        addrs.join(",")
                    }
                );
                if let Some(o) = &row.owner {
                    line.push_str(&format!(
                        "\tinstance={}\tlease_age={}s",
                        o.instance,
                        row.lease_age.unwrap_or_default()
                    ));
                    if row.stale {
                        line.push_str("\tstale");
                    }
                }
                say(&line);
            }
            Ok(())
        }
        NamingCommand::HostsSync { daemon, hosts_file } => {
            let target = naming.hosts_target(hosts_file.clone());
            if *daemon {
                naming.run_hosts_sync(&target, dry).await;
                return Ok(());
            }
            match naming.hosts_sync(&target, dry).await? {
                hosts::Synced::Unchanged => say(&format!("{} unchanged", target.path.display())),
                hosts::Synced::Written => say(&format!("{} updated", target.path.display())),
                hosts::Synced::WouldWrite(bytes) => {
                    say(&format!("would write {}:", target.path.display()));
                    print!("{}", String::from_utf8_lossy(&bytes));
                }
            }
            Ok(())
        }
    }
}
