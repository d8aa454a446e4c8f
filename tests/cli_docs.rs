//! What the command line says of itself: completions every shell loads, a manual page per
//! command, and the remote flags under their own heading in every subcommand's help.

mod common;

use common::*;

fn ccs_out(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    ccs(&dir.path().join("ccs"), args)
}

#[test]
fn bash_loads_the_completions_and_every_shell_gets_one() {
    let script = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{}' completions bash) && complete -p ccs",
            env!("CARGO_BIN_EXE_ccs")
        ))
        .output()
        .expect("bash runs");
    let said = String::from_utf8_lossy(&script.stdout);
    assert!(script.status.success(), "{script:?}");
    assert!(said.contains("ccs"), "{said}");
    for shell in ["zsh", "fish", "powershell"] {
        let (code, out, err) = ccs_out(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("cliproxy") && out.contains("doctor"),
            "{shell}: {out}"
        );
    }
    let (code, _, err) = ccs_out(&["completions", "tcsh"]);
    assert_eq!(
        code, 2,
        "an unknown shell is refused with the ones there are"
    );
    assert!(err.contains("bash") && err.contains("zsh"), "{err}");
}

#[test]
fn the_manual_has_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let (code, out, err) = ccs_out(&["manual", man.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for page in [
        "ccs.1",
        "ccs-doctor.1",
        "ccs-cliproxy.1",
        "ccs-cliproxy-service-install.1",
        "ccs-completions.1",
    ] {
        let text =
            std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.contains(".TH") && text.contains(".SH NAME"),
            "{page}: {text}"
        );
    }
}

#[test]
fn the_remote_flags_sit_under_their_own_heading() {
    for cmd in [
        &["cliproxy", "quota", "--help"][..],
        &["doctor", "--help"],
        &["claude", "--help"],
    ] {
        let (code, out, _) = ccs_out(cmd);
        assert_eq!(code, 0);
        let heading = out
            .find("Remote daemon (team mode):")
            .unwrap_or_else(|| panic!("{cmd:?}: no heading\n{out}"));
        let flag = out.find("--proxy-host").unwrap();
        assert!(
            flag > heading,
            "{cmd:?}: --proxy-host before its heading\n{out}"
        );
        let options = out.find("Options:").unwrap_or(0);
        let help = out[options..]
            .find("-h, --help")
            .map(|i| i + options)
            .unwrap();
        assert!(
            help < heading,
            "{cmd:?}: the command's own options first\n{out}"
        );
    }
}
