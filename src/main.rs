//! The `ccs` binary: parse, dispatch, map errors to exit codes. Nothing else lives here.
#![forbid(unsafe_code)]

use clap::Parser;

use ccs::cli::{
    AlertsCommand, AuthCommand, Cli, CliproxyCommand, Command, ConfigCommand, DaemonCommand,
    KeyCommand, ServiceCommand, SimCommand,
};

fn main() {
    let cli = Cli::parse();
    ccs::endpoint::set_flags(cli.proxy.clone());
    let result = match cli.command {
        Command::Config {
            show: Some(ConfigCommand::Show { json }),
            ..
        } => ccs::commands::config::show(json),
        Command::Config {
            show: None,
            print,
            json,
        } => ccs::commands::config::dashboard(print, json),
        Command::Statusline => ccs::commands::statusline::run(),
        Command::Doctor { json } => match ccs::commands::doctor::doctor(json) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
        Command::Completions { shell } => {
            ccs::commands::completions::completions(shell, &mut std::io::stdout())
        }
        Command::Manual { dir } => ccs::commands::completions::manual(&dir),
        Command::Alerts { command, json } => match command {
            Some(AlertsCommand::Test { json: j }) => ccs::commands::alerts::test(json || j),
            None => ccs::commands::alerts::list(json),
        },
        Command::Claude(args) => ccs::commands::claude(args),
        Command::Run {
            target,
            headless,
            force,
            args,
        } => ccs::commands::run::run(target.as_deref(), &args, headless, force),
        Command::Pool(p) => ccs::commands::pool::pool(p),
        Command::Auth(a) => match a {
            AuthCommand::Create {
                name,
                context_group,
                share_context,
                deeper_continuity,
                force,
                headless,
            } => ccs::commands::auth::create(
                &name,
                context_group.as_deref(),
                share_context,
                deeper_continuity,
                force,
                headless,
            ),
            AuthCommand::List { json } => ccs::commands::auth::list(json),
            AuthCommand::Show { name } => ccs::commands::auth::show(&name),
            AuthCommand::Remove { name } => ccs::commands::auth::remove(&name),
            AuthCommand::Default { name } => ccs::commands::auth::set_default(&name),
            AuthCommand::LeaveGroup { name } => ccs::commands::auth::leave_group(&name),
        },
        Command::Profile(argv) => ccs::commands::profile(argv),
        Command::Demo { claude, keep } => ccs::commands::demo::demo(claude, keep),
        Command::Cliproxy(c) => match c {
            CliproxyCommand::Start => ccs::commands::cliproxy::start(),
            CliproxyCommand::Stop => ccs::commands::cliproxy::stop(),
            CliproxyCommand::Restart => ccs::commands::cliproxy::restart(),
            CliproxyCommand::Status { json, .. } => ccs::commands::cliproxy::status(json),
            CliproxyCommand::Quota { pool, json } => {
                ccs::commands::pool::quota(pool.as_deref(), json)
            }
            CliproxyCommand::Usage { span, json } => ccs::commands::usage::usage(&span, json),
            CliproxyCommand::Service(s) => match s {
                ServiceCommand::Install { system, user, json } => {
                    ccs::commands::service::install(system, user, json)
                }
                ServiceCommand::Uninstall { system, json } => {
                    ccs::commands::service::uninstall(system, json)
                }
                ServiceCommand::Status { system, json } => {
                    ccs::commands::service::status(system, json)
                }
            },
            CliproxyCommand::HashSecret => ccs::commands::keys::hash_secret(),
            CliproxyCommand::Cert {
                self_signed,
                force,
                json,
            } => ccs::commands::cert::cert(&self_signed, force, json),
            CliproxyCommand::Key(k) => match k {
                KeyCommand::Add {
                    name,
                    rpm,
                    concurrent,
                    pool,
                    json,
                } => ccs::commands::keys::add(
                    &ccs::api::AddClientKey {
                        name,
                        pools: pool,
                        requests_per_minute: rpm,
                        concurrent,
                    },
                    json,
                ),
                KeyCommand::List { json } => ccs::commands::keys::list(json),
                KeyCommand::Revoke { name } => ccs::commands::keys::revoke(&name),
            },
        },
        Command::Daemon(DaemonCommand::Run) => ccs::commands::cliproxy::run_foreground(),
        Command::Sim(SimCommand::Run {
            accounts,
            sessions,
            hours,
            seed,
            faults,
            spec,
            json,
        }) => match spec {
            Some(file) => ccs::commands::sim::replay(&file, json),
            None => ccs::commands::sim::run(accounts, sessions, hours, seed, &faults, json),
        },
        Command::Sim(SimCommand::Soak { worlds, seed, jobs }) => {
            ccs::commands::sim::soak(worlds, seed, jobs)
        }
        Command::Sim(SimCommand::Serve {
            scenario,
            port,
            manual_clock,
            seed,
            json,
        }) => ccs::commands::sim::serve(scenario.as_deref(), port, manual_clock, seed, json),
    };
    if let Err(e) = result {
        ccs::errln!("ccs: {e:#}");
        let code = match e.downcast_ref::<ccs::daemon::AlreadyRuns>() {
            Some(_) => ccs::commands::service::ALREADY_RUNS_EXIT,
            None => 1,
        };
        std::process::exit(code);
    }
}
