//! The documentation matches the code: the sample config holds every key at its default, and
//! the README names every key, environment variable pattern and subcommand.

use asterai::config::Config;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn sample_config_has_every_key_at_its_default() {
    let sample = read("asterisk-config/asterai.toml");
    let config = Config::from_toml(&sample).expect("the sample config is valid");
    assert_eq!(config.to_toml(), Config::default().to_toml(), "sample values equal the defaults");
    let table: toml::Value = toml::Value::Table(sample.parse().unwrap());
    for key in Config::keys() {
        let found = key.path.split('.').try_fold(&table, |value, part| value.get(part));
        assert!(found.is_some(), "asterisk-config/asterai.toml documents {}", key.path);
    }
}

#[test]
fn readme_documents_every_key_and_command() {
    let readme = read("README.md");
    for key in Config::keys() {
        assert!(readme.contains(&format!("`{}`", key.path)), "README documents config key {}", key.path);
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_asterai")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let commands = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help");
    for command in commands {
        assert!(readme.contains(&format!("`asterai {command}")), "README documents `asterai {command}`");
    }
}

#[test]
fn sample_dialplan_uses_the_default_port_and_real_routes() {
    let dialplan = read("asterisk-config/extensions.conf");
    let config = Config::default();
    assert!(dialplan.contains(&format!("agi://{}", config.agi.listen)), "the dialplan points at agi.listen");
    for route in ["/ai?", "/health"] {
        assert!(dialplan.contains(route), "the dialplan uses the {route} route");
    }
}
